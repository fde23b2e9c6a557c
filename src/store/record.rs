//! [`Record`]: one change to the journal's durable state, as the broker holds it in memory.
//! How it is written to disk is [`super::format`].

use std::sync::Arc;

use crate::message::Message;

/// One change to the durable state of a queue (in memory; on disk it is a version of
/// [`super::format::RecordV1`]).
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
    /// A producer's send (or commit) was stored: written in the same transaction as its
    /// messages, so that a broker that recovers them also knows a resend of it is a
    /// duplicate (see [`super::producers`]).
    Sent(SendMark),
    /// Messages of `queue` have been delivered: `(journal id, times)` each. Written before
    /// the deliveries leave the broker (one record per batch), so that after a crash or a
    /// takeover each comes again marked redelivered, with a count a consumer can trust.
    Delivered {
        queue: String,
        counts: Vec<(u64, u32)>,
    },
}

/// One send of a producer that says who it is (a failover client): which producer, its
/// place in that producer's sequence, and what it had been told was stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SendMark {
    /// Chosen by the client, unique per producer instance (not per connection).
    pub producer: String,
    /// This send's number; a producer numbers its sends 1, 2, 3, …
    pub seq: u64,
    /// Every send numbered below this has been confirmed to the producer, which will
    /// never send it again: the broker may forget them.
    pub confirmed_below: u64,
    /// When it was stored (ms since the Unix epoch), to forget idle producers.
    pub at_ms: u64,
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
