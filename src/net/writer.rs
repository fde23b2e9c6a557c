//! The one bounded writer per connection, used by broker and client alike.
//!
//! Whoever has something to say encodes a frame and hands the bytes to a [`FrameSink`];
//! a single task (the future [`writer`] returns) drains the queue and writes frames to the
//! socket in batches: one vectored write per batch, so frames are not copied again. The
//! sink counts the bytes not yet written: past `max_pending_bytes` the connection is a slow
//! consumer and is closed with a reason instead of growing memory, as NATS does. A socket
//! that takes nothing for `write_timeout` is closed. [`FrameSink::written`] tells when
//! everything queued so far has reached the socket, so a sender can count work as done
//! only once it is written (STOMP `ack:auto`). This replaces `actix::io::FramedWrite`,
//! whose buffer is unbounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::constants::{LAST_WORDS_TIMEOUT, MAX_IOV, SHUTDOWN_TIMEOUT};

/// Why a sink refused a frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriterError {
    #[error("connection is closed")]
    Closed,
    #[error("slow consumer: {pending} bytes waiting to be written exceeds the limit of {limit}")]
    SlowConsumer { pending: usize, limit: usize },
}

/// Why a writer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Every sink was dropped or `close` was called; all queued frames were written.
    Finished,
    /// The peer did not read fast enough.
    SlowConsumer { limit: usize },
    /// The socket took no bytes for this long.
    WriteTimeout(Duration),
    /// The socket failed.
    Io(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Finished => write!(f, "closed"),
            CloseReason::SlowConsumer { limit } => write!(
                f,
                "slow consumer: more than {limit} bytes were waiting to be written"
            ),
            CloseReason::WriteTimeout(d) => {
                write!(f, "the socket took no bytes for {} ms", d.as_millis())
            }
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Settings of one writer.
#[derive(Clone, Debug)]
pub struct WriterLimits {
    pub max_pending_bytes: usize,
    pub batch_bytes: usize,
    /// The longest a write may make no progress.
    pub write_timeout: Duration,
    /// Written (best effort, within [`LAST_WORDS_TIMEOUT`]) when the connection is closed as
    /// a slow consumer, so the peer learns why.
    pub slow_consumer_frame: Option<Bytes>,
}

enum Command {
    Frame(Bytes),
    /// One frame in several buffers, written in order with nothing between them.
    Parts(Vec<Bytes>),
    /// Say when every frame queued before this has been written.
    Mark(oneshot::Sender<()>),
    /// Write this last frame (if any), then close the socket.
    Close(Option<Bytes>),
}

/// Resolves to `true` once every frame queued before it was written to the socket, or to
/// `false` if the connection closed first.
pub struct Written(oneshot::Receiver<()>);

impl Future for Written {
    type Output = bool;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.is_ok())
    }
}

struct Shared {
    pending: AtomicUsize,
    closed: AtomicBool,
    abort: Notify,
    /// Woken after every write, so producers of frames can wait for room.
    drained: Notify,
}

/// The sending end of a connection's writer. Cheap to clone.
#[derive(Clone)]
pub struct FrameSink {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    limit: usize,
}

impl FrameSink {
    /// Queues one encoded frame. Fails once the connection is closed, or when the bytes
    /// waiting to be written would pass the limit (the connection is then closed).
    pub fn send(&self, frame: Bytes) -> Result<(), WriterError> {
        let len = frame.len();
        self.queue(len, Command::Frame(frame))
    }

    /// Queues one frame given as buffers to write in order
    /// ([`crate::protocol::encode_frame_spliced`]), as [`FrameSink::send`] does one.
    pub fn send_parts(&self, parts: Vec<Bytes>) -> Result<(), WriterError> {
        let len = parts.iter().map(Bytes::len).sum();
        self.queue(len, Command::Parts(parts))
    }

    fn queue(&self, len: usize, command: Command) -> Result<(), WriterError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(WriterError::Closed);
        }
        let before = self.shared.pending.fetch_add(len, Ordering::Relaxed);
        // A single frame larger than the limit still goes out when nothing is waiting.
        if before > 0 && before + len > self.limit {
            self.shared.pending.fetch_sub(len, Ordering::Relaxed);
            self.shared.closed.store(true, Ordering::Relaxed);
            self.shared.abort.notify_one();
            return Err(WriterError::SlowConsumer {
                pending: before + len,
                limit: self.limit,
            });
        }
        self.tx.send(command).map_err(|_| {
            self.shared.pending.fetch_sub(len, Ordering::Relaxed);
            WriterError::Closed
        })
    }

    /// Writes `last` (if any) after everything already queued, then closes the socket.
    pub fn close(&self, last: Option<Bytes>) {
        if !self.shared.closed.swap(true, Ordering::Relaxed) {
            let _ = self.tx.send(Command::Close(last));
        }
    }

    /// Resolves once everything queued before this call has been written (`true`), or
    /// the connection closed first (`false`).
    pub fn written(&self) -> Written {
        let (tx, rx) = oneshot::channel();
        // A closed writer drops the sender: the future resolves to `false`.
        let _ = self.tx.send(Command::Mark(tx));
        Written(rx)
    }

    /// Whether the connection has been closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed) || self.tx.is_closed()
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Resolves once at most `bytes` are waiting to be written, or the connection closed.
    /// Lets a sender pace itself to the socket instead of reaching the limit.
    pub fn drained_to(&self, bytes: usize) -> impl Future<Output = ()> + 'static {
        let shared = self.shared.clone();
        async move {
            loop {
                let drained = shared.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if shared.pending.load(Ordering::Relaxed) <= bytes
                    || shared.closed.load(Ordering::Relaxed)
                {
                    return;
                }
                drained.await;
            }
        }
    }
}

/// A sink and the future that writes what it receives to `socket`. The future returns
/// once the writer stops, saying why; run it on its own task.
pub fn writer<W>(
    socket: W,
    limits: WriterLimits,
) -> (FrameSink, impl Future<Output = CloseReason> + use<W>)
where
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        pending: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        abort: Notify::new(),
        drained: Notify::new(),
    });
    let sink = FrameSink {
        tx,
        shared: shared.clone(),
        limit: limits.max_pending_bytes,
    };
    (sink, run_writer(socket, rx, shared, limits))
}

async fn run_writer<W>(
    mut socket: W,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    limits: WriterLimits,
) -> CloseReason
where
    W: AsyncWrite + Unpin,
{
    // The frames of one batch, written with one vectored write (no copy into a buffer).
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    // Told once the batch is written.
    let mut marks: Vec<oneshot::Sender<()>> = Vec::new();
    let slow = CloseReason::SlowConsumer {
        limit: limits.max_pending_bytes,
    };
    let reason = loop {
        let first = tokio::select! {
            biased;
            _ = shared.abort.notified() => {
                // Between batches the stream is at a frame boundary: say why, if we can.
                if let Some(frame) = &limits.slow_consumer_frame {
                    let _ = tokio::time::timeout(LAST_WORDS_TIMEOUT, socket.write_all(frame)).await;
                }
                break slow;
            }
            command = rx.recv() => command,
        };
        let mut last = None;
        let mut closing = false;
        match first {
            None => break CloseReason::Finished,
            Some(Command::Frame(frame)) => batch.push_back(frame),
            Some(Command::Parts(parts)) => batch.extend(parts),
            Some(Command::Mark(mark)) => marks.push(mark),
            Some(Command::Close(frame)) => {
                last = frame;
                closing = true;
            }
        }
        let mut batch_len: usize = batch.iter().map(Bytes::len).sum();
        while !closing && batch_len < limits.batch_bytes && batch.len() < MAX_IOV {
            match rx.try_recv() {
                Ok(Command::Frame(frame)) => {
                    batch_len += frame.len();
                    batch.push_back(frame);
                }
                Ok(Command::Parts(parts)) => {
                    batch_len += parts.iter().map(Bytes::len).sum::<usize>();
                    batch.extend(parts);
                }
                Ok(Command::Mark(mark)) => marks.push(mark),
                Ok(Command::Close(frame)) => {
                    last = frame;
                    closing = true;
                }
                Err(_) => break,
            }
        }
        if let Some(frame) = last {
            batch.push_back(frame);
        }
        if !batch.is_empty() {
            let write = write_all_vectored(&mut socket, &mut batch, limits.write_timeout);
            let written = tokio::select! {
                biased;
                _ = shared.abort.notified() => break slow,
                written = write => written,
            };
            match written {
                Err(WriteFailure::Stalled) => {
                    break CloseReason::WriteTimeout(limits.write_timeout);
                }
                Err(WriteFailure::Io(e)) => break CloseReason::Io(e.to_string()),
                Ok(()) => {}
            }
            shared.pending.fetch_sub(batch_len, Ordering::Relaxed);
            shared.drained.notify_waiters();
        }
        for mark in marks.drain(..) {
            let _ = mark.send(());
        }
        if closing {
            break CloseReason::Finished;
        }
    };
    shared.closed.store(true, Ordering::Relaxed);
    shared.drained.notify_waiters();
    // Marks of frames never written resolve to `false` as they are dropped.
    drop(marks);
    rx.close();
    // Best effort: the socket may be the very thing that is stuck.
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, socket.shutdown()).await;
    reason
}

enum WriteFailure {
    /// The socket took nothing within the write timeout.
    Stalled,
    Io(std::io::Error),
}

/// Writes every frame of `frames`, as few syscalls as the socket allows; empties it. Each
/// syscall must make progress within `stall`: a large batch to a slow but reading peer is
/// fine, a peer that reads nothing is not.
async fn write_all_vectored<W>(
    socket: &mut W,
    frames: &mut VecDeque<Bytes>,
    stall: Duration,
) -> Result<(), WriteFailure>
where
    W: AsyncWrite + Unpin,
{
    while !frames.is_empty() {
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
        let mut written = tokio::time::timeout(stall, socket.write_vectored(&slices))
            .await
            .map_err(|_| WriteFailure::Stalled)?
            .map_err(WriteFailure::Io)?;
        if written == 0 {
            return Err(WriteFailure::Io(std::io::ErrorKind::WriteZero.into()));
        }
        while written > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                frames.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        frames.retain(|f| !f.is_empty());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn limits(max: usize) -> WriterLimits {
        WriterLimits {
            max_pending_bytes: max,
            batch_bytes: 1024,
            write_timeout: Duration::from_secs(5),
            slow_consumer_frame: None,
        }
    }

    #[tokio::test]
    async fn writes_everything_then_the_last_frame_in_order() {
        let (client, mut server) = tokio::io::duplex(64);
        let (sink, run) = writer(client, limits(1 << 20));
        let task = tokio::spawn(run);
        for i in 0..100u8 {
            sink.send(Bytes::from(vec![i; 10])).unwrap();
        }
        sink.close(Some(Bytes::from_static(b"bye")));
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 1003);
        assert_eq!(&got[1000..], b"bye");
        assert_eq!(task.await.unwrap(), CloseReason::Finished);
        assert_eq!(
            sink.send(Bytes::from_static(b"x")),
            Err(WriterError::Closed)
        );
    }

    #[tokio::test]
    async fn a_frame_in_parts_is_written_whole_between_the_frames_around_it() {
        let (client, mut server) = tokio::io::duplex(64);
        let (sink, run) = writer(client, limits(1 << 20));
        let task = tokio::spawn(run);
        let parts = vec![
            Bytes::from_static(b"B1"),
            Bytes::from(vec![b'b'; 300]),
            Bytes::from_static(b"B3"),
        ];
        for round in 0..20 {
            sink.send(Bytes::from(format!("A{round}"))).unwrap();
            sink.send_parts(parts.clone()).unwrap();
        }
        sink.send_parts(vec![Bytes::from_static(b"C")]).unwrap();
        sink.close(None);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        let mut expected = Vec::new();
        for round in 0..20 {
            expected.extend_from_slice(format!("A{round}").as_bytes());
            parts.iter().for_each(|p| expected.extend_from_slice(p));
        }
        expected.push(b'C');
        assert_eq!(got, expected);
        assert_eq!(task.await.unwrap(), CloseReason::Finished);
        assert_eq!(sink.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn drained_to_waits_for_the_reader() {
        let (client, mut server) = tokio::io::duplex(16);
        let (sink, run) = writer(client, limits(1 << 20));
        tokio::spawn(run);
        sink.send(Bytes::from(vec![1u8; 1000])).unwrap();
        let drained = tokio::spawn(sink.drained_to(0));
        let mut buf = vec![0u8; 1000];
        server.read_exact(&mut buf).await.unwrap();
        drained.await.unwrap();
        assert_eq!(sink.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn written_resolves_after_the_bytes_before_it_and_fails_once_closed() {
        let (client, mut server) = tokio::io::duplex(16);
        let (sink, run) = writer(client, limits(1 << 20));
        tokio::spawn(run);
        sink.send(Bytes::from(vec![1u8; 100])).unwrap();
        let mut written = Box::pin(sink.written());
        // Nothing read yet: the mark cannot have passed.
        assert!(futures::poll!(written.as_mut()).is_pending());
        let mut buf = vec![0u8; 100];
        server.read_exact(&mut buf).await.unwrap();
        assert!(written.await);
        sink.send(Bytes::from(vec![2u8; 100])).unwrap();
        let unwritten = sink.written();
        drop(server); // the peer goes away with the frame unread
        assert!(!unwritten.await);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_a_slow_consumer() {
        let (client, _server) = tokio::io::duplex(64);
        let (sink, run) = writer(client, limits(1000));
        let task = tokio::spawn(run);
        let mut refused = None;
        for _ in 0..1000 {
            if let Err(e) = sink.send(Bytes::from(vec![0u8; 100])) {
                refused = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            refused,
            Some(WriterError::SlowConsumer { limit: 1000, .. })
        ));
        assert_eq!(
            task.await.unwrap(),
            CloseReason::SlowConsumer { limit: 1000 }
        );
    }
}
