//! [`TopicMirror`]: a topic homed on another broker, as this broker's subscribers see it.
//! Publishes go to the home (through the [`RemoteDestination`] proxy); subscribers join a
//! local [`TopicActor`], which the mirror feeds from one subscription to the home topic —
//! so a message crosses to this broker once, however many subscribers it has here, and
//! only while it has some. Flow control across the bridge is that subscription's credit:
//! a batch is settled once the local topic has taken it.
//!
//! If the home goes away the local subscribers stay; the mirror subscribes again (every
//! [`RESUBSCRIBE`](crate::constants::RESUBSCRIBE)) until the home is back, and they receive what is published from then
//! on, as subscribers of a non-durable topic would after a reconnect.

use std::collections::HashSet;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, ResponseFuture,
    WrapFuture,
};

use super::remote::RemoteDestination;
use crate::constants::RESUBSCRIBE;
use crate::destination::{
    ConsumerControl, ConsumerId, Control, DestinationError, Dispatch, Enqueue, GetStat, Subscribe,
    TopicActor,
};
use crate::message::Destination;
use crate::stats::DestinationStat;

pub struct TopicMirror {
    destination: Destination,
    remote: Addr<RemoteDestination>,
    local: Addr<TopicActor>,
    /// Credit of the subscription to the home topic.
    prefetch: u32,
    /// Local subscribers.
    subscribers: HashSet<ConsumerId>,
    /// The subscription to the home topic, while there is one.
    feed: Option<ConsumerId>,
}

impl TopicMirror {
    pub fn new(
        destination: Destination,
        remote: Addr<RemoteDestination>,
        local: Addr<TopicActor>,
        prefetch: u32,
    ) -> Self {
        TopicMirror {
            destination,
            remote,
            local,
            prefetch: prefetch.max(1),
            subscribers: HashSet::new(),
            feed: None,
        }
    }

    /// Subscribes to the home topic, as consumer `feed`.
    fn subscribe_home(
        &self,
        feed: ConsumerId,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        let request = self.remote.send(Subscribe {
            consumer: feed,
            prefetch: self.prefetch,
            sink: ctx.address().recipient(),
        });
        let unavailable = self.unavailable();
        async move { request.await.unwrap_or(Err(unavailable)) }
    }

    /// What a closed mailbox (of the proxy or the local topic) means to a caller.
    fn unavailable(&self) -> DestinationError {
        DestinationError::Unavailable(self.destination.to_string())
    }

    /// While there are subscribers here and no subscription home, tries again later.
    fn resubscribe_later(&self, ctx: &mut Context<Self>) {
        ctx.run_later(RESUBSCRIBE, |act, ctx| {
            if act.feed.is_some() || act.subscribers.is_empty() {
                return;
            }
            let feed = ConsumerId::next();
            act.feed = Some(feed);
            let subscribed = act.subscribe_home(feed, ctx);
            ctx.spawn(subscribed.into_actor(act).map(move |result, act, ctx| {
                if result.is_err() && act.feed == Some(feed) {
                    act.feed = None;
                    act.resubscribe_later(ctx);
                }
            }));
        });
    }
}

impl Actor for TopicMirror {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for TopicMirror {
    type Result = ResponseFuture<Result<(), DestinationError>>;

    /// A publish on this broker: to the home, which sends it back here if it must.
    fn handle(&mut self, enqueue: Enqueue, _: &mut Context<Self>) -> Self::Result {
        let request = self.remote.send(enqueue);
        let unavailable = self.unavailable();
        Box::pin(async move { request.await.unwrap_or(Err(unavailable)) })
    }
}

impl Handler<Subscribe> for TopicMirror {
    type Result = ResponseActFuture<Self, Result<(), DestinationError>>;

    fn handle(&mut self, subscribe: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let consumer = subscribe.consumer;
        let local = self.local.send(subscribe);
        let unavailable = self.unavailable();
        // The first subscriber here starts the feed, and is answered once it runs, so it
        // receives everything published after its subscription, as on the home.
        let home = if self.feed.is_none() {
            let feed = ConsumerId::next();
            self.feed = Some(feed);
            Some((feed, self.subscribe_home(feed, ctx)))
        } else {
            None
        };
        Box::pin(
            async move {
                let local = local.await.unwrap_or(Err(unavailable));
                let home = match home {
                    Some((feed, subscribed)) => Some((feed, subscribed.await)),
                    None => None,
                };
                (local, home)
            }
            .into_actor(self)
            .map(move |(local, home), act, ctx| {
                if let Some((feed, Err(e))) = home {
                    if act.feed == Some(feed) {
                        act.feed = None;
                    }
                    act.local.do_send(Control::unsubscribe(consumer));
                    if !act.subscribers.is_empty() {
                        act.resubscribe_later(ctx);
                    }
                    return Err(e);
                }
                if let Err(e) = local {
                    // No subscriber here after all: stop the feed it may have started.
                    if act.subscribers.is_empty()
                        && let Some(feed) = act.feed.take()
                    {
                        act.remote.do_send(Control::unsubscribe(feed));
                    }
                    return Err(e);
                }
                act.subscribers.insert(consumer);
                Ok(())
            }),
        )
    }
}

impl Handler<Control> for TopicMirror {
    type Result = ();

    fn handle(&mut self, control: Control, _: &mut Context<Self>) {
        if let Control::Consumer(consumer, ConsumerControl::Unsubscribe) = &control {
            self.subscribers.remove(consumer);
            // The last subscriber here: messages stop crossing to this broker.
            if self.subscribers.is_empty()
                && let Some(feed) = self.feed.take()
            {
                self.remote.do_send(Control::unsubscribe(feed));
            }
        }
        self.local.do_send(control);
    }
}

impl Handler<GetStat> for TopicMirror {
    type Result = ResponseFuture<DestinationStat>;

    /// The home's counters, as for any destination homed elsewhere (the proxy answers
    /// for a home that is down); this broker's own if the proxy is gone.
    fn handle(&mut self, stat: GetStat, _: &mut Context<Self>) -> Self::Result {
        let request = self.remote.send(stat);
        let local = self.local.send(GetStat);
        let destination = self.destination.clone();
        Box::pin(async move {
            match request.await {
                Ok(stat) => stat,
                Err(_) => local
                    .await
                    .unwrap_or_else(|_| DestinationStat::unknown(&destination, None)),
            }
        })
    }
}

impl Handler<Dispatch> for TopicMirror {
    type Result = ();

    /// From the home topic: into the local topic, then settled (returning the credit).
    fn handle(&mut self, dispatch: Dispatch, ctx: &mut Context<Self>) {
        let Some(feed) = self.feed else {
            return;
        };
        match dispatch {
            Dispatch::Deliver(deliveries) => {
                let tags = deliveries.iter().map(|d| d.tag).collect();
                let messages = deliveries.into_iter().map(|d| d.message).collect();
                let taken = self.local.send(Enqueue {
                    messages,
                    stored: Vec::new(),
                    mark: None,
                });
                // In order, one batch at a time: the next waits until this one is taken.
                ctx.wait(taken.into_actor(self).map(move |_, act, _| {
                    act.remote
                        .do_send(Control::Consumer(feed, ConsumerControl::Settle(tags)));
                }));
            }
            Dispatch::Evicted(reason) => {
                tracing::warn!("topic feed from its home broker ended: {reason}");
                self.feed = None;
                self.resubscribe_later(ctx);
            }
        }
    }
}
