//! [`ClientWire`]: how a session and its consumers speak to their client. The session and
//! consumer actors are the same for every protocol; only this differs. [`NativeWire`]
//! encodes native frames straight onto the connection's writer; the STOMP listener's wire
//! encodes MESSAGE frames onto its writer too, and hands receipts to its connection actor,
//! which owns the receipt names that STOMP frames carry.

use super::{BrokerError, write_frame};
use crate::config::Limits;
use crate::destination::DestinationError;
use crate::protocol::{ErrorCode, Frame, ProtocolError, WireDelivery, encode_frame};
use crate::net::writer::FrameSink;

/// What sessions and consumers need from their client connection.
pub trait ClientWire: Clone + Unpin + 'static {
    /// The connection's writer; consumers pace themselves to it.
    fn sink(&self) -> &FrameSink;
    /// Writes deliveries for the client's consumer number `consumer`.
    fn deliver(&self, consumer: u32, deliveries: Vec<WireDelivery>) -> Result<(), BrokerError>;
    /// Whether `consumer`'s deliveries count as consumed once written to the socket (STOMP
    /// `ack:auto`), rather than when the client acknowledges them.
    fn settles_on_write(&self, _consumer: u32) -> bool {
        false
    }
    /// Answers the request that carried `receipt`.
    fn receipt(&self, receipt: u64, result: Result<(), DestinationError>);
    /// A destination dropped `consumer` as a slow consumer: tell the client, then close.
    fn evicted(&self, consumer: u32, reason: String);
    /// A send without a receipt failed: tell the client why, then close (nothing accepted
    /// is dropped without a word).
    fn send_failed(&self, reason: String);
}

/// The native protocol's wire.
#[derive(Clone)]
pub struct NativeWire {
    sink: FrameSink,
    limits: Limits,
}

impl NativeWire {
    pub fn new(sink: FrameSink, limits: Limits) -> NativeWire {
        NativeWire { sink, limits }
    }

    /// One `Deliver` frame, or several if one would pass the frame limit.
    fn deliver_frames(&self, deliveries: Vec<WireDelivery>) -> Result<(), BrokerError> {
        let frame = Frame::Deliver { deliveries };
        match encode_frame(&frame, self.limits.max_frame_bytes as usize) {
            Ok(bytes) => Ok(self.sink.send(bytes)?),
            Err(ProtocolError::FrameTooLarge { .. }) if matches!(&frame, Frame::Deliver { deliveries } if deliveries.len() > 1) =>
            {
                let Frame::Deliver { mut deliveries } = frame else {
                    return Ok(());
                };
                let second = deliveries.split_off(deliveries.len() / 2);
                self.deliver_frames(deliveries)?;
                self.deliver_frames(second)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl ClientWire for NativeWire {
    fn sink(&self) -> &FrameSink {
        &self.sink
    }

    fn deliver(&self, _consumer: u32, deliveries: Vec<WireDelivery>) -> Result<(), BrokerError> {
        // Each native delivery names its consumer itself.
        self.deliver_frames(deliveries)
    }

    fn receipt(&self, receipt: u64, result: Result<(), DestinationError>) {
        let frame = Frame::Receipt {
            receipt,
            error: result.err().map(|e| e.refusal()),
        };
        if let Err(e) = write_frame(&self.sink, &frame, &self.limits) {
            tracing::debug!("cannot write receipt: {e}");
        }
    }

    fn evicted(&self, _consumer: u32, reason: String) {
        self.close_with(ErrorCode::SlowConsumer, reason);
    }

    fn send_failed(&self, reason: String) {
        tracing::warn!("closing connection: {reason}");
        self.close_with(ErrorCode::Refused, reason);
    }
}

impl NativeWire {
    fn close_with(&self, code: ErrorCode, message: String) {
        let frame = Frame::Error { code, message };
        self.sink
            .close(encode_frame(&frame, self.limits.max_frame_bytes as usize).ok());
    }
}
