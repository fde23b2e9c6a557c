//! The native protocol listener: accepts sockets and starts one [`ConnectionActor`] for
//! each, on the next arbiter in turn.

use std::time::Duration;

use actix::{Actor, Addr};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::ConnectionActor;
use crate::config::Config;
use crate::destination::DestinationRegistry;
use crate::runtime::ArbiterPool;

/// Pause after a failed accept (for example when the process is out of file descriptors),
/// so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Runs the accept loop as a task of the current arbiter; abort the handle to stop it.
pub(super) fn spawn(
    socket: TcpListener,
    arbiters: ArbiterPool,
    registry: Addr<DestinationRegistry>,
    config: Config,
) -> JoinHandle<()> {
    actix::spawn(async move {
        loop {
            let (stream, peer) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
            }
            // The socket moves to the arbiter that will own it and is registered with that
            // arbiter's runtime there.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, "cannot hand over connection: {e}");
                    continue;
                }
            };
            let registry = registry.clone();
            let config = config.clone();
            arbiters
                .next()
                .spawn_fn(move || match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        ConnectionActor::create(move |ctx| {
                            ConnectionActor::new(stream, peer, registry, config, ctx)
                        });
                    }
                    Err(e) => tracing::warn!(%peer, "cannot adopt connection: {e}"),
                });
        }
    })
}
