//! Destinations: queues and topics, the registry that creates them on first use, and the
//! typed messages every destination understands.
//!
//! Sessions and consumers reach a destination only through a [`DestinationRef`]: a set of
//! typed recipients, pointing at a local [`QueueActor`] or [`TopicActor`], or, for a
//! destination homed on another broker, at the cluster's proxy for it (which [`Homes`]
//! provides), so session and consumer code never learns which.

mod backlog;
mod homes;
mod memory;
mod queue;
mod registry;
mod topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::{Actor, Handler, Message as ActixMessage, Recipient};

pub use homes::Homes;
pub use memory::{MemoryBudget, footprint};
pub use queue::{DLQ_ORIGINAL_DESTINATION, DLQ_REASON, QueueActor, QueueSettings};
pub use registry::{
    CollectStats, CreateTemporary, DeleteDurable, DestinationRegistry, DropTemporaries, Locate,
    Lookup, Resolve, ResolveHome, Stats,
};
pub use topic::TopicActor;

use crate::message::{Destination, Message};
use crate::protocol::{ErrorCode, Refusal, WireDelivery};
use crate::stats::DestinationStat;
use crate::store::SharedStore;
use crate::store::record::SendMark;

/// Why a destination could not do what was asked. (It crosses the cluster bridge.)
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DestinationError {
    #[error("destination {0} is not available")]
    Unavailable(String),
    /// In a cluster: the broker the destination lives on cannot be reached.
    #[error("destination {destination} is unavailable: its home broker {home} is down")]
    HomeDown { destination: String, home: String },
    #[error("destination {0} no longer exists")]
    Gone(String),
    #[error("{0}")]
    Refused(String),
}

impl DestinationError {
    /// The error as it travels in a `Receipt`.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            DestinationError::Unavailable(_) | DestinationError::HomeDown { .. } => {
                ErrorCode::DestinationUnavailable
            }
            DestinationError::Gone(_) => ErrorCode::DestinationGone,
            DestinationError::Refused(_) => ErrorCode::Refused,
        };
        let home = match self {
            DestinationError::HomeDown { home, .. } => Some(home.clone()),
            _ => None,
        };
        Refusal {
            code,
            message: self.to_string(),
            home,
        }
    }
}

/// A connection's identity, unique within the broker process (owner of temporaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    pub fn next() -> ConnectionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A consumer's identity, unique within the broker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerId(pub u64);

impl ConsumerId {
    pub fn next() -> ConsumerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConsumerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Put messages on the destination. Answered once they are accepted.
#[derive(ActixMessage)]
#[rtype(result = "Result<(), DestinationError>")]
pub struct Enqueue {
    pub messages: Vec<Arc<Message>>,
    /// Journal ids of messages a transaction has already stored (one per message; `None`
    /// for one not stored). Empty: the destination stores what it must itself.
    pub stored: Vec<Option<u64>>,
    /// The producer's mark of this send (failover clients): a queue that stores the
    /// messages stores it in the same record. Other destinations ignore it.
    pub mark: Option<SendMark>,
}

/// Start delivering to `sink`, `prefetch` deliveries ahead of acknowledgements
/// (0: only what `ConsumerControl::Grant` allows). Answered once the subscription is
/// active.
#[derive(ActixMessage)]
#[rtype(result = "Result<(), DestinationError>")]
pub struct Subscribe {
    pub consumer: ConsumerId,
    pub prefetch: u32,
    pub sink: Recipient<Dispatch>,
}

/// Fire-and-forget requests to a destination.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub enum Control {
    /// Topics: pass every published message on to this destination too (a wildcard
    /// subscription point that matches this topic's name).
    ForwardTo(Recipient<Enqueue>),
    /// Stop the destination (a temporary one whose connection closed).
    Delete,
    /// What one of its consumers says about its deliveries.
    Consumer(ConsumerId, ConsumerControl),
}

impl Control {
    /// The consumer is gone.
    pub fn unsubscribe(consumer: ConsumerId) -> Control {
        Control::Consumer(consumer, ConsumerControl::Unsubscribe)
    }
}

/// What a consumer tells its destination about its deliveries: the same type from a
/// client's session, from a consumer's actor, and across the cluster bridge.
#[derive(ActixMessage, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub enum ConsumerControl {
    /// These deliveries are done with; each returns one credit.
    Settle(Vec<u64>),
    /// The consumer gives these deliveries back (a NACK): a queue delivers them again,
    /// marked redelivered; a topic drops them. Each returns one credit.
    Release(Vec<u64>),
    /// These deliveries never reached the client (the consumer is closing with them still
    /// waiting for room on its socket): a queue takes them back as if never delivered, so
    /// they count toward neither `delivery_count` nor the redelivery limit, and sends that
    /// consumer nothing more.
    Unsent(Vec<u64>),
    /// Pull mode: allow this many more deliveries.
    Grant(u32),
    /// The consumer is gone: what it had not acknowledged is delivered again to others.
    Unsubscribe,
}

/// Ask for the destination's counters.
#[derive(ActixMessage)]
#[rtype(result = "DestinationStat")]
pub struct GetStat;

/// One message on its way to a consumer, here or (in a `consumer.deliver` envelope) on
/// another broker.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub tag: u64,
    pub redelivered: bool,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    pub message: Arc<Message>,
}

impl Delivery {
    /// The delivery as the native protocol carries it, for the client's consumer `consumer`.
    pub fn into_wire(self, consumer: u32) -> WireDelivery {
        WireDelivery {
            consumer,
            tag: self.tag,
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
            message: self.message,
        }
    }
}

/// What a destination sends to a consumer.
#[derive(ActixMessage, Debug)]
#[rtype(result = "()")]
pub enum Dispatch {
    Deliver(Vec<Delivery>),
    /// The destination dropped this consumer; the reason goes to the client.
    Evicted(String),
}

/// An actor that answers everything a destination is sent: a queue, a topic, or a
/// stand-in for one homed on another broker.
pub trait DestinationActor:
    Actor<Context = actix::Context<Self>>
    + Handler<Enqueue>
    + Handler<Subscribe>
    + Handler<Control>
    + Handler<GetStat>
{
}

impl<A> DestinationActor for A where
    A: Actor<Context = actix::Context<A>>
        + Handler<Enqueue>
        + Handler<Subscribe>
        + Handler<Control>
        + Handler<GetStat>
{
}

/// A location-transparent reference to one destination.
#[derive(Clone)]
pub struct DestinationRef {
    destination: Destination,
    enqueue: Recipient<Enqueue>,
    subscribe: Recipient<Subscribe>,
    control: Recipient<Control>,
    stat: Recipient<GetStat>,
    store: Option<SharedStore>,
    /// The broker it lives on, when that is another one.
    home: Option<String>,
}

impl DestinationRef {
    /// A reference to an actor running in this process.
    pub fn local<A: DestinationActor>(
        destination: Destination,
        addr: actix::Addr<A>,
    ) -> DestinationRef {
        DestinationRef {
            destination,
            enqueue: addr.clone().recipient(),
            subscribe: addr.clone().recipient(),
            control: addr.clone().recipient(),
            stat: addr.recipient(),
            store: None,
            home: None,
        }
    }

    /// A reference to a destination homed on the broker `home`, through `proxy`.
    pub fn remote<A: DestinationActor>(
        destination: Destination,
        home: String,
        proxy: actix::Addr<A>,
    ) -> DestinationRef {
        DestinationRef {
            home: Some(home),
            ..DestinationRef::local(destination, proxy)
        }
    }

    /// The broker this destination lives on, when that is another one.
    pub fn remote_home(&self) -> Option<&str> {
        self.home.as_deref()
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// What a closed mailbox means: a temporary destination is gone for good, any other
    /// is unavailable for now.
    fn unavailable(&self) -> DestinationError {
        if let Some(home) = &self.home {
            DestinationError::HomeDown {
                destination: self.destination.to_string(),
                home: home.clone(),
            }
        } else if self.destination.is_temporary() {
            DestinationError::Gone(self.destination.to_string())
        } else {
            DestinationError::Unavailable(self.destination.to_string())
        }
    }

    /// Puts messages on the destination; resolves once they are accepted.
    pub fn enqueue(
        &self,
        messages: Vec<Arc<Message>>,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        self.enqueue_marked(messages, None)
    }

    /// Puts messages on the destination, storing the producer's mark with them.
    pub fn enqueue_marked(
        &self,
        messages: Vec<Arc<Message>>,
        mark: Option<SendMark>,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        let request = self.enqueue.send(Enqueue {
            messages,
            stored: Vec::new(),
            mark,
        });
        let unavailable = self.unavailable();
        async move { request.await.unwrap_or(Err(unavailable)) }
    }

    /// Puts messages already in the journal (a committed transaction's) on the destination.
    pub fn enqueue_stored(
        &self,
        messages: Vec<Arc<Message>>,
        stored: Vec<Option<u64>>,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        let request = self.enqueue.send(Enqueue {
            messages,
            stored,
            mark: None,
        });
        let unavailable = self.unavailable();
        async move { request.await.unwrap_or(Err(unavailable)) }
    }

    /// The journal this destination stores persistent messages in, if any.
    pub fn store(&self) -> Option<&SharedStore> {
        self.store.as_ref()
    }

    /// This reference, noting the journal its destination stores in.
    pub fn with_store(mut self, store: Option<SharedStore>) -> DestinationRef {
        self.store = store;
        self
    }

    /// Registers a consumer; resolves once the subscription is active.
    pub fn subscribe(
        &self,
        subscribe: Subscribe,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        let request = self.subscribe.send(subscribe);
        let unavailable = self.unavailable();
        async move { request.await.unwrap_or(Err(unavailable)) }
    }

    pub fn control(&self, control: Control) {
        self.control.do_send(control);
    }

    /// Where to send messages for this destination, for forwarding.
    pub fn enqueue_recipient(&self) -> Recipient<Enqueue> {
        self.enqueue.clone()
    }

    pub fn stat(
        &self,
    ) -> impl Future<Output = Result<DestinationStat, DestinationError>> + 'static {
        let request = self.stat.send(GetStat);
        let unavailable = self.unavailable();
        async move { request.await.map_err(|_| unavailable) }
    }
}
