//! The two frames every message crosses, `Send` and `Deliver`, read and written by hand:
//! the same bytes `rmp_serde` writes (positional MessagePack, see the module above), field
//! by field with `rmp`'s primitives instead of through serde's generic machinery (reading
//! was the largest single item in both the broker's and the client's profiles).
//!
//! [`encode`] writes what `rmp_serde` would, byte for byte (the tests compare them), for a
//! `Send` or `Deliver` whose messages carry no typed properties; it declines anything else.
//!
//! [`decode`] is only a fast path: it takes exactly the shape `rmp_serde` writes and
//! answers `None` for anything else — another frame, a message with typed properties, a
//! field it does not expect, or bytes that are not a frame at all — and the caller then
//! decodes with `rmp_serde`, whose answer (the frame, or the error that names what is
//! wrong) stands. So this adds no way to accept or refuse a frame that `rmp_serde` would
//! not.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rmp::Marker;
use rmp::decode as read;
use rmp::encode as write;

use super::frame::{Frame, SendOrigin, WireDelivery};
use crate::message::{Destination, Message, body};

/// Fields of a `Send` (session, destination, receipt, messages, origin).
const SEND_FIELDS: u32 = 5;
/// Fields of a [`WireDelivery`] (consumer, tag, redelivered, delivery count, message).
const DELIVERY_FIELDS: u32 = 5;
/// Fields of a [`Message`], in declaration order.
const MESSAGE_FIELDS: u32 = 11;
/// Fields of a [`SendOrigin`] (producer, seq, confirmed below).
const ORIGIN_FIELDS: u32 = 3;

/// The `Send` or `Deliver` frame `bytes` hold, if they hold one in the shape `rmp_serde`
/// writes; `None` otherwise (the caller decodes with `rmp_serde`). Long bodies are shared
/// with the buffer being decoded as `rmp_serde`'s path shares them ([`body`]).
pub fn decode(bytes: &[u8]) -> Option<Frame> {
    let mut rd = bytes;
    if read::read_map_len(&mut rd).ok()? != 1 {
        return None;
    }
    let frame = match string(&mut rd)? {
        "Send" => send(&mut rd)?,
        "Deliver" => deliver(&mut rd)?,
        _ => return None,
    };
    // Trailing bytes: not what `rmp_serde` wrote; let it say so.
    rd.is_empty().then_some(frame)
}

/// Appends `frame` to `dst` as `rmp_serde` would write it, if it is a `Send` or a
/// `Deliver` whose messages carry no typed properties (`true`); otherwise writes nothing
/// (`false`) and the caller encodes with `rmp_serde`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> bool {
    if frame.messages().any(|m| !m.properties.is_empty()) {
        return false;
    }
    let start = dst.len();
    let mut wr = dst.writer();
    let written = match frame {
        Frame::Send {
            session,
            destination,
            receipt,
            messages,
            origin,
        } => write_send(
            &mut wr,
            *session,
            destination,
            *receipt,
            messages,
            origin.as_ref(),
        ),
        Frame::Deliver { deliveries } => write_deliver(&mut wr, deliveries),
        _ => None,
    };
    if written.is_none() {
        dst.truncate(start);
        return false;
    }
    true
}

/// What the hand-written encoder writes into.
type Writer<'a> = bytes::buf::Writer<&'a mut BytesMut>;

fn write_send(
    wr: &mut Writer<'_>,
    session: u32,
    destination: &Destination,
    receipt: Option<u64>,
    messages: &[Message],
    origin: Option<&SendOrigin>,
) -> Option<()> {
    write::write_map_len(wr, 1).ok()?;
    write::write_str(wr, "Send").ok()?;
    write::write_array_len(wr, SEND_FIELDS).ok()?;
    write::write_uint(wr, u64::from(session)).ok()?;
    write::write_str(wr, destination.as_str()).ok()?;
    match receipt {
        Some(receipt) => write::write_uint(wr, receipt).ok().map(drop)?,
        None => write::write_nil(wr).ok()?,
    }
    write::write_array_len(wr, u32::try_from(messages.len()).ok()?).ok()?;
    for message in messages {
        write_message(wr, message)?;
    }
    match origin {
        Some(origin) => {
            write::write_array_len(wr, ORIGIN_FIELDS).ok()?;
            write::write_str(wr, &origin.producer).ok()?;
            write::write_uint(wr, origin.seq).ok()?;
            write::write_uint(wr, origin.confirmed_below).ok().map(drop)
        }
        None => write::write_nil(wr).ok(),
    }
}

fn write_deliver(wr: &mut Writer<'_>, deliveries: &[WireDelivery]) -> Option<()> {
    write::write_map_len(wr, 1).ok()?;
    write::write_str(wr, "Deliver").ok()?;
    write::write_array_len(wr, 1).ok()?;
    write::write_array_len(wr, u32::try_from(deliveries.len()).ok()?).ok()?;
    for delivery in deliveries {
        write::write_array_len(wr, DELIVERY_FIELDS).ok()?;
        write::write_uint(wr, u64::from(delivery.consumer)).ok()?;
        write::write_uint(wr, delivery.tag).ok()?;
        write::write_bool(wr, delivery.redelivered).ok()?;
        write::write_uint(wr, u64::from(delivery.delivery_count)).ok()?;
        write_message(wr, &delivery.message)?;
    }
    Some(())
}

fn write_message(wr: &mut Writer<'_>, m: &Message) -> Option<()> {
    let optional_str = |wr: &mut Writer<'_>, s: Option<&str>| match s {
        Some(s) => write::write_str(wr, s).ok(),
        None => write::write_nil(wr).ok(),
    };
    write::write_array_len(wr, MESSAGE_FIELDS).ok()?;
    write::write_str(wr, &m.id).ok()?;
    optional_str(wr, m.destination.as_ref().map(Destination::as_str))?;
    write::write_bin(wr, &m.body).ok()?;
    write::write_map_len(wr, u32::try_from(m.headers.len()).ok()?).ok()?;
    for (name, value) in &m.headers {
        write::write_str(wr, name).ok()?;
        write::write_str(wr, value).ok()?;
    }
    write::write_map_len(wr, 0).ok()?;
    write::write_uint(wr, m.timestamp).ok()?;
    optional_str(wr, m.correlation_id.as_deref())?;
    optional_str(wr, m.reply_to.as_ref().map(Destination::as_str))?;
    write::write_uint(wr, u64::from(m.priority)).ok()?;
    write::write_uint(wr, m.expiration).ok()?;
    write::write_bool(wr, m.persistent).ok()
}

fn send(rd: &mut &[u8]) -> Option<Frame> {
    if read::read_array_len(rd).ok()? != SEND_FIELDS {
        return None;
    }
    let session = read::read_int(rd).ok()?;
    let destination = read_destination(rd)?;
    let mut last = Some(destination.clone());
    let receipt = optional(rd, |rd| read::read_int(rd).ok())?;
    let count = read::read_array_len(rd).ok()?;
    let mut messages = Vec::with_capacity(bounded(count, rd));
    for _ in 0..count {
        messages.push(message(rd, &mut last)?);
    }
    let origin = optional(rd, origin)?;
    Some(Frame::Send {
        session,
        destination,
        receipt,
        messages,
        origin,
    })
}

fn deliver(rd: &mut &[u8]) -> Option<Frame> {
    if read::read_array_len(rd).ok()? != 1 {
        return None;
    }
    let count = read::read_array_len(rd).ok()?;
    let mut last = None;
    let mut deliveries = Vec::with_capacity(bounded(count, rd));
    for _ in 0..count {
        if read::read_array_len(rd).ok()? != DELIVERY_FIELDS {
            return None;
        }
        deliveries.push(WireDelivery {
            consumer: read::read_int(rd).ok()?,
            tag: read::read_int(rd).ok()?,
            redelivered: read::read_bool(rd).ok()?,
            delivery_count: read::read_int(rd).ok()?,
            message: Arc::new(message(rd, &mut last)?),
        });
    }
    Some(Frame::Deliver { deliveries })
}

fn origin(rd: &mut &[u8]) -> Option<SendOrigin> {
    if read::read_array_len(rd).ok()? != ORIGIN_FIELDS {
        return None;
    }
    Some(SendOrigin {
        producer: string(rd)?.to_string(),
        seq: read::read_int(rd).ok()?,
        confirmed_below: read::read_int(rd).ok()?,
    })
}

/// One message; `last` is the destination read last in this frame, shared (not parsed and
/// allocated again) when the next message names it too, as the messages of a frame mostly do.
fn message(rd: &mut &[u8], last: &mut Option<Destination>) -> Option<Message> {
    if read::read_array_len(rd).ok()? != MESSAGE_FIELDS {
        return None;
    }
    let id = string(rd)?.to_string();
    let destination = optional(rd, |rd| {
        let text = string(rd)?;
        match last {
            Some(known) if known.as_str() == text => Some(known.clone()),
            _ => {
                let parsed: Destination = text.parse().ok()?;
                *last = Some(parsed.clone());
                Some(parsed)
            }
        }
    })?;
    let body = {
        let len = read::read_bin_len(rd).ok()? as usize;
        body::share_or_copy(take(rd, len)?)
    };
    let headers = {
        let count = read::read_map_len(rd).ok()?;
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let name = string(rd)?.to_string();
            headers.insert(name, string(rd)?.to_string());
        }
        headers
    };
    // Typed properties are enums (a map per value): left to `rmp_serde`.
    if read::read_map_len(rd).ok()? != 0 {
        return None;
    }
    Some(Message {
        id,
        destination,
        body,
        headers,
        properties: BTreeMap::new(),
        timestamp: read::read_int(rd).ok()?,
        correlation_id: optional(rd, |rd| string(rd).map(str::to_string))?,
        reply_to: optional(rd, read_destination)?,
        priority: read::read_int(rd).ok()?,
        expiration: read::read_int(rd).ok()?,
        persistent: read::read_bool(rd).ok()?,
    })
}

fn read_destination(rd: &mut &[u8]) -> Option<Destination> {
    string(rd)?.parse().ok()
}

/// `nil` as `None`, anything else read by `value`; `None` if `value` cannot read it.
fn optional<T>(rd: &mut &[u8], value: impl FnOnce(&mut &[u8]) -> Option<T>) -> Option<Option<T>> {
    if rd.first() == Some(&Marker::Null.to_u8()) {
        *rd = &rd[1..];
        return Some(None);
    }
    value(rd).map(Some)
}

fn string<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    let len = read::read_str_len(rd).ok()? as usize;
    std::str::from_utf8(take(rd, len)?).ok()
}

/// The next `len` bytes, if there are that many.
fn take<'a>(rd: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rd.len() < len {
        return None;
    }
    let (taken, rest) = rd.split_at(len);
    *rd = rest;
    Some(taken)
}

/// Room to reserve for `count` items: never more than the bytes left could hold (each
/// takes at least one), so a count the frame does not back reserves nothing large.
fn bounded(count: u32, rd: &[u8]) -> usize {
    (count as usize).min(rd.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Property;

    fn encoded(frame: &Frame) -> Vec<u8> {
        rmp_serde::to_vec(frame).expect("a frame encodes")
    }

    fn messages() -> Vec<Message> {
        let mut full = Message::new(&b"body\0with nul"[..])
            .with_header("h", "v")
            .with_header("region", "eu")
            .with_correlation_id("corr")
            .with_reply_to(Destination::queue("replies"))
            .with_priority(7)
            .with_persistent(false);
        full.id = "c1:42".into();
        full.destination = Some("queue:a,topic:b".parse().expect("a composite"));
        full.timestamp = u64::MAX;
        full.expiration = 1_700_000_000_000;
        // Destinations change from message to message: each is read, not the one before.
        let mut other = Message::new("");
        other.destination = Some(Destination::queue("other"));
        let mut long = Message::new(vec![7u8; 70_000]);
        long.destination = full.destination.clone();
        vec![full, other, long, Message::new("no destination")]
    }

    fn send(origin: Option<SendOrigin>) -> Frame {
        Frame::Send {
            session: u32::MAX,
            destination: Destination::topic("prices.eu"),
            receipt: Some(1 << 40),
            messages: messages(),
            origin,
        }
    }

    fn deliver() -> Frame {
        Frame::Deliver {
            deliveries: messages()
                .into_iter()
                .enumerate()
                .map(|(i, message)| WireDelivery {
                    consumer: i as u32,
                    tag: 300 + i as u64,
                    redelivered: i == 1,
                    delivery_count: 2,
                    message: Arc::new(message),
                })
                .collect(),
        }
    }

    #[test]
    fn sends_and_deliveries_read_by_hand_are_what_rmp_serde_reads() {
        let origin = SendOrigin {
            producer: "p:1".into(),
            seq: 9,
            confirmed_below: 3,
        };
        let empty = Frame::Send {
            session: 0,
            destination: Destination::queue("q"),
            receipt: None,
            messages: Vec::new(),
            origin: None,
        };
        for frame in [send(None), send(Some(origin)), deliver(), empty] {
            let bytes = encoded(&frame);
            let by_serde: Frame = rmp_serde::from_slice(&bytes).expect("rmp_serde reads it");
            assert_eq!(by_serde, frame);
            assert_eq!(decode(&bytes), Some(frame), "{bytes:02x?}");
        }
    }

    #[test]
    fn sends_and_deliveries_written_by_hand_are_what_rmp_serde_writes() {
        let origin = SendOrigin {
            producer: "p".repeat(300),
            seq: u64::MAX,
            confirmed_below: 70_000,
        };
        let mut long_header =
            Message::new(vec![1u8; 300]).with_header("k".repeat(40), "v".repeat(70_000));
        long_header.id = "i".repeat(33);
        let mixed = Frame::Send {
            session: 70_000,
            destination: Destination::queue("q"),
            receipt: Some(200),
            messages: vec![long_header],
            origin: None,
        };
        for frame in [send(None), send(Some(origin)), deliver(), mixed] {
            let mut dst = BytesMut::from(&b"before"[..]);
            assert!(encode(&frame, &mut dst), "{}", frame.name());
            assert_eq!(&dst[..6], b"before");
            assert_eq!(dst[6..], encoded(&frame)[..], "{}", frame.name());
        }
    }

    #[test]
    fn other_frames_and_typed_properties_are_left_to_rmp_serde() {
        let ack = Frame::Ack {
            session: 1,
            acks: vec![(1, 2)],
            receipt: None,
        };
        assert_eq!(decode(&encoded(&ack)), None);
        let typed = Frame::Send {
            session: 1,
            destination: Destination::queue("q"),
            receipt: None,
            messages: vec![Message::new("x").with_property("n", Property::Int(1))],
            origin: None,
        };
        assert_eq!(decode(&encoded(&typed)), None);
        let mut dst = BytesMut::from(&b"kept"[..]);
        assert!(!encode(&typed, &mut dst) && !encode(&ack, &mut dst));
        assert_eq!(&dst[..], b"kept");
    }

    /// Cut short, or with a byte changed anywhere, a frame is either read as `rmp_serde`
    /// reads it or left to it: never a different frame, never a panic.
    #[test]
    fn damaged_frames_are_never_read_differently_from_rmp_serde() {
        for frame in [send(None), deliver()] {
            let bytes = encoded(&frame);
            for end in 0..bytes.len() {
                assert_eq!(decode(&bytes[..end]), None, "cut at {end}");
            }
            for at in 0..bytes.len().min(400) {
                for value in [0x00, 0x7f, 0xc0, 0xc3, 0xcc, 0xd9, 0xdc, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[at] = value;
                    if let Some(read) = decode(&damaged) {
                        let by_serde: Result<Frame, _> = rmp_serde::from_slice(&damaged);
                        assert_eq!(by_serde.ok(), Some(read), "byte {at} = {value:#x}");
                    }
                }
            }
        }
    }
}
