//! Where the journal's records are: the segment files, a record's [`Location`] in them,
//! what recovery found, and where compaction moved a message. Shared by the journal's
//! handle, its writer thread and its reader thread.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::config::FsyncMode;

/// Where and how the journal writes.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    pub dir: PathBuf,
    pub fsync: FsyncMode,
    pub segment_bytes: u64,
    /// Start segments on zero-filled files made ahead (`store::spare`), so that a durable
    /// append's `fdatasync` writes data only.
    pub preallocate: bool,
}

/// What the journal held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every queue's live messages, oldest first: where they are, not their bodies (a
    /// queue reads them back as consumers reach them).
    pub queues: BTreeMap<String, Vec<RecoveredMessage>>,
    /// Torn or corrupt records skipped: file and offset.
    pub skipped: Vec<(PathBuf, usize)>,
    /// Durable subscriptions, as `Journal::write_file(DURABLES_FILE, …)` last wrote them.
    pub durables: Vec<String>,
    /// Producers' stored sends still remembered (duplicate detection).
    pub sends: Vec<super::record::SendMark>,
}

/// A live message found at start.
#[derive(Clone, Copy, Debug)]
pub struct RecoveredMessage {
    pub id: u64,
    pub at: Location,
    pub priority: u8,
    /// Times it was delivered before (as far as the store knows).
    pub deliveries: u32,
}

/// The file beside the segments that lists durable subscriptions, one per line.
pub const DURABLES_FILE: &str = "durable-subscriptions";

/// Where a record starts: its segment and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
}

/// Messages compaction wrote forward: id → where the copy is. The reader looks here
/// before it trusts a location a queue kept; an entry goes when its message is removed.
pub(super) type Moved = Arc<Mutex<HashMap<u64, Location>>>;

/// The file of segment `number` in `dir`.
pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.log"))
}
