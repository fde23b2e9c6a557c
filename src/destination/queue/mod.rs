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
//! removal, without waiting for it. A batch a waiting consumer has credit for is the
//! exception: it is delivered while it is written, and confirmed once durable or
//! acknowledged ([`storage`], concurrent store and dispatch).
//!
//! This file holds the actor, its consumers and dispatch; [`flow`] the sends that wait for
//! room, [`storage`] the journal and paging, [`redelivery`] what comes back or expires.

mod flow;
mod redelivery;
mod storage;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use super::{
    ConsumerControl, ConsumerId, Control, Delivery, DestinationError, Dispatch, GetStat, Subscribe,
};
pub use redelivery::{DLQ_ORIGINAL_DESTINATION, DLQ_REASON};

use super::DestinationRegistry;
use super::backlog::{Backlog, Prioritized};
use super::memory::{MemoryBudget, footprint};
use crate::config::RedeliveryPolicy;
use crate::constants::{BLOCKED_CHECK_MAX, BLOCKED_CHECK_MIN};
use crate::message::{Destination, Message, now_millis};
use crate::stats::DestinationStat;
use crate::store::record::Record;
use crate::store::{Location, RecoveredMessage, SharedStore};
use flow::Blocked;
use storage::{OutgoingQueue, Unconfirmed};

/// A message waiting in the queue or delivered and not yet acknowledged.
#[derive(Clone)]
struct Queued {
    body: Body,
    /// Times it has been delivered.
    deliveries: u32,
    /// The delivery count the store holds for it (or will, once the write that carries it
    /// is durable — a delivery waits for that): a delivery up to this count writes nothing
    /// more. Counted ahead of its delivery when a consumer is waiting for it (with the
    /// message) or it is near the front of the backlog ([`QueueActor::count_ahead`]).
    counted: u32,
    /// A count-ahead write for it is under way.
    counting: bool,
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
            counted: 0,
            counting: false,
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

struct QueueConsumer {
    id: ConsumerId,
    sink: Recipient<Dispatch>,
    /// 0 = pull mode: credit comes only from grants.
    prefetch: u32,
    credit: u32,
    /// By delivery tag (the queue's own sequence numbers: a fast hash is safe).
    in_flight: FxHashMap<u64, Queued>,
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
    concurrent_store_and_dispatch: bool,
    /// Batches delivered while being written, waiting to be confirmed.
    early: storage::EarlyBatches,
    /// Sends waiting for room, oldest first.
    blocked: VecDeque<Blocked>,
    /// Backlog entries on disk only.
    paged: usize,
    /// A page-in is under way.
    paging_in: bool,
    me: Option<Addr<QueueActor>>,
    unconfirmed: VecDeque<Unconfirmed>,
    next_batch: u64,
    /// Deliveries waiting for their counts to be stored.
    outgoing: OutgoingQueue,
    /// A count-ahead write is under way.
    counting_ahead: bool,
    /// A delivery had to wait for its count: the backlog's front is worth counting ahead
    /// (never set for flows of non-persistent or already counted messages, which then pay
    /// nothing for it).
    count_ahead_wanted: bool,
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
    /// Deliver a persistent batch to waiting consumers while it is written.
    pub concurrent_store_and_dispatch: bool,
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
            concurrent_store_and_dispatch,
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
                deliveries: m.deliveries,
                counted: m.deliveries,
                counting: false,
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
            concurrent_store_and_dispatch,
            early: storage::EarlyBatches::default(),
            blocked: VecDeque::new(),
            paged,
            paging_in: false,
            me: None,
            unconfirmed: VecDeque::new(),
            next_batch: 0,
            outgoing: OutgoingQueue::default(),
            counting_ahead: false,
            count_ahead_wanted: false,
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
        self.count_ahead();
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
                let mut counted = Vec::new();
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
                    if let Some(id) = queued.store_id
                        && queued.counted < queued.deliveries
                    {
                        counted.push((id, queued.deliveries));
                        queued.counted = queued.deliveries;
                    }
                    queued.counting = false;
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
                    self.count_ahead_wanted |= !counted.is_empty();
                    self.outgoing.send(
                        self.store.as_ref(),
                        self.me.as_ref(),
                        self.destination.name(),
                        (consumer.id, &consumer.sink),
                        batch,
                        counted,
                    );
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
        // Its deliveries not sent yet are redelivered below with the rest.
        self.outgoing.batches.retain(|b| b.consumer != id);
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
}

impl Handler<Subscribe> for QueueActor {
    type Result = Result<(), DestinationError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.consumers.push(QueueConsumer {
            id: msg.consumer,
            sink: msg.sink,
            prefetch: msg.prefetch,
            credit: msg.prefetch,
            in_flight: FxHashMap::default(),
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
                            self.early.settled(id);
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
                let mut recounted = Vec::new();
                for (_, mut queued) in unsent.into_iter().rev() {
                    queued.deliveries = queued.deliveries.saturating_sub(1);
                    queued.counted = queued.deliveries;
                    if let Some(id) = queued.store_id {
                        recounted.push((id, queued.deliveries));
                    }
                    self.backlog.push_front(queued);
                }
                if let (Some(store), false) = (&self.store, recounted.is_empty()) {
                    store.append_lazy(vec![Record::Delivered {
                        queue: self.destination.name().to_string(),
                        counts: recounted,
                    }]);
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

#[cfg(test)]
mod tests;
