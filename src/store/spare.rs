//! Zero-filled segment files, made ahead of need on a thread of their own.
//!
//! An `fdatasync` after an append that grows a file must also write the file's new size
//! (metadata, through the filesystem's journal): on this project's test machine that makes
//! a 4 KiB durable append cost 180–250 µs instead of ~115 µs. `fallocate` does not help
//! (its unwritten extents are metadata to convert on first write); only blocks already
//! written do. So the journal's writer starts each segment, when it can, on a *spare*: a
//! file of zeros written and synced in advance (ActiveMQ KahaDB's `preallocationStrategy=
//! zeros` with `preallocationScope=entire_journal_async`). Records then overwrite zeros in
//! place and each `fdatasync` writes data only. Recovery reads a segment's zero tail as
//! its end (see `format::decode_all`).
//!
//! The writer asks for a spare only while its fsynced groups are small
//! ([`crate::constants::SPARE_GROUP_BELOW`]: one message confirmed at a time, not a
//! flood, where zeros written ahead would double the disk's work for no gain). Spares start
//! at [`PREALLOCATE_FIRST`] and double, up to the segment size, so a journal that holds
//! little writes little; the writer moves to the next spare when the current one is used
//! up (or at once, if the current segment had none). Only one is made at a time; one that
//! could not be made (a full disk) stops preallocation with a WARN, and segments grow as
//! they are written, as before.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::constants::PREALLOCATE_FIRST;

/// A complete spare: zeros, synced.
const SPARE: &str = "spare.zero";
/// A spare being made is `spare.zero.tmp.<pid>.<n>`; any left over from a stopped journal
/// is removed.
const SPARE_TMP: &str = "spare.zero.tmp.";
/// Zeros written per call while making a spare.
const ZERO_CHUNK: usize = 1 << 20;

pub(super) struct Spares {
    dir: PathBuf,
    enabled: bool,
    /// Size of the next spare made.
    next_size: u64,
    max_size: u64,
    /// The spare on disk, ready to be taken: its size.
    ready: Option<u64>,
    making: Option<(JoinHandle<std::io::Result<()>>, u64)>,
    /// This journal's name for a spare being made (a thread left behind by an earlier
    /// journal on the same folder writes under another).
    tmp: PathBuf,
}

impl Spares {
    /// Spares in `dir`, up to `segment_bytes` each; none if not `enabled`. A complete spare
    /// left by an earlier run is used; an incomplete one is removed.
    pub(super) fn new(dir: &Path, segment_bytes: u64, enabled: bool) -> Spares {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(SPARE_TMP) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let tmp = dir.join(format!(
            "{SPARE_TMP}{}.{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        let max_size = segment_bytes.max(1);
        let ready = if enabled {
            std::fs::metadata(dir.join(SPARE))
                .ok()
                .map(|m| m.len())
                .filter(|&len| len > 0)
        } else {
            let _ = std::fs::remove_file(dir.join(SPARE));
            None
        };
        Spares {
            dir: dir.to_path_buf(),
            enabled,
            next_size: PREALLOCATE_FIRST.min(max_size),
            max_size,
            ready,
            making: None,
            tmp,
        }
    }

    /// Whether a spare is ready to be taken (looking at the one being made).
    pub(super) fn ready(&mut self) -> bool {
        if self
            .making
            .as_ref()
            .is_some_and(|(thread, _)| thread.is_finished())
            && let Some((thread, size)) = self.making.take()
        {
            match thread.join() {
                Ok(Ok(())) => self.ready = Some(size),
                Ok(Err(e)) => self.give_up(&e.to_string()),
                Err(_) => self.give_up("its thread panicked"),
            }
        }
        self.ready.is_some()
    }

    /// Makes the ready spare the file at `path` (which must not exist) and returns it,
    /// open for writing, with its size; `None` if there is no spare.
    pub(super) fn take(&mut self, path: &Path) -> Option<(File, u64)> {
        if !self.ready() {
            return None;
        }
        let size = self.ready.take()?;
        let spare = self.dir.join(SPARE);
        // A link, not a rename: it fails rather than replace an existing segment.
        let taken = std::fs::hard_link(&spare, path)
            .and_then(|()| std::fs::remove_file(&spare))
            .and_then(|()| OpenOptions::new().write(true).open(path));
        match taken {
            Ok(file) => Some((file, size)),
            Err(e) => {
                self.give_up(&format!("cannot use {}: {e}", spare.display()));
                None
            }
        }
    }

    /// Starts making the next spare, unless one is ready or being made.
    pub(super) fn make(&mut self) {
        if !self.enabled || self.ready.is_some() || self.making.is_some() {
            return;
        }
        let size = self.next_size;
        self.next_size = (size * 2).min(self.max_size);
        let (tmp, spare) = (self.tmp.clone(), self.dir.join(SPARE));
        match std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || write_zeros(&tmp, &spare, size))
        {
            Ok(thread) => self.making = Some((thread, size)),
            Err(e) => self.give_up(&format!("cannot start its thread: {e}")),
        }
    }

    fn give_up(&mut self, reason: &str) {
        tracing::warn!(
            "journal segments are no longer preallocated ({reason}): each durable append also writes the file's new size"
        );
        self.enabled = false;
        self.ready = None;
        let _ = std::fs::remove_file(self.dir.join(SPARE));
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `size` zeros to `tmp`, syncs it, and names it `spare`.
fn write_zeros(tmp: &Path, spare: &Path, size: u64) -> std::io::Result<()> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(tmp)?;
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut left = size;
        while left > 0 {
            let n = left.min(ZERO_CHUNK as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        std::fs::rename(tmp, spare)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}
