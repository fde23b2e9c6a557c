//! [`QueueActor`]: one queue. Each message goes to exactly one consumer; messages from one
//! producer keep their order; consumers receive only while they have credit; what a consumer
//! leaves unacknowledged goes back to the front of the queue, marked redelivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, MessageResult, Recipient};

use super::{
    ConsumerId, Control, Delivery, DestinationError, Dispatch, Enqueue, GetStat, Subscribe,
};
use crate::message::{Destination, Message, now_millis};
use crate::protocol::DestinationStat;

/// A message waiting in the queue or delivered and not yet acknowledged.
#[derive(Clone)]
struct Queued {
    message: Arc<Message>,
    redelivered: bool,
}

struct QueueConsumer {
    id: ConsumerId,
    sink: Recipient<Dispatch>,
    /// 0 = pull mode: credit comes only from grants.
    prefetch: u32,
    credit: u32,
    in_flight: HashMap<u64, Queued>,
}

/// One queue and its competing consumers.
pub struct QueueActor {
    destination: Destination,
    max_per_dispatch: usize,
    backlog: VecDeque<Queued>,
    consumers: Vec<QueueConsumer>,
    /// Where the next round-robin pass starts.
    cursor: usize,
    next_tag: u64,
    enqueued: u64,
    dequeued: u64,
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(queue = %self.destination, "queue created");
    }
}

impl QueueActor {
    pub fn new(destination: Destination, max_per_dispatch: usize) -> QueueActor {
        QueueActor {
            destination,
            max_per_dispatch: max_per_dispatch.max(1),
            backlog: VecDeque::new(),
            consumers: Vec::new(),
            cursor: 0,
            next_tag: 1,
            enqueued: 0,
            dequeued: 0,
        }
    }

    /// Hands waiting messages to consumers with credit, sharing the backlog evenly between
    /// them in batches.
    fn dispatch(&mut self) {
        let now = now_millis();
        while !self.backlog.is_empty() {
            let ready = self.consumers.iter().filter(|c| c.credit > 0).count();
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
                while batch.len() < take {
                    let Some(queued) = self.backlog.pop_front() else {
                        break;
                    };
                    if queued.message.is_expired_at(now) {
                        // Never delivered; counted as dequeued so depth stays
                        // enqueued - dequeued.
                        self.dequeued += 1;
                        continue;
                    }
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    batch.push(Delivery {
                        tag,
                        redelivered: queued.redelivered,
                        message: queued.message.clone(),
                    });
                    consumer.in_flight.insert(tag, queued);
                }
                if !batch.is_empty() {
                    consumer.credit -= batch.len() as u32;
                    consumer.sink.do_send(Dispatch::Deliver(batch));
                }
                if self.backlog.is_empty() {
                    break;
                }
            }
            self.cursor = (self.cursor + 1) % count;
        }
    }

    fn remove_consumer(&mut self, id: ConsumerId) {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return;
        };
        let consumer = self.consumers.remove(index);
        let mut returned: Vec<(u64, Queued)> = consumer.in_flight.into_iter().collect();
        returned.sort_unstable_by_key(|(tag, _)| *tag);
        if !returned.is_empty() {
            tracing::debug!(queue = %self.destination, count = returned.len(), "redelivering unacknowledged messages");
        }
        for (_, mut queued) in returned.into_iter().rev() {
            queued.redelivered = true;
            self.backlog.push_front(queued);
        }
        if self.cursor >= self.consumers.len() {
            self.cursor = 0;
        }
        self.dispatch();
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = Result<(), DestinationError>;

    fn handle(&mut self, msg: Enqueue, _ctx: &mut Context<Self>) -> Self::Result {
        self.enqueued += msg.messages.len() as u64;
        self.backlog
            .extend(msg.messages.into_iter().map(|message| Queued {
                message,
                redelivered: false,
            }));
        self.dispatch();
        Ok(())
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
            Control::Delete => ctx.stop(),
            Control::Unsubscribe(id) => self.remove_consumer(id),
            Control::Settle { consumer, tags } => {
                let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                    return;
                };
                let settled = tags
                    .iter()
                    .filter(|tag| c.in_flight.remove(tag).is_some())
                    .count() as u32;
                self.dequeued += settled as u64;
                if c.prefetch > 0 {
                    c.credit = (c.credit + settled).min(c.prefetch);
                }
                self.dispatch();
            }
            Control::Release { consumer, tags } => {
                let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                    return;
                };
                let mut released: Vec<(u64, Queued)> = tags
                    .iter()
                    .filter_map(|tag| c.in_flight.remove(tag).map(|q| (*tag, q)))
                    .collect();
                if c.prefetch > 0 {
                    c.credit = (c.credit + released.len() as u32).min(c.prefetch);
                }
                released.sort_unstable_by_key(|(tag, _)| *tag);
                for (_, mut queued) in released.into_iter().rev() {
                    queued.redelivered = true;
                    self.backlog.push_front(queued);
                }
                self.dispatch();
            }
            Control::Grant { consumer, credit } => {
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
        MessageResult(DestinationStat {
            kind: self.destination.kind(),
            name: self.destination.name().to_string(),
            depth: (self.backlog.len() + in_flight) as u64,
            in_flight: in_flight as u64,
            enqueued: self.enqueued,
            dequeued: self.dequeued,
            consumers: self.consumers.len() as u64,
        })
    }
}
