//! Length-prefixed MessagePack framing as a `tokio_util` codec (a pure state machine over
//! a byte buffer; the caller owns the socket).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::Frame;
use crate::constants::{READ_BYTES, SHARED_BODY_BYTES};

/// Size of the length prefix.
const LEN_BYTES: usize = 4;

/// Why bytes could not become a frame (or a frame bytes).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("could not encode frame: {0}")]
    Encode(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s, refusing any frame longer than `max_frame_bytes`.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    /// Long bodies share the frame's buffer instead of being copied out of it.
    share_bodies: bool,
    /// Room for a whole frame is reserved as soon as its length is read.
    reserve_whole_frames: bool,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec {
            max_frame_bytes,
            share_bodies: false,
            reserve_whole_frames: false,
        }
    }

    /// Long bodies decoded stay in the frame's buffer ([`crate::message::body`]): for a
    /// reader that reads a large frame into an allocation of its own (the broker's
    /// `net::reader`, or a `FramedRead` with [`FrameCodec::reserving_whole_frames`]), so
    /// that a body pins little more than itself (at most twice itself when the broker's
    /// partial-frame budget was spent and the buffer grew by doubling). What follows such
    /// a frame moves to a buffer of its own, so that the allocation is never reused for
    /// later frames.
    pub fn sharing_bodies(mut self) -> FrameCodec {
        self.share_bodies = true;
        self
    }

    /// Once a frame's length is known, room for all of it is reserved, so that a large
    /// frame is read into one allocation instead of a buffer that doubles (copying what
    /// it holds each time). For a reader that trusts its peer's lengths up to
    /// `max_frame_bytes`: the client reading its broker. The broker's own reader decides
    /// this itself, against its read budget (`net::reader`).
    pub fn reserving_whole_frames(mut self) -> FrameCodec {
        self.reserve_whole_frames = true;
        self
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(frame) = take_framed(src, self.max_frame_bytes)? else {
            if self.reserve_whole_frames
                && let Some(size) = super::FrameSize::frame_size(self, src)
            {
                src.reserve(size.saturating_sub(src.len()));
            }
            return Ok(None);
        };
        // `Send` and `Deliver` by hand; anything else (or anything odd) by `rmp_serde`.
        let decode = |frame: &[u8]| match super::hot_frames::decode(frame) {
            Some(frame) => Ok(frame),
            None => rmp_serde::from_slice(frame),
        };
        let decoded = if self.share_bodies {
            if frame.len() >= SHARED_BODY_BYTES {
                move_to_own_buffer(src);
            }
            let frame = frame.freeze();
            crate::message::body::sharing_bodies(&frame, || decode(&frame))
        } else {
            decode(&frame)
        };
        decoded
            .map(Some)
            .map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

/// Moves what `src` holds into a buffer of its own, leaving the allocation it shared
/// with a frame just taken off it to that frame's bodies: a buffer that once held a long
/// body is never reused for the frames after it, so a body pins at most the allocation
/// its own frame was read into (which the reader sized for that frame), not one grown for
/// an earlier, larger frame.
fn move_to_own_buffer(src: &mut BytesMut) {
    let mut own = BytesMut::with_capacity(src.len().max(READ_BYTES));
    own.extend_from_slice(src);
    *src = own;
}

impl super::FrameSize for FrameCodec {
    fn frame_size(&self, buffered: &[u8]) -> Option<usize> {
        let len: [u8; LEN_BYTES] = buffered.get(..LEN_BYTES)?.try_into().ok()?;
        Some(LEN_BYTES + u32::from_be_bytes(len) as usize)
    }
}

/// Takes one length-prefixed body off `src` once all of it is there (`Ok(None)` until
/// then), refusing a length over `max` before any of the body is buffered. Nothing is
/// reserved for the length claimed: the buffer grows as bytes arrive, so a peer that
/// claims much and sends little costs little. The framing of native frames and of the
/// cluster bridge's envelopes alike.
pub fn take_framed(src: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ProtocolError> {
    if src.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len > max {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    if src.len() < LEN_BYTES + len {
        return Ok(None);
    }
    src.advance(LEN_BYTES);
    Ok(Some(src.split_to(len)))
}

/// Appends `value` to `dst` as one length-prefixed positional MessagePack body, refusing
/// one longer than `max`.
pub fn put_framed<T: serde::Serialize>(
    value: &T,
    dst: &mut BytesMut,
    max: usize,
) -> Result<(), ProtocolError> {
    framed(dst, max, |dst| put_rmp(value, dst))
}

/// Appends a length prefix, then what `body` writes, then sets the prefix; refuses a body
/// longer than `max`. On an error `dst` is left as it was.
fn framed(
    dst: &mut BytesMut,
    max: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.put_u32(0);
    let written = body(dst).and_then(|()| {
        let len = dst.len() - start - LEN_BYTES;
        set_length(&mut dst[start..], len, max)
    });
    if written.is_err() {
        dst.truncate(start);
    }
    written
}

/// `value` as positional MessagePack, appended to `dst`.
fn put_rmp<T: serde::Serialize>(value: &T, dst: &mut BytesMut) -> Result<(), ProtocolError> {
    rmp_serde::encode::write(&mut dst.writer(), value)
        .map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Writes `len` into the length prefix at the front of `framed`, refusing one over `max`.
fn set_length(framed: &mut [u8], len: usize, max: usize) -> Result<(), ProtocolError> {
    if len > max {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    framed[..LEN_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        encode_frame_into(frame, dst, self.max_frame_bytes)
    }
}

/// Appends one length-prefixed frame to `dst`, refusing one longer than `max_frame_bytes`.
pub fn encode_frame_into(
    frame: &Frame,
    dst: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<(), ProtocolError> {
    dst.reserve(frame.encoded_size_hint());
    framed(dst, max_frame_bytes, |dst| {
        // `Send` and `Deliver` by hand (the same bytes); anything else by `rmp_serde`.
        if super::hot_frames::encode(frame, dst) {
            Ok(())
        } else {
            put_rmp(frame, dst)
        }
    })
}

/// One frame as its own length-prefixed buffer.
pub fn encode_frame(frame: &Frame, max_frame_bytes: usize) -> Result<Bytes, ProtocolError> {
    let mut buf = BytesMut::new();
    encode_frame_into(frame, &mut buf, max_frame_bytes)?;
    Ok(buf.freeze())
}

/// One frame as the buffers to write in order: the frame's own bytes, with every body of
/// [`SHARED_BODY_BYTES`] or more spliced in by reference instead of copied. The parts
/// concatenated are exactly [`encode_frame`]'s bytes; a writer that writes vectored
/// (`net::writer::FrameSink::send_parts`) sends a large message without copying
/// it (and without touching the fresh pages a copy would need).
pub fn encode_frame_spliced(
    frame: &Frame,
    max_frame_bytes: usize,
) -> Result<Vec<Bytes>, ProtocolError> {
    let long: Vec<&Bytes> = frame
        .messages()
        .map(|m| &m.body)
        .filter(|body| body.len() >= SHARED_BODY_BYTES)
        .collect();
    if long.is_empty() {
        return Ok(vec![encode_frame(frame, max_frame_bytes)?]);
    }
    let spliced: usize = long.iter().map(|body| body.len()).sum();
    let mut writer = SplicingWriter {
        inline: BytesMut::with_capacity(frame.encoded_size_hint().saturating_sub(spliced)),
        long,
        splices: Vec::new(),
    };
    writer.inline.put_u32(0);
    rmp_serde::encode::write(&mut writer, frame)
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let SplicingWriter {
        mut inline,
        splices,
        ..
    } = writer;
    let len = inline.len() - LEN_BYTES + splices.iter().map(|(_, b)| b.len()).sum::<usize>();
    set_length(&mut inline, len, max_frame_bytes)?;
    let inline = inline.freeze();
    let mut parts = Vec::with_capacity(2 * splices.len() + 1);
    let mut from = 0;
    for (at, body) in splices {
        parts.push(inline.slice(from..at));
        parts.push(body);
        from = at;
    }
    parts.push(inline.slice(from..));
    parts.retain(|part| !part.is_empty());
    Ok(parts)
}

/// Collects an encoding's bytes, except that a write of exactly one of `long` (the
/// encoder hands a body over in one piece) is noted as a splice, not copied.
struct SplicingWriter<'a> {
    inline: BytesMut,
    long: Vec<&'a Bytes>,
    /// Where in `inline` each spliced body goes.
    splices: Vec<(usize, Bytes)>,
}

impl std::io::Write for SplicingWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Most writes are a field or a marker: only one as long as a body can be one.
        let body = (data.len() >= SHARED_BODY_BYTES)
            .then(|| {
                self.long
                    .iter()
                    .find(|body| body.as_ptr() == data.as_ptr() && body.len() == data.len())
            })
            .flatten();
        match body {
            Some(body) => self.splices.push((self.inline.len(), (*body).clone())),
            None => self.inline.extend_from_slice(data),
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::{Destination, Message, Property};
    use crate::protocol::{PROTOCOL_VERSION, WireDelivery};

    /// A `Send` of `messages` to queue `q`.
    fn send(messages: Vec<Message>) -> Frame {
        Frame::Send {
            session: 1,
            destination: Destination::queue("q"),
            receipt: None,
            messages,
            origin: None,
        }
    }

    fn round_trip(frame: Frame) {
        let mut codec = FrameCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).unwrap();
        // Feed it one byte at a time: the decoder must wait for the whole frame.
        let bytes = buf.freeze();
        let mut src = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            src.put_u8(*b);
            let got = codec.decode(&mut src).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none());
            } else {
                assert_eq!(got, Some(frame.clone()));
            }
        }
        assert!(src.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "c1".into(),
        });
        let message = Message::new(&b"body\0with nul"[..])
            .with_header("h", "v")
            .with_property("n", Property::Int(-3))
            .with_property("f", Property::Float(1.5))
            .with_correlation_id("corr")
            .with_reply_to(Destination::queue("replies"))
            .with_priority(7);
        round_trip(Frame::Send {
            session: 1,
            destination: Destination::topic("t"),
            receipt: Some(9),
            messages: vec![message.clone(), Message::new("two")],
            origin: Some(crate::protocol::SendOrigin {
                producer: "p:1".into(),
                seq: 3,
                confirmed_below: 2,
            }),
        });
        round_trip(Frame::Resolve {
            request: 4,
            producer: "p:1".into(),
            seq: 3,
        });
        round_trip(Frame::Resolved {
            request: 4,
            kept: true,
        });
        round_trip(Frame::Deliver {
            deliveries: vec![WireDelivery {
                consumer: 3,
                tag: 42,
                redelivered: true,
                delivery_count: 2,
                message: Arc::new(message),
            }],
        });
        round_trip(Frame::Ack {
            session: 1,
            acks: vec![(3, 42), (3, 43)],
            receipt: Some(5),
        });
        round_trip(Frame::Disconnect);
    }

    #[test]
    fn a_sharing_codec_leaves_long_bodies_in_the_frame_buffer() {
        let frame = send(vec![Message::new(vec![3u8; SHARED_BODY_BYTES])]);
        for sharing in [true, false] {
            let mut codec = FrameCodec::new(1 << 20);
            if sharing {
                codec = codec.sharing_bodies();
            }
            let mut src = BytesMut::new();
            codec.encode(&frame, &mut src).unwrap();
            let buffer = src.as_ptr() as usize..src.as_ptr() as usize + src.len();
            let Some(Frame::Send { messages, .. }) = codec.decode(&mut src).unwrap() else {
                panic!("not the Send frame");
            };
            let body = messages[0].body.as_ptr() as usize;
            assert_eq!(buffer.contains(&body), sharing);
        }
    }

    #[test]
    fn a_spliced_frame_is_the_same_bytes_with_long_bodies_by_reference() {
        let long = Message::new(vec![7u8; SHARED_BODY_BYTES]);
        let short = Message::new(vec![1u8; 100]);
        let delivery = |tag, message: &Message| WireDelivery {
            consumer: 1,
            tag,
            redelivered: false,
            delivery_count: 1,
            message: Arc::new(message.clone()),
        };
        let frames = [
            Frame::Deliver {
                deliveries: vec![
                    delivery(1, &short),
                    delivery(2, &long),
                    delivery(3, &short),
                    delivery(4, &long),
                ],
            },
            send(vec![long.clone()]),
            send(vec![short.clone()]),
        ];
        for frame in frames {
            let parts = encode_frame_spliced(&frame, 1 << 20).unwrap();
            let whole = encode_frame(&frame, 1 << 20).unwrap();
            assert_eq!(parts.concat(), whole.to_vec());
            let by_reference = parts
                .iter()
                .filter(|part| part.as_ptr() == long.body.as_ptr())
                .count();
            let long_bodies = frame.messages().filter(|m| m.body == long.body).count();
            assert_eq!(by_reference, long_bodies);
            assert_eq!(parts.len(), 2 * long_bodies + 1);
        }
    }

    #[test]
    fn a_spliced_frame_over_the_limit_is_refused() {
        let frame = send(vec![Message::new(vec![0u8; SHARED_BODY_BYTES])]);
        assert!(matches!(
            encode_frame_spliced(&frame, SHARED_BODY_BYTES),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_shared_body_never_shares_its_buffer_with_the_frames_after_it() {
        let frame = send(vec![Message::new(vec![3u8; SHARED_BODY_BYTES])]);
        // A buffer much larger than the frame (one grown for an earlier, larger frame),
        // holding the frame and the start of the next.
        let mut src = BytesMut::with_capacity(16 << 20);
        encode_frame_into(&frame, &mut src, 1 << 24).unwrap();
        src.extend_from_slice(&[0, 0, 1]);
        let allocation = src.as_ptr() as usize..src.as_ptr() as usize + (16 << 20);
        let mut codec = FrameCodec::new(1 << 24).sharing_bodies();
        let Some(Frame::Send { messages, .. }) = codec.decode(&mut src).unwrap() else {
            panic!("not the Send frame");
        };
        assert!(allocation.contains(&(messages[0].body.as_ptr() as usize)));
        // The rest moved out: the big allocation is the body's alone, not reused for
        // what comes next (where a later long body would pin all of it).
        assert_eq!(&src[..], &[0, 0, 1]);
        assert!(!allocation.contains(&(src.as_ptr() as usize)));
    }

    #[test]
    fn oversize_length_is_refused_before_reading_the_body() {
        let mut codec = FrameCodec::new(100);
        let mut src = BytesMut::from(&[0u8, 0, 1, 0][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(ProtocolError::FrameTooLarge { len: 256, max: 100 })
        ));
    }

    #[test]
    fn nothing_is_reserved_for_a_frame_that_has_not_arrived() {
        let mut codec = FrameCodec::new(1 << 24);
        let mut src = BytesMut::from(&[0u8, 0xf0, 0, 0, 1][..]);
        let before = src.capacity();
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert_eq!(src.capacity(), before);
    }

    #[test]
    fn a_reserving_codec_makes_room_for_the_whole_frame_once_its_length_is_read() {
        let mut codec = FrameCodec::new(1 << 24).reserving_whole_frames();
        let mut src = BytesMut::from(&[0u8, 0x10, 0, 0, 1][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() >= 4 + 0x10_0000);
        // A length over the limit is refused, not reserved.
        let mut codec = FrameCodec::new(1 << 10).reserving_whole_frames();
        let mut src = BytesMut::from(&[0u8, 0x10, 0, 0, 1][..]);
        assert!(codec.decode(&mut src).is_err());
        assert!(src.capacity() < 1 << 10);
    }

    #[test]
    fn garbage_is_malformed() {
        let mut codec = FrameCodec::new(100);
        let mut src = BytesMut::from(&[0u8, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn encoding_refuses_oversize_frames() {
        let frame = send(vec![Message::new(vec![0u8; 200])]);
        let mut buf = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            encode_frame_into(&frame, &mut buf, 100),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(&buf[..], b"keep");
    }
}
