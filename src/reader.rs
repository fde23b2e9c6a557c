//! The one bounded reader per client connection, the counterpart of [`crate::writer`]: it
//! decodes frames off a socket with any `tokio_util` [`Decoder`] and bounds what a client
//! can make the broker hold on the way in.
//!
//! - **Producer flow control.** A connection's [`SendWindow`] counts the bytes of sends it
//!   has read and the destinations have not yet accepted (a full queue parks them). While
//!   the window is full the reader stops reading, so TCP pushes back on the producer and
//!   the broker holds at most a window of sends per connection, as ActiveMQ's producer
//!   flow control blocks a producer's transport.
//! - **Partial frames.** The decoder's buffer grows only as bytes arrive (never to a length
//!   a frame merely claims). The bytes buffered by every connection count against one
//!   broker-wide [`ReadBudget`]; past it, connections holding part of a frame stop reading
//!   until others finish theirs.
//! - **Read deadline.** A frame that has started must be complete within the frame timeout
//!   (time spent paused by a full window does not count), or the reader yields
//!   [`ReadError::Stalled`] and the connection is closed with a reason.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::AsyncRead;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::{Decoder, FramedRead};

/// How often a reader paused by a spent [`ReadBudget`] looks again.
const BUDGET_RETRY: Duration = Duration::from_millis(50);

/// Why a [`FrameReader`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The decoder refused the bytes (or the socket failed).
    #[error(transparent)]
    Decode(E),
    /// A frame started and did not finish in time.
    #[error("a frame was started and not finished within {} ms", .0.as_millis())]
    Stalled(Duration),
}

/// Bytes buffered for frames not yet complete, across every connection of a broker.
#[derive(Debug)]
pub struct ReadBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ReadBudget {
    pub fn new(limit: usize) -> Arc<ReadBudget> {
        Arc::new(ReadBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes buffered now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn spent(&self) -> bool {
        self.used() >= self.limit
    }
}

/// Bytes of sends one connection has read and not yet had accepted.
#[derive(Debug)]
pub struct SendWindow {
    used: AtomicUsize,
    limit: usize,
    reader: AtomicWaker,
}

impl SendWindow {
    pub fn new(limit: usize) -> Arc<SendWindow> {
        Arc::new(SendWindow {
            used: AtomicUsize::new(0),
            limit,
            reader: AtomicWaker::new(),
        })
    }

    /// Counts `bytes` of sends as on their way until the permit is dropped. A send is
    /// always taken, however large: the window only decides whether to read the next frame.
    pub fn take(self: &Arc<Self>, bytes: usize) -> WindowPermit {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        WindowPermit {
            window: Some(self.clone()),
            bytes,
        }
    }

    /// Bytes on their way now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn full(&self) -> bool {
        self.used() >= self.limit
    }
}

/// Sends counted in a [`SendWindow`]; the bytes are given back when it is dropped (the
/// sends were accepted, refused, or abandoned).
#[derive(Debug, Default)]
pub struct WindowPermit {
    window: Option<Arc<SendWindow>>,
    bytes: usize,
}

impl WindowPermit {
    /// Takes over `other`'s bytes (both must come from the same window, or `self` be empty).
    pub fn absorb(&mut self, mut other: WindowPermit) {
        if self.window.is_none() {
            self.window = other.window.take();
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for WindowPermit {
    fn drop(&mut self) {
        if let Some(window) = &self.window
            && self.bytes > 0
        {
            window.used.fetch_sub(self.bytes, Ordering::Relaxed);
            window.reader.wake();
        }
    }
}

/// Frames off a socket, within a send window, a read budget and a frame deadline.
pub struct FrameReader<R, D> {
    inner: FramedRead<R, D>,
    window: Arc<SendWindow>,
    budget: Arc<ReadBudget>,
    /// Bytes of this reader's buffer counted in the budget.
    counted: usize,
    frame_timeout: Duration,
    /// Armed while part of a frame is buffered.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Armed while paused by a spent budget.
    retry: Option<Pin<Box<Sleep>>>,
}

impl<R: AsyncRead, D: Decoder> FrameReader<R, D> {
    pub fn new(
        socket: R,
        decoder: D,
        window: Arc<SendWindow>,
        budget: Arc<ReadBudget>,
        frame_timeout: Duration,
    ) -> FrameReader<R, D> {
        FrameReader {
            inner: FramedRead::new(socket, decoder),
            window,
            budget,
            counted: 0,
            frame_timeout,
            deadline: None,
            retry: None,
        }
    }

    /// Brings the budget up to date with what the buffer holds now.
    fn account(&mut self) {
        let now = self.inner.read_buffer().len();
        if now > self.counted {
            self.budget
                .used
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

impl<R: AsyncRead + Unpin, D: Decoder + Unpin> Stream for FrameReader<R, D> {
    type Item = Result<D::Item, ReadError<D::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            return Poll::Ready(Some(Err(ReadError::Stalled(this.frame_timeout))));
        }
        if this.window.full() {
            this.window.reader.register(cx.waker());
            if this.window.full() {
                // Our own pause: the frame's clock starts again when reading does.
                this.deadline = None;
                return Poll::Pending;
            }
        }
        if this.counted > 0 && this.budget.spent() {
            let retry = this
                .retry
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(BUDGET_RETRY)));
            if retry.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.retry = None;
            if this.budget.spent() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        this.account();
        match polled {
            Poll::Ready(Some(Ok(item))) => {
                this.deadline = None;
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ReadError::Decode(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.counted > 0 && this.deadline.is_none() {
                    let mut deadline = Box::pin(tokio::time::sleep_until(
                        Instant::now() + this.frame_timeout,
                    ));
                    // Registers the timer with this task.
                    let _ = deadline.as_mut().poll(cx);
                    this.deadline = Some(deadline);
                }
                Poll::Pending
            }
        }
    }
}

impl<R, D> Drop for FrameReader<R, D> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    /// Lines as frames.
    struct Lines;

    impl Decoder for Lines {
        type Item = Vec<u8>;
        type Error = std::io::Error;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
            match src.iter().position(|&b| b == b'\n') {
                Some(at) => Ok(Some(src.split_to(at + 1).to_vec())),
                None => Ok(None),
            }
        }
    }

    fn reader(
        socket: tokio::io::DuplexStream,
        window: &Arc<SendWindow>,
        budget: &Arc<ReadBudget>,
        timeout: Duration,
    ) -> FrameReader<tokio::io::DuplexStream, Lines> {
        FrameReader::new(socket, Lines, window.clone(), budget.clone(), timeout)
    }

    #[tokio::test]
    async fn a_full_window_stops_reading_until_a_permit_is_dropped() {
        let (mut client, server) = tokio::io::duplex(1024);
        let window = SendWindow::new(10);
        let budget = ReadBudget::new(1 << 20);
        let mut frames = reader(server, &window, &budget, Duration::from_secs(5));
        client.write_all(b"one\ntwo\n").await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), b"one\n");
        let permit = window.take(10);
        let mut next = frames.next();
        assert!(futures::poll!(&mut next).is_pending());
        drop(permit);
        assert_eq!(next.await.unwrap().unwrap(), b"two\n");
        assert_eq!(window.used(), 0);
    }

    #[tokio::test]
    async fn a_frame_that_does_not_finish_in_time_is_refused() {
        let (mut client, server) = tokio::io::duplex(1024);
        let window = SendWindow::new(10);
        let budget = ReadBudget::new(1 << 20);
        let mut frames = reader(server, &window, &budget, Duration::from_millis(50));
        client.write_all(b"half a fra").await.unwrap();
        let result = frames.next().await.unwrap();
        assert!(matches!(result, Err(ReadError::Stalled(_))), "{result:?}");
        assert_eq!(budget.used(), 10);
        drop(frames);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_spent_budget_pauses_readers_holding_partial_frames() {
        let budget = ReadBudget::new(8);
        let window = SendWindow::new(1 << 20);
        let timeout = Duration::from_secs(5);
        let (mut a, a_socket) = tokio::io::duplex(1024);
        let (mut b, b_socket) = tokio::io::duplex(1024);
        let (mut c, c_socket) = tokio::io::duplex(1024);
        let mut a_frames = reader(a_socket, &window, &budget, timeout);
        let mut b_frames = reader(b_socket, &window, &budget, timeout);
        let mut c_frames = reader(c_socket, &window, &budget, timeout);
        b.write_all(b"0123456789").await.unwrap();
        assert!(futures::poll!(b_frames.next()).is_pending());
        a.write_all(b"abc").await.unwrap();
        assert!(futures::poll!(a_frames.next()).is_pending());
        assert_eq!(budget.used(), 13);
        // `a` holds a partial frame and the budget is spent: it reads no more.
        a.write_all(b"\n").await.unwrap();
        assert!(futures::poll!(a_frames.next()).is_pending());
        // `c` holds nothing and may still read whole frames.
        c.write_all(b"c\n").await.unwrap();
        assert_eq!(c_frames.next().await.unwrap().unwrap(), b"c\n");
        // `b` goes away: `a` reads on and finishes its frame.
        drop(b_frames);
        assert_eq!(a_frames.next().await.unwrap().unwrap(), b"abc\n");
        assert_eq!(budget.used(), 0);
    }
}
