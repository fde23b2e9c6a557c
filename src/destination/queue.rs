//! [`QueueActor`]: one queue. Each message goes to exactly one consumer; messages from one
//! producer keep their order; consumers receive only while they have credit; what a consumer
//! leaves unacknowledged goes back to the front of the queue, marked redelivered. Within the
//! backlog, higher priority goes first ([`Backlog`]). A consumer's credit is its prefetch
//! in messages and `prefetch_bytes` in bytes: whichever runs out first stops deliveries
//! to it (one message always goes to a consumer with nothing in flight).
//!
//! With a journal, a batch holding persistent messages is appended before it is confirmed
//! or delivered: batches wait in `unconfirmed`, in arrival order, and move to the backlog
//! once they and every batch before them are durable (so a non-persistent message never
//! overtakes a persistent one sent before it). Acknowledging a persistent message appends a
//! removal, without waiting for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;

use super::{
    ConsumerControl, ConsumerId, Control, Delivery, DestinationError, Dispatch, Enqueue, GetStat,
    Subscribe,
};
use std::time::Duration;

use super::backlog::{Backlog, Prioritized};
use super::memory::{MemoryBudget, footprint};
use super::{DestinationRegistry, Resolve};
use crate::config::RedeliveryPolicy;
use crate::constants::{BLOCKED_CHECK_MAX, BLOCKED_CHECK_MIN, PAGE_IN_BATCH, PAGE_IN_RETRY};
use crate::message::{Destination, Message, now_millis};
use crate::stats::DestinationStat;
use crate::store::record::Record;
use crate::store::{Location, RecoveredMessage, SharedStore};

/// Header of a dead letter: the queue it came from.
pub const DLQ_ORIGINAL_DESTINATION: &str = "actormq.dlq.original-destination";
/// Header of a dead letter: why it was dead-lettered.
pub const DLQ_REASON: &str = "actormq.dlq.reason";

/// A message waiting in the queue or delivered and not yet acknowledged.
#[derive(Clone)]
struct Queued {
    body: Body,
    /// Times it has been delivered.
    deliveries: u32,
    /// Its journal id, if it is stored.
    store_id: Option<u64>,
}

/// A queued message in memory, or (persistent, in a long backlog) only in the journal.
#[derive(Clone)]
enum Body {
    Loaded(Arc<Message>),
    Paged { at: Location, priority: u8 },
}

impl Queued {
    fn loaded(message: Arc<Message>, store_id: Option<u64>) -> Queued {
        Queued {
            body: Body::Loaded(message),
            deliveries: 0,
            store_id,
        }
    }

    /// The message; only a backlog entry can be paged out, and it is paged in before it is
    /// delivered, expired or dead-lettered.
    fn message(&self) -> Option<&Arc<Message>> {
        match &self.body {
            Body::Loaded(message) => Some(message),
            Body::Paged { .. } => None,
        }
    }

    /// Bytes it holds in memory.
    fn held_bytes(&self) -> usize {
        self.message().map(|m| footprint(m)).unwrap_or(0)
    }
}

impl Prioritized for Queued {
    fn priority(&self) -> u8 {
        match &self.body {
            Body::Loaded(message) => message.priority,
            Body::Paged { priority, .. } => *priority,
        }
    }
}

/// Messages read back from the journal, for the backlog entries with these ids.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct PagedIn {
    ids: Vec<u64>,
    result: Result<Vec<Arc<Message>>, crate::store::StoreError>,
}

/// A send waiting for the queue to have room.
struct Blocked {
    enqueue: Enqueue,
    bytes: usize,
    since: std::time::Instant,
    reply: tokio::sync::oneshot::Sender<Result<(), DestinationError>>,
}

/// Messages of one `Enqueue`, waiting for the journal.
struct Unconfirmed {
    seq: u64,
    messages: Vec<Queued>,
    durable: bool,
    /// Where the journal put each stored message of the batch, in order.
    locations: Vec<Location>,
}

struct QueueConsumer {
    id: ConsumerId,
    sink: Recipient<Dispatch>,
    /// 0 = pull mode: credit comes only from grants.
    prefetch: u32,
    credit: u32,
    in_flight: HashMap<u64, Queued>,
    /// Bytes of `in_flight`, against the queue's `prefetch_bytes`.
    in_flight_bytes: usize,
}

impl QueueConsumer {
    /// Whether it may be sent more, by messages and by bytes.
    fn ready(&self, prefetch_bytes: usize) -> bool {
        self.credit > 0 && self.in_flight_bytes < prefetch_bytes
    }

    /// Takes `tag` out of flight.
    fn land(&mut self, tag: &u64) -> Option<Queued> {
        let queued = self.in_flight.remove(tag)?;
        self.in_flight_bytes -= queued.held_bytes().min(self.in_flight_bytes);
        Some(queued)
    }
}

/// One queue and its competing consumers.
pub struct QueueActor {
    destination: Destination,
    store: Option<SharedStore>,
    policy: RedeliveryPolicy,
    /// Where dead-letter queues are found.
    registry: Option<Addr<DestinationRegistry>>,
    /// Given-back messages waiting out their redelivery delay.
    delayed: usize,
    /// Bytes of messages this queue holds (waiting, being stored, delivered, delayed).
    held: usize,
    memory: MemoryBudget,
    send_timeout: Duration,
    fail_when_full: bool,
    /// Sends waiting for room, oldest first.
    blocked: VecDeque<Blocked>,
    /// Backlog entries on disk only.
    paged: usize,
    /// A page-in is under way.
    paging_in: bool,
    me: Option<Addr<QueueActor>>,
    unconfirmed: VecDeque<Unconfirmed>,
    next_batch: u64,
    max_per_dispatch: usize,
    prefetch_bytes: usize,
    backlog: Backlog<Queued>,
    consumers: Vec<QueueConsumer>,
    /// Where the next round-robin pass starts.
    cursor: usize,
    next_tag: u64,
    enqueued: u64,
    dequeued: u64,
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(queue = %self.destination, "queue created");
        self.me = Some(ctx.address());
        // Waiting sends: fail the ones past the send timeout, admit any that now fit
        // (another queue may have freed broker-wide memory).
        let tick = (self.send_timeout / 4).clamp(BLOCKED_CHECK_MIN, BLOCKED_CHECK_MAX);
        ctx.run_interval(tick, |act, ctx| {
            act.expire_blocked();
            act.admit_blocked(ctx);
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.memory.give_back(self.held);
        for blocked in self.blocked.drain(..) {
            let _ = blocked
                .reply
                .send(Err(DestinationError::Gone(self.destination.to_string())));
        }
    }
}

/// What a queue is given when it is created.
pub struct QueueSettings {
    pub max_per_dispatch: usize,
    /// Bytes in flight to one consumer before it is sent no more.
    pub prefetch_bytes: usize,
    /// Its journal (none: memory only).
    pub store: Option<SharedStore>,
    pub policy: RedeliveryPolicy,
    /// Where dead-letter queues are found.
    pub registry: Option<Addr<DestinationRegistry>>,
    pub memory: MemoryBudget,
    pub send_timeout: Duration,
    pub fail_when_full: bool,
}

impl QueueActor {
    /// A queue; with a journal, `recovered` are its messages from before a restart.
    pub fn new(
        destination: Destination,
        settings: QueueSettings,
        recovered: Vec<RecoveredMessage>,
    ) -> QueueActor {
        let QueueSettings {
            max_per_dispatch,
            prefetch_bytes,
            store,
            policy,
            registry,
            memory,
            send_timeout,
            fail_when_full,
        } = settings;
        // Recovered messages start on disk only: read back as consumers reach them.
        let held = 0;
        let paged = recovered.len();
        let backlog: Backlog<Queued> = recovered
            .into_iter()
            .map(|m| Queued {
                body: Body::Paged {
                    at: m.at,
                    priority: m.priority,
                },
                deliveries: 0,
                store_id: Some(m.id),
            })
            .collect();
        QueueActor {
            enqueued: backlog.len() as u64,
            destination,
            store,
            policy,
            registry,
            delayed: 0,
            held,
            memory,
            send_timeout,
            fail_when_full,
            blocked: VecDeque::new(),
            paged,
            paging_in: false,
            me: None,
            unconfirmed: VecDeque::new(),
            next_batch: 0,
            max_per_dispatch: max_per_dispatch.max(1),
            prefetch_bytes: prefetch_bytes.max(1),
            backlog,
            consumers: Vec::new(),
            cursor: 0,
            next_tag: 1,
            dequeued: 0,
        }
    }

    /// Hands waiting messages to consumers with credit, sharing the backlog evenly between
    /// them in batches; expired messages found on the way leave the queue.
    fn dispatch(&mut self) {
        let mut expired = Vec::new();
        let mut page_in = false;
        self.hand_out(&mut expired, &mut page_in);
        for queued in expired {
            self.expire(queued);
        }
        if page_in {
            self.page_in();
        }
    }

    fn hand_out(&mut self, expired: &mut Vec<Queued>, page_in: &mut bool) {
        let now = now_millis();
        let prefetch_bytes = self.prefetch_bytes;
        while !self.backlog.is_empty() {
            let ready = self
                .consumers
                .iter()
                .filter(|c| c.ready(prefetch_bytes))
                .count();
            if ready == 0 {
                return;
            }
            let share = self.backlog.len().div_ceil(ready);
            let count = self.consumers.len();
            for step in 0..count {
                let index = (self.cursor + step) % count;
                let consumer = &mut self.consumers[index];
                let take = share
                    .min(consumer.credit as usize)
                    .min(self.max_per_dispatch);
                let mut batch = Vec::with_capacity(take.min(self.backlog.len()));
                while batch.len() < take && consumer.in_flight_bytes < prefetch_bytes {
                    let Some(queued) = self.backlog.pop_front() else {
                        break;
                    };
                    let Body::Loaded(message) = &queued.body else {
                        // On disk only: read it back first; dispatch goes on after.
                        self.backlog.push_front(queued);
                        *page_in = true;
                        break;
                    };
                    if message.is_expired_at(now) {
                        expired.push(queued);
                        continue;
                    }
                    let message = message.clone();
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    let mut queued = queued;
                    queued.deliveries += 1;
                    batch.push(Delivery {
                        tag,
                        redelivered: queued.deliveries > 1,
                        delivery_count: queued.deliveries,
                        message,
                    });
                    consumer.in_flight_bytes += queued.held_bytes();
                    consumer.in_flight.insert(tag, queued);
                }
                if !batch.is_empty() {
                    consumer.credit -= batch.len() as u32;
                    consumer.sink.do_send(Dispatch::Deliver(batch));
                }
                if self.backlog.is_empty() || *page_in {
                    break;
                }
            }
            self.cursor = (self.cursor + 1) % count;
            if *page_in {
                return;
            }
        }
    }

    fn remove_consumer(&mut self, id: ConsumerId, ctx: &mut Context<Self>) {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return;
        };
        let consumer = self.consumers.remove(index);
        let mut returned: Vec<(u64, Queued)> = consumer.in_flight.into_iter().collect();
        returned.sort_unstable_by_key(|(tag, _)| *tag);
        if !returned.is_empty() {
            tracing::debug!(queue = %self.destination, count = returned.len(), "redelivering unacknowledged messages");
        }
        let reason = "its consumer went away without acknowledging it";
        for (_, queued) in returned.into_iter().rev() {
            self.redeliver(queued, Duration::ZERO, reason, ctx);
        }
        if self.cursor >= self.consumers.len() {
            self.cursor = 0;
        }
        self.dispatch();
    }

    /// A delivered message comes back: to the front of the backlog after `delay`, or, past
    /// the maximum redeliveries, to the dead-letter queue.
    fn redeliver(&mut self, queued: Queued, delay: Duration, why: &str, ctx: &mut Context<Self>) {
        let is_dlq = self.destination.name().starts_with(&self.policy.dlq_prefix);
        if queued.deliveries > self.policy.max_redeliveries && !is_dlq {
            let reason = format!(
                "delivered {} times without acknowledgement (the last time {why}); maximum redeliveries {}",
                queued.deliveries, self.policy.max_redeliveries
            );
            return self.dead_letter(queued, reason);
        }
        if delay.is_zero() {
            self.backlog.push_front(queued);
            return;
        }
        self.delayed += 1;
        ctx.run_later(delay, move |act, _ctx| {
            act.delayed -= 1;
            act.backlog.push_front(queued);
            act.dispatch();
        });
    }

    /// An expired message leaves the queue, never delivered: to the dead-letter queue if
    /// the policy says so, else dropped. Counted as dequeued so depth stays
    /// enqueued - dequeued.
    fn expire(&mut self, queued: Queued) {
        let is_dlq = self.destination.name().starts_with(&self.policy.dlq_prefix);
        if self.policy.expired_to_dlq && !is_dlq {
            return self.dead_letter(queued, "expired before it was delivered".into());
        }
        self.release_memory(queued.held_bytes());
        self.dequeued += 1;
        if let (Some(store), Some(id)) = (&self.store, queued.store_id) {
            store.append_lazy(vec![Record::Remove {
                queue: self.destination.name().to_string(),
                id,
            }]);
        }
    }

    /// Moves a message to this queue's dead-letter queue, naming where it came from and
    /// why; it leaves this queue's journal only once the dead-letter queue has it.
    fn dead_letter(&mut self, queued: Queued, reason: String) {
        self.dequeued += 1;
        self.release_memory(queued.held_bytes());
        let Some(message) = queued.message().cloned() else {
            tracing::error!(queue = %self.destination, "a paged message cannot be dead-lettered");
            return;
        };
        let dlq = Destination::queue(format!(
            "{}{}",
            self.policy.dlq_prefix,
            self.destination.name()
        ));
        tracing::warn!(queue = %self.destination, message = %message.id, %dlq, "dead-lettered: {reason}");
        let Some(registry) = self.registry.clone() else {
            return;
        };
        let mut copy = (*message).clone();
        copy.headers.insert(
            DLQ_ORIGINAL_DESTINATION.into(),
            self.destination.to_string(),
        );
        copy.headers.insert(DLQ_REASON.into(), reason);
        // A dead letter stays until someone looks at it (or it would expire again there).
        copy.expiration = 0;
        let store = self.store.clone();
        let queue = self.destination.name().to_string();
        let moved = async move {
            let targets = registry
                .send(Resolve(dlq.clone()))
                .await
                .map_err(|e| DestinationError::Unavailable(e.to_string()))??;
            for target in targets {
                target.enqueue(vec![Arc::new(copy.clone())]).await?;
            }
            if let (Some(store), Some(id)) = (store, queued.store_id) {
                store.append_lazy(vec![Record::Remove {
                    queue: queue.clone(),
                    id,
                }]);
            }
            Ok::<_, DestinationError>(())
        };
        // A task of this arbiter: the move finishes even if this queue is busy or stops.
        actix::spawn(async move {
            if let Err(e) = moved.await {
                tracing::error!("cannot dead-letter a message: {e}");
            }
        });
    }
}

impl QueueActor {
    /// Journal ids of everything waiting, or still being stored.
    fn backlog_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.backlog
            .iter()
            .chain(self.unconfirmed.iter().flat_map(|b| b.messages.iter()))
            .filter_map(|q| q.store_id)
    }

    /// Moves every batch at the front of `unconfirmed` that is durable to the backlog.
    fn release_durable(&mut self) {
        while self.unconfirmed.front().is_some_and(|b| b.durable) {
            let Some(batch) = self.unconfirmed.pop_front() else {
                break;
            };
            if !self.paging() {
                self.backlog.extend(batch.messages);
                continue;
            }
            // A long backlog: stored messages wait on disk only.
            let mut locations = batch.locations.into_iter();
            for mut queued in batch.messages {
                if queued.store_id.is_some()
                    && let (Some(at), Some(message)) = (locations.next(), queued.message())
                {
                    let bytes = footprint(message);
                    queued.body = Body::Paged {
                        at,
                        priority: message.priority,
                    };
                    self.release_memory(bytes);
                    self.paged += 1;
                }
                self.backlog.push_back(queued);
            }
        }
        self.dispatch();
    }

    /// Whether new stored messages should be paged out: the queue or the broker holds more
    /// than half its memory limit.
    fn paging(&self) -> bool {
        self.store.is_some() && self.memory.past_half(self.held)
    }

    /// Reads the first paged messages of the backlog back from the journal.
    fn page_in(&mut self) {
        if self.paging_in {
            return;
        }
        let (Some(store), Some(me)) = (self.store.clone(), self.me.clone()) else {
            return;
        };
        let wanted: Vec<(u64, Location)> = self
            .backlog
            .iter()
            .take(PAGE_IN_BATCH)
            .filter_map(|q| match (&q.body, q.store_id) {
                (Body::Paged { at, .. }, Some(id)) => Some((id, *at)),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.paging_in = true;
        let ids: Vec<u64> = wanted.iter().map(|(id, _)| *id).collect();
        let read = store.read(wanted);
        actix::spawn(async move {
            let result = read.await;
            me.do_send(PagedIn { ids, result });
        });
    }
}

impl QueueActor {
    /// Room was made: admits waiting sends, oldest first, while they fit.
    fn admit_blocked(&mut self, ctx: &mut Context<Self>) {
        while let Some(front) = self.blocked.front() {
            if !self.memory.take(self.held, front.bytes) {
                break;
            }
            let Some(blocked) = self.blocked.pop_front() else {
                break;
            };
            self.held += blocked.bytes;
            let accepted = self.accept(blocked.enqueue, blocked.bytes);
            let reply = blocked.reply;
            ctx.spawn(accepted.map(move |result, _act, _ctx| {
                let _ = reply.send(result);
            }));
        }
    }

    /// Fails sends that have waited longer than the send timeout.
    fn expire_blocked(&mut self) {
        while self
            .blocked
            .front()
            .is_some_and(|b| b.since.elapsed() >= self.send_timeout)
        {
            if let Some(blocked) = self.blocked.pop_front() {
                let reason = format!(
                    "{}; the send waited {} ms for room",
                    self.memory
                        .full_reason(&self.destination.to_string(), self.held),
                    self.send_timeout.as_millis()
                );
                let _ = blocked.reply.send(Err(DestinationError::Refused(reason)));
            }
        }
    }

    /// Messages leave the queue for good: their bytes are free again.
    fn release_memory(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.memory.give_back(bytes);
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), DestinationError>>;

    /// Flow control: a send that does not fit in the queue's or the broker's memory waits
    /// (behind earlier waiting sends) until consumers make room, or fails at once with
    /// `fail_when_full`, or after the send timeout.
    fn handle(&mut self, msg: Enqueue, _ctx: &mut Context<Self>) -> Self::Result {
        let bytes: usize = msg.messages.iter().map(|m| footprint(m)).sum();
        // Stored messages of a paging queue go to disk only once durable: no need to wait.
        let pages_out =
            msg.stored.is_empty() && self.paging() && msg.messages.iter().all(|m| m.persistent);
        if pages_out {
            self.memory.force_take(bytes);
            self.held += bytes;
            return self.accept(msg, bytes);
        }
        if self.blocked.is_empty() && self.memory.take(self.held, bytes) {
            self.held += bytes;
            return self.accept(msg, bytes);
        }
        let full = self
            .memory
            .full_reason(&self.destination.to_string(), self.held);
        if self.fail_when_full {
            return Box::pin(fut::ready(Err(DestinationError::Refused(full))));
        }
        tracing::debug!(queue = %self.destination, "a producer waits: {full}");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.blocked.push_back(Blocked {
            enqueue: msg,
            bytes,
            since: std::time::Instant::now(),
            reply,
        });
        let gone = DestinationError::Unavailable(self.destination.to_string());
        Box::pin(fut::wrap_future(async move {
            answer.await.unwrap_or(Err(gone))
        }))
    }
}

impl QueueActor {
    /// Takes a send whose `bytes` are already counted.
    fn accept(
        &mut self,
        msg: Enqueue,
        bytes: usize,
    ) -> ResponseActFuture<Self, Result<(), DestinationError>> {
        let count = msg.messages.len() as u64;
        self.enqueued += count;
        let mut records = Vec::new();
        let stored = msg.stored;
        let messages: Vec<Queued> = msg
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| {
                let store_id = match &self.store {
                    // Already stored by a committed transaction.
                    _ if !stored.is_empty() => stored.get(i).copied().flatten(),
                    Some(store) if message.persistent => {
                        let id = store.next_id();
                        records.push(Record::Enqueue {
                            queue: self.destination.name().to_string(),
                            id,
                            message: message.clone(),
                        });
                        Some(id)
                    }
                    _ => None,
                };
                Queued::loaded(message, store_id)
            })
            .collect();
        let seq = self.next_batch;
        self.next_batch += 1;
        let (Some(store), false) = (&self.store, records.is_empty()) else {
            // Nothing to store: in order behind any batch still being stored.
            self.unconfirmed.push_back(Unconfirmed {
                seq,
                messages,
                durable: true,
                locations: Vec::new(),
            });
            self.release_durable();
            return Box::pin(fut::ready(Ok(())));
        };
        let append = store.append(records);
        self.unconfirmed.push_back(Unconfirmed {
            seq,
            messages,
            durable: false,
            locations: Vec::new(),
        });
        Box::pin(append.into_actor(self).map(move |result, act, _ctx| {
            match &result {
                Ok(locations) => {
                    if let Some(batch) = act.unconfirmed.iter_mut().find(|b| b.seq == seq) {
                        batch.durable = true;
                        batch.locations = locations.clone();
                    }
                }
                Err(e) => {
                    // Not stored, so not accepted: the producer is told; nothing is delivered.
                    tracing::error!(queue = %act.destination, "cannot store messages: {e}");
                    act.unconfirmed.retain(|b| b.seq != seq);
                    act.enqueued -= count;
                    act.release_memory(bytes);
                }
            }
            act.release_durable();
            result.map(|_| ()).map_err(|e| {
                DestinationError::Refused(format!("the messages could not be stored: {e}"))
            })
        }))
    }
}

impl Handler<Subscribe> for QueueActor {
    type Result = Result<(), DestinationError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.consumers.push(QueueConsumer {
            id: msg.consumer,
            sink: msg.sink,
            prefetch: msg.prefetch,
            credit: msg.prefetch,
            in_flight: HashMap::new(),
            in_flight_bytes: 0,
        });
        self.dispatch();
        Ok(())
    }
}

impl Handler<Control> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            Control::ForwardTo(_) => {
                tracing::warn!(queue = %self.destination, "queues do not forward; ignored");
            }
            Control::Delete => {
                // Deleted for good (a durable subscription): its stored messages go too.
                if let Some(store) = &self.store {
                    let queue = self.destination.name().to_string();
                    let stored = self
                        .backlog_ids()
                        .chain(
                            self.consumers
                                .iter()
                                .flat_map(|c| c.in_flight.values().filter_map(|q| q.store_id)),
                        )
                        .map(|id| Record::Remove {
                            queue: queue.clone(),
                            id,
                        })
                        .collect::<Vec<_>>();
                    if !stored.is_empty() {
                        store.append_lazy(stored);
                    }
                }
                ctx.stop()
            }
            Control::Consumer(id, ConsumerControl::Unsubscribe) => self.remove_consumer(id, ctx),
            Control::Consumer(consumer, ConsumerControl::Settle(tags)) => {
                let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                    return;
                };
                let mut settled = 0u32;
                let mut removals = Vec::new();
                let mut freed = 0;
                for tag in &tags {
                    if let Some(queued) = c.land(tag) {
                        settled += 1;
                        freed += queued.held_bytes();
                        if let Some(id) = queued.store_id {
                            removals.push(Record::Remove {
                                queue: self.destination.name().to_string(),
                                id,
                            });
                        }
                    }
                }
                if let (Some(store), false) = (&self.store, removals.is_empty()) {
                    store.append_lazy(removals);
                }
                self.dequeued += settled as u64;
                if c.prefetch > 0 {
                    c.credit = (c.credit + settled).min(c.prefetch);
                }
                self.release_memory(freed);
                self.dispatch();
                self.admit_blocked(ctx);
            }
            Control::Consumer(consumer, ConsumerControl::Release(tags)) => {
                let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                    return;
                };
                let mut released: Vec<(u64, Queued)> = tags
                    .iter()
                    .filter_map(|tag| c.land(tag).map(|q| (*tag, q)))
                    .collect();
                if c.prefetch > 0 {
                    c.credit = (c.credit + released.len() as u32).min(c.prefetch);
                }
                released.sort_unstable_by_key(|(tag, _)| *tag);
                for (_, queued) in released.into_iter().rev() {
                    let delay = self.policy.delay(queued.deliveries);
                    self.redeliver(queued, delay, "it was given back", ctx);
                }
                self.dispatch();
            }
            Control::Consumer(consumer, ConsumerControl::Unsent(tags)) => {
                let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                    return;
                };
                let mut unsent: Vec<(u64, Queued)> = tags
                    .iter()
                    .filter_map(|tag| c.land(tag).map(|q| (*tag, q)))
                    .collect();
                // Only a consumer that is going away says this: send it nothing more.
                c.credit = 0;
                unsent.sort_unstable_by_key(|(tag, _)| *tag);
                for (_, mut queued) in unsent.into_iter().rev() {
                    queued.deliveries = queued.deliveries.saturating_sub(1);
                    self.backlog.push_front(queued);
                }
                self.dispatch();
            }
            Control::Consumer(consumer, ConsumerControl::Grant(credit)) => {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                    c.credit = c.credit.saturating_add(credit);
                    self.dispatch();
                }
            }
        }
    }
}

impl Handler<PagedIn> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: PagedIn, ctx: &mut Context<Self>) {
        self.paging_in = false;
        let messages = match msg.result {
            Ok(messages) => messages,
            Err(e) => {
                tracing::error!(queue = %self.destination, "cannot read paged messages back: {e}; retrying");
                ctx.run_later(PAGE_IN_RETRY, |act, _ctx| act.dispatch());
                return;
            }
        };
        let mut loaded: HashMap<u64, Arc<Message>> = msg.ids.into_iter().zip(messages).collect();
        let mut bytes = 0;
        for queued in self.backlog.iter_mut().take(PAGE_IN_BATCH * 2) {
            if let (Body::Paged { .. }, Some(id)) = (&queued.body, queued.store_id)
                && let Some(message) = loaded.remove(&id)
            {
                bytes += footprint(&message);
                queued.body = Body::Loaded(message);
                self.paged -= 1;
            }
        }
        // Paged-in messages are about to be delivered: held whatever the limits.
        self.memory.force_take(bytes);
        self.held += bytes;
        self.dispatch();
    }
}

impl Handler<GetStat> for QueueActor {
    type Result = MessageResult<GetStat>;

    fn handle(&mut self, _msg: GetStat, _ctx: &mut Context<Self>) -> Self::Result {
        let in_flight: usize = self.consumers.iter().map(|c| c.in_flight.len()).sum();
        let storing: usize = self.unconfirmed.iter().map(|b| b.messages.len()).sum();
        MessageResult(DestinationStat {
            kind: self.destination.kind(),
            name: self.destination.name().to_string(),
            depth: (self.backlog.len() + in_flight + storing + self.delayed) as u64,
            in_flight: in_flight as u64,
            paged: self.paged as u64,
            enqueued: self.enqueued,
            dequeued: self.dequeued,
            consumers: self.consumers.len() as u64,
            home: None,
        })
    }
}
