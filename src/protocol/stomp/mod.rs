//! STOMP 1.0–1.2 frames and their codec: bytes in, frames out, and back — no I/O. The
//! broker's STOMP front-end (`frontend::stomp`) and the tests' and bench's STOMP clients
//! speak through it.

mod codec;
mod frame;

pub use codec::{FrameWriter, StompCodec, StompError, StompLimits, encode_into};
pub use frame::{Command, Inbound, StompFrame};
