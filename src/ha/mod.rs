//! Master/slave: which of the brokers that share one store serves it. The one holding the
//! lock is the master; the others are standbys that poll until they get it. Two kinds of
//! lock, one shape:
//!
//! - [`file_lock`]: an exclusive OS lock on `data_dir/master.lock` (shared file system).
//! - [`lease`]: a lease row in the PostgreSQL store, renewed on the database's clock.
//!
//! A standby tries its lock through a [`Contender`].
//! Taking a lock yields a [`Claim`] (the lock is held; who held it before); a claim made
//! into a [`Mastership`] has an **epoch** (one more than any before it, written beside the
//! lock) and a [`Fence`] the store asks before every write. The
//! mastership's keeper checks the lock every `ha.keep_alive_ms`; when a check fails it
//! closes the fence at once (nothing more is written or confirmed) and [`Mastership::lost`]
//! resolves with the reason, so the broker demotes itself. What a master does with all this
//! (stop serving, wait again) is `broker::node`'s.

pub mod file_lock;
pub mod lease;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::{Config, HaMode, HaSettings};
use crate::store::Fence;

/// Why a lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(transparent)]
    Database(#[from] crate::store::postgres::PgError),
    #[error("{0}")]
    Thread(String),
}

impl HaError {
    /// Waiting will not help (bad credentials, another schema version, no such database):
    /// the broker should stop and say so rather than poll.
    pub fn is_fatal(&self) -> bool {
        use crate::store::postgres::PgError;
        matches!(
            self,
            HaError::Database(
                PgError::Url(_)
                    | PgError::Credentials { .. }
                    | PgError::NoDatabase { .. }
                    | PgError::SchemaVersion { .. }
            )
        )
    }

    fn io(path: &std::path::Path, e: std::io::Error) -> HaError {
        HaError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// Who holds (or last held) a lock, as written beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub pid: u32,
    pub host: String,
    /// When it became the master, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    pub epoch: u64,
}

impl Holder {
    /// This process, as broker `name`, from now on.
    pub fn me(name: &str, epoch: u64) -> Holder {
        Holder {
            name: name.to_string(),
            pid: std::process::id(),
            host: hostname(),
            since_ms: unix_ms(),
            epoch,
        }
    }

    /// `NAME (pid PID, host HOST, since TIME)`, as the standby's log line shows it.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, host {}, since {})",
            self.name,
            self.pid,
            self.host,
            utc(self.since_ms)
        )
    }
}

/// The lock is held, not yet used: who held it before.
pub struct Claim {
    pub previous: Option<Holder>,
    inner: ClaimKind,
}

enum ClaimKind {
    File(file_lock::FileClaim),
    Lease(lease::LeaseClaim),
}

impl Claim {
    /// Makes this broker (`name`) the master and starts the keeper. Its epoch is one more
    /// than any before it: with a file lock, more than the lock's and `floor` (the newest
    /// the store has seen); a lease counted its epoch when it was taken.
    pub fn promote(
        self,
        name: &str,
        floor: u64,
        settings: &HaSettings,
    ) -> Result<Mastership, HaError> {
        match self.inner {
            ClaimKind::File(claim) => {
                let last = self.previous.as_ref().map_or(0, |p| p.epoch);
                let me = Holder::me(name, last.max(floor) + 1);
                claim.promote(me, self.previous, settings.keep_alive(), settings.lease())
            }
            ClaimKind::Lease(claim) => claim.promote(self.previous, settings),
        }
    }
}

/// A standby's way to its lock.
pub enum Contender {
    File(PathBuf),
    Lease(Box<lease::Contender>),
}

impl Contender {
    /// The lock `config` names (`ha.mode` is not `none`).
    pub fn new(config: &Config) -> Contender {
        match config.ha.mode {
            HaMode::Database => Contender::Lease(Box::new(lease::Contender::new(config))),
            _ => Contender::File(config.broker.data_dir.clone()),
        }
    }

    /// Tries once to take the lock.
    pub async fn attempt(&mut self) -> Result<Attempt, HaError> {
        match self {
            Contender::File(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || file_lock::try_lock(&dir))
                    .await
                    .map_err(|e| HaError::Thread(e.to_string()))?
            }
            Contender::Lease(contender) => contender.attempt().await,
        }
    }

    /// `the lock on DIR` or `the lease in user@host:port/db`.
    pub fn describe(&self) -> String {
        match self {
            Contender::File(dir) => format!("the lock on {}", dir.display()),
            Contender::Lease(contender) => contender.describe(),
        }
    }
}

/// What a standby found when it tried the lock.
pub enum Attempt {
    /// The lock is ours.
    Claimed(Claim),
    /// Another broker holds it (who, if it could be read).
    Held(Option<Holder>),
}

/// A master's hold on its lock. Dropping it stops the keeper and releases the lock.
pub struct Mastership {
    pub me: Holder,
    pub previous: Option<Holder>,
    fence: Arc<Gate>,
    lost: watch::Receiver<Option<String>>,
    /// Stopped first, then the lock is let go.
    _keeper: Keeper,
    _hold: Box<dyn std::any::Any + Send>,
}

/// How a mastership is kept: how often, the longest a store write may take, and the quick
/// check the store runs before each write.
struct Keeping {
    every: Duration,
    stall: Duration,
    quick: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl Mastership {
    /// The mastership of `me` over a lock just taken: its fence, and a keeper running
    /// `keep` every `keeping.every`. `hold` is what holds the lock (dropped last).
    fn start(
        me: Holder,
        previous: Option<Holder>,
        keeping: Keeping,
        keep: impl KeepAlive,
        hold: Box<dyn std::any::Any + Send>,
    ) -> Result<Mastership, HaError> {
        let (lost_tx, lost) = watch::channel(None);
        let gate = Arc::new(Gate {
            epoch: me.epoch,
            closed: Mutex::new(None),
            lost: lost_tx,
            quick: keeping.quick,
            writing_since: Default::default(),
            base: std::time::Instant::now(),
            stall: keeping.stall,
        });
        let keeper = Keeper::start(gate.clone(), keeping.every, keep)
            .map_err(|e| HaError::Thread(e.to_string()))?;
        Ok(Mastership {
            me,
            previous,
            fence: gate,
            lost,
            _keeper: keeper,
            _hold: hold,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.me.epoch
    }

    /// The fence the store must write behind.
    pub fn fence(&self) -> Arc<dyn Fence> {
        self.fence.clone()
    }

    /// The reason, if the lock is lost already.
    pub fn lost_now(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Resolves with the reason once the lock is lost (at once if it already is).
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(reason) = self.lost.borrow_and_update().clone() {
                return reason;
            }
            if self.lost.changed().await.is_err() {
                return "the lock's keeper stopped".into();
            }
        }
    }
}

/// The keeper thread, stopped when this is dropped.
struct Keeper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a keeper does every keep-alive: check (file) or renew (lease) the lock; and once,
/// when the master stops, let it go.
trait KeepAlive: Send + 'static {
    /// `Err` with the reason once the lock is lost.
    fn renew(&mut self) -> Result<(), String>;
    /// The master stops (shutdown or demotion): give the lock up at once if it can be.
    fn release(&mut self) {}
}

impl Keeper {
    /// Runs `keep` every `every` until it fails (closing `gate`) or this is dropped.
    fn start(
        gate: Arc<Gate>,
        every: Duration,
        mut keep: impl KeepAlive,
    ) -> Result<Keeper, std::io::Error> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("actormq-ha-keeper".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let checked = gate
                        .check()
                        .and_then(|()| gate.stalled())
                        .and_then(|()| keep.renew());
                    if let Err(reason) = checked {
                        gate.close(reason);
                        return;
                    }
                }
                keep.release();
            })?;
        Ok(Keeper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fence of a mastership: open until the keeper (or a quick check by the store) finds
/// the lock lost; then closed for good, with the reason.
struct Gate {
    epoch: u64,
    closed: Mutex<Option<String>>,
    lost: watch::Sender<Option<String>>,
    /// A quick check the store runs before each write (the file lock's inode).
    quick: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// When the store's current write started (ms since `base`), 0 when idle.
    writing_since: std::sync::atomic::AtomicU64,
    base: std::time::Instant,
    /// A write that takes longer than this closes the gate.
    stall: Duration,
}

impl Gate {
    fn close(&self, reason: String) {
        if let Ok(mut closed) = self.closed.lock()
            && closed.is_none()
        {
            *closed = Some(reason.clone());
            self.lost.send_replace(Some(reason));
        }
    }

    fn stalled(&self) -> Result<(), String> {
        let since = self
            .writing_since
            .load(std::sync::atomic::Ordering::Acquire);
        if since == 0 {
            return Ok(());
        }
        let now = self.base.elapsed().as_millis() as u64 + 1;
        if now.saturating_sub(since) > self.stall.as_millis() as u64 {
            return Err(format!(
                "a store write has not finished in {} ms",
                self.stall.as_millis()
            ));
        }
        Ok(())
    }
}

impl Fence for Gate {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn check(&self) -> Result<(), String> {
        if let Some(reason) = self.closed.lock().ok().and_then(|closed| closed.clone()) {
            return Err(reason);
        }
        (self.quick)().inspect_err(|reason| self.close(reason.clone()))
    }

    fn writing(&self, busy: bool) {
        let since = if busy {
            self.base.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.writing_since
            .store(since, std::sync::atomic::Ordering::Release);
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This machine's name (Linux), or `unknown`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_212_345_000), "2026-12-02T11:52:25Z");
    }
}
