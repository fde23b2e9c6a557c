//! The wire protocols as pure codecs: bytes in, frames out, and back. No sockets, no
//! async, no broker logic — so they can be tested and fuzzed alone. This module is the
//! native protocol; [`stomp`] is STOMP.
//!
//! On the wire each frame is a `u32` big-endian length followed by that many bytes of one
//! MessagePack-encoded [`Frame`], positional (structs as arrays, `rmp_serde::encode::write`):
//! field names made up a fifth of the broker's CPU time in a profile, and the positional
//! form moved 1.2–1.3× the messages. So no frame field may use `skip_serializing_if`, and
//! any change to a frame's fields is a new [`PROTOCOL_VERSION`]. The first frame a client
//! sends is [`Frame::Hello`] carrying the version; the broker answers [`Frame::Welcome`].
//! The two frames every message crosses, `Send` and `Deliver`, are written and read by hand
//! (`hot_frames`: the same bytes `rmp_serde` writes, field by field); every other frame,
//! and anything the hand-written path declines, by `rmp_serde`.
//! (Journal records have a versioned format of their own: `store::format`.)

mod codec;
mod frame;
mod hot_frames;
pub mod stomp;

pub use codec::{
    FrameCodec, ProtocolError, encode_frame, encode_frame_into, encode_frame_spliced, put_framed,
    take_framed,
};

/// A decoder that can tell, from the first bytes of the frame at the front of a buffer,
/// how many bytes the whole frame takes — so a reader can make room for it at once.
pub trait FrameSize {
    /// The length of the frame starting at `buffered[0]`, counted from there, once known.
    fn frame_size(&self, buffered: &[u8]) -> Option<usize>;
}
pub use frame::{
    ErrorCode, Frame, PROTOCOL_VERSION, Refusal, SendOrigin, TransactedSend, WireDelivery,
};
// Carried in `StatReply` and `Located`.
pub use crate::stats::{DestinationStat, MasterStat, MemberStat, MemberState, StoreStat};
