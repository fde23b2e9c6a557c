//! [`Journal`]: append-only segment files under `<data_dir>/journal`, written by one
//! dedicated thread (never an arbiter's) with group commit: every append waiting when the
//! thread wakes is written with one `write` and made durable with one `fsync`, and only
//! then is each append's future resolved.
//!
//! Segments are deleted oldest first, once every message enqueued in them has been removed
//! (a newer segment may hold the removals of an older one's messages, so it must outlive
//! it). At start, [`Journal::open`] reads every segment, skips torn or corrupt records
//! with a warning naming the file and offset, and hands back every queue's live messages.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::StoreError;
use super::record::{self, Record};
use crate::message::Message;

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// One fsync per group of appends (group commit).
    Batch,
    /// One fsync per append.
    Always,
    /// Never fsync (the OS writes when it likes; a machine crash can lose messages).
    Never,
}

/// Where and how the journal writes.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    pub dir: PathBuf,
    pub fsync: FsyncMode,
    pub segment_bytes: u64,
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
}

/// A live message found at start.
#[derive(Clone, Copy, Debug)]
pub struct RecoveredMessage {
    pub id: u64,
    pub at: Location,
    pub priority: u8,
}

/// The file beside the segments that lists durable subscriptions, one per line.
pub const DURABLES_FILE: &str = "durable-subscriptions";

/// Where a record starts: its segment and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
}

enum Op {
    Append {
        records: Vec<Record>,
        done: Option<oneshot::Sender<Result<Vec<Location>, StoreError>>>,
    },
    /// Write what is queued, fsync, release the lock, and stop.
    Close { done: mpsc::Sender<()> },
    /// Replace a small file beside the segments (write a copy, fsync, rename).
    WriteFile { name: String, contents: Vec<u8> },
}

/// A handle on the journal; cheap to clone. The writer thread ends when the last handle goes.
#[derive(Clone)]
pub struct Journal {
    ops: mpsc::Sender<Op>,
    reads: mpsc::Sender<super::reader::Read>,
    next_id: Arc<AtomicU64>,
    usage: Arc<Usage>,
}

/// What the writer reports about the files, for `stat`.
#[derive(Default)]
struct Usage {
    bytes: AtomicU64,
    segments: AtomicU64,
    skipped: AtomicU64,
}

impl Journal {
    /// Locks the journal directory, recovers what it holds, and starts the writer thread.
    pub fn open(settings: JournalSettings) -> Result<(Journal, Recovered), StoreError> {
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
        let mut state = WriterState {
            settings,
            segments: BTreeMap::new(),
            live: HashMap::new(),
            current: None,
            usage: usage.clone(),
            _lock: lock,
        };
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
        let reads = super::reader::start(dir.clone())?;
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

    /// Size of the journal and what recovery skipped.
    pub fn usage(&self) -> crate::protocol::StoreStat {
        crate::protocol::StoreStat {
            bytes: self.usage.bytes.load(Ordering::Relaxed),
            segments: self.usage.segments.load(Ordering::Relaxed),
            skipped: self.usage.skipped.load(Ordering::Relaxed),
            paged: 0,
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
            let _ = closed.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

struct Segment {
    path: PathBuf,
    /// Messages enqueued in this segment and not yet removed.
    live: usize,
    bytes: u64,
}

struct Current {
    number: u64,
    file: File,
    bytes: u64,
}

struct WriterState {
    settings: JournalSettings,
    segments: BTreeMap<u64, Segment>,
    /// (queue, id) → the segment its Enqueue is in.
    live: HashMap<(String, u64), u64>,
    current: Option<Current>,
    usage: Arc<Usage>,
    _lock: File,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.log"))
}

impl WriterState {
    /// Reads every segment in order; returns the live messages, the highest id, and the
    /// highest segment number.
    fn recover(&mut self) -> Result<(Recovered, u64, u64), StoreError> {
        let dir = self.settings.dir.clone();
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|e| StoreError::io(&dir, e))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut recovered = Recovered::default();
        let mut messages: HashMap<(String, u64), (Location, u8)> = HashMap::new();
        let mut max_id = 0;
        for &number in &numbers {
            let path = segment_path(&dir, number);
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            let decoded = record::decode_all(&bytes);
            for offset in decoded.skipped {
                tracing::warn!(file = %path.display(), offset, "skipped a torn or corrupt journal record");
                recovered.skipped.push((path.clone(), offset));
            }
            let mut segment = Segment {
                path,
                live: 0,
                bytes: bytes.len() as u64,
            };
            let records = decoded.records.into_iter().flat_map(|(offset, record)| {
                let at = Location {
                    segment: number,
                    offset: offset as u64,
                };
                record.flatten().into_iter().map(move |r| (at, r))
            });
            for (at, record) in records {
                match record {
                    Record::Enqueue { queue, id, message } => {
                        max_id = max_id.max(id);
                        self.live.insert((queue.clone(), id), number);
                        messages.insert((queue, id), (at, message.priority));
                        segment.live += 1;
                    }
                    Record::Remove { queue, id } => {
                        max_id = max_id.max(id);
                        let key = (queue, id);
                        messages.remove(&key);
                        if let Some(home) = self.live.remove(&key) {
                            if home == number {
                                segment.live -= 1;
                            } else if let Some(s) = self.segments.get_mut(&home) {
                                s.live -= 1;
                            }
                        }
                    }
                    Record::Transaction { .. } => {} // flattened above
                }
            }
            self.segments.insert(number, segment);
        }
        for ((queue, id), (at, priority)) in messages {
            recovered
                .queues
                .entry(queue)
                .or_default()
                .push(RecoveredMessage { id, at, priority });
        }
        for list in recovered.queues.values_mut() {
            list.sort_unstable_by_key(|m| m.id);
        }
        let restored: usize = recovered.queues.values().map(Vec::len).sum();
        tracing::info!(
            segments = numbers.len(),
            messages = restored,
            skipped = recovered.skipped.len(),
            "journal recovered from {}",
            dir.display()
        );
        Ok((recovered, max_id, numbers.last().copied().unwrap_or(0)))
    }

    /// Starts segment `number` as the one written to.
    fn roll(&mut self, number: u64) -> Result<(), StoreError> {
        let path = segment_path(&self.settings.dir, number);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        self.segments.insert(
            number,
            Segment {
                path,
                live: 0,
                bytes: 0,
            },
        );
        self.report_usage();
        self.current = Some(Current {
            number,
            file,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments while nothing in them is live.
    fn delete_dead_prefix(&mut self) {
        let current = self.current.as_ref().map(|c| c.number);
        while let Some((&number, segment)) = self.segments.first_key_value() {
            if segment.live > 0 || Some(number) == current {
                break;
            }
            if let Err(e) = std::fs::remove_file(&segment.path) {
                tracing::warn!(file = %segment.path.display(), "cannot delete journal segment: {e}");
                break;
            }
            tracing::debug!(file = %segment.path.display(), "journal segment deleted");
            self.segments.remove(&number);
        }
        self.report_usage();
    }

    fn report_usage(&self) {
        let bytes = self.segments.values().map(|s| s.bytes).sum();
        self.usage.bytes.store(bytes, Ordering::Relaxed);
        self.usage
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
    }

    fn run(mut self, ops: mpsc::Receiver<Op>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut closing = None;
        while let Ok(first) = ops.recv() {
            let mut group = vec![first];
            group.extend(ops.try_iter());
            let mut waiting = Vec::with_capacity(group.len());
            let mut result = Ok(());
            let segment = self.current.as_ref().map(|c| c.number).unwrap_or(0);
            for op in group {
                let (records, done) = match op {
                    Op::Append { records, done } => (records, done),
                    Op::Close { done } => {
                        closing = Some(done);
                        continue;
                    }
                    Op::WriteFile { name, contents } => {
                        if let Err(e) = self.replace_file(&name, &contents) {
                            tracing::error!("cannot write {name}: {e}");
                        }
                        continue;
                    }
                };
                let mut locations = Vec::with_capacity(records.len());
                for record in &records {
                    let written = self.current.as_ref().map(|c| c.bytes).unwrap_or(0);
                    locations.push(Location {
                        segment,
                        offset: written + buf.len() as u64,
                    });
                    if let Err(e) = record::encode(record, &mut buf) {
                        tracing::error!("cannot encode a journal record: {e}");
                    }
                }
                self.account(&records);
                waiting.extend(done.map(|done| (done, locations)));
                if self.settings.fsync == FsyncMode::Always {
                    result = result.and(self.write(&mut buf, true));
                }
            }
            if self.settings.fsync != FsyncMode::Always {
                result = result.and(self.write(&mut buf, self.settings.fsync == FsyncMode::Batch));
            }
            for (done, locations) in waiting {
                let _ = done.send(result.clone().map(|()| locations));
            }
            self.delete_dead_prefix();
            if closing.is_some() {
                break;
            }
            if let Err(e) = self.roll_if_full() {
                tracing::error!("cannot start a new journal segment: {e}");
            }
        }
        if let Some(current) = &self.current {
            let _ = current.file.sync_data();
        }
        drop(self); // releases the lock before saying so
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Replaces a small file atomically: a copy is written and fsynced, then renamed.
    fn replace_file(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        let path = self.settings.dir.join(name);
        let copy = self.settings.dir.join(format!("{name}.new"));
        let mut file = File::create(&copy).map_err(|e| StoreError::io(&copy, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::io(&copy, e))?;
        std::fs::rename(&copy, &path).map_err(|e| StoreError::io(&path, e))
    }

    /// Tracks which segment holds each live message.
    fn account(&mut self, records: &[Record]) {
        let Some(current) = self.current.as_ref().map(|c| c.number) else {
            return;
        };
        for record in records {
            if let Record::Transaction { records } = record {
                self.account(records);
                continue;
            }
            match record {
                Record::Enqueue { queue, id, .. } => {
                    self.live.insert((queue.clone(), *id), current);
                    if let Some(s) = self.segments.get_mut(&current) {
                        s.live += 1;
                    }
                }
                Record::Remove { queue, id } => {
                    if let Some(home) = self.live.remove(&(queue.clone(), *id))
                        && let Some(s) = self.segments.get_mut(&home)
                    {
                        s.live = s.live.saturating_sub(1);
                    }
                }
                Record::Transaction { .. } => {}
            }
        }
    }

    fn write(&mut self, buf: &mut Vec<u8>, sync: bool) -> Result<(), StoreError> {
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::Closed);
        };
        let path = segment_path(&self.settings.dir, current.number);
        let result = current
            .file
            .write_all(buf)
            .and_then(|()| {
                if sync {
                    current.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| StoreError::io(&path, e));
        current.bytes += buf.len() as u64;
        if let Some(segment) = self.segments.get_mut(&current.number) {
            segment.bytes += buf.len() as u64;
        }
        buf.clear();
        if let Err(e) = &result {
            tracing::error!("journal write failed: {e}");
        }
        result
    }

    fn roll_if_full(&mut self) -> Result<(), StoreError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        if current.bytes < self.settings.segment_bytes {
            return Ok(());
        }
        let next = current.number + 1;
        let path = segment_path(&self.settings.dir, current.number);
        current
            .file
            .sync_data()
            .map_err(|e| StoreError::io(&path, e))?;
        self.roll(next)?;
        self.delete_dead_prefix();
        Ok(())
    }
}
