//! The native protocol's front-end: a [`ConnectionActor`] per socket (handshake, sessions,
//! the frames of `protocol`), and [`NativeWire`], its sessions' way back to the client.

mod connection;
mod wire;

pub use connection::ConnectionActor;
pub use wire::NativeWire;

use bytes::Bytes;

use crate::config::Limits;
use crate::net::writer::FrameSink;
use crate::protocol::{Frame, encode_frame};
use crate::session::SessionError;

/// What a standby writes to a native client before closing: an `Error` frame with code
/// `Standby` and the reason.
pub fn standby_refusal(reason: &str) -> Bytes {
    let frame = Frame::Error {
        code: crate::protocol::ErrorCode::Standby,
        message: reason.to_string(),
    };
    encode_frame(&frame, usize::MAX).unwrap_or_default()
}

/// Encodes `frame` and queues it on `sink`.
pub(crate) fn write_frame(
    sink: &FrameSink,
    frame: &Frame,
    limits: &Limits,
) -> Result<(), SessionError> {
    let bytes: Bytes = encode_frame(frame, limits.max_frame_bytes as usize)?;
    sink.send(bytes)?;
    Ok(())
}
