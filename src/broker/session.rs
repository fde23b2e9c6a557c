//! [`SessionActor`]: one client session. It owns the session's ack mode, its consumers, and
//! the references to the destinations it has used; it turns `Send` frames into enqueues
//! (confirmed with a `Receipt`), `Subscribe` frames into [`ConsumerActor`]s, and routes
//! acknowledgements to the consumer they belong to.
//!
//! Messages from one session reach a destination in the order they were sent: a
//! destination not yet known is looked up with `ctx.wait`, which holds back the session's
//! later commands until the lookup is done.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::consumer::{ConsumerActor, ConsumerCommand};
use super::{Shutdown, write_frame};
use crate::config::Limits;
use crate::destination::{
    ConsumerId, DestinationError, DestinationRef, DestinationRegistry, Lookup, Subscribe,
};
use crate::message::{AckMode, Destination, Message};
use crate::protocol::Frame;
use crate::writer::FrameSink;

/// What a connection asks of one of its sessions.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SessionCommand {
    Send {
        destination: Destination,
        receipt: Option<u64>,
        messages: Vec<Message>,
    },
    Subscribe {
        consumer: u32,
        destination: Destination,
        prefetch: u32,
        receipt: u64,
    },
    Unsubscribe {
        consumer: u32,
    },
    Ack {
        acks: Vec<(u32, u64)>,
    },
    Pull {
        consumer: u32,
        count: u32,
    },
}

pub struct SessionActor {
    id: u32,
    ack_mode: AckMode,
    sink: FrameSink,
    registry: Addr<DestinationRegistry>,
    limits: Limits,
    destinations: HashMap<Destination, DestinationRef>,
    consumers: HashMap<u32, Addr<ConsumerActor>>,
}

impl SessionActor {
    pub fn new(
        id: u32,
        ack_mode: AckMode,
        sink: FrameSink,
        registry: Addr<DestinationRegistry>,
        limits: Limits,
    ) -> SessionActor {
        SessionActor {
            id,
            ack_mode,
            sink,
            registry,
            limits,
            destinations: HashMap::new(),
            consumers: HashMap::new(),
        }
    }

    /// Calls `then` with the destination's reference, looking it up first (and holding back
    /// the session's other commands meanwhile) if this session has not used it before.
    fn with_destination<F>(&mut self, destination: Destination, ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, Result<DestinationRef, DestinationError>, &mut Context<Self>)
            + 'static,
    {
        if let Some(found) = self.destinations.get(&destination) {
            let found = found.clone();
            return then(self, Ok(found), ctx);
        }
        let lookup = self.registry.send(Lookup(destination.clone()));
        ctx.wait(lookup.into_actor(self).map(move |result, act, ctx| {
            let result = result
                .unwrap_or_else(|_| Err(DestinationError::Unavailable(destination.to_string())));
            if let Ok(found) = &result {
                act.destinations.insert(destination, found.clone());
            }
            then(act, result, ctx)
        }));
    }

    fn receipt(&self, receipt: u64, result: Result<(), String>) {
        let frame = Frame::Receipt {
            receipt,
            error: result.err(),
        };
        if let Err(e) = write_frame(&self.sink, &frame, &self.limits) {
            tracing::debug!(session = self.id, "cannot write receipt: {e}");
        }
    }

    fn send(
        &mut self,
        destination: Destination,
        receipt: Option<u64>,
        messages: Vec<Message>,
        ctx: &mut Context<Self>,
    ) {
        let messages: Vec<Arc<Message>> = messages
            .into_iter()
            .map(|mut message| {
                message.destination = Some(destination.clone());
                Arc::new(message)
            })
            .collect();
        self.with_destination(destination, ctx, move |act, found, ctx| {
            let enqueued = match found {
                Ok(found) => futures::future::Either::Left(found.enqueue(messages)),
                Err(e) => futures::future::Either::Right(futures::future::ready(Err(e))),
            };
            ctx.spawn(enqueued.into_actor(act).map(move |result, act, _ctx| {
                if let Err(e) = &result {
                    tracing::debug!(session = act.id, "send failed: {e}");
                }
                if let Some(receipt) = receipt {
                    act.receipt(receipt, result.map_err(|e| e.to_string()));
                }
            }));
        });
    }

    fn subscribe(
        &mut self,
        consumer: u32,
        destination: Destination,
        prefetch: u32,
        receipt: u64,
        ctx: &mut Context<Self>,
    ) {
        if self.consumers.contains_key(&consumer) {
            return self.receipt(receipt, Err(format!("consumer {consumer} already exists")));
        }
        if prefetch > self.limits.max_prefetch {
            let max = self.limits.max_prefetch;
            return self.receipt(
                receipt,
                Err(format!("prefetch {prefetch} is above the limit of {max}")),
            );
        }
        self.with_destination(destination, ctx, move |act, found, ctx| {
            let found = match found {
                Ok(found) => found,
                Err(e) => return act.receipt(receipt, Err(e.to_string())),
            };
            let id = ConsumerId::next();
            let addr = ConsumerActor::new(
                id,
                act.id,
                consumer,
                found.clone(),
                act.sink.clone(),
                act.limits.clone(),
            )
            .start();
            act.consumers.insert(consumer, addr.clone());
            let subscribed = found.subscribe(Subscribe {
                consumer: id,
                prefetch,
                sink: addr.clone().recipient(),
            });
            ctx.spawn(subscribed.into_actor(act).map(move |result, act, _ctx| {
                if result.is_err() {
                    act.consumers.remove(&consumer);
                    addr.do_send(Shutdown);
                }
                act.receipt(receipt, result.map_err(|e| e.to_string()));
            }));
        });
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(session = self.id, ack_mode = ?self.ack_mode, "session opened");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, consumer) in self.consumers.drain() {
            consumer.do_send(Shutdown);
        }
        tracing::debug!(session = self.id, "session closed");
    }
}

impl Handler<SessionCommand> for SessionActor {
    type Result = ();

    fn handle(&mut self, command: SessionCommand, ctx: &mut Context<Self>) {
        match command {
            SessionCommand::Send {
                destination,
                receipt,
                messages,
            } => self.send(destination, receipt, messages, ctx),
            SessionCommand::Subscribe {
                consumer,
                destination,
                prefetch,
                receipt,
            } => self.subscribe(consumer, destination, prefetch, receipt, ctx),
            SessionCommand::Unsubscribe { consumer } => {
                if let Some(addr) = self.consumers.remove(&consumer) {
                    addr.do_send(Shutdown);
                }
            }
            SessionCommand::Ack { acks } => {
                let mut by_consumer: HashMap<u32, Vec<u64>> = HashMap::new();
                for (consumer, tag) in acks {
                    by_consumer.entry(consumer).or_default().push(tag);
                }
                for (consumer, tags) in by_consumer {
                    match self.consumers.get(&consumer) {
                        Some(addr) => addr.do_send(ConsumerCommand::Ack(tags)),
                        None => tracing::debug!(
                            session = self.id,
                            consumer,
                            "ack for a closed consumer ignored"
                        ),
                    }
                }
            }
            SessionCommand::Pull { consumer, count } => {
                if let Some(addr) = self.consumers.get(&consumer) {
                    addr.do_send(ConsumerCommand::Pull(count));
                }
            }
        }
    }
}

impl Handler<Shutdown> for SessionActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
