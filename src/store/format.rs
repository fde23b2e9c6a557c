//! The journal's records as they are on disk, a pure codec: bytes in, records out.
//!
//! Each record is `MAGIC (4) | length (4, BE) | crc32 of the payload (4, BE) | payload`.
//! The magic lets a reader find the next record after a torn or corrupt one instead of
//! giving up on the rest of the file.
//!
//! The payload is a record in one of the format versions below: types of their own, one
//! set per version, converted to and from the in-memory [`Record`] and [`Message`] here and
//! nowhere else. Renaming or retyping a field of `Message` therefore cannot change what is
//! on disk; a change that would is a new version here, and the golden journals in
//! `tests/fixtures/` fail CI if old records stop reading back exactly.
//!
//! - **Version 0** (journals written until 2026-12-02): no version byte; the payload is the
//!   `Record` of that time as named MessagePack (`rmp_serde::to_vec_named`). Read only.
//! - **Version 1** (journals written until failover clients landed): the byte `1`, then
//!   [`RecordV1`] as positional MessagePack (fields in declaration order). A version-0
//!   payload always starts with a MessagePack map (`0x80..=0x8f`, `0xde`, `0xdf`), never
//!   with a small version byte, so the first byte tells them apart.
//! - **Version 2** (written now): the byte `2`, then [`RecordV2`]: version 1 and two more
//!   kinds of record, `Sent` (a producer's send was stored, for duplicate detection) and
//!   `Delivered` (how often a stored message has been delivered). Every
//!   record is written as version 2, so a build that knows only version 1 reports
//!   "unknown record format version 2" instead of misreading one.
//!
//! Rules for a new version: add `RecordV3` beside these, write it, keep reading V2, V1, V0.
//! Never edit a frozen type: field order is the format.
//!
//! **Segment header.** A segment file started since high availability landed begins with
//! `SEGMENT_MAGIC (4) | header version (1) = 1 | epoch (8, BE) | crc32 of the 9 bytes before
//! it (4, BE)`: the epoch of the broker that started it (see [`super::Fence`]). Records
//! follow at offset [`SEGMENT_HEADER_BYTES`]. A segment without one (written before) is of
//! epoch 0 and holds records from offset 0.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::record::{Record, SendMark};
use crate::message::{Destination, Message, Property};

/// The version every record is written in.
pub const CURRENT: u8 = 2;

/// Why a payload does not read back as a record.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot encode a journal record: {0}")]
    Encode(String),
    #[error("record format version {version}: {reason}")]
    Decode { version: u8, reason: String },
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
}

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"AMQJ";
/// Magic, length and checksum.
pub const HEADER_BYTES: usize = 12;
/// A length above this is corruption, not a record.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// Starts a segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"AMQS";
/// The segment header's length.
pub const SEGMENT_HEADER_BYTES: usize = 17;
const SEGMENT_HEADER_VERSION: u8 = 1;

/// The header of a segment started in `epoch`.
pub fn segment_header(epoch: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..4].copy_from_slice(&SEGMENT_MAGIC);
    header[4] = SEGMENT_HEADER_VERSION;
    header[5..13].copy_from_slice(&epoch.to_be_bytes());
    let crc = crc32fast::hash(&header[4..13]);
    header[13..].copy_from_slice(&crc.to_be_bytes());
    header
}

/// The epoch in the segment header `buf` starts with: `None` if it has none (an older
/// segment, epoch 0), `Err` if it starts with a damaged one.
pub fn segment_epoch(buf: &[u8]) -> Result<Option<u64>, FormatError> {
    if !buf.starts_with(&SEGMENT_MAGIC) {
        return Ok(None);
    }
    let damaged = || FormatError::Decode {
        version: SEGMENT_HEADER_VERSION,
        reason: "damaged segment header".into(),
    };
    let header = buf.get(..SEGMENT_HEADER_BYTES).ok_or_else(damaged)?;
    if header[4] != SEGMENT_HEADER_VERSION {
        return Err(FormatError::UnknownVersion(header[4]));
    }
    if read_u32(header, 13) != Some(crc32fast::hash(&header[4..13])) {
        return Err(damaged());
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&header[5..13]);
    Ok(Some(u64::from_be_bytes(epoch)))
}

/// A whole segment file, read back.
#[derive(Debug, Default)]
pub struct SegmentContents {
    /// The epoch it was started in (0 without a header).
    pub epoch: u64,
    /// Its records, at offsets in the file.
    pub decoded: Decoded,
}

/// Reads a segment file's header and every valid record after it. A damaged header is
/// reported as skipped at offset 0 and the records are still read.
pub fn read_segment(buf: &[u8]) -> SegmentContents {
    let (epoch, start, mut skipped) = match segment_epoch(buf) {
        Ok(Some(epoch)) => (epoch, SEGMENT_HEADER_BYTES, Vec::new()),
        Ok(None) => (0, 0, Vec::new()),
        Err(_) => (0, SEGMENT_HEADER_BYTES.min(buf.len()), vec![0]),
    };
    let mut decoded = decode_all(&buf[start..]);
    for (offset, _) in &mut decoded.records {
        *offset += start;
    }
    for offset in &mut decoded.skipped {
        *offset += start;
    }
    skipped.append(&mut decoded.skipped);
    decoded.skipped = skipped;
    SegmentContents { epoch, decoded }
}

/// The payload of `record` in the current version.
pub fn encode_payload(record: &Record) -> Result<Vec<u8>, FormatError> {
    let mut out = vec![CURRENT];
    rmp_serde::encode::write(&mut out, &RecordOut::from(record))
        .map_err(|e| FormatError::Encode(e.to_string()))?;
    Ok(out)
}

/// The record a payload of any known version holds.
pub fn decode_payload(payload: &[u8]) -> Result<Record, FormatError> {
    match payload.first() {
        Some(&1) => {
            let record: RecordV1 =
                rmp_serde::from_slice(&payload[1..]).map_err(|e| FormatError::Decode {
                    version: 1,
                    reason: e.to_string(),
                })?;
            Ok(record.into())
        }
        Some(&2) => {
            let record: RecordV2 =
                rmp_serde::from_slice(&payload[1..]).map_err(|e| FormatError::Decode {
                    version: 2,
                    reason: e.to_string(),
                })?;
            Ok(record.into())
        }
        // A MessagePack map: version 0.
        Some(0x80..=0x8f | 0xde | 0xdf) => {
            let record: v0::Record =
                rmp_serde::from_slice(payload).map_err(|e| FormatError::Decode {
                    version: 0,
                    reason: e.to_string(),
                })?;
            Ok(record.into())
        }
        Some(&other) => Err(FormatError::UnknownVersion(other)),
        None => Err(FormatError::UnknownVersion(0)),
    }
}

/// Appends one record to `out`, in the current format version.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), FormatError> {
    let payload = encode_payload(record)?;
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// What [`decode_all`] found in a buffer.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Each good record and the offset it started at.
    pub records: Vec<(usize, Record)>,
    /// Offsets where a corrupt or torn record was skipped.
    pub skipped: Vec<usize>,
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

/// The record at `at`, if a whole, valid one starts there: (record, its length).
fn record_at(buf: &[u8], at: usize) -> Option<(Record, usize)> {
    if buf.get(at..at + 4)? != MAGIC {
        return None;
    }
    let len = read_u32(buf, at + 4)? as usize;
    let crc = read_u32(buf, at + 8)?;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = buf.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let record = decode_payload(payload).ok()?;
    Some((record, HEADER_BYTES + len))
}

/// Every valid record in `buf`. After a bad one, reading resumes at the next magic that
/// starts a valid record; each skipped stretch is reported once, by its offset.
pub fn decode_all(buf: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut at = 0;
    while at < buf.len() {
        match record_at(buf, at) {
            Some((record, len)) => {
                decoded.records.push((at, record));
                at += len;
            }
            // A segment started on a spare (`store::spare`) ends in zeros: its end, not
            // a torn record.
            None if buf[at..].iter().all(|&b| b == 0) => break,
            None => {
                decoded.skipped.push(at);
                at = (at + 1..buf.len())
                    .find(|&next| buf[next..].starts_with(&MAGIC) && record_at(buf, next).is_some())
                    .unwrap_or(buf.len());
            }
        }
    }
    decoded
}

/// Version 1 of a record, as read. `RecordOut` writes the same fields from borrowed data.
#[derive(Debug, Deserialize)]
pub enum RecordV1 {
    Enqueue {
        queue: String,
        id: u64,
        message: MessageV1,
    },
    Remove {
        queue: String,
        id: u64,
    },
    Transaction {
        records: Vec<RecordV1>,
    },
}

/// Version 2 of a record, as read: version 1's records, and `Sent`.
#[derive(Debug, Deserialize)]
pub enum RecordV2 {
    Enqueue {
        queue: String,
        id: u64,
        message: MessageV1,
    },
    Remove {
        queue: String,
        id: u64,
    },
    Transaction {
        records: Vec<RecordV2>,
    },
    Sent {
        producer: String,
        seq: u64,
        confirmed_below: u64,
        at_ms: u64,
    },
    Delivered {
        queue: String,
        counts: Vec<(u64, u32)>,
    },
}

/// Version 1 of a stored message (unchanged in version 2). Destinations are their `kind:name` text.
#[derive(Debug, Deserialize)]
pub struct MessageV1 {
    id: String,
    destination: Option<String>,
    body: Bytes,
    headers: BTreeMap<String, String>,
    properties: BTreeMap<String, PropertyV1>,
    timestamp: u64,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    priority: u8,
    expiration: u64,
    persistent: bool,
}

/// Version 1 of a typed property.
#[derive(Debug, Serialize, Deserialize)]
pub enum PropertyV1 {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Bytes),
}

/// [`RecordV2`] for writing, borrowing the record.
#[derive(Serialize)]
enum RecordOut<'a> {
    Enqueue {
        queue: &'a str,
        id: u64,
        message: MessageOut<'a>,
    },
    Remove {
        queue: &'a str,
        id: u64,
    },
    Transaction {
        records: Vec<RecordOut<'a>>,
    },
    Sent {
        producer: &'a str,
        seq: u64,
        confirmed_below: u64,
        at_ms: u64,
    },
    Delivered {
        queue: &'a str,
        counts: &'a [(u64, u32)],
    },
}

/// [`MessageV1`] for writing: the same fields, in the same order.
#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    destination: Option<&'a str>,
    body: &'a Bytes,
    headers: &'a BTreeMap<String, String>,
    properties: BTreeMap<&'a str, PropertyOut<'a>>,
    timestamp: u64,
    correlation_id: Option<&'a str>,
    reply_to: Option<&'a str>,
    priority: u8,
    expiration: u64,
    persistent: bool,
}

/// [`PropertyV1`] for writing.
#[derive(Serialize)]
enum PropertyOut<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bytes(&'a Bytes),
}

impl<'a> From<&'a Record> for RecordOut<'a> {
    fn from(record: &'a Record) -> Self {
        match record {
            Record::Enqueue { queue, id, message } => RecordOut::Enqueue {
                queue,
                id: *id,
                message: MessageOut::from(message.as_ref()),
            },
            Record::Remove { queue, id } => RecordOut::Remove { queue, id: *id },
            Record::Transaction { records } => RecordOut::Transaction {
                records: records.iter().map(RecordOut::from).collect(),
            },
            Record::Sent(mark) => RecordOut::Sent {
                producer: &mark.producer,
                seq: mark.seq,
                confirmed_below: mark.confirmed_below,
                at_ms: mark.at_ms,
            },
            Record::Delivered { queue, counts } => RecordOut::Delivered { queue, counts },
        }
    }
}

impl<'a> From<&'a Message> for MessageOut<'a> {
    fn from(m: &'a Message) -> Self {
        MessageOut {
            id: &m.id,
            destination: m.destination.as_ref().map(Destination::as_str),
            body: &m.body,
            headers: &m.headers,
            properties: m
                .properties
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        Property::Bool(b) => PropertyOut::Bool(*b),
                        Property::Int(i) => PropertyOut::Int(*i),
                        Property::Float(f) => PropertyOut::Float(*f),
                        Property::Text(t) => PropertyOut::Text(t),
                        Property::Bytes(b) => PropertyOut::Bytes(b),
                    };
                    (name.as_str(), value)
                })
                .collect(),
            timestamp: m.timestamp,
            correlation_id: m.correlation_id.as_deref(),
            reply_to: m.reply_to.as_ref().map(Destination::as_str),
            priority: m.priority,
            expiration: m.expiration,
            persistent: m.persistent,
        }
    }
}

/// A stored destination's text back as a destination; one that no longer parses is
/// dropped rather than the message with it.
fn destination(text: Option<String>) -> Option<Destination> {
    text.and_then(|t| t.parse().ok())
}

impl From<PropertyV1> for Property {
    fn from(p: PropertyV1) -> Self {
        match p {
            PropertyV1::Bool(b) => Property::Bool(b),
            PropertyV1::Int(i) => Property::Int(i),
            PropertyV1::Float(f) => Property::Float(f),
            PropertyV1::Text(t) => Property::Text(t),
            PropertyV1::Bytes(b) => Property::Bytes(b),
        }
    }
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Self {
        Message {
            id: m.id,
            destination: destination(m.destination),
            body: m.body,
            headers: m.headers,
            properties: m
                .properties
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
            timestamp: m.timestamp,
            correlation_id: m.correlation_id,
            reply_to: destination(m.reply_to),
            priority: m.priority,
            expiration: m.expiration,
            persistent: m.persistent,
        }
    }
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Self {
        match r {
            RecordV1::Enqueue { queue, id, message } => Record::Enqueue {
                queue,
                id,
                message: Arc::new(message.into()),
            },
            RecordV1::Remove { queue, id } => Record::Remove { queue, id },
            RecordV1::Transaction { records } => Record::Transaction {
                records: records.into_iter().map(Record::from).collect(),
            },
        }
    }
}

impl From<RecordV2> for Record {
    fn from(r: RecordV2) -> Self {
        match r {
            RecordV2::Enqueue { queue, id, message } => Record::Enqueue {
                queue,
                id,
                message: Arc::new(message.into()),
            },
            RecordV2::Remove { queue, id } => Record::Remove { queue, id },
            RecordV2::Transaction { records } => Record::Transaction {
                records: records.into_iter().map(Record::from).collect(),
            },
            RecordV2::Sent {
                producer,
                seq,
                confirmed_below,
                at_ms,
            } => Record::Sent(SendMark {
                producer,
                seq,
                confirmed_below,
                at_ms,
            }),
            RecordV2::Delivered { queue, counts } => Record::Delivered { queue, counts },
        }
    }
}

/// Version 0, frozen as it was written: `Record` and `Message` of 2026-12-02 with their
/// serde names (a destination is its `kind:name` text).
mod v0 {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub enum Record {
        Enqueue {
            queue: String,
            id: u64,
            message: Message,
        },
        Remove {
            queue: String,
            id: u64,
        },
        Transaction {
            records: Vec<Record>,
        },
    }

    #[derive(Deserialize)]
    pub struct Message {
        pub id: String,
        pub destination: Option<String>,
        pub body: Bytes,
        pub headers: BTreeMap<String, String>,
        pub properties: BTreeMap<String, super::PropertyV1>,
        pub timestamp: u64,
        pub correlation_id: Option<String>,
        pub reply_to: Option<String>,
        pub priority: u8,
        pub expiration: u64,
        pub persistent: bool,
    }

    impl From<Record> for super::Record {
        fn from(r: Record) -> Self {
            match r {
                Record::Enqueue { queue, id, message } => super::Record::Enqueue {
                    queue,
                    id,
                    message: std::sync::Arc::new(super::MessageV1::from(message).into()),
                },
                Record::Remove { queue, id } => super::Record::Remove { queue, id },
                Record::Transaction { records } => super::Record::Transaction {
                    records: records.into_iter().map(super::Record::from).collect(),
                },
            }
        }
    }

    impl From<Message> for super::MessageV1 {
        fn from(m: Message) -> Self {
            super::MessageV1 {
                id: m.id,
                destination: m.destination,
                body: m.body,
                headers: m.headers,
                properties: m.properties,
                timestamp: m.timestamp,
                correlation_id: m.correlation_id,
                reply_to: m.reply_to,
                priority: m.priority,
                expiration: m.expiration,
                persistent: m.persistent,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_message() -> Message {
        Message::new(&b"body\0bytes"[..])
            .with_header("h", "v")
            .with_property("b", Property::Bool(true))
            .with_property("i", Property::Int(-7))
            .with_property("f", Property::Float(2.5))
            .with_property("t", Property::Text("text".into()))
            .with_property("x", Property::Bytes(Bytes::from_static(b"\x01\x02")))
            .with_correlation_id("corr")
            .with_reply_to(Destination::queue("replies"))
            .with_priority(7)
    }

    #[test]
    fn every_field_round_trips_in_the_current_version() {
        let mut message = full_message();
        message.id = "m-1".into();
        message.destination = Some(Destination::queue("orders"));
        message.timestamp = 1_796_000_000_000;
        message.expiration = 1_796_000_060_000;
        let record = Record::Transaction {
            records: vec![
                Record::Enqueue {
                    queue: "orders".into(),
                    id: 9,
                    message: Arc::new(message),
                },
                Record::Remove {
                    queue: "orders".into(),
                    id: 3,
                },
            ],
        };
        let payload = encode_payload(&record).unwrap();
        assert_eq!(payload[0], CURRENT);
        assert_eq!(decode_payload(&payload).unwrap(), record);
    }

    #[test]
    fn an_unknown_version_is_named() {
        assert!(matches!(
            decode_payload(&[7, 0, 0]),
            Err(FormatError::UnknownVersion(7))
        ));
    }

    fn sample(n: u64) -> Record {
        Record::Enqueue {
            queue: "q".into(),
            id: n,
            message: Arc::new(Message::new(format!("message {n}"))),
        }
    }

    #[test]
    fn a_segment_header_carries_its_epoch_and_offsets_stay_in_the_file() {
        let mut buf = segment_header(7).to_vec();
        encode(&sample(1), &mut buf).unwrap();
        assert_eq!(segment_epoch(&buf).unwrap(), Some(7));
        let read = read_segment(&buf);
        assert_eq!(read.epoch, 7);
        assert_eq!(read.decoded.records.len(), 1);
        assert_eq!(read.decoded.records[0].0, SEGMENT_HEADER_BYTES);
        assert!(read.decoded.skipped.is_empty());

        // A header whose epoch was changed no longer matches its checksum.
        buf[12] ^= 1;
        assert!(segment_epoch(&buf).is_err());
        let read = read_segment(&buf);
        assert_eq!((read.epoch, read.decoded.skipped.clone()), (0, vec![0]));
        assert_eq!(read.decoded.records.len(), 1);

        // An older segment has no header: epoch 0, records from offset 0.
        let mut old = Vec::new();
        encode(&sample(2), &mut old).unwrap();
        assert_eq!(segment_epoch(&old).unwrap(), None);
        assert_eq!(read_segment(&old).decoded.records[0].0, 0);
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for n in 0..3 {
            encode(&sample(n), &mut buf).unwrap();
        }
        encode(
            &Record::Remove {
                queue: "q".into(),
                id: 1,
            },
            &mut buf,
        )
        .unwrap();
        let decoded = decode_all(&buf);
        assert!(decoded.skipped.is_empty());
        assert_eq!(decoded.records.len(), 4);
        assert_eq!(
            decoded.records[3].1,
            Record::Remove {
                queue: "q".into(),
                id: 1
            }
        );
    }

    #[test]
    fn a_flipped_byte_skips_one_record_and_a_torn_tail_is_reported() {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for n in 0..5 {
            starts.push(buf.len());
            encode(&sample(n), &mut buf).unwrap();
        }
        buf[starts[2] + HEADER_BYTES + 3] ^= 0xff; // inside record 2's payload
        buf.truncate(buf.len() - 5); // record 4 torn
        let decoded = decode_all(&buf);
        let ids: Vec<u64> = decoded
            .records
            .iter()
            .map(|(_, r)| match r {
                Record::Enqueue { id, .. } => *id,
                Record::Remove { id, .. } => *id,
                Record::Transaction { .. } | Record::Sent(_) | Record::Delivered { .. } => u64::MAX,
            })
            .collect();
        assert_eq!(ids, vec![0, 1, 3]);
        assert_eq!(decoded.skipped, vec![starts[2], starts[4]]);
    }

    /// A segment started on a spare ends in zeros: that is its end, not a torn record; a
    /// record torn before the zeros is still reported, and one written past a stretch of
    /// zeros (an unsynced page that reached the disk before the one ahead of it) is read.
    #[test]
    fn a_zero_tail_is_the_end_and_a_torn_record_before_it_is_reported() {
        let mut buf = Vec::new();
        for n in 0..3 {
            encode(&sample(n), &mut buf).unwrap();
        }
        let whole = buf.len();
        buf.resize(whole + 4096, 0);
        let decoded = decode_all(&buf);
        assert_eq!((decoded.records.len(), decoded.skipped), (3, vec![]));

        let mut torn = buf[..whole].to_vec();
        let at = torn.len();
        encode(&sample(3), &mut torn).unwrap();
        torn.truncate(torn.len() - 5);
        torn.resize(at + 4096, 0);
        let decoded = decode_all(&torn);
        assert_eq!((decoded.records.len(), decoded.skipped), (3, vec![at]));

        let mut gap = buf[..whole].to_vec();
        gap.resize(whole + 100, 0);
        encode(&sample(9), &mut gap).unwrap();
        gap.resize(gap.len() + 4096, 0);
        let decoded = decode_all(&gap);
        assert_eq!((decoded.records.len(), decoded.skipped), (4, vec![whole]));
    }
}
