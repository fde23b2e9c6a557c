//! A standby's listeners: every client that connects is told, in its own protocol, that
//! this broker is a standby and who the master is (a native `Error` with code `Standby`, a
//! STOMP `ERROR`), and is closed. `actormq stat` and failover clients see why at once,
//! instead of a refused connection.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Listeners;
use crate::constants::{ACCEPT_BACKOFF, LAST_WORDS_TIMEOUT};

/// Why clients are refused now; the node updates it as it learns who the master is.
pub(super) type Reason = Arc<Mutex<String>>;

/// The accept loops of a standby; dropping this stops them (the listeners stay bound).
pub(super) struct Standby {
    tasks: Vec<JoinHandle<()>>,
}

impl Standby {
    /// Refuses every client of `listeners` with `reason` until dropped.
    pub(super) fn serve(listeners: &Listeners, reason: Reason) -> Standby {
        let mut tasks = vec![refuse(
            listeners.native.clone(),
            reason.clone(),
            crate::frontend::native::standby_refusal,
        )];
        if let Some((stomp, _)) = &listeners.stomp {
            tasks.push(refuse(
                stomp.clone(),
                reason,
                crate::frontend::stomp::standby_refusal,
            ));
        }
        Standby { tasks }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn refuse(listener: Arc<TcpListener>, reason: Reason, encode: fn(&str) -> Bytes) -> JoinHandle<()> {
    actix::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let text = reason.lock().map(|r| r.clone()).unwrap_or_default();
            actix::spawn(tell_and_close(stream, encode(&text)));
        }
    })
}

/// Writes `words`, then reads (and drops) what the client sent until it closes or a
/// second passes: closing with its handshake unread would reset the connection and could
/// lose the words.
async fn tell_and_close(mut stream: TcpStream, words: Bytes) {
    let _ = tokio::time::timeout(LAST_WORDS_TIMEOUT, async {
        stream.write_all(&words).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
