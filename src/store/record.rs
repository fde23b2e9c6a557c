//! Journal records as a pure codec: bytes in, records out. Each record is
//! `MAGIC (4) | length (4, BE) | crc32 of the payload (4, BE) | payload`, the payload one
//! [`Record`] in a versioned on-disk format ([`super::format`]). The magic lets a reader
//! find the next record after a torn or corrupt one instead of giving up on the rest of
//! the file.

use std::sync::Arc;

use super::format::{self, FormatError};
use crate::message::Message;

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"AMQJ";
/// Magic, length and checksum.
pub const HEADER_BYTES: usize = 12;
/// A length above this is corruption, not a record.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// One change to the durable state of a queue (in memory; on disk it is a version of
/// [`format::RecordV1`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A persistent message was put on `queue` with journal id `id`.
    Enqueue {
        queue: String,
        id: u64,
        message: Arc<Message>,
    },
    /// The message with journal id `id` is done with (acknowledged or expired).
    Remove { queue: String, id: u64 },
    /// A committed transaction: one checksummed record, so after a crash either all of its
    /// records exist or none do.
    Transaction { records: Vec<Record> },
}

impl Record {
    /// The record itself, or the records of a transaction, in order.
    pub fn flatten(self) -> Vec<Record> {
        match self {
            Record::Transaction { records } => {
                records.into_iter().flat_map(Record::flatten).collect()
            }
            other => vec![other],
        }
    }
}

/// Appends one record to `out`, in the current format version.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), FormatError> {
    let payload = format::encode(record)?;
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
    let record = format::decode(payload).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Record {
        Record::Enqueue {
            queue: "q".into(),
            id: n,
            message: Arc::new(Message::new(format!("message {n}"))),
        }
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
                Record::Transaction { .. } => u64::MAX,
            })
            .collect();
        assert_eq!(ids, vec![0, 1, 3]);
        assert_eq!(decoded.skipped, vec![starts[2], starts[4]]);
    }
}
