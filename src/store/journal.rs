//! [`Journal`]: append-only segment files under `<data_dir>/journal`, written by one
//! dedicated thread (never an arbiter's, see [`super::writer`]) with group commit: every
//! append waiting when the thread wakes is written with one `write` and made durable with
//! one `fsync`, and only then is each append's future resolved. Reads (paging in) run on
//! a second thread ([`super::reader`]).
//!
//! Segments are deleted oldest first, once every message enqueued in them has been removed
//! (a newer segment may hold the removals of an older one's messages, so it must outlive
//! it); a mostly dead oldest segment is compacted (its few live messages written forward)
//! so that one old message cannot keep the journal from shrinking. At start,
//! [`Journal::open`] reads every segment, skips torn or corrupt records with a warning
//! naming the file and offset, and hands back every queue's live messages.
//!
//! Every opening of the journal is an **epoch**: the segment it starts carries it in its
//! header ([`super::format::segment_header`]). A lone broker takes the next epoch after the
//! newest segment's; a master/slave broker takes its lock's, through a [`Fence`] the writer
//! asks before every write.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::StoreError;
use super::fence::{Fence, Unfenced};
use super::format;
use super::record::Record;
use super::segments::{DURABLES_FILE, JournalSettings, Location, Moved, Recovered};
use super::writer::{Op, Usage, WriterState};
use crate::message::Message;

/// A handle on the journal; cheap to clone. The writer thread ends when the last handle goes.
#[derive(Clone)]
pub struct Journal {
    ops: mpsc::Sender<Op>,
    reads: mpsc::Sender<super::reader::Read>,
    next_id: Arc<AtomicU64>,
    usage: Arc<Usage>,
}

impl Journal {
    /// Opens the journal of a lone broker, in the epoch after the newest segment's.
    pub fn open(settings: JournalSettings) -> Result<(Journal, Recovered), StoreError> {
        let epoch = Journal::newest_epoch(&settings.dir)? + 1;
        Journal::open_fenced(settings, Arc::new(Unfenced(epoch)))
    }

    /// The newest epoch a segment in `dir` was started in (0 if none has a header, or
    /// there is no journal yet).
    pub fn newest_epoch(dir: &std::path::Path) -> Result<u64, StoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        let mut newest = 0;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "log") {
                continue;
            }
            let mut header = [0u8; format::SEGMENT_HEADER_BYTES];
            let read = File::open(&path)
                .and_then(|mut file| std::io::Read::read(&mut file, &mut header))
                .map_err(|e| StoreError::io(&path, e))?;
            if let Ok(Some(epoch)) = format::segment_epoch(&header[..read]) {
                newest = newest.max(epoch);
            }
        }
        Ok(newest)
    }

    /// Locks the journal directory, recovers what it holds, and starts the writer thread,
    /// which writes only while `fence` allows. Refuses a journal that holds a segment of an
    /// epoch newer than the fence's.
    pub fn open_fenced(
        settings: JournalSettings,
        fence: Arc<dyn Fence>,
    ) -> Result<(Journal, Recovered), StoreError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }

        let usage = Arc::new(Usage::default());
        let moved = Moved::default();
        let mut state = WriterState::new(settings, usage.clone(), moved.clone(), lock, fence);
        let (mut recovered, max_id, last_segment) = state.recover()?;
        let durables = dir.join(DURABLES_FILE);
        if let Ok(text) = std::fs::read_to_string(&durables) {
            recovered.durables = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        }
        state.roll(last_segment + 1)?;
        state.delete_dead_prefix();
        usage
            .skipped
            .store(recovered.skipped.len() as u64, Ordering::Relaxed);

        let (ops, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("actormq-journal".into())
            .spawn(move || state.run(rx))
            .map_err(|e| StoreError::io(&dir, e))?;
        let reads = super::reader::start(dir.clone(), moved)?;
        Ok((
            Journal {
                ops,
                reads,
                next_id: Arc::new(AtomicU64::new(max_id + 1)),
                usage,
            },
            recovered,
        ))
    }

    /// Size of the journal, what recovery skipped, what waits for disk space, and who
    /// holds the oldest segment.
    pub fn usage(&self) -> crate::stats::StoreStat {
        crate::stats::StoreStat {
            kind: "journal".into(),
            bytes: self.usage.bytes.load(Ordering::Relaxed),
            segments: self.usage.segments.load(Ordering::Relaxed),
            skipped: self.usage.skipped.load(Ordering::Relaxed),
            paged: 0,
            unwritten: self.usage.unwritten.load(Ordering::Relaxed),
            oldest_holder: self
                .usage
                .oldest_holder
                .lock()
                .map(|holder| holder.clone())
                .unwrap_or_default(),
        }
    }

    /// A fresh journal id for a message.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Reads back the messages with these ids from the records at these locations, in
    /// order, on the journal's reader thread (paging in).
    pub fn read(
        &self,
        wanted: Vec<(u64, Location)>,
    ) -> impl Future<Output = Result<Vec<Arc<Message>>, StoreError>> + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.reads.send(super::reader::Read { wanted, done });
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Appends records; resolves once they are durable (as the fsync mode defines it), with
    /// where each record starts.
    pub fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Location>, StoreError>> + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.ops.send(Op::Append {
            records,
            done: Some(done),
        });
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Appends records without waiting (removals: losing one in a crash means a redelivery).
    /// If the disk is full they are kept and written once there is room again.
    pub fn append_lazy(&self, records: Vec<Record>) {
        let _ = self.ops.send(Op::Append {
            records,
            done: None,
        });
    }

    /// Replaces the file `name` beside the segments with `contents`, in order with appends.
    pub fn write_file(&self, name: &str, contents: Vec<u8>) {
        let _ = self.ops.send(Op::WriteFile {
            name: name.to_string(),
            contents,
        });
    }

    /// Writes everything queued, fsyncs, and stops the writer, releasing the directory's
    /// lock. Blocks (up to 10 s): call it when the broker shuts down.
    pub fn close(&self) {
        let (done, closed) = mpsc::channel();
        if self.ops.send(Op::Close { done }).is_ok() {
            let _ = closed.recv_timeout(crate::constants::JOURNAL_CLOSE_TIMEOUT);
        }
    }
}
