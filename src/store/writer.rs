//! The journal's writer thread: recovery at start, then group commit, segment rolling and
//! deletion, writes that failed, and compaction. It owns the segment files and the count
//! of live messages in each.
//!
//! - **A failed write** (a full disk) leaves nothing behind: the segment is cut back to its
//!   last good length. Appends that wait for an answer (enqueues, transactions) get the
//!   error, so their producers are told. Lazy appends (removals, from acknowledgements) are
//!   kept and written again, before anything newer, until there is room; `stat` shows how
//!   many wait, and a WARN says so once. A crash meanwhile redelivers those messages: an
//!   acknowledgement is never lost silently, at worst repeated.
//! - **Compaction.** The oldest segment can only go once none of its messages is live, so
//!   one unconsumed message would keep every later segment too. When the oldest segment's
//!   live messages are a small part of it (a quarter) and others wait behind it, they are
//!   written again at the end of the journal and the segment is deleted. Queues keep the
//!   old locations of paged messages; the reader finds the copies through [`Moved`].
//!   Recovery takes the last copy of a message.
//! - **The fence.** Before every write, before deleting a segment, and before answering a
//!   write, the writer asks its [`Fence`]: a broker that is no longer the master writes and
//!   confirms nothing more (appends get [`StoreError::Fenced`]; removals are dropped, their
//!   messages are the new master's to deliver). Segments are created, never reopened, and
//!   start with the fence's epoch; recovery refuses a segment of a newer epoch.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::StoreError;
use super::fence::Fence;
use super::format;
use super::producers::ProducerWindows;
use super::record::Record;
use super::segments::{
    FsyncMode, JournalSettings, Location, Moved, Recovered, RecoveredMessage, segment_path,
};
use super::spare::Spares;
use crate::constants::{
    JOURNAL_HOLDER_EVERY, JOURNAL_RETRY_EVERY, MESSAGE_OVERHEAD, SPARE_AFTER_SYNCS,
    SPARE_GROUP_BELOW,
};

/// Where an append's locations (or its failure) are sent; none for a lazy append.
pub(super) type Done = Option<oneshot::Sender<Result<Vec<Location>, StoreError>>>;

pub(super) enum Op {
    Append {
        records: Vec<Record>,
        done: Done,
    },
    /// Write what is queued, fsync, release the lock, and stop.
    Close {
        done: mpsc::Sender<()>,
    },
    /// Replace a small file beside the segments (write a copy, fsync, rename).
    WriteFile {
        name: String,
        contents: Vec<u8>,
    },
}

/// What the writer reports about the files, for `stat`.
#[derive(Default)]
pub(super) struct Usage {
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    pub skipped: AtomicU64,
    /// Records waiting to be written again (the disk was full).
    pub unwritten: AtomicU64,
    /// The queue with the most live messages in the oldest segment, and how many.
    pub oldest_holder: Mutex<Option<(String, u64)>>,
}

struct Segment {
    path: PathBuf,
    /// Messages enqueued in this segment and not yet removed.
    live: usize,
    /// Their bytes, roughly (bodies and an allowance each).
    live_bytes: u64,
    bytes: u64,
}

impl Segment {
    fn new(path: PathBuf, bytes: u64) -> Segment {
        Segment {
            path,
            live: 0,
            live_bytes: 0,
            bytes,
        }
    }
}

struct Current {
    number: u64,
    file: File,
    /// Bytes of records (and head); records are written at this offset.
    bytes: u64,
    /// The file's zero-filled length when it was started from a spare (0 if not): past
    /// it, appends grow the file again.
    preallocated: u64,
    /// Bytes were written since the last fsync (lazy records, a segment's head): the next
    /// write that must be durable fsyncs even if it adds nothing itself.
    unsynced: bool,
}

/// Where a live message's Enqueue record is, and how often it was delivered.
#[derive(Clone, Copy)]
struct Home {
    segment: u64,
    bytes: u64,
    deliveries: u32,
}

pub(super) struct WriterState {
    settings: JournalSettings,
    segments: BTreeMap<u64, Segment>,
    /// (queue, id) → where its Enqueue is.
    live: HashMap<(String, u64), Home>,
    current: Option<Current>,
    /// Lazy records a failed write left over, oldest first.
    retry: Vec<Record>,
    usage: Arc<Usage>,
    moved: Moved,
    /// When the oldest segment's holder was last worked out.
    holder_at: Option<Instant>,
    /// Changes since then wait for the next look.
    holder_stale: bool,
    fence: Arc<dyn Fence>,
    /// Producers' stored sends, written forward at the head of every new segment so that
    /// deleting old segments never forgets them (see `store::producers`).
    producers: ProducerWindows,
    spares: Spares,
    /// Fsyncs and the bytes they made durable, over the last stretch of
    /// [`SPARE_AFTER_SYNCS`]; whether that stretch's groups were small, so that spares
    /// are worth making (see [`SPARE_GROUP_BELOW`]).
    sync_window: (u64, u64),
    small_groups: bool,
    _lock: File,
}

/// The records of one append, flattened (a transaction's are its parts).
fn flat(records: &[Record]) -> impl Iterator<Item = &Record> {
    records.iter().flat_map(|record| match record {
        Record::Transaction { records } => records.iter().collect::<Vec<_>>(),
        other => vec![other],
    })
}

impl WriterState {
    pub(super) fn new(
        settings: JournalSettings,
        usage: Arc<Usage>,
        moved: Moved,
        lock: File,
        fence: Arc<dyn Fence>,
    ) -> WriterState {
        WriterState {
            spares: Spares::new(&settings.dir, settings.segment_bytes, settings.preallocate),
            sync_window: (0, 0),
            small_groups: false,
            settings,
            segments: BTreeMap::new(),
            live: HashMap::new(),
            current: None,
            retry: Vec::new(),
            usage,
            moved,
            holder_at: None,
            holder_stale: false,
            fence,
            producers: ProducerWindows::default(),
            _lock: lock,
        }
    }

    /// Counts `record` (at segment `segment`) in the live table: an Enqueue makes its
    /// message live there (a later copy replaces an earlier one), a Remove ends it.
    fn count(&mut self, record: &Record, segment: u64) {
        match record {
            Record::Enqueue { queue, id, message } => {
                let bytes = (message.body.len() + MESSAGE_OVERHEAD) as u64;
                let mut home = Home {
                    segment,
                    bytes,
                    deliveries: 0,
                };
                if let Some(old) = self.live.get(&(queue.clone(), *id)).copied() {
                    home.deliveries = old.deliveries;
                    self.forget(old);
                }
                self.live.insert((queue.clone(), *id), home);
                if let Some(s) = self.segments.get_mut(&segment) {
                    s.live += 1;
                    s.live_bytes += bytes;
                }
            }
            Record::Remove { queue, id } => {
                if let Some(old) = self.live.remove(&(queue.clone(), *id)) {
                    self.forget(old);
                    if let Ok(mut moved) = self.moved.lock() {
                        moved.remove(id);
                    }
                }
            }
            Record::Transaction { records } => {
                for record in records {
                    self.count(record, segment);
                }
            }
            Record::Sent(mark) => self.producers.note(mark),
            Record::Delivered { queue, counts } => {
                for (id, count) in counts {
                    if let Some(home) = self.live.get_mut(&(queue.clone(), *id)) {
                        home.deliveries = *count;
                    }
                }
            }
        }
    }

    /// A live message's record at `home` no longer counts.
    fn forget(&mut self, home: Home) {
        if let Some(s) = self.segments.get_mut(&home.segment) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(home.bytes);
        }
    }

    /// Reads every segment in order; returns the live messages, the highest id, and the
    /// highest segment number.
    pub(super) fn recover(&mut self) -> Result<(Recovered, u64, u64), StoreError> {
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
        let mut messages: HashMap<(String, u64), (Location, u8, u32)> = HashMap::new();
        let mut max_id = 0;
        for &number in &numbers {
            let path = segment_path(&dir, number);
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            let format::SegmentContents { epoch, decoded } = format::read_segment(&bytes);
            if epoch > self.fence.epoch() {
                return Err(StoreError::Fenced(format!(
                    "{} was started in epoch {epoch}, newer than this broker's epoch {}: another broker has taken over",
                    path.display(),
                    self.fence.epoch()
                )));
            }
            for offset in decoded.skipped {
                tracing::warn!(file = %path.display(), offset, "skipped a torn or corrupt journal record");
                recovered.skipped.push((path.clone(), offset));
            }
            self.segments
                .insert(number, Segment::new(path, bytes.len() as u64));
            for (offset, record) in decoded.records {
                let at = Location {
                    segment: number,
                    offset: offset as u64,
                };
                for part in flat(std::slice::from_ref(&record)) {
                    match part {
                        Record::Enqueue { queue, id, message } => {
                            max_id = max_id.max(*id);
                            let key = (queue.clone(), *id);
                            let deliveries = messages.get(&key).map_or(0, |m| m.2);
                            messages.insert(key, (at, message.priority, deliveries));
                        }
                        Record::Delivered { queue, counts } => {
                            for (id, count) in counts {
                                if let Some(m) = messages.get_mut(&(queue.clone(), *id)) {
                                    m.2 = *count;
                                }
                            }
                        }
                        Record::Remove { queue, id } => {
                            max_id = max_id.max(*id);
                            messages.remove(&(queue.clone(), *id));
                        }
                        Record::Transaction { .. } | Record::Sent(_) => {}
                    }
                }
                self.count(&record, number);
            }
        }
        for ((queue, id), (at, priority, deliveries)) in messages {
            recovered
                .queues
                .entry(queue)
                .or_default()
                .push(RecoveredMessage {
                    id,
                    at,
                    priority,
                    deliveries,
                });
        }
        for list in recovered.queues.values_mut() {
            list.sort_unstable_by_key(|m| m.id);
        }
        self.producers.forget_idle(crate::message::now_millis());
        recovered.sends = self.producers.marks();
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

    /// Starts segment `number` as the one written to, with the fence's epoch in its
    /// header: on a spare if one is ready, else on a new empty file. The file must not
    /// exist: a segment is never appended to by a broker that did not start it.
    pub(super) fn roll(&mut self, number: u64) -> Result<(), StoreError> {
        self.fence.check().map_err(StoreError::Fenced)?;
        let path = segment_path(&self.settings.dir, number);
        let (file, preallocated) = match self.spares.take(&path) {
            Some(spare) => spare,
            None => (
                OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?,
                0,
            ),
        };
        // The header, then what older segments know of producers (made durable with the
        // first group written here).
        let mut head = format::segment_header(self.fence.epoch()).to_vec();
        self.producers.forget_idle(crate::message::now_millis());
        let marks = self.producers.marks();
        if !marks.is_empty() {
            let checkpoint = Record::Transaction {
                records: marks.into_iter().map(Record::Sent).collect(),
            };
            format::encode(&checkpoint, &mut head).map_err(|e| StoreError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        file.write_all_at(&head, 0)
            .map_err(|e| StoreError::io(&path, e))?;
        let bytes = head.len() as u64;
        self.segments.insert(number, Segment::new(path, bytes));
        self.current = Some(Current {
            number,
            file,
            bytes,
            preallocated,
            unsynced: true,
        });
        self.report_usage();
        Ok(())
    }

    /// Deletes the oldest segments while nothing in them is live.
    pub(super) fn delete_dead_prefix(&mut self) {
        let current = self.current.as_ref().map(|c| c.number);
        while let Some((&number, segment)) = self.segments.first_key_value() {
            if segment.live > 0 || Some(number) == current || self.fence.check().is_err() {
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

    fn report_usage(&mut self) {
        let bytes = self.segments.values().map(|s| s.bytes).sum();
        self.usage.bytes.store(bytes, Ordering::Relaxed);
        self.usage
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.usage
            .unwritten
            .store(flat(&self.retry).count() as u64, Ordering::Relaxed);
        if self
            .holder_at
            .is_none_or(|at| at.elapsed() >= JOURNAL_HOLDER_EVERY)
        {
            self.holder_at = Some(Instant::now());
            self.holder_stale = false;
            let holder = self.oldest_holder();
            if let Ok(mut slot) = self.usage.oldest_holder.lock() {
                *slot = holder;
            }
        } else {
            self.holder_stale = true;
        }
    }

    /// The queue with the most live messages in the oldest segment that has any.
    fn oldest_holder(&self) -> Option<(String, u64)> {
        let (&oldest, _) = self.segments.iter().find(|(_, s)| s.live > 0)?;
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for ((queue, _), home) in &self.live {
            if home.segment == oldest {
                *counts.entry(queue.as_str()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(queue, count)| (*count, std::cmp::Reverse(*queue)))
            .map(|(queue, count)| (queue.to_string(), count))
    }

    pub(super) fn run(mut self, ops: mpsc::Receiver<Op>) {
        let mut closing = None;
        loop {
            // While records wait for disk space, wake up to try them again; while `stat`'s
            // view of the oldest segment is stale, to bring it up to date.
            let first = if !self.retry.is_empty() || self.holder_stale {
                match ops.recv_timeout(JOURNAL_RETRY_EVERY) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                }
            };
            let mut appends: Vec<(Vec<Record>, Done)> = Vec::new();
            if !self.retry.is_empty() {
                appends.push((std::mem::take(&mut self.retry), None));
            }
            for op in first.into_iter().chain(ops.try_iter()) {
                match op {
                    Op::Append { records, done } => appends.push((records, done)),
                    Op::Close { done } => closing = Some(done),
                    Op::WriteFile { name, contents } => {
                        if let Err(e) = self.replace_file(&name, &contents) {
                            tracing::error!("cannot write {name}: {e}");
                        }
                    }
                }
            }
            if self.settings.fsync == FsyncMode::Always {
                for append in appends {
                    self.commit(vec![append]);
                }
            } else if !appends.is_empty() {
                self.commit(appends);
            }
            self.delete_dead_prefix();
            if closing.is_some() {
                break;
            }
            if let Err(e) = self.roll_if_full() {
                tracing::error!("cannot start a new journal segment: {e}");
            }
            self.compact_oldest();
        }
        if let Some(current) = &self.current {
            let _ = current.file.sync_data();
        }
        if !self.retry.is_empty() {
            tracing::error!(
                records = flat(&self.retry).count(),
                "the journal stops with acknowledgements it could not write: their messages will be delivered again"
            );
        }
        drop(self); // releases the lock before saying so
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Writes a group of appends with one write (and one fsync, as the mode says) and
    /// answers each. If the write fails, appends that wait are told and lazy ones are
    /// kept to be written again.
    fn commit(&mut self, appends: Vec<(Vec<Record>, Done)>) {
        let Some(current) = &self.current else {
            for (_, done) in appends {
                if let Some(done) = done {
                    let _ = done.send(Err(StoreError::Closed));
                }
            }
            return;
        };
        let segment = current.number;
        let start = current.bytes;
        let mut buf = Vec::new();
        let mut located = Vec::with_capacity(appends.len());
        for (records, _) in &appends {
            let mut locations = Vec::with_capacity(records.len());
            for record in records {
                locations.push(Location {
                    segment,
                    offset: start + buf.len() as u64,
                });
                if let Err(e) = format::encode(record, &mut buf) {
                    tracing::error!("cannot encode a journal record: {e}");
                }
            }
            located.push(locations);
        }
        // Only a group someone waits for is fsynced: lazy records alone (acknowledgements)
        // are written and ride on the next fsync, rather than making the next send wait for
        // an fsync of theirs (losing one in a crash means a redelivery, as ever).
        let awaited = appends.iter().any(|(_, done)| done.is_some());
        let sync = self.settings.fsync != FsyncMode::Never && awaited;
        // Fenced while it was written (an fsync that stalled past the lock): not confirmed.
        let written = self
            .write(&buf, sync)
            .and_then(|()| self.fence.check().map_err(StoreError::Fenced));
        match written {
            Ok(()) => {
                let retried = appends.first().is_some_and(|(_, done)| done.is_none())
                    && self.usage.unwritten.load(Ordering::Relaxed) > 0;
                for ((records, done), locations) in appends.into_iter().zip(located) {
                    for record in &records {
                        self.count(record, segment);
                    }
                    if let Some(done) = done {
                        let _ = done.send(Ok(locations));
                    }
                }
                if retried {
                    tracing::info!("the journal has room again: waiting records are written");
                }
            }
            Err(e) => {
                let first_failure =
                    self.retry.is_empty() && self.usage.unwritten.load(Ordering::Relaxed) == 0;
                let fenced = matches!(e, StoreError::Fenced(_));
                for (records, done) in appends {
                    match done {
                        Some(done) => {
                            let _ = done.send(Err(e.clone()));
                        }
                        None if !fenced => self.retry.extend(records),
                        None => {}
                    }
                }
                if first_failure && !self.retry.is_empty() {
                    tracing::warn!(
                        "journal write failed ({e}): acknowledgements are kept and written again once there is room"
                    );
                }
            }
        }
        self.report_usage();
    }

    /// Replaces a small file atomically: a copy is written and fsynced, then renamed.
    fn replace_file(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        self.fence.check().map_err(StoreError::Fenced)?;
        let path = self.settings.dir.join(name);
        let copy = self.settings.dir.join(format!("{name}.new"));
        let mut file = File::create(&copy).map_err(|e| StoreError::io(&copy, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::io(&copy, e))?;
        std::fs::rename(&copy, &path).map_err(|e| StoreError::io(&path, e))
    }

    /// Appends `buf` to the current segment. On failure the segment is cut back to where
    /// it was, so no torn record stays and later offsets stay right.
    fn write(&mut self, buf: &[u8], sync: bool) -> Result<(), StoreError> {
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::Closed);
        };
        if buf.is_empty() && !(sync && current.unsynced) {
            return Ok(());
        }
        self.fence.check().map_err(StoreError::Fenced)?;
        let path = segment_path(&self.settings.dir, current.number);
        self.fence.writing(true);
        let result = current
            .file
            .write_all_at(buf, current.bytes)
            .and_then(|()| {
                if sync {
                    current.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| StoreError::io(&path, e));
        self.fence.writing(false);
        match &result {
            Ok(()) => {
                current.unsynced = !sync;
                if sync {
                    self.sync_window.0 += 1;
                    self.sync_window.1 += buf.len() as u64;
                }
                current.bytes += buf.len() as u64;
                if let Some(segment) = self.segments.get_mut(&current.number) {
                    segment.bytes += buf.len() as u64;
                }
            }
            Err(e) => {
                tracing::error!("journal write failed: {e}");
                // Cut back, zeros included: the file grows again as it is written.
                current.preallocated = current.preallocated.min(current.bytes);
                if let Err(cut) = current.file.set_len(current.bytes) {
                    // Keep offsets true to the file; recovery skips the torn bytes.
                    tracing::error!("cannot cut {} back: {cut}", path.display());
                    if let Ok(meta) = current.file.metadata() {
                        let grown = meta.len().saturating_sub(current.bytes);
                        current.bytes = meta.len();
                        if let Some(segment) = self.segments.get_mut(&current.number) {
                            segment.bytes += grown;
                        }
                    }
                }
            }
        }
        result
    }

    /// Starts the next segment when this one is full, or has used up its zeros (or had
    /// none) and a spare is ready.
    fn roll_if_full(&mut self) -> Result<(), StoreError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        // Small durable groups lately: have the next spare made by the time this
        // segment's zeros (if any) are used up.
        let (syncs, synced) = self.sync_window;
        if syncs >= SPARE_AFTER_SYNCS {
            self.small_groups = synced / syncs < SPARE_GROUP_BELOW;
            self.sync_window = (0, 0);
        }
        if self.small_groups && current.bytes >= current.preallocated / 2 {
            self.spares.make();
        }
        let outgrown = current.bytes >= current.preallocated && self.spares.ready();
        if current.bytes < self.settings.segment_bytes && !outgrown {
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

    /// Writes the live messages of the oldest segment forward and deletes it, when they
    /// are few and later segments wait behind it.
    fn compact_oldest(&mut self) {
        let Some(current) = self.current.as_ref().map(|c| c.number) else {
            return;
        };
        let Some((&oldest, segment)) = self.segments.first_key_value() else {
            return;
        };
        // Worth it: something behind it besides the current segment, and little to copy.
        if oldest == current
            || self.segments.len() < 3
            || segment.live == 0
            || segment.live_bytes > self.settings.segment_bytes / 4
            || !self.retry.is_empty()
        {
            return;
        }
        let path = segment.path.clone();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot read a segment to compact it: {e}");
                return;
            }
        };
        let mut copies = Vec::new();
        for (_, record) in format::read_segment(&bytes).decoded.records {
            for part in flat(std::slice::from_ref(&record)) {
                if let Record::Enqueue { queue, id, .. } = part
                    && let Some(home) = self.live.get(&(queue.clone(), *id))
                    && home.segment == oldest
                {
                    copies.push(part.clone());
                    // Its delivery count, which was in some record of this segment or later.
                    if home.deliveries > 0 {
                        copies.push(Record::Delivered {
                            queue: queue.clone(),
                            counts: vec![(*id, home.deliveries)],
                        });
                    }
                }
            }
        }
        let Some(start) = self.current.as_ref().map(|c| c.bytes) else {
            return;
        };
        let mut buf = Vec::new();
        let mut moved = Vec::with_capacity(copies.len());
        for copy in &copies {
            let offset = start + buf.len() as u64;
            if format::encode(copy, &mut buf).is_ok()
                && let Record::Enqueue { id, .. } = copy
            {
                moved.push((
                    *id,
                    Location {
                        segment: current,
                        offset,
                    },
                ));
            }
        }
        if let Err(e) = self.write(&buf, self.settings.fsync != FsyncMode::Never) {
            tracing::warn!("cannot compact {}: {e}", path.display());
            return;
        }
        if let Ok(mut table) = self.moved.lock() {
            table.extend(moved);
        }
        for copy in &copies {
            self.count(copy, current);
        }
        tracing::info!(
            file = %path.display(),
            messages = copies.len(),
            "compacted the oldest journal segment: its live messages were written forward"
        );
        self.holder_at = None;
        self.delete_dead_prefix();
    }
}
