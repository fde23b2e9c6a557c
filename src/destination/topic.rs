//! [`TopicActor`]: one topic. Every subscriber receives every message published after it
//! subscribed. Each subscriber has its own backlog, drained as its credit allows (its
//! prefetch in messages and `prefetch_bytes` in bytes); a subscriber whose backlog passes
//! `max_subscriber_backlog` messages or `max_subscriber_backlog_bytes` is evicted as a slow
//! consumer (its client is told why) rather than letting the broker's memory grow.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, MessageResult, Recipient, ResponseFuture};

use super::{
    ConsumerControl, ConsumerId, Control, Delivery, DestinationError, Dispatch, Enqueue, GetStat,
    Subscribe, footprint,
};
use crate::config::Limits;
use crate::message::{Destination, Message, now_millis};
use crate::stats::DestinationStat;

struct Subscriber {
    id: ConsumerId,
    sink: Recipient<Dispatch>,
    prefetch: u32,
    credit: u32,
    backlog: VecDeque<Arc<Message>>,
    backlog_bytes: usize,
    /// Delivered and not yet acknowledged: tag and bytes, in delivery order.
    in_flight: VecDeque<(u64, usize)>,
    in_flight_bytes: usize,
}

impl Subscriber {
    /// Takes `tag` out of flight; whether it was in flight.
    fn land(&mut self, tag: u64) -> bool {
        // Acknowledgements mostly come in delivery order.
        let at = match self.in_flight.front() {
            Some((first, _)) if *first == tag => Some(0),
            _ => self.in_flight.iter().position(|(t, _)| *t == tag),
        };
        let Some((_, bytes)) = at.and_then(|at| self.in_flight.remove(at)) else {
            return false;
        };
        self.in_flight_bytes -= bytes.min(self.in_flight_bytes);
        true
    }
}

/// What bounds a topic's subscribers.
#[derive(Clone, Copy)]
struct TopicLimits {
    max_per_dispatch: usize,
    max_backlog: usize,
    max_backlog_bytes: usize,
    prefetch_bytes: usize,
}

/// One topic and its subscribers.
pub struct TopicActor {
    destination: Destination,
    /// Wildcard subscription points whose pattern matches this topic.
    forwards: Vec<Recipient<Enqueue>>,
    limits: TopicLimits,
    subscribers: Vec<Subscriber>,
    next_tag: u64,
    enqueued: u64,
    dequeued: u64,
}

impl Actor for TopicActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(topic = %self.destination, "topic created");
    }
}

impl TopicActor {
    pub fn new(destination: Destination, limits: &Limits) -> Self {
        TopicActor {
            destination,
            forwards: Vec::new(),
            limits: TopicLimits {
                max_per_dispatch: limits.max_deliveries_per_frame.max(1),
                max_backlog: limits.max_subscriber_backlog,
                max_backlog_bytes: limits.max_subscriber_backlog_bytes,
                prefetch_bytes: limits.prefetch_bytes.max(1),
            },
            subscribers: Vec::new(),
            next_tag: 1,
            enqueued: 0,
            dequeued: 0,
        }
    }

    /// Sends `subscriber` as much of its backlog as its credit allows.
    fn drain(
        subscriber: &mut Subscriber,
        next_tag: &mut u64,
        limits: TopicLimits,
        dropped: &mut u64,
    ) {
        let now = now_millis();
        while subscriber.credit > 0
            && subscriber.in_flight_bytes < limits.prefetch_bytes
            && !subscriber.backlog.is_empty()
        {
            let take = (subscriber.credit as usize).min(limits.max_per_dispatch);
            let mut batch = Vec::with_capacity(take.min(subscriber.backlog.len()));
            while batch.len() < take && subscriber.in_flight_bytes < limits.prefetch_bytes {
                let Some(message) = subscriber.backlog.pop_front() else {
                    break;
                };
                let bytes = footprint(&message);
                subscriber.backlog_bytes -= bytes.min(subscriber.backlog_bytes);
                if message.is_expired_at(now) {
                    *dropped += 1;
                    continue;
                }
                subscriber.in_flight.push_back((*next_tag, bytes));
                subscriber.in_flight_bytes += bytes;
                batch.push(Delivery {
                    tag: *next_tag,
                    redelivered: false,
                    delivery_count: 1,
                    message,
                });
                *next_tag += 1;
            }
            if batch.is_empty() {
                break;
            }
            subscriber.credit -= batch.len() as u32;
            subscriber.sink.do_send(Dispatch::Deliver(batch));
        }
    }
}

impl Handler<Enqueue> for TopicActor {
    type Result = ResponseFuture<Result<(), DestinationError>>;

    /// Answered once every forward (durable subscriptions, wildcard points) has accepted
    /// the messages too, so a confirmed persistent publish is stored for every durable
    /// subscriber.
    fn handle(&mut self, msg: Enqueue, _ctx: &mut Context<Self>) -> Self::Result {
        self.enqueued += msg.messages.len() as u64;
        let limits = self.limits;
        let bytes: usize = msg.messages.iter().map(|m| footprint(m)).sum();
        let destination = &self.destination;
        self.subscribers.retain(|s| {
            let count_fits = s.backlog.len() + msg.messages.len() <= limits.max_backlog;
            // One publish always fits an empty backlog, however large.
            let bytes_fit =
                s.backlog.is_empty() || s.backlog_bytes + bytes <= limits.max_backlog_bytes;
            if count_fits && bytes_fit {
                return true;
            }
            let reason = format!(
                "slow consumer: subscription to {destination} has more than {} undelivered messages or {} bytes",
                limits.max_backlog, limits.max_backlog_bytes
            );
            tracing::warn!(consumer = s.id.0, "{reason}");
            s.sink.do_send(Dispatch::Evicted(reason));
            false
        });
        // A deleted durable subscription's queue has stopped: forget it.
        self.forwards.retain(|f| f.connected());
        let forwarded: Vec<_> = self
            .forwards
            .iter()
            .map(|forward| {
                forward.send(Enqueue {
                    messages: msg.messages.clone(),
                    stored: Vec::new(),
                    mark: None,
                })
            })
            .collect();
        let mut dropped = 0;
        for subscriber in &mut self.subscribers {
            subscriber.backlog.extend(msg.messages.iter().cloned());
            subscriber.backlog_bytes += bytes;
            Self::drain(subscriber, &mut self.next_tag, limits, &mut dropped);
        }
        self.dequeued += dropped;
        Box::pin(async move {
            for result in futures::future::join_all(forwarded).await {
                // A forward that stopped meanwhile was deleted: nothing is owed to it.
                if let Ok(Err(e)) = result {
                    return Err(e);
                }
            }
            Ok(())
        })
    }
}

impl Handler<Subscribe> for TopicActor {
    type Result = Result<(), DestinationError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.subscribers.push(Subscriber {
            id: msg.consumer,
            sink: msg.sink,
            prefetch: msg.prefetch,
            credit: msg.prefetch,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        });
        Ok(())
    }
}

impl Handler<Control> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        let (id, granted, tags) = match msg {
            Control::ForwardTo(target) => {
                self.forwards.push(target);
                return;
            }
            Control::Delete => return ctx.stop(),
            Control::Consumer(id, ConsumerControl::Unsubscribe) => {
                // A non-durable subscription's undelivered messages go with it.
                self.subscribers.retain(|s| s.id != id);
                return;
            }
            // A topic redelivers nothing: whatever comes back is done with.
            Control::Consumer(
                consumer,
                ConsumerControl::Settle(tags)
                | ConsumerControl::Release(tags)
                | ConsumerControl::Unsent(tags),
            ) => (consumer, 0, tags),
            Control::Consumer(consumer, ConsumerControl::Grant(credit)) => {
                (consumer, credit, Vec::new())
            }
        };
        let Some(subscriber) = self.subscribers.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let settled = tags.into_iter().filter(|tag| subscriber.land(*tag)).count() as u32;
        self.dequeued += settled as u64;
        subscriber.credit = if subscriber.prefetch > 0 {
            (subscriber.credit + settled).min(subscriber.prefetch)
        } else {
            subscriber.credit.saturating_add(granted)
        };
        let mut dropped = 0;
        Self::drain(subscriber, &mut self.next_tag, self.limits, &mut dropped);
        self.dequeued += dropped;
    }
}

impl Handler<GetStat> for TopicActor {
    type Result = MessageResult<GetStat>;

    fn handle(&mut self, _msg: GetStat, _ctx: &mut Context<Self>) -> Self::Result {
        let in_flight: u64 = self
            .subscribers
            .iter()
            .map(|s| s.in_flight.len() as u64)
            .sum();
        let waiting: u64 = self
            .subscribers
            .iter()
            .map(|s| s.backlog.len() as u64)
            .sum();
        MessageResult(DestinationStat {
            kind: self.destination.kind(),
            name: self.destination.name().to_string(),
            depth: waiting + in_flight,
            in_flight,
            paged: 0,
            enqueued: self.enqueued,
            dequeued: self.dequeued,
            consumers: self.subscribers.len() as u64,
            home: None,
        })
    }
}
