//! Persistence. Persistent messages sent to queues go to the [`Journal`] (append-only
//! segments with group commit, off the arbiters' threads) before they are confirmed or
//! delivered; non-persistent messages, topics and temporary queues stay in memory (the
//! `memory` store), as in ActiveMQ.

mod journal;
mod reader;
pub mod record;

use std::path::{Path, PathBuf};

pub use journal::{DURABLES_FILE, FsyncMode, Journal, JournalSettings, Location, Recovered};

/// Why the store could not do something. Every variant names the file or folder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0} is in use by another broker (its LOCK file is held)")]
    Locked(PathBuf),
    #[error("the journal has stopped")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}
