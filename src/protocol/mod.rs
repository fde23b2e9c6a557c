//! The native wire protocol as a pure codec: bytes in, [`Frame`]s out, and back. No
//! sockets, no async, no broker logic — so it can be tested and fuzzed alone.
//!
//! On the wire each frame is a `u32` big-endian length followed by that many bytes of one
//! MessagePack-encoded [`Frame`] (`rmp_serde::to_vec_named`, so fields are named and a
//! later version can add optional ones). The first frame a client sends is
//! [`Frame::Hello`] carrying [`PROTOCOL_VERSION`]; the broker answers [`Frame::Welcome`].

mod codec;
mod frame;

pub use codec::{FrameCodec, ProtocolError, encode_frame, encode_frame_into};
pub use frame::{
    DestinationStat, ErrorCode, Frame, PROTOCOL_VERSION, Refusal, StoreStat, TransactedSend,
    WireDelivery,
};
