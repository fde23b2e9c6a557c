//! A link's far side, as this broker serves it: [`HomeSide`] handles a peer's requests to
//! destinations homed here (enqueue, subscribe, stat, consumer controls) in the order they
//! came, and a [`RemoteConsumer`] per peer consumer passes its destination's deliveries
//! back over the link.

use std::collections::HashMap;

use actix::{Actor, Addr, Context, Handler};

use super::envelope::{
    Envelope, Remotable, RemoteControl, RemoteDeliver, RemoteEnqueue, RemoteEvicted,
    RemoteSubscribe, Reply, ReplyBody,
};
use crate::destination::{
    ConsumerControl, ConsumerId, Control, DestinationError, DestinationRef, DestinationRegistry,
    Dispatch, ResolveHome, Subscribe,
};
use crate::net::writer::FrameSink;

/// Encodes `message` for the actor `to` on a peer of generation `generation` and queues it
/// on that link's `sink`. A closed link is not reported: its clean-up settles what it
/// carried (requests fail, consumers are unsubscribed).
pub(super) fn post_on<M: Remotable>(
    sink: &FrameSink,
    to: &str,
    generation: u64,
    request: u64,
    message: &M,
    max_envelope: usize,
) {
    match Envelope::new(to, generation, request, message).and_then(|e| e.encode(max_envelope)) {
        Ok(bytes) => {
            let _ = sink.send(bytes);
        }
        Err(e) => tracing::error!("bridge: cannot send `{}` to {to}: {e}", M::TAG),
    }
}

/// What one link's peer uses on this broker: the destinations it reached, and its
/// consumers (by the peer's consumer id) with the local id each was subscribed under.
pub(super) struct HomeSide {
    /// Where destinations homed here are found (none before the broker serves peers).
    registry: Option<Addr<DestinationRegistry>>,
    sink: FrameSink,
    generation: u64,
    max_envelope: usize,
    refs: HashMap<String, DestinationRef>,
    consumers: HashMap<u64, (ConsumerId, DestinationRef)>,
}

impl HomeSide {
    pub(super) fn new(
        registry: Option<Addr<DestinationRegistry>>,
        sink: FrameSink,
        generation: u64,
        max_envelope: usize,
    ) -> HomeSide {
        HomeSide {
            registry,
            sink,
            generation,
            max_envelope,
            refs: HashMap::new(),
            consumers: HashMap::new(),
        }
    }

    /// The local destination called `to` (its string form), created if need be; refused
    /// if this broker is not its home.
    async fn local(&mut self, to: &str) -> Result<DestinationRef, DestinationError> {
        if let Some(found) = self.refs.get(to) {
            return Ok(found.clone());
        }
        let destination = to
            .parse()
            .map_err(|e| DestinationError::Refused(format!("{e}")))?;
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| DestinationError::Unavailable(to.to_string()))?;
        let found = registry
            .send(ResolveHome(destination))
            .await
            .map_err(|_| DestinationError::Unavailable(to.to_string()))??;
        // Temporaries come and go with clients: looked up each time, not kept.
        if !found.destination().is_temporary() {
            self.refs.insert(to.to_string(), found.clone());
        }
        Ok(found)
    }

    /// Sends the reply to request `request` back over the link.
    fn replier(
        &self,
        request: u64,
    ) -> impl FnOnce(Result<ReplyBody, DestinationError>) + Send + 'static {
        let (sink, generation, max) = (self.sink.clone(), self.generation, self.max_envelope);
        move |result| post_on(&sink, "bridge", generation, request, &Reply(result), max)
    }

    /// The peer's send to the destination `to`, answered once it is accepted.
    pub(super) async fn enqueue(&mut self, to: &str, request: u64, enqueue: RemoteEnqueue) {
        let reply = self.replier(request);
        match self.local(to).await {
            Ok(target) => {
                let accepted = target.enqueue(enqueue.messages);
                actix::spawn(async move { reply(accepted.await.map(|()| ReplyBody::Done)) });
            }
            Err(e) => reply(Err(e)),
        }
    }

    /// The peer's consumer subscribes to `to`: a [`RemoteConsumer`] here is its sink.
    pub(super) async fn subscribe(&mut self, to: &str, request: u64, subscribe: RemoteSubscribe) {
        let reply = self.replier(request);
        let target = match self.local(to).await {
            Ok(target) if target.destination().is_temporary() => {
                return reply(Err(DestinationError::Refused(format!(
                    "only the connection that created {to} may consume from it"
                ))));
            }
            Ok(target) => target,
            Err(e) => return reply(Err(e)),
        };
        // A consumer subscribing again replaces its earlier subscription.
        if let Some((old, target)) = self.consumers.remove(&subscribe.consumer) {
            target.control(Control::unsubscribe(old));
        }
        let local = ConsumerId::next();
        let forwarder = RemoteConsumer {
            sink: self.sink.clone(),
            to: format!("consumer/{}", subscribe.consumer),
            consumer: subscribe.consumer,
            generation: self.generation,
            max_envelope: self.max_envelope,
        }
        .start();
        self.consumers
            .insert(subscribe.consumer, (local, target.clone()));
        let subscribed = target.subscribe(Subscribe {
            consumer: local,
            prefetch: subscribe.prefetch,
            sink: forwarder.recipient(),
        });
        actix::spawn(async move { reply(subscribed.await.map(|()| ReplyBody::Done)) });
    }

    /// The counters of `to`.
    pub(super) async fn stat(&mut self, to: &str, request: u64) {
        let reply = self.replier(request);
        match self.local(to).await {
            Ok(target) => {
                let stat = target.stat();
                actix::spawn(async move { reply(stat.await.map(ReplyBody::Stat)) });
            }
            Err(e) => reply(Err(e)),
        }
    }

    /// What the peer's consumer says about its deliveries, passed to its destination.
    pub(super) fn control(&mut self, RemoteControl { consumer, control }: RemoteControl) {
        if control == ConsumerControl::Unsubscribe {
            if let Some((local, target)) = self.consumers.remove(&consumer) {
                target.control(Control::unsubscribe(local));
            }
        } else if let Some((local, target)) = self.consumers.get(&consumer) {
            target.control(Control::Consumer(*local, control));
        }
    }

    /// The link is gone: the peer's consumers leave their destinations.
    pub(super) fn close(&mut self) {
        for (_, (local, target)) in self.consumers.drain() {
            target.control(Control::unsubscribe(local));
        }
    }
}

/// A consumer on another broker, as its destination here sees it: passes deliveries over
/// the link.
struct RemoteConsumer {
    sink: FrameSink,
    /// Its address in envelopes, `consumer/<id>`.
    to: String,
    consumer: u64,
    generation: u64,
    max_envelope: usize,
}

impl Actor for RemoteConsumer {
    type Context = Context<Self>;
}

impl RemoteConsumer {
    fn post<M: Remotable>(&self, message: &M) {
        post_on(
            &self.sink,
            &self.to,
            self.generation,
            0,
            message,
            self.max_envelope,
        );
    }
}

impl Handler<Dispatch> for RemoteConsumer {
    type Result = ();

    fn handle(&mut self, dispatch: Dispatch, _: &mut Context<Self>) {
        match dispatch {
            Dispatch::Deliver(deliveries) => self.post(&RemoteDeliver {
                consumer: self.consumer,
                deliveries,
            }),
            Dispatch::Evicted(reason) => self.post(&RemoteEvicted {
                consumer: self.consumer,
                reason,
            }),
        }
    }
}
