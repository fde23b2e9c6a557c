//! What every handle of a connection shares — the current socket (a [`Link`], replaced
//! when a failover connection reconnects) and the state a new socket is given again: open
//! sessions, consumers, and every request not yet answered — so that `Connection`,
//! `Session`, `Producer` and `Consumer` need not know one another.
//!
//! Every write that changes that state (a request, a session, a subscription) updates it
//! and writes its frame under the link's read lock; the driver replaces the link and
//! replays the state under its write lock. So each request reaches the new socket exactly
//! once: before the switch it is replayed, after it it is written. Locks are always taken
//! link first, then state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::ClientError;
use super::url::FailoverOptions;
use crate::constants::MAX_SENDS_PER_PRODUCER;
use crate::message::AckMode;
use crate::message::decimal::numbered;
use crate::net::writer::{FrameSink, WriterError};
use crate::protocol::{
    DestinationStat, Frame, MasterStat, MemberStat, SendOrigin, StoreStat, TransactedSend,
    WireDelivery, encode_frame, encode_frame_spliced,
};

/// What `stat` returns: every destination, the journal (if any), the cluster's members
/// (empty on a lone broker).
#[derive(Clone, Debug, PartialEq)]
pub struct StatReply {
    pub destinations: Vec<DestinationStat>,
    pub store: Option<StoreStat>,
    pub members: Vec<MemberStat>,
    /// Master/slave: this broker is its pair's master (epoch, since when).
    pub master: Option<MasterStat>,
}

/// What a failover connection tells the application (see [`super::Connection::events`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionEvent {
    /// The connection to `url` was lost; sends wait while it reconnects.
    Disconnected { url: String, reason: String },
    /// Connected again, to `url`: sessions, consumers and unconfirmed sends are restored.
    Reconnected { url: String },
    /// No broker of the list could be reached within `maxReconnectAttempts`: the
    /// connection is closed.
    GaveUp { reason: String },
}

/// `Frame::Ack`, for [`Core::write_tagged`].
pub(super) fn ack_frame(session: u32, acks: Vec<(u32, u64)>) -> Frame {
    Frame::Ack {
        session,
        acks,
        receipt: None,
    }
}

/// `Frame::Release`, for [`Core::write_tagged`].
pub(super) fn release_frame(session: u32, releases: Vec<(u32, u64)>) -> Frame {
    Frame::Release { session, releases }
}

/// A delivery's tag, with the link it came over: a tag means nothing on another socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    pub generation: u64,
    pub tag: u64,
}

/// What the driver routes to a consumer.
pub(super) enum Routed {
    /// A `Deliver` frame's deliveries for this consumer.
    Deliveries(Vec<WireDelivery>),
    /// The connection was replaced (this generation): deliveries buffered from the old one
    /// will come again, so drop them.
    Reconnected(u64),
    /// The subscription could not be made again on the new connection.
    Failed(ClientError),
}

/// One consumer, as the driver and a reconnect see it.
pub(super) struct ConsumerRoute {
    pub session: u32,
    pub deliveries: mpsc::UnboundedSender<Routed>,
    /// Taken and not yet acknowledged (Auto and DupsOk modes).
    pub acks: Arc<Mutex<Vec<Tag>>>,
    /// Its `Subscribe` frame, written again on a new connection, and that frame's receipt.
    pub subscribe: Bytes,
    pub receipt: u64,
}

/// Where an answer goes.
pub(super) enum Reply {
    Receipt(oneshot::Sender<Result<(), ClientError>>),
    Stat(oneshot::Sender<StatReply>),
    Located(oneshot::Sender<Option<MemberStat>>),
}

/// What a new connection does with a request not yet answered.
#[derive(Clone, Debug)]
pub(super) enum Replay {
    /// Write it again (sends carry their origin, so the broker keeps each once).
    Resend,
    /// A subscription: made again with every consumer.
    Subscription,
    /// Acknowledgements: their tags mean nothing on a new socket, and the broker delivers
    /// those messages again; the request fails.
    Forget,
    /// A commit: ask the broker whether it was kept before writing it again; one that
    /// acknowledged deliveries of the old connection cannot be written again.
    Commit {
        producer: String,
        seq: u64,
        has_acks: bool,
    },
}

/// A request not yet answered.
pub(super) struct Pending {
    /// The encoded frame, long bodies by reference ([`encode_frame_spliced`]).
    pub parts: Vec<Bytes>,
    pub replay: Replay,
    pub reply: Reply,
    /// A send or commit with an origin: its seq leaves the session's in-flight set once
    /// answered.
    pub settle: Option<(Arc<Mutex<BTreeSet<u64>>>, u64)>,
    /// When it was made: while disconnected, a failover `timeout` counts from the later of
    /// this and the loss of the connection.
    pub made: std::time::Instant,
}

impl Pending {
    /// Answers the request (a receipt: with `result`; others are dropped on failure).
    pub fn answer(self, result: Result<(), ClientError>) {
        if let Some((in_flight, seq)) = &self.settle
            && let Ok(mut set) = in_flight.lock()
        {
            set.remove(seq);
        }
        if let Reply::Receipt(reply) = self.reply {
            let _ = reply.send(result);
        }
    }
}

/// The state a new connection is given again.
#[derive(Default)]
pub(super) struct State {
    /// Requests by receipt or request id.
    pub pending: BTreeMap<u64, Pending>,
    pub sessions: BTreeMap<u32, AckMode>,
    pub consumers: HashMap<u32, ConsumerRoute>,
    /// `Resolve` request id → the commit's receipt.
    pub resolving: HashMap<u64, u64>,
    /// Receipts of subscriptions made again → their consumer.
    pub resubscribing: HashMap<u64, u32>,
}

/// Why bytes did not reach the socket.
pub(super) enum Unsent {
    /// The writer has too much queued: the socket is fine, this frame was not taken.
    Slow(ClientError),
    /// The socket is closed.
    Closed,
}

impl From<WriterError> for Unsent {
    fn from(e: WriterError) -> Unsent {
        match e {
            WriterError::SlowConsumer { pending, limit } => {
                Unsent::Slow(ClientError::ConnectionClosed(format!(
                    "the broker did not take what this client sent fast enough: {pending} \
                     bytes were waiting to be written (limit {limit}); wait for \
                     confirmations before sending more"
                )))
            }
            WriterError::Closed => Unsent::Closed,
        }
    }
}

/// The current socket.
pub(super) struct Link {
    pub sink: FrameSink,
    /// Counts sockets: 1 for the first.
    pub generation: u64,
    /// False while a failover connection reconnects.
    pub up: bool,
    /// The broker it is connected to, and that broker's name.
    pub url: String,
    pub broker: String,
}

/// What the driver task shares with every handle.
pub(super) struct Core {
    pub link: RwLock<Link>,
    /// The link's generation, shifted left once, plus 1 while it is up: what a consumer
    /// checks (without a lock) before handing out a delivery.
    pub live: AtomicU64,
    pub state: Mutex<State>,
    pub max_frame_bytes: usize,
    pub client_id: String,
    /// The broker's name for the first connection; prefixes temporary destinations.
    pub connection_id: String,
    pub next_id: AtomicU32,
    pub next_request: AtomicU64,
    /// Why the connection ended, once it has.
    pub failure: Mutex<Option<ClientError>>,
    /// `Some` for a failover connection.
    pub failover: Option<FailoverOptions>,
    /// Unique per connection object: producers are `<this>:<session>`.
    pub instance: String,
    pub events: broadcast::Sender<ConnectionEvent>,
}

/// The driver's commands.
pub(super) enum Command {
    /// Flush every acknowledgement, say goodbye, and wait for the broker to close.
    Close { done: oneshot::Sender<()> },
}

/// What every handle of a connection shares; the driver stops when the last goes.
pub(super) struct Shared {
    pub core: Arc<Core>,
    pub commands: mpsc::UnboundedSender<Command>,
}

impl Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Core {
    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Why the connection is unusable.
    pub fn failure(&self) -> ClientError {
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| ClientError::ConnectionClosed("the connection is closed".into()))
    }

    pub fn link(&self) -> RwLockReadGuard<'_, Link> {
        self.link.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether frames written now can reach a broker (or will be replayed to one).
    fn usable(&self, link: &Link) -> Result<(), ClientError> {
        if link.up || self.failover.is_some() && self.failure.lock().is_ok_and(|f| f.is_none()) {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    fn encode(&self, frame: &Frame) -> Result<Bytes, ClientError> {
        Ok(encode_frame(frame, self.max_frame_bytes)?)
    }

    /// Writes encoded bytes to the link (if it is up: otherwise the reconnect replays
    /// what must be).
    fn send_bytes(&self, link: &Link, bytes: Bytes) -> Result<(), Unsent> {
        if !link.up {
            return Ok(());
        }
        link.sink.send(bytes).map_err(Unsent::from)
    }

    /// [`Core::send_bytes`] for a frame in parts.
    fn send_parts(&self, link: &Link, parts: Vec<Bytes>) -> Result<(), Unsent> {
        if !link.up {
            return Ok(());
        }
        link.sink.send_parts(parts).map_err(Unsent::from)
    }

    /// What a write that did not reach the socket means to the caller: nothing for a
    /// failover connection whose socket closed (it reconnects and replays), an error
    /// otherwise.
    fn unsent(&self, unsent: Unsent) -> Result<(), ClientError> {
        match unsent {
            Unsent::Slow(e) => Err(e),
            Unsent::Closed if self.failover.is_some() => Ok(()),
            Unsent::Closed => Err(self.failure()),
        }
    }

    /// Writes a frame that needs no answer. While a failover connection reconnects it is
    /// dropped: what it did (an ack, a pull) is undone by the reconnect.
    pub fn write(&self, frame: &Frame) -> Result<(), ClientError> {
        let bytes = self.encode(frame)?;
        let link = self.link();
        self.usable(&link)?;
        self.send_bytes(&link, bytes).or_else(|e| self.unsent(e))
    }

    /// Acknowledges (`Frame::Ack`) or gives back (`Frame::Release`) deliveries of one
    /// session; those that came over an earlier socket are left out (their tags mean
    /// nothing on this one; the broker delivers them again).
    pub fn write_tagged(
        &self,
        session: u32,
        tags: Vec<(u32, Tag)>,
        frame: fn(u32, Vec<(u32, u64)>) -> Frame,
    ) -> Result<(), ClientError> {
        let link = self.link();
        let tags: Vec<(u32, u64)> = tags
            .into_iter()
            .filter(|(_, tag)| tag.generation == link.generation)
            .map(|(consumer, tag)| (consumer, tag.tag))
            .collect();
        if tags.is_empty() {
            return Ok(());
        }
        self.usable(&link)?;
        let bytes = self.encode(&frame(session, tags))?;
        self.send_bytes(&link, bytes).or_else(|e| self.unsent(e))
    }

    /// The current socket's generation.
    pub fn generation(&self) -> u64 {
        self.link().generation
    }

    /// Whether the socket of `generation` is the current one and up: deliveries that came
    /// over any other are delivered again by the broker.
    pub fn is_live(&self, generation: u64) -> bool {
        self.live.load(Ordering::Acquire) == (generation << 1) | 1
    }

    /// Publishes the link's state to [`Core::is_live`]; call with the link locked.
    pub fn publish(&self, link: &Link) {
        self.live.store(
            (link.generation << 1) | u64::from(link.up),
            Ordering::Release,
        );
    }

    /// Registers a request for its answer, then writes it.
    pub fn register(
        &self,
        id: u64,
        frame: &Frame,
        replay: Replay,
        reply: Reply,
        settle: Option<(Arc<Mutex<BTreeSet<u64>>>, u64)>,
    ) -> Result<(), ClientError> {
        // A message of its own is not copied into the frame (sends carry the bodies).
        let parts = encode_frame_spliced(frame, self.max_frame_bytes)?;
        let link = self.link();
        self.usable(&link)?;
        // Only a failover connection writes it again: a plain one keeps no copy.
        let kept = match self.failover {
            Some(_) => parts.clone(),
            None => Vec::new(),
        };
        self.state().pending.insert(
            id,
            Pending {
                parts: kept,
                replay,
                reply,
                settle,
                made: std::time::Instant::now(),
            },
        );
        self.send_parts(&link, parts)
            .or_else(|e| self.unsent(e))
            .inspect_err(|_| {
                // Not written, and not to be replayed: forget it.
                if let Some(pending) = self.state().pending.remove(&id)
                    && let Some((in_flight, seq)) = pending.settle
                    && let Ok(mut set) = in_flight.lock()
                {
                    set.remove(&seq);
                }
            })
    }

    /// Registers for the receipt, then writes the frame; resolves with the receipt.
    pub fn request(
        &self,
        receipt: u64,
        frame: &Frame,
    ) -> Result<oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.register(receipt, frame, Replay::Resend, Reply::Receipt(reply), None)?;
        Ok(rx)
    }

    /// Opens a session (again on every new connection).
    pub fn open_session(&self, session: u32, ack_mode: AckMode) -> Result<(), ClientError> {
        let bytes = self.encode(&Frame::OpenSession { session, ack_mode })?;
        let link = self.link();
        self.usable(&link)?;
        self.state().sessions.insert(session, ack_mode);
        self.send_bytes(&link, bytes).or_else(|e| self.unsent(e))
    }

    /// Closes a session: it is not opened again.
    pub fn close_session(&self, session: u32) {
        let link = self.link();
        self.state().sessions.remove(&session);
        if let Ok(bytes) = self.encode(&Frame::CloseSession { session }) {
            let _ = self.send_bytes(&link, bytes);
        }
    }

    /// Adds a consumer (subscribed again on every new connection) and subscribes it with
    /// its route's `Subscribe` frame.
    pub fn subscribe(
        &self,
        consumer: u32,
        route: ConsumerRoute,
    ) -> Result<oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        let receipt = route.receipt;
        let link = self.link();
        self.usable(&link)?;
        let (reply, rx) = oneshot::channel();
        let bytes = route.subscribe.clone();
        {
            let mut state = self.state();
            state.pending.insert(
                receipt,
                Pending {
                    parts: vec![route.subscribe.clone()],
                    replay: Replay::Subscription,
                    reply: Reply::Receipt(reply),
                    settle: None,
                    made: std::time::Instant::now(),
                },
            );
            state.consumers.insert(consumer, route);
        }
        self.send_bytes(&link, bytes).or_else(|e| self.unsent(e))?;
        Ok(rx)
    }

    /// Removes a consumer: acknowledges what it took, then unsubscribes it.
    pub fn unsubscribe(&self, consumer: u32) {
        let link = self.link();
        let Some(route) = self.state().consumers.remove(&consumer) else {
            return;
        };
        self.flush_acks(&link, consumer, &route);
        if let Ok(bytes) = self.encode(&Frame::Unsubscribe {
            session: route.session,
            consumer,
        }) {
            let _ = self.send_bytes(&link, bytes);
        }
    }

    /// Writes a consumer's pending acknowledgements (those of this socket).
    pub fn flush_acks(&self, link: &Link, consumer: u32, route: &ConsumerRoute) {
        let tags = route
            .acks
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        let acks: Vec<(u32, u64)> = tags
            .into_iter()
            .filter(|t| t.generation == link.generation)
            .map(|t| (consumer, t.tag))
            .collect();
        if !acks.is_empty()
            && let Ok(bytes) = self.encode(&Frame::Ack {
                session: route.session,
                acks,
                receipt: None,
            })
        {
            let _ = self.send_bytes(link, bytes);
        }
    }

    /// The broker this connection is connected to now.
    pub fn broker(&self) -> String {
        self.link().broker.clone()
    }
}

/// A session's identity on its connection; closes the session when the last handle goes.
pub(super) struct SessionInner {
    pub id: u32,
    pub ack_mode: AckMode,
    pub shared: Arc<Shared>,
    /// Numbers the session's messages: ids are `<client id>:<session>:<n>`.
    pub sequence: AtomicU64,
    /// `<client id>:<session>:`, written once.
    id_prefix: String,
    /// Client and Individual modes: what the application has taken and not acknowledged,
    /// in the order it took it: (consumer, tag, message id).
    pub unacked: Mutex<Vec<(u32, Tag, String)>>,
    /// Transacted: sends held until `commit`.
    pub pending_sends: Mutex<Vec<TransactedSend>>,
    /// Failover connections: the session's sends and commits are numbered (its producer
    /// is `<connection instance>:<session>`); these are not yet answered.
    pub in_flight: Arc<Mutex<BTreeSet<u64>>>,
    pub next_seq: AtomicU64,
}

impl SessionInner {
    pub fn new(id: u32, ack_mode: AckMode, shared: Arc<Shared>) -> SessionInner {
        SessionInner {
            id,
            ack_mode,
            sequence: AtomicU64::new(1),
            id_prefix: format!("{}:{id}:", shared.client_id),
            shared,
            unacked: Mutex::new(Vec::new()),
            pending_sends: Mutex::new(Vec::new()),
            in_flight: Arc::default(),
            next_seq: AtomicU64::new(1),
        }
    }

    /// The id of the session's next message: `<client id>:<session>:<n>`.
    pub fn next_message_id(&self) -> String {
        numbered(
            &self.id_prefix,
            self.sequence.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Everything taken and not acknowledged; forgets it.
    pub fn take_unacked(&self) -> Vec<(u32, Tag)> {
        self.unacked
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
            .into_iter()
            .map(|(consumer, tag, _)| (consumer, tag))
            .collect()
    }

    /// The next send's origin, on a failover connection: numbered, and in flight until
    /// answered.
    pub fn origin(&self) -> Result<Option<(SendOrigin, u64)>, ClientError> {
        if self.shared.failover.is_none() {
            return Ok(None);
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .map_err(|_| ClientError::Protocol("a poisoned lock".into()))?;
        if in_flight.len() >= MAX_SENDS_PER_PRODUCER {
            return Err(ClientError::Refused(format!(
                "more than {MAX_SENDS_PER_PRODUCER} sends of this session wait for their \
                 confirmation: wait for some before sending more"
            )));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(seq);
        let confirmed_below = in_flight.first().copied().unwrap_or(seq);
        Ok(Some((
            SendOrigin {
                producer: format!("{}:{}", self.shared.instance, self.id),
                seq,
                confirmed_below,
            },
            seq,
        )))
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.shared.close_session(self.id);
    }
}
