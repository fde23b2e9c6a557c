//! [`ConsumerActor`]: one subscription. It turns what its destination dispatches into
//! `Deliver` frames on the connection's writer, passes the client's acknowledgements and
//! pulls back to the destination, and unsubscribes when it stops — so the destination
//! (which keeps the in-flight set, since it is the one that redelivers) hands whatever was
//! not acknowledged to another consumer.

use actix::prelude::*;

use super::Shutdown;
use crate::config::Limits;
use crate::destination::{ConsumerId, Control, Delivery, DestinationRef, Dispatch};
use crate::protocol::{ErrorCode, Frame, ProtocolError, WireDelivery, encode_frame};
use crate::writer::FrameSink;

/// What the session passes to a consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ConsumerCommand {
    Ack(Vec<u64>),
    Pull(u32),
}

pub struct ConsumerActor {
    id: ConsumerId,
    session: u32,
    /// The client's number for this consumer.
    consumer: u32,
    destination: DestinationRef,
    sink: FrameSink,
    limits: Limits,
}

impl ConsumerActor {
    pub fn new(
        id: ConsumerId,
        session: u32,
        consumer: u32,
        destination: DestinationRef,
        sink: FrameSink,
        limits: Limits,
    ) -> ConsumerActor {
        ConsumerActor {
            id,
            session,
            consumer,
            destination,
            sink,
            limits,
        }
    }

    /// Writes deliveries as one frame, or as several if one would pass the frame limit.
    fn deliver(&self, deliveries: Vec<WireDelivery>) -> Result<(), super::BrokerError> {
        let frame = Frame::Deliver { deliveries };
        match encode_frame(&frame, self.limits.max_frame_bytes as usize) {
            Ok(bytes) => Ok(self.sink.send(bytes)?),
            Err(ProtocolError::FrameTooLarge { .. }) if matches!(&frame, Frame::Deliver { deliveries } if deliveries.len() > 1) =>
            {
                let Frame::Deliver { mut deliveries } = frame else {
                    return Ok(());
                };
                let second = deliveries.split_off(deliveries.len() / 2);
                self.deliver(deliveries)?;
                self.deliver(second)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.destination.control(Control::Unsubscribe(self.id));
        tracing::debug!(session = self.session, consumer = self.consumer, destination = %self.destination.destination(), "consumer closed");
    }
}

impl Handler<Dispatch> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, ctx: &mut Context<Self>) {
        match msg {
            Dispatch::Deliver(batch) => {
                let deliveries: Vec<WireDelivery> = batch
                    .into_iter()
                    .map(
                        |Delivery {
                             tag,
                             redelivered,
                             message,
                         }| WireDelivery {
                            consumer: self.consumer,
                            tag,
                            redelivered,
                            message,
                        },
                    )
                    .collect();
                if let Err(e) = self.deliver(deliveries) {
                    tracing::debug!(consumer = self.consumer, "cannot deliver: {e}");
                    ctx.stop();
                }
            }
            Dispatch::Evicted(reason) => {
                let frame = Frame::Error {
                    code: ErrorCode::SlowConsumer,
                    message: reason,
                };
                self.sink
                    .close(encode_frame(&frame, self.limits.max_frame_bytes as usize).ok());
                ctx.stop();
            }
        }
    }
}

impl Handler<ConsumerCommand> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, msg: ConsumerCommand, _ctx: &mut Context<Self>) {
        let control = match msg {
            ConsumerCommand::Ack(tags) => Control::Settle {
                consumer: self.id,
                tags,
            },
            ConsumerCommand::Pull(credit) => Control::Grant {
                consumer: self.id,
                credit,
            },
        };
        self.destination.control(control);
    }
}

impl Handler<Shutdown> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
