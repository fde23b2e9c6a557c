//! [`RemoteDestination`]: the stand-in for a queue or topic homed on another broker. It
//! answers the same typed messages as a local `QueueActor` or `TopicActor` (so a
//! `DestinationRef` to it looks like any other) and turns each into an envelope over the
//! [`Bridge`]. Sends keep their order: one that must wait (for the link, or for room on
//! it) holds the actor's mailbox with `ctx.wait` until it is on the wire.

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture, WrapFuture};
use tokio::sync::oneshot;

use super::bridge::{Bridge, Posted};
use super::envelope::{
    Remotable, RemoteControl, RemoteEnqueue, RemoteStat, RemoteSubscribe, Reply, ReplyBody,
};
use crate::destination::{Control, DestinationError, Enqueue, GetStat, Subscribe};
use crate::message::Destination;
use crate::protocol::DestinationStat;

pub struct RemoteDestination {
    destination: Destination,
    /// `destination` as envelopes address it.
    to: String,
    home: String,
    bridge: Bridge,
}

impl RemoteDestination {
    pub fn new(destination: Destination, home: String, bridge: Bridge) -> RemoteDestination {
        RemoteDestination {
            to: destination.to_string(),
            destination,
            home,
            bridge,
        }
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
    type Result = ResponseFuture<Result<(), DestinationError>>;

    fn handle(&mut self, subscribe: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let consumer = subscribe.consumer.0;
        self.bridge.add_sink(consumer, &self.home, subscribe.sink);
        let reply = self.request(
            &RemoteSubscribe {
                consumer,
                prefetch: subscribe.prefetch,
            },
            ctx,
        );
        let bridge = self.bridge.clone();
        Box::pin(async move {
            let result = reply.await.map(|_| ());
            if result.is_err() {
                bridge.remove_sink(consumer);
            }
            result
        })
    }
}

impl Handler<Control> for RemoteDestination {
    type Result = ();

    fn handle(&mut self, control: Control, _: &mut Context<Self>) {
        let remote = match control {
            Control::Unsubscribe(consumer) => {
                self.bridge.remove_sink(consumer.0);
                RemoteControl::Unsubscribe {
                    consumer: consumer.0,
                }
            }
            Control::Settle { consumer, tags } => RemoteControl::Settle {
                consumer: consumer.0,
                tags,
            },
            Control::Release { consumer, tags } => RemoteControl::Release {
                consumer: consumer.0,
                tags,
            },
            Control::Grant { consumer, credit } => RemoteControl::Grant {
                consumer: consumer.0,
                credit,
            },
            // Wildcard points and temporaries are never remote.
            Control::ForwardTo(_) | Control::Delete => return,
        };
        self.bridge.post_now(&self.home, &self.to, &remote);
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
