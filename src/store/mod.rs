//! Persistence behind the [`Store`] trait, with two implementations: [`Journal`]
//! (append-only segments with group commit, off the arbiters' threads; the default) and
//! [`MemoryStore`] (nothing is written). Persistent messages sent to queues go to a
//! durable store before they are confirmed or delivered; non-persistent messages, topics
//! and temporary queues stay in memory, as in ActiveMQ.

mod fence;
pub mod format;
mod journal;
pub mod postgres;
pub mod producers;
mod reader;
pub mod record;
mod segments;
mod spare;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::message::Message;
use crate::stats::StoreStat;
use record::Record;

pub use fence::{Fence, Unfenced};
pub use journal::Journal;
pub use postgres::{PostgresSettings, PostgresStore};
pub use segments::{
    DURABLES_FILE, FsyncMode, JournalSettings, Location, Recovered, RecoveredMessage,
};

/// Why the store could not do something. Every variant names the file or folder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "{0} is in use by another broker (its LOCK file is held): stop that broker, or give \
         this one another --data-dir"
    )]
    Locked(PathBuf),
    #[error("the journal has stopped")]
    Closed,
    #[error("{0}")]
    Database(String),
    /// This broker may no longer write: another one is the master.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// Where queues keep persistent messages.
pub trait Store: Send + Sync + 'static {
    /// `journal` or `memory`.
    fn kind(&self) -> &'static str;
    /// Whether what is appended survives a crash. Queues store only in a durable store.
    fn durable(&self) -> bool;
    /// A fresh id for a stored message.
    fn next_id(&self) -> u64;
    /// Appends records; resolves once they are durable, with where each record starts.
    fn append(&self, records: Vec<Record>)
    -> BoxFuture<'static, Result<Vec<Location>, StoreError>>;
    /// Appends records without waiting.
    fn append_lazy(&self, records: Vec<Record>);
    /// Reads back messages by id from the records at their locations (paging in).
    fn read(
        &self,
        wanted: Vec<(u64, Location)>,
    ) -> BoxFuture<'static, Result<Vec<Arc<Message>>, StoreError>>;
    /// Replaces a small file kept with the store (the list of durable subscriptions).
    fn write_file(&self, name: &str, contents: Vec<u8>);
    /// Size and recovery counters, for `stat`.
    fn usage(&self) -> Option<StoreStat>;
    /// Makes everything durable and releases the store (at shutdown).
    fn close(&self);
}

/// A store shared by the registry, the queues and the sessions.
pub type SharedStore = Arc<dyn Store>;

impl Store for Journal {
    fn kind(&self) -> &'static str {
        "journal"
    }

    fn durable(&self) -> bool {
        true
    }

    fn next_id(&self) -> u64 {
        Journal::next_id(self)
    }

    fn append(
        &self,
        records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<Location>, StoreError>> {
        Box::pin(Journal::append(self, records))
    }

    fn append_lazy(&self, records: Vec<Record>) {
        Journal::append_lazy(self, records)
    }

    fn read(
        &self,
        wanted: Vec<(u64, Location)>,
    ) -> BoxFuture<'static, Result<Vec<Arc<Message>>, StoreError>> {
        Box::pin(Journal::read(self, wanted))
    }

    fn write_file(&self, name: &str, contents: Vec<u8>) {
        Journal::write_file(self, name, contents)
    }

    fn usage(&self) -> Option<StoreStat> {
        Some(Journal::usage(self))
    }

    fn close(&self) {
        Journal::close(self)
    }
}

/// The `memory` store: nothing is written, so nothing survives a restart.
pub struct MemoryStore;

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn next_id(&self) -> u64 {
        0
    }

    fn append(
        &self,
        _records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<Location>, StoreError>> {
        Box::pin(futures::future::ready(Ok(Vec::new())))
    }

    fn append_lazy(&self, _records: Vec<Record>) {}

    fn read(
        &self,
        _wanted: Vec<(u64, Location)>,
    ) -> BoxFuture<'static, Result<Vec<Arc<Message>>, StoreError>> {
        Box::pin(futures::future::ready(Err(StoreError::Closed)))
    }

    fn write_file(&self, _name: &str, _contents: Vec<u8>) {}

    fn usage(&self) -> Option<StoreStat> {
        None
    }

    fn close(&self) {}
}
