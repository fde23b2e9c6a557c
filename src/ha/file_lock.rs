//! The shared-file lock: an exclusive OS lock (`flock`) on `data_dir/master.lock`, the way
//! ActiveMQ's shared-file master/slave and Artemis's `FileLockNodeManager` do it, with what
//! they lacked for fencing:
//!
//! - The file holds the holder and an **epoch** (`key=value` lines, fsynced when a master
//!   takes over), so a standby can say whom it waits for and a new master counts on from
//!   the last one.
//! - A lock is only as good as the file it is on: if `master.lock` is deleted or replaced,
//!   a standby can lock the new file while the old master still holds the old one. So the
//!   master's store checks, before every write, that the path still names the file it
//!   locked (same device and inode); the keeper also checks, every `ha.keep_alive_ms`, that
//!   the file still carries its epoch. Either failing closes the fence at once.
//! - The journal's own `LOCK` stays: a new master cannot open the journal until the old
//!   one has closed it, so even a replaced lock file cannot give two writers.
//!
//! Like every `flock`, this needs a file system whose locks work across machines and are
//! released when their holder dies (a local disk, NFSv4; not NFSv3).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Attempt, Claim, ClaimKind, HaError, Holder, KeepAlive, Keeping, Mastership};

/// The lock file, in the data dir.
pub const LOCK_FILE: &str = "master.lock";

/// The lock is held; nothing is written yet.
pub(super) struct FileClaim {
    path: PathBuf,
    file: File,
    id: (u64, u64),
}

/// Device and inode: which file a path or a handle is.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Tries once to take the lock on `dir`.
pub fn try_lock(dir: &Path) -> Result<Attempt, HaError> {
    std::fs::create_dir_all(dir).map_err(|e| HaError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| HaError::io(&path, e))?;
    if created {
        // The lock file's name must survive a crash as much as its contents.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| HaError::io(dir, e))?;
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Ok(Attempt::Held(read_holder(&mut file)));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(HaError::io(&path, e)),
    }
    let id = identity(&file.metadata().map_err(|e| HaError::io(&path, e))?);
    // Locked a file that was deleted or replaced meanwhile: not the lock any more.
    match std::fs::metadata(&path) {
        Ok(meta) if identity(&meta) == id => {}
        _ => return Ok(Attempt::Held(None)),
    }
    let previous = read_holder(&mut file);
    Ok(Attempt::Claimed(Claim {
        previous,
        inner: ClaimKind::File(FileClaim { path, file, id }),
    }))
}

impl FileClaim {
    /// Writes `me` (with its epoch) into the lock file, fsyncs it, and starts the keeper.
    pub(super) fn promote(
        mut self,
        me: Holder,
        previous: Option<Holder>,
        keep_alive: Duration,
        stall: Duration,
    ) -> Result<Mastership, HaError> {
        let path = self.path.clone();
        let io = |e| HaError::io(&path, e);
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(render(&me).as_bytes()).map_err(io)?;
        self.file.sync_all().map_err(io)?;

        let (check_path, id) = (self.path.clone(), self.id);
        let check = LockFileCheck {
            path: self.path.clone(),
            epoch: me.epoch,
        };
        Mastership::start(
            me,
            previous,
            Keeping {
                every: keep_alive,
                stall,
                quick: Box::new(move || same_file(&check_path, id)),
            },
            check,
            Box::new(self.file),
        )
    }
}

/// The keeper's check: the lock file still carries this master's epoch.
struct LockFileCheck {
    path: PathBuf,
    epoch: u64,
}

impl KeepAlive for LockFileCheck {
    fn renew(&mut self) -> Result<(), String> {
        let (path, epoch) = (&self.path, self.epoch);
        let mut file = File::open(path)
            .map_err(|e| format!("cannot read the lock file {}: {e}", path.display()))?;
        match read_holder(&mut file) {
            Some(holder) if holder.epoch == epoch => Ok(()),
            Some(holder) => Err(format!(
                "the lock file {} now names epoch {} of {}, not this broker's epoch {epoch}",
                path.display(),
                holder.epoch,
                holder.name
            )),
            None => Err(format!(
                "the lock file {} no longer names this broker",
                path.display()
            )),
        }
    }
}

/// Whether `path` still is the file with identity `id`.
fn same_file(path: &Path, id: (u64, u64)) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if identity(&meta) == id => Ok(()),
        Ok(_) => Err(format!(
            "the lock file {} was replaced by another file",
            path.display()
        )),
        Err(e) => Err(format!("the lock file {} is gone: {e}", path.display())),
    }
}

/// The holder written in a lock file, if it reads as one.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    parse(&text)
}

fn render(holder: &Holder) -> String {
    format!(
        "epoch={}\nholder={}\npid={}\nhost={}\nsince={}\n",
        holder.epoch, holder.name, holder.pid, holder.host, holder.since_ms
    )
}

fn parse(text: &str) -> Option<Holder> {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    Some(Holder {
        epoch: value("epoch")?.parse().ok()?,
        name: value("holder")?.to_string(),
        pid: value("pid")?.parse().ok()?,
        host: value("host")?.to_string(),
        since_ms: value("since")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("actormq-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn master(dir: &Path, name: &str) -> Mastership {
        let Ok(Attempt::Claimed(claim)) = try_lock(dir) else {
            panic!("the lock is free");
        };
        let settings = crate::config::HaSettings {
            keep_alive_ms: 20,
            ..Default::default()
        };
        claim.promote(name, 0, &settings).expect("promoted")
    }

    #[test]
    fn one_holder_at_a_time_and_epochs_count_on() {
        let dir = dir("one");
        let first = master(&dir, "a");
        assert_eq!(first.epoch(), 1);
        let Ok(Attempt::Held(Some(holder))) = try_lock(&dir) else {
            panic!("the lock is held");
        };
        assert_eq!((holder.name.as_str(), holder.epoch), ("a", 1));
        drop(first);
        let second = master(&dir, "b");
        assert_eq!(second.epoch(), 2);
        assert_eq!(second.previous.as_ref().map(|p| p.name.as_str()), Some("a"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_deleted_or_rewritten_lock_file_closes_the_fence() {
        let dir = dir("lost");
        let mut held = master(&dir, "a");
        let fence = held.fence();
        assert!(fence.check().is_ok());
        std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        let reason = fence.check().unwrap_err();
        assert!(reason.contains("is gone"), "{reason}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(runtime.block_on(held.lost()).contains("is gone"));
        drop(held);

        // Rewritten in place: the keeper sees another epoch.
        let mut held = master(&dir, "b");
        let fence = held.fence();
        std::fs::write(
            dir.join(LOCK_FILE),
            "epoch=9\nholder=x\npid=1\nhost=h\nsince=0\n",
        )
        .unwrap();
        // `fs::write` truncates before it writes: a keeper that reads in between finds a
        // file naming nobody, as correct an answer as the other broker's epoch.
        let reason = runtime.block_on(held.lost());
        assert!(
            reason.contains("epoch 9") || reason.contains("no longer names this broker"),
            "{reason}"
        );
        assert!(fence.check().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
