//! [`TopicActor`]: one topic. Every subscriber receives every message published after it
//! subscribed. Each subscriber has its own backlog, drained as its credit allows; a
//! subscriber whose backlog passes `max_subscriber_backlog` is evicted as a slow consumer
//! (its client is told why) rather than letting the broker's memory grow.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, MessageResult, Recipient, ResponseFuture};

use super::{
    ConsumerId, Control, Delivery, DestinationError, Dispatch, Enqueue, GetStat, Subscribe,
};
use crate::message::{Destination, Message, now_millis};
use crate::protocol::DestinationStat;

struct Subscriber {
    id: ConsumerId,
    sink: Recipient<Dispatch>,
    prefetch: u32,
    credit: u32,
    backlog: VecDeque<Arc<Message>>,
    /// Delivered and not yet acknowledged.
    in_flight: u64,
}

/// One topic and its subscribers.
pub struct TopicActor {
    destination: Destination,
    /// Wildcard subscription points whose pattern matches this topic.
    forwards: Vec<Recipient<Enqueue>>,
    max_per_dispatch: usize,
    max_backlog: usize,
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
    pub fn new(destination: Destination, max_per_dispatch: usize, max_backlog: usize) -> Self {
        TopicActor {
            destination,
            forwards: Vec::new(),
            max_per_dispatch: max_per_dispatch.max(1),
            max_backlog,
            subscribers: Vec::new(),
            next_tag: 1,
            enqueued: 0,
            dequeued: 0,
        }
    }

    /// Sends `subscriber` as much of its backlog as its credit allows.
    fn drain(subscriber: &mut Subscriber, next_tag: &mut u64, max: usize, dropped: &mut u64) {
        let now = now_millis();
        while subscriber.credit > 0 && !subscriber.backlog.is_empty() {
            let take = (subscriber.credit as usize).min(max);
            let mut batch = Vec::with_capacity(take.min(subscriber.backlog.len()));
            while batch.len() < take {
                let Some(message) = subscriber.backlog.pop_front() else {
                    break;
                };
                if message.is_expired_at(now) {
                    *dropped += 1;
                    continue;
                }
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
            subscriber.in_flight += batch.len() as u64;
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
        let max_backlog = self.max_backlog;
        let destination = &self.destination;
        self.subscribers.retain(|s| {
            if s.backlog.len() + msg.messages.len() <= max_backlog {
                return true;
            }
            let reason = format!(
                "slow consumer: subscription to {destination} has more than {max_backlog} undelivered messages"
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
                })
            })
            .collect();
        let mut dropped = 0;
        for subscriber in &mut self.subscribers {
            subscriber.backlog.extend(msg.messages.iter().cloned());
            Self::drain(
                subscriber,
                &mut self.next_tag,
                self.max_per_dispatch,
                &mut dropped,
            );
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
            in_flight: 0,
        });
        Ok(())
    }
}

impl Handler<Control> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        let (id, granted, settled) = match msg {
            Control::ForwardTo(target) => {
                self.forwards.push(target);
                return;
            }
            Control::Delete => return ctx.stop(),
            Control::Unsubscribe(id) => {
                // A non-durable subscription's undelivered messages go with it.
                self.subscribers.retain(|s| s.id != id);
                return;
            }
            Control::Settle { consumer, tags } | Control::Release { consumer, tags } => {
                (consumer, 0, tags.len() as u32)
            }
            Control::Grant { consumer, credit } => (consumer, credit, 0),
        };
        let Some(subscriber) = self.subscribers.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let settled = settled.min(subscriber.in_flight as u32);
        subscriber.in_flight -= settled as u64;
        self.dequeued += settled as u64;
        subscriber.credit = if subscriber.prefetch > 0 {
            (subscriber.credit + settled).min(subscriber.prefetch)
        } else {
            subscriber.credit.saturating_add(granted)
        };
        let mut dropped = 0;
        Self::drain(
            subscriber,
            &mut self.next_tag,
            self.max_per_dispatch,
            &mut dropped,
        );
        self.dequeued += dropped;
    }
}

impl Handler<GetStat> for TopicActor {
    type Result = MessageResult<GetStat>;

    fn handle(&mut self, _msg: GetStat, _ctx: &mut Context<Self>) -> Self::Result {
        let in_flight: u64 = self.subscribers.iter().map(|s| s.in_flight).sum();
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
