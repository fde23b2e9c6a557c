//! [`ConsumerActor`]: one subscription. It turns what its destination dispatches into
//! deliveries on its client's [`ClientWire`] (native `Deliver` frames, or STOMP
//! `MESSAGE`s), passes the client's acknowledgements and pulls back to the destination
//! ([`ConsumerControl`]), and unsubscribes when it stops — so the destination (which keeps
//! the in-flight set, since it is the one that redelivers) hands whatever was not
//! acknowledged to another consumer.
//!
//! It paces itself to the socket: while more than half of the connection's pending-bytes
//! limit waits to be written, deliveries are held here (as pointers to messages the
//! destination holds anyway) until the writer has drained to a quarter. A consumer whose
//! prefetch times message size exceeds the limit is thus slowed, not disconnected; one
//! whose socket stops draining altogether is closed by the writer's deadline.
//!
//! Where the client does not acknowledge (STOMP `ack:auto`), the consumer settles each
//! batch once the writer says it is written: only then does it count as consumed and
//! return credit. A batch never written (the connection closed first) stays in flight
//! and goes back to the destination when the consumer unsubscribes. Deliveries still held
//! here when the consumer stops never reached the client: they go back as `Unsent`, not
//! counted as a delivery (so a consumer that keeps closing cannot push a message to the
//! dead-letter queue it never saw).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use actix::prelude::*;

use super::Shutdown;
use super::wire::ClientWire;
use crate::config::Limits;
use crate::destination::{
    ConsumerControl, ConsumerId, Control, DestinationRef, Dispatch, footprint,
};
use crate::protocol::WireDelivery;

pub struct ConsumerActor<W: ClientWire> {
    id: ConsumerId,
    session: u32,
    /// The client's number for this consumer.
    consumer: u32,
    destination: DestinationRef,
    wire: W,
    limits: Limits,
    /// Deliveries waiting for room on the connection's writer.
    held: VecDeque<WireDelivery>,
    /// A wait for the writer to drain is under way.
    waiting: bool,
    /// Deliveries count as consumed once written (the client never acknowledges).
    settle_on_write: bool,
    /// Deliveries the wire refused (never written): given back uncounted at the end.
    unsent: Vec<u64>,
    /// Settlements waiting for their batch to be written; the consumer unsubscribes only
    /// after them, so what was written is not delivered again.
    settling: Rc<Settling>,
}

/// Settlements under way, on the consumer's arbiter.
#[derive(Default)]
struct Settling {
    count: Cell<usize>,
    done: tokio::sync::Notify,
}

impl Settling {
    /// Resolves once no settlement is under way.
    async fn finished(&self) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.count.get() == 0 {
                return;
            }
            done.await;
        }
    }
}

impl<W: ClientWire> ConsumerActor<W> {
    pub fn new(
        id: ConsumerId,
        session: u32,
        consumer: u32,
        destination: DestinationRef,
        wire: W,
        limits: Limits,
    ) -> ConsumerActor<W> {
        let settle_on_write = wire.settles_on_write(consumer);
        ConsumerActor {
            id,
            session,
            consumer,
            destination,
            wire,
            limits,
            held: VecDeque::new(),
            waiting: false,
            settle_on_write,
            unsent: Vec::new(),
            settling: Rc::default(),
        }
    }

    fn high_water(&self) -> usize {
        self.limits.max_pending_write_bytes / 2
    }

    /// Writes held deliveries, a frame at a time, until none are left or the writer is
    /// past its high-water mark (then waits for it to drain).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let frame_budget = self.limits.max_frame_bytes as usize / 2;
        while !self.held.is_empty() {
            if self.wire.sink().pending_bytes() > self.high_water() {
                return self.wait_for_room(ctx);
            }
            let mut bytes = 0;
            let mut count = 0;
            for delivery in &self.held {
                let size = footprint(&delivery.message);
                if count > 0
                    && (bytes + size > frame_budget
                        || count >= self.limits.max_deliveries_per_frame)
                {
                    break;
                }
                bytes += size;
                count += 1;
            }
            let batch: Vec<WireDelivery> = self.held.drain(..count).collect();
            let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
            if let Err(e) = self.wire.deliver(self.consumer, batch) {
                tracing::debug!(consumer = self.consumer, "cannot deliver: {e}");
                self.unsent.extend(tags);
                return ctx.stop();
            }
            if self.settle_on_write {
                self.settle_once_written(tags);
            }
        }
    }

    /// Settles `tags` once everything written so far has reached the socket (even if the
    /// consumer stops meanwhile: it unsubscribes only after this).
    fn settle_once_written(&self, tags: Vec<u64>) {
        let written = self.wire.sink().written();
        let destination = self.destination.clone();
        let consumer = self.id;
        let settling = self.settling.clone();
        settling.count.set(settling.count.get() + 1);
        actix::spawn(async move {
            if written.await {
                destination.control(Control::Consumer(consumer, ConsumerControl::Settle(tags)));
            }
            settling.count.set(settling.count.get() - 1);
            settling.done.notify_waiters();
        });
    }

    fn wait_for_room(&mut self, ctx: &mut Context<Self>) {
        if self.waiting {
            return;
        }
        self.waiting = true;
        let low_water = self.limits.max_pending_write_bytes / 4;
        ctx.spawn(
            self.wire
                .sink()
                .drained_to(low_water)
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.waiting = false;
                    if act.wire.sink().is_closed() {
                        return ctx.stop();
                    }
                    act.flush(ctx);
                }),
        );
    }
}

impl<W: ClientWire> Actor for ConsumerActor<W> {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // What never reached the socket goes back as if never delivered; the rest of what
        // is in flight comes back (counted) when the destination sees the unsubscribe,
        // which waits for the settlements of what was written.
        let mut unsent = std::mem::take(&mut self.unsent);
        unsent.extend(self.held.drain(..).map(|d| d.tag));
        let (destination, consumer) = (self.destination.clone(), self.id);
        let settling = self.settling.clone();
        actix::spawn(async move {
            settling.finished().await;
            if !unsent.is_empty() {
                destination.control(Control::Consumer(consumer, ConsumerControl::Unsent(unsent)));
            }
            destination.control(Control::unsubscribe(consumer));
        });
        tracing::debug!(session = self.session, consumer = self.consumer, destination = %self.destination.destination(), "consumer closed");
    }
}

impl<W: ClientWire> Handler<Dispatch> for ConsumerActor<W> {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, ctx: &mut Context<Self>) {
        match msg {
            Dispatch::Deliver(batch) => {
                let consumer = self.consumer;
                self.held
                    .extend(batch.into_iter().map(|d| d.into_wire(consumer)));
                if !self.waiting {
                    self.flush(ctx);
                }
            }
            Dispatch::Evicted(reason) => {
                self.wire.evicted(self.consumer, reason);
                ctx.stop();
            }
        }
    }
}

/// Acknowledgements the client waits on: settled like any, then answered once the
/// destination has taken them and its store has made them durable (a barrier behind the
/// removals the destination appended). For a destination homed on another broker, once
/// that broker has taken them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleStored {
    pub tags: Vec<u64>,
    /// `Err` names why the removals may not be durable.
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl<W: ClientWire> Handler<SettleStored> for ConsumerActor<W> {
    type Result = ();

    fn handle(&mut self, msg: SettleStored, _ctx: &mut Context<Self>) {
        let destination = self.destination.clone();
        destination.control(Control::Consumer(
            self.id,
            ConsumerControl::Settle(msg.tags),
        ));
        actix::spawn(async move {
            // The destination answers in mailbox order: after the settlement above.
            let mut result = destination
                .stat()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if let (Ok(()), Some(store)) = (&result, destination.store()) {
                // A barrier: it is durable once the removals appended before it are.
                result = store
                    .append(Vec::new())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            let _ = msg.done.send(result);
        });
    }
}

/// Acknowledgements, releases and grants from the client, through its session.
impl<W: ClientWire> Handler<ConsumerControl> for ConsumerActor<W> {
    type Result = ();

    fn handle(&mut self, control: ConsumerControl, _ctx: &mut Context<Self>) {
        self.destination
            .control(Control::Consumer(self.id, control));
    }
}

impl<W: ClientWire> Handler<Shutdown> for ConsumerActor<W> {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
