//! [`DestinationRegistry`]: name → [`DestinationRef`]. Creates queues and topics on first
//! use, on the arbiter their name hashes to; keeps temporary destinations with their owner
//! connection (and deletes them with it); expands composite destinations and configured
//! groups into their members; wires wildcard subscription points to the topics they match.
//! In a cluster, the one place that asks placement where a destination lives: one homed
//! on another broker is a remote reference (a `RemoteDestination` proxy), created on
//! first use like a local one; peers reach the local ones through [`ResolveHome`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message as ActixMessage, ResponseFuture};

use super::{
    ConnectionId, Control, DestinationError, DestinationRef, Homes, MemoryBudget, QueueActor,
    QueueSettings, TopicActor,
};
use crate::config::{Config, Limits, RedeliveryPolicy};
use crate::message::{Destination, DestinationKind};
use crate::runtime::ArbiterPool;
use crate::stats::{DestinationStat, MasterStat, MemberStat, StoreStat};
use crate::store::{Recovered, RecoveredMessage, SharedStore};

/// Where to send: the destinations a `Send` to `0` reaches (one, or every part of a
/// composite, or every member of a group). Queues and topics are created on first use.
#[derive(ActixMessage)]
#[rtype(result = "Result<Vec<DestinationRef>, DestinationError>")]
pub struct Resolve(pub Destination);

/// Where to consume from. A temporary destination only for the connection that owns it.
#[derive(ActixMessage)]
#[rtype(result = "Result<DestinationRef, DestinationError>")]
pub struct Lookup {
    pub destination: Destination,
    pub connection: ConnectionId,
}

/// Create a temporary destination owned by `owner`.
#[derive(ActixMessage)]
#[rtype(result = "Result<(), DestinationError>")]
pub struct CreateTemporary {
    pub destination: Destination,
    pub owner: ConnectionId,
}

/// The connection closed: delete its temporary destinations.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct DropTemporaries(pub ConnectionId);

/// Delete a durable subscription and the messages kept for it.
#[derive(ActixMessage)]
#[rtype(result = "Result<(), DestinationError>")]
pub struct DeleteDurable(pub Destination);

/// Counters of every destination, sorted by kind and name, of the store, and the members
/// of the cluster.
#[derive(ActixMessage)]
#[rtype(result = "Stats")]
pub struct CollectStats;

/// What `stat` shows.
#[derive(Default)]
pub struct Stats {
    pub destinations: Vec<DestinationStat>,
    pub store: Option<StoreStat>,
    /// Empty on a lone broker.
    pub members: Vec<MemberStat>,
    pub master: Option<MasterStat>,
}

/// A peer broker's request for a destination homed here (refused if it is not).
#[derive(ActixMessage)]
#[rtype(result = "Result<DestinationRef, DestinationError>")]
pub struct ResolveHome(pub Destination);

/// Cluster metadata: the member a destination lives on (`None` on a lone broker).
#[derive(ActixMessage)]
#[rtype(result = "Option<MemberStat>")]
pub struct Locate(pub Destination);

struct Entry {
    reference: DestinationRef,
    /// The connection that owns a temporary destination.
    owner: Option<ConnectionId>,
}

pub struct DestinationRegistry {
    destinations: HashMap<Destination, Entry>,
    /// Queues recovered from the journal, created once the registry has started.
    recovered: BTreeMap<String, Vec<RecoveredMessage>>,
    /// Durable subscriptions (kept in the journal's folder, so they outlive restarts).
    durables: BTreeSet<Destination>,
    policy: RedeliveryPolicy,
    memory: MemoryBudget,
    /// Persistent messages of queues go here (none with the memory store).
    store: Option<SharedStore>,
    groups: HashMap<String, Vec<Destination>>,
    arbiters: ArbiterPool,
    limits: Limits,
    /// Queues deliver persistent messages while they are written (`[store]`).
    concurrent_store_and_dispatch: bool,
    /// Where destinations homed elsewhere live, in a cluster.
    cluster: Option<Box<dyn Homes>>,
    /// This broker's mastership, shown by `stat` (master/slave only).
    master: Option<MasterStat>,
}

impl DestinationRegistry {
    /// A registry; with a journal, the queues it recovered are created at once.
    pub fn new(
        arbiters: ArbiterPool,
        config: &Config,
        store: SharedStore,
        recovered: Recovered,
        cluster: Option<Box<dyn Homes>>,
    ) -> DestinationRegistry {
        let groups = config
            .groups
            .iter()
            .map(|g| {
                let members = g.members.iter().filter_map(|m| m.parse().ok()).collect();
                (g.name.clone(), members)
            })
            .collect();
        let durables = recovered
            .durables
            .iter()
            .filter_map(|line| line.parse::<Destination>().ok())
            .filter(|d| d.durable_topic().is_some())
            .collect();
        let recovered = recovered.queues;
        // Queues store only in a store that survives a crash.
        let store = store.durable().then_some(store);
        DestinationRegistry {
            destinations: HashMap::new(),
            recovered,
            durables,
            policy: config.redelivery.clone(),
            memory: MemoryBudget::new(&config.limits),
            store,
            groups,
            arbiters,
            limits: config.limits.clone(),
            concurrent_store_and_dispatch: config.store.concurrent_store_and_dispatch,
            cluster,
            master: None,
        }
    }

    /// Shows this broker as a master/slave pair's master in `stat`.
    pub fn with_master(mut self, master: Option<MasterStat>) -> DestinationRegistry {
        self.master = master;
        self
    }

    /// Refuses names no destination may have: longer than the limit, or a queue with a
    /// wildcard segment (`*`, `>`: only topic subscriptions match patterns).
    fn check_name(&self, destination: &Destination) -> Result<(), DestinationError> {
        let max = self.limits.max_destination_name_bytes;
        if destination.name().len() > max {
            return Err(DestinationError::Refused(format!(
                "a destination name of {} bytes exceeds the limit of {max}",
                destination.name().len()
            )));
        }
        for part in destination.parts() {
            if part.is_queue() && part.name().split('.').any(|s| s == "*" || s == ">") {
                return Err(DestinationError::Refused(format!(
                    "{part} is not a queue name: `*` and `>` are wildcards, for topic subscriptions"
                )));
            }
        }
        Ok(())
    }

    /// The broker `destination` lives on, if that is another one.
    fn remote_home(&self, destination: &Destination) -> Option<String> {
        self.cluster
            .as_ref()
            .and_then(|cluster| cluster.remote_home(destination))
    }

    fn spawn_queue(
        &self,
        destination: &Destination,
        recovered: Vec<RecoveredMessage>,
        me: Addr<DestinationRegistry>,
    ) -> DestinationRef {
        let arbiter = self.arbiters.for_name(destination.name());
        let per_dispatch = self.limits.max_deliveries_per_frame;
        // Temporary queues live and die with a connection: never stored.
        let store = (!destination.is_temporary())
            .then(|| self.store.clone())
            .flatten();
        let d = destination.clone();
        let settings = QueueSettings {
            max_per_dispatch: per_dispatch,
            prefetch_bytes: self.limits.prefetch_bytes,
            store: store.clone(),
            policy: self.policy.clone(),
            registry: Some(me),
            memory: self.memory.clone(),
            send_timeout: std::time::Duration::from_millis(self.limits.send_timeout_ms),
            fail_when_full: self.limits.fail_when_full,
            concurrent_store_and_dispatch: self.concurrent_store_and_dispatch,
        };
        let addr =
            QueueActor::start_in_arbiter(arbiter, move |_| QueueActor::new(d, settings, recovered));
        DestinationRef::local(destination.clone(), addr).with_store(store)
    }

    /// Starts the actor for a queue or topic (of any flavour).
    fn spawn_destination(
        &self,
        destination: &Destination,
        me: Addr<DestinationRegistry>,
    ) -> DestinationRef {
        if destination.is_queue() {
            self.spawn_queue(destination, Vec::new(), me)
        } else {
            DestinationRef::local(destination.clone(), self.spawn_topic(destination))
        }
    }

    /// Starts a topic actor on the arbiter its name hashes to.
    fn spawn_topic(&self, destination: &Destination) -> Addr<TopicActor> {
        let arbiter = self.arbiters.for_name(destination.name());
        let d = destination.clone();
        let limits = self.limits.clone();
        TopicActor::start_in_arbiter(arbiter, move |_| TopicActor::new(d, &limits))
    }

    /// The queue or topic called `destination`, created if needed and wired to the
    /// wildcard subscription points it matches (or, for a wildcard, to the topics).
    fn queue_or_topic(
        &mut self,
        destination: &Destination,
        me: Addr<DestinationRegistry>,
    ) -> DestinationRef {
        if let Some(entry) = self.destinations.get(&destination.clone()) {
            return entry.reference.clone();
        }
        let created = match (self.remote_home(destination), &self.cluster) {
            // Subscribers here share one feed from the home topic.
            (Some(home), Some(cluster)) if destination.kind() == DestinationKind::Topic => {
                let local = self.spawn_topic(destination);
                let arbiter = self.arbiters.for_name(destination.name());
                let prefetch = self.limits.default_prefetch;
                cluster.mirror(destination, home, arbiter, local, prefetch)
            }
            (Some(home), Some(cluster)) => cluster.reference(
                destination,
                home,
                self.arbiters.for_name(destination.name()),
            ),
            _ => self.spawn_destination(destination, me),
        };
        if destination.kind() == DestinationKind::Topic && created.remote_home().is_none() {
            for (other, entry) in &self.destinations {
                // Wildcard points see the topics homed on this broker.
                if other.kind() != DestinationKind::Topic || entry.reference.remote_home().is_some()
                {
                    continue;
                }
                if destination.is_wildcard()
                    && !other.is_wildcard()
                    && destination.matches(other.name())
                {
                    entry
                        .reference
                        .control(Control::ForwardTo(created.enqueue_recipient()));
                } else if !destination.is_wildcard()
                    && other.is_wildcard()
                    && other.matches(destination.name())
                {
                    created.control(Control::ForwardTo(entry.reference.enqueue_recipient()));
                }
            }
        }
        self.destinations.insert(
            destination.clone(),
            Entry {
                reference: created.clone(),
                owner: None,
            },
        );
        created
    }

    /// The queue that keeps a durable subscription's messages, created (with `recovered`)
    /// and fed by its topic if it does not exist yet.
    fn durable_queue(
        &mut self,
        durable: &Destination,
        recovered: Vec<RecoveredMessage>,
        me: &Addr<DestinationRegistry>,
    ) -> Option<DestinationRef> {
        if let Some(entry) = self.destinations.get(durable) {
            return Some(entry.reference.clone());
        }
        let topic = durable.durable_topic()?;
        let queue = self.spawn_queue(durable, recovered, me.clone());
        let topic = self.queue_or_topic(&topic, me.clone());
        topic.control(Control::ForwardTo(queue.enqueue_recipient()));
        self.destinations.insert(
            durable.clone(),
            Entry {
                reference: queue.clone(),
                owner: None,
            },
        );
        Some(queue)
    }

    /// Writes the list of durable subscriptions beside the journal.
    fn save_durables(&self) {
        if let Some(journal) = &self.store {
            let list: String = self.durables.iter().map(|d| format!("{d}\n")).collect();
            journal.write_file(crate::store::DURABLES_FILE, list.into_bytes());
        }
    }

    /// A temporary destination if it exists.
    fn temporary(&self, destination: &Destination) -> Result<&Entry, DestinationError> {
        self.destinations
            .get(destination)
            .ok_or_else(|| DestinationError::Gone(destination.to_string()))
    }

    fn resolve_one(
        &mut self,
        destination: &Destination,
        me: &Addr<DestinationRegistry>,
    ) -> Result<DestinationRef, DestinationError> {
        match destination.kind() {
            DestinationKind::TempQueue | DestinationKind::TempTopic => {
                // A reply queue of a client of another broker: sent to through the bridge
                // (not kept here: it lives and dies with that client).
                if let (Some(home), Some(cluster)) = (self.remote_home(destination), &self.cluster)
                {
                    let arbiter = self.arbiters.for_name(destination.name());
                    return Ok(cluster.reference(destination, home, arbiter));
                }
                Ok(self.temporary(destination)?.reference.clone())
            }
            DestinationKind::Topic if destination.is_wildcard() => Err(DestinationError::Refused(
                format!("cannot send to the wildcard {destination}: name one topic"),
            )),
            DestinationKind::Queue | DestinationKind::Topic => {
                Ok(self.queue_or_topic(destination, me.clone()))
            }
            DestinationKind::Composite | DestinationKind::Group => Err(DestinationError::Refused(
                format!("{destination} cannot be nested"),
            )),
            DestinationKind::Durable => Err(DestinationError::Refused(format!(
                "send to the topic, not to the durable subscription {destination}"
            ))),
        }
    }
}

impl Actor for DestinationRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let mut recovered = std::mem::take(&mut self.recovered);
        for durable in self.durables.clone() {
            let messages = recovered.remove(durable.name()).unwrap_or_default();
            self.durable_queue(&durable, messages, &me);
        }
        for (name, messages) in recovered {
            let queue = Destination::queue(&name);
            let reference = self.spawn_queue(&queue, messages, me.clone());
            self.destinations.insert(
                queue,
                Entry {
                    reference,
                    owner: None,
                },
            );
        }
    }
}

impl Handler<Resolve> for DestinationRegistry {
    type Result = Result<Vec<DestinationRef>, DestinationError>;

    fn handle(&mut self, Resolve(destination): Resolve, ctx: &mut Context<Self>) -> Self::Result {
        self.check_name(&destination)?;
        let parts = match destination.kind() {
            DestinationKind::Composite => destination.parts(),
            DestinationKind::Group => {
                self.groups
                    .get(destination.name())
                    .cloned()
                    .ok_or_else(|| {
                        DestinationError::Refused(format!(
                            "no group named `{}` is configured",
                            destination.name()
                        ))
                    })?
            }
            _ => vec![destination],
        };
        // All parts are resolved before anything is sent: the unit is refused as a whole.
        let me = ctx.address();
        parts
            .iter()
            .map(|part| self.resolve_one(part, &me))
            .collect()
    }
}

impl Handler<Lookup> for DestinationRegistry {
    type Result = Result<DestinationRef, DestinationError>;

    fn handle(&mut self, msg: Lookup, ctx: &mut Context<Self>) -> Self::Result {
        let destination = &msg.destination;
        self.check_name(destination)?;
        let me = ctx.address();
        match destination.kind() {
            DestinationKind::TempQueue | DestinationKind::TempTopic => {
                let entry = self.temporary(destination)?;
                if entry.owner != Some(msg.connection) {
                    return Err(DestinationError::Refused(format!(
                        "only the connection that created {destination} may consume from it"
                    )));
                }
                Ok(entry.reference.clone())
            }
            DestinationKind::Queue | DestinationKind::Topic => {
                Ok(self.queue_or_topic(destination, me.clone()))
            }
            DestinationKind::Composite | DestinationKind::Group => Err(DestinationError::Refused(
                format!("cannot consume from {destination}: consume from its members"),
            )),
            DestinationKind::Durable => {
                if destination.durable_topic().is_none() {
                    return Err(DestinationError::Refused(format!(
                        "{destination} is not <client id>/<subscription>@<topic>"
                    )));
                }
                if let Some(home) = self.remote_home(destination) {
                    return Err(DestinationError::Refused(format!(
                        "durable subscriptions to the topic of {destination} are kept on its \
                         home broker {home}: connect there"
                    )));
                }
                if self.durables.insert(destination.clone()) {
                    self.save_durables();
                }
                self.durable_queue(destination, Vec::new(), &me)
                    .ok_or_else(|| DestinationError::Unavailable(destination.to_string()))
            }
        }
    }
}

impl Handler<CreateTemporary> for DestinationRegistry {
    type Result = Result<(), DestinationError>;

    fn handle(&mut self, msg: CreateTemporary, ctx: &mut Context<Self>) -> Self::Result {
        let destination = msg.destination;
        self.check_name(&destination)?;
        if !destination.is_temporary() {
            return Err(DestinationError::Refused(format!(
                "{destination} is not a temporary destination"
            )));
        }
        if self.destinations.contains_key(&destination) {
            return Err(DestinationError::Refused(format!(
                "{destination} already exists"
            )));
        }
        let reference = self.spawn_destination(&destination, ctx.address());
        self.destinations.insert(
            destination,
            Entry {
                reference,
                owner: Some(msg.owner),
            },
        );
        Ok(())
    }
}

impl Handler<DeleteDurable> for DestinationRegistry {
    type Result = Result<(), DestinationError>;

    fn handle(
        &mut self,
        DeleteDurable(durable): DeleteDurable,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        if !self.durables.remove(&durable) {
            return Err(DestinationError::Refused(format!(
                "no durable subscription {durable}"
            )));
        }
        self.save_durables();
        if let Some(entry) = self.destinations.remove(&durable) {
            entry.reference.control(Control::Delete);
        }
        Ok(())
    }
}

impl Handler<DropTemporaries> for DestinationRegistry {
    type Result = ();

    fn handle(&mut self, DropTemporaries(owner): DropTemporaries, _ctx: &mut Context<Self>) {
        self.destinations.retain(|destination, entry| {
            if entry.owner != Some(owner) {
                return true;
            }
            tracing::debug!(%destination, "temporary destination deleted with its connection");
            entry.reference.control(Control::Delete);
            false
        });
    }
}

impl Handler<CollectStats> for DestinationRegistry {
    type Result = ResponseFuture<Stats>;

    fn handle(&mut self, _msg: CollectStats, _ctx: &mut Context<Self>) -> Self::Result {
        let me = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.me().to_string());
        let requests: Vec<_> = self
            .destinations
            .values()
            .map(|entry| {
                let home = entry
                    .reference
                    .remote_home()
                    .map(str::to_string)
                    .or(me.clone());
                let stat = entry.reference.stat();
                async move {
                    stat.await.ok().map(|mut stat| {
                        stat.home = home;
                        stat
                    })
                }
            })
            .collect();
        let store = self.store.as_ref().and_then(|s| s.usage());
        let members = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.members())
            .unwrap_or_default();
        let master = self.master.clone();
        Box::pin(async move {
            let mut stats: Vec<DestinationStat> = futures::future::join_all(requests)
                .await
                .into_iter()
                .flatten()
                .collect();
            stats.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
            let store = store.map(|mut store| {
                // Paged messages of this broker's own queues.
                store.paged = stats.iter().filter(|s| s.home == me).map(|s| s.paged).sum();
                store
            });
            Stats {
                destinations: stats,
                store,
                members,
                master,
            }
        })
    }
}

impl Handler<ResolveHome> for DestinationRegistry {
    type Result = Result<DestinationRef, DestinationError>;

    fn handle(
        &mut self,
        ResolveHome(destination): ResolveHome,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.check_name(&destination)?;
        if let Some(home) = self.remote_home(&destination) {
            let me = self
                .cluster
                .as_ref()
                .map(|c| c.me().to_string())
                .unwrap_or_default();
            return Err(DestinationError::Refused(format!(
                "{destination} lives on {home}, not on {me}: the brokers' placement settings differ"
            )));
        }
        match destination.kind() {
            DestinationKind::Queue | DestinationKind::Topic if !destination.is_wildcard() => {
                Ok(self.queue_or_topic(&destination, ctx.address()))
            }
            // Replies to a client of this broker (only its owner consumes from it).
            DestinationKind::TempQueue | DestinationKind::TempTopic => {
                Ok(self.temporary(&destination)?.reference.clone())
            }
            _ => Err(DestinationError::Refused(format!(
                "{destination} cannot be used through another broker"
            ))),
        }
    }
}

impl Handler<Locate> for DestinationRegistry {
    type Result = Option<MemberStat>;

    fn handle(&mut self, Locate(destination): Locate, _ctx: &mut Context<Self>) -> Self::Result {
        self.cluster.as_ref()?.locate(&destination)
    }
}
