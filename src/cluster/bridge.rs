//! [`Bridge`]: one TCP link per peer broker, carrying [`Envelope`]s between the actors of
//! the two. It owns the links (dial, accept, handshake, heartbeats, redial with back-off),
//! the replies its requests wait for, and the local consumers fed by destinations homed
//! elsewhere. The broker with the smaller name dials; the other accepts, so a pair of
//! brokers shares one link.
//!
//! Each link has a reader task and the same bounded writer as a client connection
//! ([`crate::net::writer`]): senders that find more than half of `link_buffer_bytes` waiting
//! wait for it to drain (back-pressure), and deliveries are bounded by consumers' credit.
//! A malformed envelope, a refused handshake or a silent peer closes that link only: its
//! waiting requests fail with `HomeDown`, its remote consumers are unsubscribed (their
//! unacknowledged messages go to other consumers), the proxies of the local consumers it
//! fed are told ([`LinkLost`]: they subscribe again), and the dialer tries again.
//!
//! Requests from a peer are served by [`HomeSide`](super::home::HomeSide), one per link,
//! in the order they came:
//! it finds the local destination through the registry and calls it as a local session
//! would, so the destination cannot tell a remote producer or consumer from a local one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::{Addr, Recipient};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio_util::codec::FramedRead;

use super::envelope::{
    BRIDGE_VERSION, Envelope, EnvelopeCodec, EnvelopeError, Heartbeat, Hello, Refused, Remotable,
    Reply, Routed,
};
use super::home::{HomeSide, post_on};
use super::members::MemberTable;
use crate::config::{ClusterSettings, Limits};
use crate::constants::{
    ACCEPT_BACKOFF, BRIDGE_HANDSHAKE_TIMEOUT, BRIDGE_LINK_WAIT, BRIDGE_REDIAL_FIRST,
    BRIDGE_REDIAL_MAX, ENVELOPE_SLACK,
};
use crate::destination::{DestinationError, DestinationRegistry, Dispatch};
use crate::net::writer::{FrameSink, WriterLimits};
use crate::stats::{MemberStat, MemberState};

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("handshake with {peer}: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("refused by {peer}: {reason}")]
    Refused { peer: String, reason: String },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// A local consumer of a destination homed elsewhere.
struct Sink {
    home: String,
    deliver: Recipient<Dispatch>,
    /// Told when the link to `home` goes (the consumer's proxy subscribes again).
    lost: Recipient<LinkLost>,
}

/// The link to the home of consumer `consumer`'s destination was lost.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct LinkLost {
    pub consumer: u64,
}

/// A request waiting for its reply.
struct Pending {
    /// The link it went out on (none yet while it waits for one): if that link closes,
    /// no reply will come.
    link: Option<u64>,
    reply: oneshot::Sender<Reply>,
}

/// A live link to a peer.
#[derive(Clone)]
struct Link {
    id: u64,
    generation: u64,
    sink: FrameSink,
}

struct Shared {
    me: Hello,
    heartbeat: Duration,
    buffer_bytes: usize,
    max_envelope: usize,
    writer: WriterLimits,
    members: MemberTable,
    links: Mutex<HashMap<String, Link>>,
    /// Woken whenever a link comes or goes.
    links_changed: Notify,
    dialing: Mutex<HashSet<String>>,
    /// Requests waiting for their reply, by id.
    pending: Mutex<HashMap<u64, Pending>>,
    /// Local consumers of destinations homed elsewhere, by consumer id.
    sinks: Mutex<HashMap<u64, Sink>>,
    next_request: AtomicU64,
    next_link: AtomicU64,
    registry: OnceLock<Addr<DestinationRegistry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sending an envelope: done, or a future that waits for the link (or for room on it)
/// and then sends.
pub enum Posted {
    Sent,
    Waiting(BoxFuture<'static, Result<(), DestinationError>>),
}

/// The bridge; cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

impl Bridge {
    pub fn new(
        node: &str,
        generation: u64,
        settings: &ClusterSettings,
        limits: &Limits,
        members: MemberTable,
    ) -> Bridge {
        let max_envelope = limits.max_frame_bytes as usize + ENVELOPE_SLACK;
        Bridge {
            shared: Arc::new(Shared {
                me: Hello {
                    cluster: settings.name.clone(),
                    node: node.to_string(),
                    generation,
                    version: BRIDGE_VERSION,
                },
                heartbeat: Duration::from_millis(settings.link_heartbeat_ms),
                buffer_bytes: settings.link_buffer_bytes,
                max_envelope,
                writer: WriterLimits {
                    max_pending_bytes: settings.link_buffer_bytes.max(max_envelope),
                    batch_bytes: limits.write_batch_bytes,
                    write_timeout: Duration::from_millis(limits.write_timeout_ms),
                    slow_consumer_frame: None,
                },
                members,
                links: Mutex::new(HashMap::new()),
                links_changed: Notify::new(),
                dialing: Mutex::new(HashSet::new()),
                pending: Mutex::new(HashMap::new()),
                sinks: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(1),
                next_link: AtomicU64::new(1),
                registry: OnceLock::new(),
            }),
        }
    }

    /// The registry that serves requests from peers (set once, at start).
    pub fn set_registry(&self, registry: Addr<DestinationRegistry>) {
        let _ = self.shared.registry.set(registry);
    }

    /// Accepts links from peers on `listener`, on the current arbiter.
    pub fn listen(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        actix::spawn(async move {
            loop {
                let (socket, from) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: do not spin.
                        tracing::warn!("bridge accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                actix::spawn(async move {
                    match handshake(&shared, socket, &from.to_string(), false).await {
                        Ok((reader, write, peer)) => run_link(shared, reader, write, peer).await,
                        Err(e) => tracing::warn!("bridge link from {from} not set up: {e}"),
                    }
                });
            }
        })
    }

    /// A member came up or went down: dial it (the smaller name dials), or close its link.
    pub fn member_changed(&self, member: MemberStat) {
        match member.state {
            MemberState::Up if self.shared.me.node < member.name => {
                if lock(&self.shared.dialing).insert(member.name.clone()) {
                    actix::spawn(dial_loop(self.shared.clone(), member.name));
                }
            }
            MemberState::Up => {}
            MemberState::Down => {
                let link = lock(&self.shared.links).get(&member.name).cloned();
                if let Some(link) = link
                    && link.generation == member.generation
                {
                    link.sink.close(None);
                }
            }
        }
    }

    /// A new request id and the receiver of its reply.
    pub fn expect_reply(&self) -> (u64, oneshot::Receiver<Reply>) {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(
            id,
            Pending {
                link: None,
                reply: tx,
            },
        );
        (id, rx)
    }

    /// Forgets a request that will not be sent.
    pub fn cancel(&self, request: u64) {
        lock(&self.shared.pending).remove(&request);
    }

    /// Sends `message` to the actor `to` on `home`: now if the link is up with room on it,
    /// otherwise returns the future that waits (for the link if `home` is up, for room)
    /// and then sends. Fails at once when `home` is down.
    pub fn post<M: Remotable>(
        &self,
        home: &str,
        to: &str,
        request: u64,
        message: &M,
    ) -> Result<Posted, DestinationError> {
        let envelope = Envelope::new(to, 0, request, message)
            .map_err(|e| DestinationError::Refused(e.to_string()))?;
        let link = lock(&self.shared.links).get(home).cloned();
        match link {
            Some(link) if link.sink.pending_bytes() <= self.shared.buffer_bytes / 2 => {
                send_on(&self.shared, &link, envelope, home)?;
                return Ok(Posted::Sent);
            }
            Some(_) => {}
            None if !self.shared.members.is_up(home) => return Err(home_down(to, home)),
            None => {}
        }
        let shared = self.shared.clone();
        let (home, to) = (home.to_string(), to.to_string());
        Ok(Posted::Waiting(Box::pin(async move {
            let link = wait_for_link(&shared, &home, &to).await?;
            link.sink.drained_to(shared.buffer_bytes / 4).await;
            send_on(&shared, &link, envelope, &home)
        })))
    }

    /// Sends `message` if a link to `home` is up, else drops it (settlements and credit:
    /// when the link is gone the home destination has already redelivered).
    pub fn post_now<M: Remotable>(&self, home: &str, to: &str, message: &M) {
        let link = lock(&self.shared.links).get(home).cloned();
        if let Some(link) = link
            && let Ok(envelope) = Envelope::new(to, 0, 0, message)
        {
            let _ = send_on(&self.shared, &link, envelope, home);
        }
    }

    /// Whether a link to `home` is up now.
    pub fn is_linked(&self, home: &str) -> bool {
        lock(&self.shared.links).contains_key(home)
    }

    /// Deliveries for consumer `consumer` from a destination on `home` go to `deliver`;
    /// `lost` hears if the link to `home` goes.
    pub fn add_sink(
        &self,
        consumer: u64,
        home: &str,
        deliver: Recipient<Dispatch>,
        lost: Recipient<LinkLost>,
    ) {
        let sink = Sink {
            home: home.to_string(),
            deliver,
            lost,
        };
        lock(&self.shared.sinks).insert(consumer, sink);
    }

    pub fn remove_sink(&self, consumer: u64) {
        lock(&self.shared.sinks).remove(&consumer);
    }
}

/// `destination` cannot be reached because `home` is down.
fn home_down(destination: &str, home: &str) -> DestinationError {
    DestinationError::HomeDown {
        destination: destination.to_string(),
        home: home.to_string(),
    }
}

/// Addresses `envelope` to the link's generation of its peer `home` and queues it.
fn send_on(
    shared: &Shared,
    link: &Link,
    mut envelope: Envelope,
    home: &str,
) -> Result<(), DestinationError> {
    envelope.generation = link.generation;
    let bytes = envelope
        .encode(shared.max_envelope)
        .map_err(|e| DestinationError::Refused(e.to_string()))?;
    if envelope.request != 0
        && let Some(pending) = lock(&shared.pending).get_mut(&envelope.request)
    {
        pending.link = Some(link.id);
    }
    link.sink
        .send(bytes)
        .map_err(|_| home_down(&envelope.to, home))
}

async fn wait_for_link(shared: &Shared, home: &str, to: &str) -> Result<Link, DestinationError> {
    let deadline = tokio::time::Instant::now() + BRIDGE_LINK_WAIT;
    loop {
        let changed = shared.links_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(link) = lock(&shared.links).get(home).cloned() {
            return Ok(link);
        }
        if !shared.members.is_up(home) {
            return Err(home_down(to, home));
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(home_down(to, home));
        }
    }
}

/// Dials `peer` while it is up and not linked, backing off between failures.
async fn dial_loop(shared: Arc<Shared>, peer: String) {
    let mut backoff = BRIDGE_REDIAL_FIRST;
    while let Some(member) = shared
        .members
        .get(&peer)
        .filter(|m| m.state == MemberState::Up)
    {
        let linked = {
            let changed = shared.links_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&shared.links).contains_key(&peer) {
                let _ = tokio::time::timeout(BRIDGE_REDIAL_MAX, changed).await;
                true
            } else {
                false
            }
        };
        if linked {
            continue;
        }
        let dialed = match TcpStream::connect(&member.bridge_addr).await {
            Ok(socket) => handshake(&shared, socket, &peer, true).await,
            Err(source) => Err(BridgeError::Connect {
                addr: member.bridge_addr.clone(),
                source,
            }),
        };
        match dialed {
            Ok((reader, write, hello)) => {
                backoff = BRIDGE_REDIAL_FIRST;
                run_link(shared.clone(), reader, write, hello).await;
            }
            Err(e) => {
                tracing::warn!("bridge link to {peer}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BRIDGE_REDIAL_MAX);
            }
        }
    }
    lock(&shared.dialing).remove(&peer);
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, EnvelopeCodec>;

/// Exchanges `Hello`s (the dialer speaks first) and checks the peer's.
async fn handshake(
    shared: &Shared,
    socket: TcpStream,
    peer: &str,
    dialer: bool,
) -> Result<(Reader, tokio::net::tcp::OwnedWriteHalf, Hello), BridgeError> {
    let _ = socket.set_nodelay(true);
    let (read, mut write) = socket.into_split();
    let mut reader = FramedRead::new(read, EnvelopeCodec::new(shared.max_envelope));
    let hello = Envelope::new("bridge", 0, 0, &shared.me)?.encode(shared.max_envelope)?;
    let failed = |reason: String| BridgeError::Handshake {
        peer: peer.to_string(),
        reason,
    };
    if dialer {
        write
            .write_all(&hello)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let first = match tokio::time::timeout(BRIDGE_HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(envelope))) => envelope,
        Ok(Some(Err(e))) => return Err(failed(e.to_string())),
        Ok(None) => return Err(failed("closed before its hello".into())),
        Err(_) => {
            return Err(failed(format!(
                "no hello within {BRIDGE_HANDSHAKE_TIMEOUT:?}"
            )));
        }
    };
    if first.tag == Refused::TAG {
        let refused: Refused = first.open()?;
        tracing::error!("bridge: {peer} refused this broker: {}", refused.reason);
        return Err(BridgeError::Refused {
            peer: peer.to_string(),
            reason: refused.reason,
        });
    }
    let theirs: Hello = first.open()?;
    let me = &shared.me;
    let refusal = if theirs.cluster != me.cluster {
        Some(format!(
            "broker `{}` belongs to cluster `{}`, this broker to `{}`",
            theirs.node, theirs.cluster, me.cluster
        ))
    } else if theirs.version != me.version {
        Some(format!(
            "broker `{}` speaks bridge protocol {}, this broker {}",
            theirs.node, theirs.version, me.version
        ))
    } else if theirs.node == me.node {
        Some(format!(
            "broker at {peer} has this broker's own name `{}`",
            me.node
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::error!("bridge: refused {peer}: {reason}");
        let refused = Envelope::new(
            "bridge",
            0,
            0,
            &Refused {
                reason: reason.clone(),
            },
        )?
        .encode(shared.max_envelope)?;
        let _ = write.write_all(&refused).await;
        return Err(BridgeError::Refused {
            peer: peer.to_string(),
            reason,
        });
    }
    if !dialer {
        write
            .write_all(&hello)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok((reader, write, theirs))
}

/// Runs one link until it closes, then cleans up after it.
async fn run_link(
    shared: Arc<Shared>,
    mut reader: Reader,
    write: tokio::net::tcp::OwnedWriteHalf,
    peer: Hello,
) {
    let (sink, writer) = crate::net::writer::writer(write, shared.writer.clone());
    let link = Link {
        id: shared.next_link.fetch_add(1, Ordering::Relaxed),
        generation: peer.generation,
        sink: sink.clone(),
    };
    if let Some(old) = lock(&shared.links).insert(peer.node.clone(), link.clone()) {
        old.sink.close(None);
    }
    shared.links_changed.notify_waiters();
    tracing::info!(
        peer = %peer.node,
        generation = peer.generation,
        "bridge link up"
    );
    let beat = {
        let (sink, max, every) = (sink.clone(), shared.max_envelope, shared.heartbeat);
        let generation = peer.generation;
        actix::spawn(async move {
            let mut interval = tokio::time::interval(every);
            while !sink.is_closed() {
                interval.tick().await;
                post_on(&sink, "bridge", generation, 0, &Heartbeat, max);
            }
        })
    };
    let mut home = HomeSide::new(
        shared.registry.get().cloned(),
        sink.clone(),
        peer.generation,
        shared.max_envelope,
    );
    let silence = shared.heartbeat * 4;
    tokio::pin!(writer);
    let reason = loop {
        tokio::select! {
            stopped = &mut writer => break format!("writer stopped: {stopped}"),
            next = tokio::time::timeout(silence, reader.next()) => match next {
                Ok(Some(Ok(envelope))) => {
                    if let Err(e) = route(&shared, &mut home, envelope).await {
                        break format!("malformed envelope: {e}");
                    }
                }
                Ok(Some(Err(e))) => break format!("malformed envelope: {e}"),
                Ok(None) => break "closed by the peer".to_string(),
                Err(_) => break format!("silent for {silence:?}"),
            },
        }
    };
    beat.abort();
    sink.close(None);
    {
        let mut links = lock(&shared.links);
        if links.get(&peer.node).is_some_and(|l| l.id == link.id) {
            links.remove(&peer.node);
        }
    }
    shared.links_changed.notify_waiters();
    tracing::warn!(peer = %peer.node, "bridge link down: {reason}");
    // Requests waiting on this peer fail (their senders are dropped); the proxies of its
    // consumers here are told (they subscribe again once it is back); what it consumed
    // from here goes back to its destinations.
    lock(&shared.pending).retain(|_, pending| pending.link != Some(link.id));
    let lost: Vec<_> = {
        let mut sinks = lock(&shared.sinks);
        let gone: Vec<u64> = sinks
            .iter()
            .filter(|(_, sink)| sink.home == peer.node)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .filter_map(|id| sinks.remove(&id).map(|sink| (id, sink)))
            .collect()
    };
    for (consumer, sink) in lost {
        sink.lost.do_send(LinkLost { consumer });
    }
    home.close();
}

/// Handles one envelope from a peer. An error closes the link.
async fn route(
    shared: &Shared,
    home: &mut HomeSide,
    envelope: Envelope,
) -> Result<(), EnvelopeError> {
    if envelope.generation != shared.me.generation {
        tracing::warn!(
            "bridge: dropped `{}` for generation {} (this broker is {})",
            envelope.tag,
            envelope.generation,
            shared.me.generation
        );
        return Ok(());
    }
    let Some(routed) = Routed::open(&envelope)? else {
        tracing::warn!(
            "bridge: ignored an envelope with the unknown tag `{}`",
            envelope.tag
        );
        return Ok(());
    };
    let (to, request) = (envelope.to.as_str(), envelope.request);
    match routed {
        Routed::Heartbeat => {}
        Routed::Reply(reply) => {
            if let Some(pending) = lock(&shared.pending).remove(&request) {
                let _ = pending.reply.send(reply);
            }
        }
        Routed::Deliver(deliver) => {
            let sink = lock(&shared.sinks)
                .get(&deliver.consumer)
                .map(|s| s.deliver.clone());
            // A consumer that just left: its unsettled deliveries go back when the home
            // destination handles its Unsubscribe, already on the way.
            if let Some(sink) = sink {
                sink.do_send(Dispatch::Deliver(deliver.deliveries));
            }
        }
        Routed::Evicted(evicted) => {
            if let Some(sink) = lock(&shared.sinks).remove(&evicted.consumer) {
                sink.deliver.do_send(Dispatch::Evicted(evicted.reason));
            }
        }
        Routed::Enqueue(enqueue) => home.enqueue(to, request, enqueue).await,
        Routed::Subscribe(subscribe) => home.subscribe(to, request, subscribe).await,
        Routed::Control(control) => home.control(control),
        Routed::Stat => home.stat(to, request).await,
    }
    Ok(())
}
