//! The one bounded reader per client connection, the counterpart of [`crate::net::writer`]: it
//! decodes frames off a socket with any `tokio_util` [`Decoder`] and bounds what a client
//! can make the broker hold on the way in.
//!
//! - **Producer flow control.** A connection's [`SendWindow`] counts the bytes of sends it
//!   has read and the destinations have not yet accepted (a full queue parks them). While
//!   the window is full the reader stops reading, so TCP pushes back on the producer and
//!   the broker holds at most a window of sends per connection, as ActiveMQ's producer
//!   flow control blocks a producer's transport.
//! - **Partial frames.** The decoder's buffer grows as bytes arrive, not to the length a
//!   frame claims — except that once a 16th of a frame whose length the decoder knows
//!   ([`FrameSize`]) has arrived, and the budget has room, the rest is made room for at
//!   once, so a large frame is read into one allocation instead of one grown and copied
//!   as it arrives (a peer still makes the broker hold at most 16× what it sent). The
//!   bytes buffered by every connection count against one broker-wide [`ReadBudget`];
//!   past it, connections holding part of a frame stop reading until others finish theirs.
//! - **Read deadline.** A frame that has started must be complete within the frame timeout
//!   (time spent paused by a full window does not count), or the reader yields
//!   [`ReadError::Stalled`] and the connection is closed with a reason.
//!
//! [`MarkIdle`] wraps a reader for a connection that batches what it reads: it says when
//! the frames read so far are all handled, so the batch can go on then.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::AsyncRead;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;

use crate::constants::{BUDGET_RETRY, READ_BYTES, WHOLE_FRAME_AFTER};
use crate::protocol::FrameSize;

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

    /// Whether `more` bytes fit under the limit.
    fn has_room(&self, more: usize) -> bool {
        self.used().saturating_add(more) <= self.limit
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
    socket: R,
    decoder: D,
    buffer: BytesMut,
    window: Arc<SendWindow>,
    budget: Arc<ReadBudget>,
    /// Bytes of `buffer` counted in the budget.
    counted: usize,
    frame_timeout: Duration,
    /// Armed while part of a frame is buffered.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Armed while paused by a spent budget.
    retry: Option<Pin<Box<Sleep>>>,
    /// The socket ended or failed, or the decoder refused: nothing more comes.
    done: bool,
}

impl<R: AsyncRead, D: Decoder + FrameSize> FrameReader<R, D> {
    pub fn new(
        socket: R,
        decoder: D,
        window: Arc<SendWindow>,
        budget: Arc<ReadBudget>,
        frame_timeout: Duration,
    ) -> FrameReader<R, D> {
        FrameReader {
            socket,
            decoder,
            buffer: BytesMut::new(),
            window,
            budget,
            counted: 0,
            frame_timeout,
            deadline: None,
            retry: None,
            done: false,
        }
    }

    /// Brings the budget up to date with what the buffer holds now: its whole allocation
    /// while it holds part of a frame, nothing while it is empty.
    fn account(&mut self) {
        let now = if self.buffer.is_empty() {
            0
        } else {
            self.buffer.capacity()
        };
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

    /// Starts the frame's clock if part of one is buffered and it is not running.
    fn arm_deadline(&mut self, cx: &mut Context<'_>) {
        if !self.buffer.is_empty() && self.deadline.is_none() {
            let mut deadline = Box::pin(tokio::time::sleep_until(
                Instant::now() + self.frame_timeout,
            ));
            // Registers the timer with this task.
            let _ = deadline.as_mut().poll(cx);
            self.deadline = Some(deadline);
        }
    }

    /// Makes room for the next read: for the rest of the frame being read when its length
    /// is known, enough of it has arrived and the budget allows (one allocation for a large
    /// frame, instead of a buffer grown and copied as it arrives), else `READ_BYTES`.
    fn make_room(&mut self) {
        let (len, capacity) = (self.buffer.len(), self.buffer.capacity());
        let rest = self
            .decoder
            .frame_size(&self.buffer)
            .filter(|&size| size > len && len.saturating_mul(WHOLE_FRAME_AFTER) >= size)
            .filter(|&size| size <= capacity || self.budget.has_room(size - capacity))
            .map(|size| size - len);
        let wanted = rest.unwrap_or(READ_BYTES);
        if capacity - len < wanted {
            self.buffer.reserve(wanted);
        }
    }

    /// Whether reading must wait for other connections to finish their frames; if so, the
    /// task is woken to look again shortly.
    fn budget_spent(&mut self, cx: &mut Context<'_>) -> bool {
        if self.buffer.is_empty() || !self.budget.spent() {
            self.retry = None;
            return false;
        }
        let retry = self
            .retry
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(BUDGET_RETRY)));
        if retry.as_mut().poll(cx).is_ready() {
            self.retry = None;
            cx.waker().wake_by_ref();
        }
        true
    }
}

impl<R: AsyncRead + Unpin, D: Decoder + FrameSize + Unpin> Stream for FrameReader<R, D> {
    type Item = Result<D::Item, ReadError<D::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            this.done = true;
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
        loop {
            // Frames already buffered are always decoded; only reading may wait.
            match this.decoder.decode(&mut this.buffer) {
                Ok(Some(item)) => {
                    this.deadline = None;
                    this.account();
                    return Poll::Ready(Some(Ok(item)));
                }
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ReadError::Decode(e))));
                }
            }
            if this.budget_spent(cx) {
                this.arm_deadline(cx);
                return Poll::Pending;
            }
            this.make_room();
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.socket), cx, &mut this.buffer);
            this.account();
            match read {
                Poll::Pending => {
                    this.arm_deadline(cx);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ReadError::Decode(e.into()))));
                }
                // The peer hung up; a frame it left unfinished is not a frame.
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl<R, D> Drop for FrameReader<R, D> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// What [`MarkIdle`] yields.
#[derive(Debug, PartialEq)]
pub enum Reading<T> {
    Item(T),
    /// The items before this were all that was ready: the next waits for the socket.
    Idle,
}

/// A stream that, after one or more items, says when its inner stream has nothing more
/// ready ([`Reading::Idle`]) instead of only going quiet. A connection handles each frame
/// as it comes — its send window charged frame by frame, as before reading the next —
/// and passes on what it batched from them once it hears `Idle`.
pub struct MarkIdle<S> {
    inner: S,
    /// An item came since the last `Idle`.
    busy: bool,
}

impl<S> MarkIdle<S> {
    pub fn new(inner: S) -> Self {
        MarkIdle { inner, busy: false }
    }
}

impl<S: Stream + Unpin> Stream for MarkIdle<S> {
    type Item = Reading<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                this.busy = true;
                Poll::Ready(Some(Reading::Item(item)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            // The inner stream has registered the waker: the next poll waits on it.
            Poll::Pending if this.busy => {
                this.busy = false;
                Poll::Ready(Some(Reading::Idle))
            }
            Poll::Pending => Poll::Pending,
        }
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

    impl FrameSize for Lines {
        fn frame_size(&self, _buffered: &[u8]) -> Option<usize> {
            None
        }
    }

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
    async fn mark_idle_says_when_nothing_more_is_ready() {
        use futures::FutureExt;
        let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
        let mut reading = MarkIdle::new(rx);
        // Nothing has come: quiet, no `Idle`.
        assert!(reading.next().now_or_never().is_none());
        tx.unbounded_send(1).unwrap();
        tx.unbounded_send(2).unwrap();
        assert_eq!(reading.next().await, Some(Reading::Item(1)));
        assert_eq!(reading.next().await, Some(Reading::Item(2)));
        assert_eq!(reading.next().await, Some(Reading::Idle));
        // One `Idle` per run of items.
        assert!(reading.next().now_or_never().is_none());
        tx.unbounded_send(3).unwrap();
        assert_eq!(reading.next().await, Some(Reading::Item(3)));
        drop(tx);
        assert_eq!(reading.next().await, None);
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
        assert!(budget.used() >= 10);
        drop(frames);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn buffered_frames_are_decoded_whatever_the_budget() {
        let budget = ReadBudget::new(1);
        let window = SendWindow::new(1 << 20);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut frames = reader(server, &window, &budget, Duration::from_secs(5));
        client.write_all(b"one\ntwo\nthr").await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), b"one\n");
        // The budget is spent by this reader's own partial frame: what is whole still goes.
        assert_eq!(frames.next().await.unwrap().unwrap(), b"two\n");
        assert!(futures::poll!(frames.next()).is_pending());
    }

    #[tokio::test]
    async fn a_spent_budget_pauses_readers_holding_partial_frames() {
        // Each partial frame counts its buffer's allocation (8 KiB here): two spend it.
        let budget = ReadBudget::new(12 * 1024);
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
        assert!(budget.used() >= 13);
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

    #[tokio::test]
    async fn a_large_frame_gets_one_allocation_once_a_sixteenth_of_it_has_arrived() {
        use crate::protocol::{Frame, FrameCodec, encode_frame};
        let frame = Frame::Send {
            session: 1,
            destination: crate::message::Destination::queue("q"),
            receipt: None,
            messages: vec![crate::message::Message::new(vec![7u8; 1 << 20])],
            origin: None,
        };
        let bytes = encode_frame(&frame, 1 << 24).unwrap();
        let window = SendWindow::new(1 << 30);
        // Other connections' partial frames leave this one 64 MiB of room, then 512 KiB.
        for (others, whole) in [(0, true), ((64 << 20) - (512 << 10), false)] {
            let budget = ReadBudget::new(64 << 20);
            budget.used.fetch_add(others, Ordering::Relaxed);
            let (mut client, server) = tokio::io::duplex(2 << 20);
            let mut frames = FrameReader::new(
                server,
                FrameCodec::new(1 << 24),
                window.clone(),
                budget.clone(),
                Duration::from_secs(5),
            );
            // A sixteenth and a bit: the reader takes all of it in one poll.
            client
                .write_all(&bytes[..bytes.len() / 16 + 100])
                .await
                .unwrap();
            assert!(futures::poll!(frames.next()).is_pending());
            // Counted in the budget: the buffer's allocation.
            let buffered = budget.used() - others;
            assert_eq!(
                buffered >= bytes.len(),
                whole,
                "{buffered} buffered for a frame of {}",
                bytes.len()
            );
            budget.used.fetch_sub(others, Ordering::Relaxed);
            client
                .write_all(&bytes[bytes.len() / 16 + 100..])
                .await
                .unwrap();
            assert_eq!(frames.next().await.unwrap().unwrap(), frame);
        }
    }
}
