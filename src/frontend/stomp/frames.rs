//! What STOMP frames mean to the broker, apart from any connection's state: the message a
//! SEND carries, the headers that are parsed (heart-beat, ack ids, transactions), and the
//! ERROR and RECEIPT frames the connection writes.

use bytes::{Bytes, BytesMut};

use crate::message::{Destination, Message};
use crate::protocol::SendOrigin;
use crate::protocol::stomp::{Command, StompFrame, encode_into};

/// A STOMP-level failure: becomes an ERROR frame (with these extra headers) and closes the
/// connection.
pub(super) struct Failure {
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

pub(super) fn transaction_name(frame: &StompFrame) -> Result<&str, Failure> {
    frame.get("transaction").ok_or_else(|| {
        Failure::new(format!(
            "{} needs a transaction header",
            frame.command.as_str()
        ))
    })
}

pub(super) fn parse_heartbeat(value: Option<&str>) -> Result<(u64, u64), Failure> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let bad = || Failure::new(format!("heart-beat `{value}` is not `<ms>,<ms>`"));
    let (sends, wants) = value.split_once(',').ok_or_else(bad)?;
    Ok((
        sends.trim().parse().map_err(|_| bad())?,
        wants.trim().parse().map_err(|_| bad())?,
    ))
}

/// `<consumer>:<tag>`, as written in MESSAGE `ack` headers.
pub(super) fn parse_ack_id(id: &str) -> Option<(u32, u64)> {
    let (consumer, tag) = id.split_once(':')?;
    Some((consumer.parse().ok()?, tag.parse().ok()?))
}

pub(super) fn error_bytes(failure: &Failure) -> Bytes {
    let message = &failure.message;
    let mut frame = StompFrame::new(Command::Error).header("message", message.as_str());
    for (name, value) in &failure.headers {
        frame = frame.header(*name, value.as_str());
    }
    let frame = frame
        .header("content-type", "text/plain")
        .header("content-length", message.len().to_string())
        .body(message.to_string());
    let mut buf = BytesMut::new();
    encode_into(&frame, &mut buf);
    buf.freeze()
}

/// SEND headers that are not carried as user headers.
const SEND_HEADERS: [&str; 14] = [
    "destination",
    "content-length",
    "transaction",
    "receipt",
    "persistent",
    "reply-to",
    "correlation-id",
    "expires",
    "priority",
    "message-id",
    DEDUP_ID,
    PRODUCER,
    SEQ,
    CONFIRMED_BELOW,
];

/// Duplicate detection for a SEND: a unique id of the client's choosing (a send with an id
/// the broker kept in the last hour is confirmed and not kept again)...
pub(super) const DEDUP_ID: &str = "actormq.dedup-id";
/// ...or the producer/sequence pair the native failover client uses: `actormq.producer`
/// (unique per producer), `actormq.seq` (1, 2, 3, …) and optionally
/// `actormq.confirmed-below` (every seq below it was confirmed: the broker forgets them).
pub(super) const PRODUCER: &str = "actormq.producer";
pub(super) const SEQ: &str = "actormq.seq";
pub(super) const CONFIRMED_BELOW: &str = "actormq.confirmed-below";

/// The origin a SEND's duplicate-detection headers name, if any.
pub(super) fn origin_from(frame: &StompFrame) -> Result<Option<SendOrigin>, Failure> {
    if let Some(id) = frame.get(DEDUP_ID) {
        return Ok(Some(SendOrigin {
            producer: format!("dedup-id:{id}"),
            seq: 0,
            confirmed_below: 0,
        }));
    }
    let Some(producer) = frame.get(PRODUCER) else {
        return Ok(None);
    };
    let number = |name: &str| -> Result<u64, Failure> {
        match frame.get(name) {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Failure::new(format!("{name} `{v}` is not a number"))),
        }
    };
    if frame.get(SEQ).is_none() {
        return Err(Failure::new(format!("{PRODUCER} needs {SEQ}")));
    }
    let origin = SendOrigin {
        producer: format!("stomp:{producer}"),
        seq: number(SEQ)?,
        confirmed_below: number(CONFIRMED_BELOW)?,
    };
    origin.check().map_err(Failure::new)?;
    Ok(Some(origin))
}

/// The message a SEND carries, received at `now` (milliseconds since the epoch).
pub(super) fn message_from(
    frame: &StompFrame,
    reply_to: Option<Destination>,
    now: u64,
) -> Result<Message, Failure> {
    let mut message = Message::new(frame.body.clone());
    message.reply_to = reply_to;
    message.correlation_id = frame.get("correlation-id").map(str::to_string);
    // As ActiveMQ's STOMP: persistent only when the header says so.
    message.persistent = frame
        .get("persistent")
        .is_some_and(|p| p.eq_ignore_ascii_case("true"));
    if let Some(e) = frame.get("expires") {
        message.expiration = e
            .trim()
            .parse()
            .map_err(|_| Failure::new(format!("expires `{e}` is not a number")))?;
    }
    if let Some(p) = frame.get("priority") {
        let priority: u8 = p
            .trim()
            .parse()
            .map_err(|_| Failure::new(format!("priority `{p}` is not 0-9")))?;
        message = message.with_priority(priority);
    }
    message.timestamp = now;
    for (name, value) in frame.headers() {
        if !SEND_HEADERS.contains(&name) && !message.headers.contains_key(name) {
            message.headers.insert(name.to_string(), value.to_string());
        }
    }
    Ok(message)
}

/// A RECEIPT answering `receipt`.
pub(super) fn receipt_frame(receipt: &str) -> StompFrame {
    StompFrame::new(Command::Receipt).header("receipt-id", receipt)
}
