//! [`NativeWire`]: the native protocol's [`ClientWire`], encoding `Deliver`, `Receipt` and
//! `Error` frames straight onto the connection's writer (a long body by reference, not
//! copied: [`encode_frame_spliced`]).

use super::write_frame;
use crate::config::Limits;
use crate::destination::DestinationError;
use crate::net::writer::FrameSink;
use crate::protocol::{
    ErrorCode, Frame, ProtocolError, WireDelivery, encode_frame, encode_frame_spliced,
};
use crate::session::{ClientWire, SessionError};

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

    /// One `Deliver` frame, or several if one would pass the frame limit. Long bodies are
    /// written from the messages themselves, not copied into the frame.
    fn deliver_frames(&self, deliveries: Vec<WireDelivery>) -> Result<(), SessionError> {
        let frame = Frame::Deliver { deliveries };
        match encode_frame_spliced(&frame, self.limits.max_frame_bytes as usize) {
            Ok(parts) => Ok(self.sink.send_parts(parts)?),
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

    fn deliver(&self, _consumer: u32, deliveries: Vec<WireDelivery>) -> Result<(), SessionError> {
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
