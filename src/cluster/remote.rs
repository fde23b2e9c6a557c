//! [`RemoteDestination`]: the stand-in for a queue or topic homed on another broker. It
//! answers the same typed messages as a local `QueueActor` or `TopicActor` (so a
//! `DestinationRef` to it looks like any other) and turns each into an envelope over the
//! [`Bridge`]. Sends keep their order: one that must wait (for the link, or for room on
//! it) holds the actor's mailbox with `ctx.wait` until it is on the wire. Consumers
//! subscribed through it outlive the link: when it is lost they subscribe again, every
//! second, until the home is back.

use std::collections::{HashMap, HashSet};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Recipient, ResponseActFuture,
    ResponseFuture, WrapFuture,
};
use tokio::sync::oneshot;

use super::bridge::{Bridge, LinkLost, Posted};
use super::envelope::{
    Remotable, RemoteControl, RemoteEnqueue, RemoteStat, RemoteSubscribe, Reply, ReplyBody,
};
use crate::constants::RESUBSCRIBE;
use crate::destination::{
    ConsumerControl, Control, DestinationError, Dispatch, Enqueue, GetStat, Subscribe,
};
use crate::message::Destination;
use crate::stats::DestinationStat;

pub struct RemoteDestination {
    destination: Destination,
    /// `destination` as envelopes address it.
    to: String,
    home: String,
    bridge: Bridge,
    /// Consumers subscribed through this proxy (sink, prefetch): kept so that they can
    /// subscribe again when the link to the home comes back.
    consumers: HashMap<u64, (Recipient<Dispatch>, u32)>,
    /// Consumers with a subscription attempt scheduled or under way.
    retrying: HashSet<u64>,
}

impl RemoteDestination {
    pub fn new(destination: Destination, home: String, bridge: Bridge) -> RemoteDestination {
        RemoteDestination {
            to: destination.to_string(),
            destination,
            home,
            bridge,
            consumers: HashMap::new(),
            retrying: HashSet::new(),
        }
    }

    /// Subscribes consumer `consumer` again in a while, and again after that until it
    /// works or the consumer leaves. Its unacknowledged deliveries went back to the queue
    /// when the link went; they come again, marked redelivered.
    fn resubscribe_later(&mut self, consumer: u64, ctx: &mut Context<Self>) {
        ctx.run_later(RESUBSCRIBE, move |act, ctx| {
            let Some((sink, prefetch)) = act.consumers.get(&consumer).cloned() else {
                act.retrying.remove(&consumer);
                return;
            };
            act.bridge
                .add_sink(consumer, &act.home, sink, ctx.address().recipient());
            let reply = act.request(&RemoteSubscribe { consumer, prefetch }, ctx);
            ctx.spawn(reply.into_actor(act).map(move |result, act, ctx| {
                if result.is_ok() {
                    tracing::info!(consumer, home = %act.home, "consumer subscribed again");
                    act.retrying.remove(&consumer);
                } else if act.consumers.contains_key(&consumer) {
                    act.resubscribe_later(consumer, ctx);
                } else {
                    act.retrying.remove(&consumer);
                }
            }));
        });
    }

    fn home_down(&self) -> DestinationError {
        DestinationError::HomeDown {
            destination: self.to.clone(),
            home: self.home.clone(),
        }
    }

    /// Sends a request in order with everything else sent to this destination and
    /// resolves with its reply.
    fn request<M: Remotable>(
        &mut self,
        message: &M,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<ReplyBody, DestinationError>> + 'static {
        let (id, reply) = self.bridge.expect_reply();
        let posted = self.bridge.post(&self.home, &self.to, id, message);
        let (sent_tx, sent) = oneshot::channel();
        match posted {
            Ok(Posted::Sent) => {
                let _ = sent_tx.send(Ok(()));
            }
            Ok(Posted::Waiting(send)) => {
                ctx.wait(send.into_actor(self).map(move |result, _, _| {
                    let _ = sent_tx.send(result);
                }));
            }
            Err(e) => {
                let _ = sent_tx.send(Err(e));
            }
        }
        let (bridge, down) = (self.bridge.clone(), self.home_down());
        async move {
            match sent.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    bridge.cancel(id);
                    return Err(e);
                }
                Err(_) => {
                    bridge.cancel(id);
                    return Err(down);
                }
            }
            match reply.await {
                Ok(Reply(result)) => result,
                // The link closed before the reply came.
                Err(_) => Err(down),
            }
        }
    }
}

impl Actor for RemoteDestination {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for RemoteDestination {
    type Result = ResponseFuture<Result<(), DestinationError>>;

    fn handle(&mut self, enqueue: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        // `stored` is always empty here: only local destinations have a store to
        // pre-store a transaction's messages in.
        let reply = self.request(
            &RemoteEnqueue {
                messages: enqueue.messages,
            },
            ctx,
        );
        Box::pin(async move { reply.await.map(|_| ()) })
    }
}

impl Handler<Subscribe> for RemoteDestination {
    type Result = ResponseActFuture<Self, Result<(), DestinationError>>;

    fn handle(&mut self, subscribe: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let consumer = subscribe.consumer.0;
        let prefetch = subscribe.prefetch;
        self.bridge.add_sink(
            consumer,
            &self.home,
            subscribe.sink.clone(),
            ctx.address().recipient(),
        );
        let reply = self.request(&RemoteSubscribe { consumer, prefetch }, ctx);
        Box::pin(
            reply
                .into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(_) => {
                        act.consumers.insert(consumer, (subscribe.sink, prefetch));
                        Ok(())
                    }
                    Err(e) => {
                        act.bridge.remove_sink(consumer);
                        Err(e)
                    }
                }),
        )
    }
}

impl Handler<Control> for RemoteDestination {
    type Result = ();

    fn handle(&mut self, control: Control, _: &mut Context<Self>) {
        // Wildcard points and temporaries are never remote.
        let Control::Consumer(consumer, control) = control else {
            return;
        };
        if control == ConsumerControl::Unsubscribe {
            self.consumers.remove(&consumer.0);
            self.bridge.remove_sink(consumer.0);
        }
        let remote = RemoteControl {
            consumer: consumer.0,
            control,
        };
        self.bridge.post_now(&self.home, &self.to, &remote);
    }
}

impl Handler<LinkLost> for RemoteDestination {
    type Result = ();

    fn handle(&mut self, LinkLost { consumer }: LinkLost, ctx: &mut Context<Self>) {
        if self.consumers.contains_key(&consumer) && self.retrying.insert(consumer) {
            tracing::info!(
                consumer,
                home = %self.home,
                "link to the home of {} lost: subscribing again once it is back",
                self.to
            );
            self.resubscribe_later(consumer, ctx);
        }
    }
}

impl Handler<GetStat> for RemoteDestination {
    type Result = ResponseFuture<DestinationStat>;

    fn handle(&mut self, _: GetStat, ctx: &mut Context<Self>) -> Self::Result {
        // `stat` does not wait for a link that is down.
        let reply = self
            .bridge
            .is_linked(&self.home)
            .then(|| self.request(&RemoteStat, ctx));
        let destination = self.destination.clone();
        let home = self.home.clone();
        Box::pin(async move {
            let reply = match reply {
                Some(reply) => reply.await,
                None => Err(DestinationError::Unavailable(destination.to_string())),
            };
            match reply {
                Ok(ReplyBody::Stat(stat)) => stat,
                // Home down: the row still says where the destination lives.
                _ => DestinationStat::unknown(&destination, Some(home)),
            }
        })
    }
}
