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
