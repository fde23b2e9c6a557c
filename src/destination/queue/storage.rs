//! A queue's journal: batches wait in `unconfirmed` until they (and every batch before
//! them) are durable, then join the backlog, on disk only while the queue is past half its
//! memory limit (paging); paged messages are read back in batches as consumers reach them.
//!
//! Concurrent store and dispatch: a persistent batch that a waiting consumer has credit for
//! (nothing ahead of it, no producer's mark, not from a transaction) joins the backlog at
//! once and is delivered while it is written; its producer is answered as soon as it is
//! durable or every stored message of it is acknowledged ([`EarlyBatches`]), whichever
//! comes first. A confirmed message is thus on disk or consumed; after a crash a consumer
//! may see again a message whose send was never confirmed. Its first delivery's count is
//! in the same write as the message, so the counting below holds for it too.
//!
//! Deliveries of stored messages wait in `outgoing` until their delivery counts are
//! durable (`Record::Delivered`), then go to their consumers in the order they were made:
//! after a crash or a takeover, a message that was delivered comes again marked
//! redelivered, with its count (what ActiveMQ calls `persistJMSRedelivered`, always on).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use super::{Body, QueueActor, Queued};
use crate::constants::{COUNT_AHEAD_MAX, COUNT_AHEAD_PREFETCHES, PAGE_IN_BATCH, PAGE_IN_RETRY};
use crate::destination::memory::footprint;
use crate::destination::{ConsumerId, Delivery, DestinationError, Dispatch, Enqueue};
use crate::message::Message;
use crate::store::record::Record;
use crate::store::{Location, SharedStore};

/// Messages read back from the journal, for the backlog entries with these ids.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct PagedIn {
    pub(super) ids: Vec<u64>,
    pub(super) result: Result<Vec<Arc<Message>>, crate::store::StoreError>,
}

/// Deliveries to one consumer waiting for their counts to be stored.
pub(super) struct Outgoing {
    seq: u64,
    pub(super) consumer: ConsumerId,
    sink: Recipient<Dispatch>,
    batch: Vec<Delivery>,
    ready: bool,
}

/// The delivery counts of the `Outgoing` batch `seq` are stored (or could not be).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct DeliveriesCounted {
    seq: u64,
    error: Option<crate::store::StoreError>,
}

/// Deliveries waiting for their counts to be stored, in the order they were made.
#[derive(Default)]
pub(super) struct OutgoingQueue {
    pub(super) batches: VecDeque<Outgoing>,
    next: u64,
}

impl OutgoingQueue {
    /// Sends `batch` to `sink` once the counts of its stored messages (`counted`: journal
    /// id and count) are durable, and after every batch made before it.
    pub(super) fn send(
        &mut self,
        store: Option<&SharedStore>,
        me: Option<&Addr<QueueActor>>,
        queue: &str,
        (consumer, sink): (ConsumerId, &Recipient<Dispatch>),
        batch: Vec<Delivery>,
        counted: Vec<(u64, u32)>,
    ) {
        let (Some(store), Some(me), false) = (store, me, counted.is_empty()) else {
            if self.batches.is_empty() {
                sink.do_send(Dispatch::Deliver(batch));
            } else {
                self.batches.push_back(Outgoing {
                    seq: u64::MAX,
                    consumer,
                    sink: sink.clone(),
                    batch,
                    ready: true,
                });
            }
            return;
        };
        let seq = self.next;
        self.next += 1;
        self.batches.push_back(Outgoing {
            seq,
            consumer,
            sink: sink.clone(),
            batch,
            ready: false,
        });
        let append = store.append(vec![Record::Delivered {
            queue: queue.to_string(),
            counts: counted,
        }]);
        let me = me.clone();
        actix::spawn(async move {
            let error = append.await.err();
            me.do_send(DeliveriesCounted { seq, error });
        });
    }

    /// Sends every batch at the front whose counts are stored.
    fn flush(&mut self) {
        while self.batches.front().is_some_and(|b| b.ready) {
            if let Some(out) = self.batches.pop_front() {
                out.sink.do_send(Dispatch::Deliver(out.batch));
            }
        }
    }
}

/// Count-ahead: the counts of the backlog's front messages are stored.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct CountedAhead {
    counts: Vec<(u64, u32)>,
    stored: bool,
}

impl QueueActor {
    /// Stores, ahead of their delivery, the next delivery count of the stored messages at
    /// the front of the backlog (a few times the consumers' prefetch), one write at a time,
    /// so that when credit comes they leave at once instead of waiting for a write of
    /// their counts. If the broker dies before one is delivered, it comes back counted once
    /// more than it was delivered (marked redelivered) — never once less.
    pub(super) fn count_ahead(&mut self) {
        let (Some(store), Some(me)) = (self.store.clone(), self.me.clone()) else {
            return;
        };
        if self.counting_ahead || !self.count_ahead_wanted || self.consumers.is_empty() {
            return;
        }
        let horizon = self
            .consumers
            .iter()
            .map(|c| c.prefetch as usize * COUNT_AHEAD_PREFETCHES)
            .sum::<usize>()
            .clamp(1, COUNT_AHEAD_MAX);
        let mut counts = Vec::new();
        for queued in self.backlog.iter_mut().take(horizon) {
            if let (Some(id), Body::Loaded(_), false) =
                (queued.store_id, &queued.body, queued.counting)
                && queued.counted <= queued.deliveries
            {
                queued.counting = true;
                counts.push((id, queued.deliveries + 1));
            }
        }
        if counts.is_empty() {
            // Everything near the front is counted: rest until a delivery waits again.
            self.count_ahead_wanted = false;
            return;
        }
        self.counting_ahead = true;
        let append = store.append(vec![Record::Delivered {
            queue: self.destination.name().to_string(),
            counts: counts.clone(),
        }]);
        actix::spawn(async move {
            let stored = append.await.is_ok();
            me.do_send(CountedAhead { counts, stored });
        });
    }
}

impl Handler<CountedAhead> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: CountedAhead, _ctx: &mut Context<Self>) {
        self.counting_ahead = false;
        let counts: HashMap<u64, u32> = msg.counts.into_iter().collect();
        // Those still waiting are near the front; dispatched ones wrote their own count.
        let horizon = COUNT_AHEAD_MAX + counts.len();
        for queued in self.backlog.iter_mut().take(horizon) {
            if let Some(count) = queued.store_id.and_then(|id| counts.get(&id))
                && queued.counting
            {
                queued.counting = false;
                if msg.stored {
                    queued.counted = queued.counted.max(*count);
                }
            }
        }
        self.dispatch();
    }
}

impl Handler<DeliveriesCounted> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: DeliveriesCounted, _ctx: &mut Context<Self>) {
        if let Some(e) = &msg.error {
            // Delivered all the same: after a crash these may come again unmarked.
            tracing::warn!(queue = %self.destination, "cannot store delivery counts: {e}");
        }
        if let Some(out) = self.outgoing.batches.iter_mut().find(|b| b.seq == msg.seq) {
            out.ready = true;
        }
        self.outgoing.flush();
    }
}

/// The answer to a producer whose batch is delivered while it is written.
type EarlyReply = tokio::sync::oneshot::Sender<Result<(), DestinationError>>;

/// Batches delivered while being written: each is confirmed to its producer once it is
/// written or every stored message of it is acknowledged, whichever comes first.
#[derive(Default)]
pub(super) struct EarlyBatches {
    /// By batch seq (the queue's and the journal's own numbers: a fast hash is safe).
    batches: FxHashMap<u64, EarlyBatch>,
    /// The batch of each stored message not yet acknowledged.
    batch_of: FxHashMap<u64, u64>,
}

struct EarlyBatch {
    /// Journal ids of its messages not yet acknowledged.
    unsettled: Vec<u64>,
    /// Taken once answered.
    reply: Option<EarlyReply>,
}

impl EarlyBatches {
    fn insert(&mut self, seq: u64, ids: Vec<u64>, reply: EarlyReply) {
        for id in &ids {
            self.batch_of.insert(*id, seq);
        }
        self.batches.insert(
            seq,
            EarlyBatch {
                unsettled: ids,
                reply: Some(reply),
            },
        );
    }

    /// The stored message `id` was acknowledged: the last of its batch confirms the batch.
    pub(super) fn settled(&mut self, id: u64) {
        let Some(seq) = self.batch_of.remove(&id) else {
            return;
        };
        if let Some(batch) = self.batches.get_mut(&seq) {
            batch.unsettled.retain(|&other| other != id);
            if batch.unsettled.is_empty()
                && let Some(reply) = batch.reply.take()
            {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The write of batch `seq` finished: answers its producer, unless acknowledgements did.
    fn written(&mut self, seq: u64, result: Result<(), DestinationError>) {
        let Some(batch) = self.batches.remove(&seq) else {
            return;
        };
        for id in &batch.unsettled {
            self.batch_of.remove(id);
        }
        if let Some(reply) = batch.reply {
            let _ = reply.send(result);
        }
    }
}

/// The write of a batch delivered while it was being written has finished.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct EarlyWritten {
    seq: u64,
    result: Result<Vec<Location>, crate::store::StoreError>,
}

impl Handler<EarlyWritten> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: EarlyWritten, _ctx: &mut Context<Self>) {
        let result = msg.result.map(|_| ()).map_err(|e| {
            // Already handed out: its messages stay (as if not persistent); the producer
            // is told, unless its consumers acknowledged them all first.
            tracing::error!(queue = %self.destination, "cannot store messages delivered while being written: {e}");
            DestinationError::Refused(format!("the messages could not be stored: {e}"))
        });
        self.early.written(msg.seq, result);
    }
}

/// Messages of one `Enqueue`, waiting for the journal.
pub(super) struct Unconfirmed {
    pub(super) seq: u64,
    pub(super) messages: Vec<Queued>,
    /// Written (or delivered while being written): it may join the backlog.
    pub(super) durable: bool,
    /// Where the journal put each stored message of the batch, in order.
    pub(super) locations: Vec<Location>,
}

impl QueueActor {
    /// Journal ids of everything waiting, or still being stored.
    pub(super) fn backlog_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.backlog
            .iter()
            .chain(self.unconfirmed.iter().flat_map(|b| b.messages.iter()))
            .filter_map(|q| q.store_id)
    }

    /// Lets a batch that needs no write (or is delivered while written) join the backlog,
    /// in order behind any batch still being stored.
    fn release_now(&mut self, seq: u64, messages: Vec<Queued>) {
        self.unconfirmed.push_back(Unconfirmed {
            seq,
            messages,
            durable: true,
            locations: Vec::new(),
        });
        self.release_durable();
    }

    /// Moves every batch at the front of `unconfirmed` that is durable to the backlog.
    pub(super) fn release_durable(&mut self) {
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
    pub(super) fn paging(&self) -> bool {
        self.store.is_some() && self.memory.past_half(self.held)
    }

    /// Reads the first paged messages of the backlog back from the journal.
    pub(super) fn page_in(&mut self) {
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
    /// Takes a send whose `bytes` are already counted.
    pub(super) fn accept(
        &mut self,
        msg: Enqueue,
        bytes: usize,
    ) -> ResponseActFuture<Self, Result<(), DestinationError>> {
        let count = msg.messages.len() as u64;
        self.enqueued += count;
        let mut records = Vec::new();
        let stored = msg.stored;
        let mark = msg.mark;
        // A consumer waits with credit and nothing is ahead of these: they leave as soon as
        // they are durable, so their first delivery is counted in the same write (rather
        // than in a second one they would wait for). Should one not be delivered before a
        // crash after all, it comes again counted once too often — never once too few.
        let mut precount: usize = if self.backlog.is_empty() {
            let prefetch_bytes = self.prefetch_bytes;
            let credit: usize = self
                .consumers
                .iter()
                .filter(|c| c.ready(prefetch_bytes))
                .map(|c| c.credit as usize)
                .sum();
            // Batches still being stored take that credit first.
            let ahead: usize = self.unconfirmed.iter().map(|b| b.messages.len()).sum();
            credit.saturating_sub(ahead)
        } else {
            0
        };
        let mut precounted = Vec::new();
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
                let mut queued = Queued::loaded(message, store_id);
                if let (Some(id), true, Some(_)) = (store_id, precount > 0, &self.store)
                    && stored.is_empty()
                {
                    precount -= 1;
                    precounted.push((id, 1));
                    queued.counted = 1;
                }
                queued
            })
            .collect();
        let seq = self.next_batch;
        self.next_batch += 1;
        let (Some(store), false) = (&self.store, records.is_empty()) else {
            // Nothing to store.
            self.release_now(seq, messages);
            return Box::pin(fut::ready(Ok(())));
        };
        // Every stored message has a consumer waiting for it and nothing is ahead: deliver
        // while writing (see the module's doc).
        let early = self.concurrent_store_and_dispatch
            && mark.is_none()
            && stored.is_empty()
            && self.unconfirmed.is_empty()
            && precounted.len() == records.len();
        if !precounted.is_empty() {
            records.push(Record::Delivered {
                queue: self.destination.name().to_string(),
                counts: precounted,
            });
        }
        // A producer's mark goes in one record with the messages: after a crash, both or
        // neither exist. The transaction's one location is every message's.
        let wrapped = mark.as_ref().map(|_| records.len());
        if let Some(mark) = mark {
            records.push(Record::Sent(mark));
            records = vec![Record::Transaction { records }];
        }
        let append = store.append(records);
        if let (true, Some(me)) = (early, self.me.clone()) {
            let ids = messages.iter().filter_map(|q| q.store_id).collect();
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.early.insert(seq, ids, reply);
            actix::spawn(async move {
                let result = append.await;
                me.do_send(EarlyWritten { seq, result });
            });
            self.release_now(seq, messages);
            let gone = DestinationError::Unavailable(self.destination.to_string());
            return Box::pin(fut::wrap_future(async move {
                answer.await.unwrap_or(Err(gone))
            }));
        }
        self.unconfirmed.push_back(Unconfirmed {
            seq,
            messages,
            durable: false,
            locations: Vec::new(),
        });
        Box::pin(append.into_actor(self).map(move |result, act, ctx| {
            match &result {
                Ok(locations) => {
                    if let Some(batch) = act.unconfirmed.iter_mut().find(|b| b.seq == seq) {
                        batch.durable = true;
                        batch.locations = match (wrapped, locations.first()) {
                            (Some(count), Some(at)) => vec![*at; count],
                            _ => locations.clone(),
                        };
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
            // The producer's answer goes first: delivering (encoding, writing to the
            // consumer) waits for this thread's next turn, behind the actors the answer
            // wakes on the way to the producer's socket.
            ctx.spawn(
                fut::wrap_future::<_, QueueActor>(tokio::task::yield_now())
                    .map(|(), act, _ctx| act.release_durable()),
            );
            result.map(|_| ()).map_err(|e| {
                DestinationError::Refused(format!("the messages could not be stored: {e}"))
            })
        }))
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
