//! The database lease: one row (`actormq_lease`) in the PostgreSQL store, better than
//! ActiveMQ's `LeaseDatabaseLocker` on three counts:
//!
//! - **The database's clock only.** Taking and renewing are conditional statements on
//!   `now()` in the database (`… WHERE expires_at <= now()`, `SET expires_at = now() +
//!   lease`); no broker's clock is compared with another's.
//! - **A local deadline.** The master notes, on its own monotonic clock, when it sent each
//!   successful renewal; `sent + lease − lease/10` is earlier than the database's expiry,
//!   whatever the network delay was. Past it the fence closes and nothing more is
//!   confirmed, even if the database cannot be reached to learn anything.
//! - **Fenced writes.** Taking the lease counts the epoch on (and records it in
//!   `actormq_epochs`); every transaction of the store checks it under `FOR SHARE`
//!   (`store::postgres`), so a master that was frozen or cut off writes nothing once
//!   another has taken over.
//!
//! Start-up refuses a keep-alive of more than a third of the lease (`config`), so a lease
//! is renewed at least twice before it could lapse. A master that stops cleanly gives
//! the lease up, so a standby takes over within one poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{Attempt, Claim, ClaimKind, HaError, Holder, KeepAlive, Keeping, Mastership};
use crate::config::{Config, HaSettings};
use crate::store::postgres::{PgError, schema};

/// The part of the lease a master gives up before the database would: its renewals count
/// from when they were sent, less a tenth of the lease for clock-rate differences.
const SAFETY_DIVISOR: u32 = 10;

/// A standby's connection to the lease (opened again whenever it breaks).
pub struct Contender {
    url: String,
    name: String,
    lease: Duration,
    poll: Duration,
    client: Option<Client>,
}

impl Contender {
    pub fn new(config: &Config) -> Contender {
        Contender {
            url: config.store.url.clone(),
            name: config.broker.name.clone(),
            lease: config.ha.lease(),
            poll: config.ha.poll(),
            client: None,
        }
    }

    pub fn describe(&self) -> String {
        format!("the lease in {}", schema::describe(&self.url))
    }

    /// Takes the lease if nobody holds it or its holder's has lapsed (on the database's
    /// clock), counting the epoch on.
    pub async fn attempt(&mut self) -> Result<Attempt, HaError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = schema::connect(&self.url).await?;
            schema::init(&mut client, &self.url).await?;
            // A master frozen inside a transaction holds the lease row until the database
            // ends that transaction (see store::postgres): wait for it a little, not for ever.
            client
                .batch_execute(&format!("SET lock_timeout = {}", self.poll.as_millis()))
                .await
                .map_err(PgError::from)?;
            self.client = Some(client);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(HaError::Thread("no connection".into()));
        };
        let sent = Instant::now();
        let taken = take(client, &self.name, self.lease).await;
        if taken.is_err() {
            self.client = None;
        }
        Ok(match taken? {
            Taken::Held(holder) => Attempt::Held(holder),
            Taken::Ours { epoch, previous } => Attempt::Claimed(Claim {
                previous,
                inner: ClaimKind::Lease(LeaseClaim {
                    url: self.url.clone(),
                    me: Holder::me(&self.name, epoch),
                    deadline_from: sent,
                }),
            }),
        })
    }
}

enum Taken {
    Held(Option<Holder>),
    Ours {
        epoch: u64,
        previous: Option<Holder>,
    },
}

/// The holder columns, as a `Holder` (milliseconds for `since`).
const HOLDER: &str = "holder, pid, host, (extract(epoch FROM since) * 1000)::bigint, epoch";

fn holder(row: &tokio_postgres::Row) -> Option<Holder> {
    Some(Holder {
        name: row.get::<_, Option<String>>(0)?,
        pid: row.get::<_, Option<i32>>(1).unwrap_or(0) as u32,
        host: row.get::<_, Option<String>>(2).unwrap_or_default(),
        since_ms: row.get::<_, Option<i64>>(3).unwrap_or(0) as u64,
        epoch: row.get::<_, i64>(4) as u64,
    })
}

async fn take(client: &mut Client, name: &str, lease: Duration) -> Result<Taken, PgError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "SELECT {HOLDER}, holder IS NOT NULL AND expires_at > now()
                 FROM actormq_lease WHERE id = 1 FOR UPDATE"
            ),
            &[],
        )
        .await?;
    let current = holder(&row);
    if row.get::<_, bool>(5) {
        return Ok(Taken::Held(current));
    }
    let epoch = row.get::<_, i64>(4) + 1;
    let me = Holder::me(name, epoch as u64);
    tx.execute(
        "UPDATE actormq_lease SET epoch = $1, holder = $2, pid = $3, host = $4, since = now(),
             expires_at = now() + $5 * interval '1 millisecond'
         WHERE id = 1",
        &[
            &epoch,
            &me.name,
            &(me.pid as i32),
            &me.host,
            &(lease.as_millis() as f64),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO actormq_epochs (epoch, holder, pid, host, started_at)
         VALUES ($1, $2, $3, $4, now())",
        &[&epoch, &me.name, &(me.pid as i32), &me.host],
    )
    .await?;
    tx.commit().await?;
    Ok(Taken::Ours {
        epoch: epoch as u64,
        previous: current,
    })
}

/// The lease is ours (committed); the keeper is not running yet.
pub(super) struct LeaseClaim {
    url: String,
    me: Holder,
    /// When the statement that took it was sent.
    deadline_from: Instant,
}

/// Until when (ms since `base`) the master may confirm, on its monotonic clock.
struct Deadline {
    base: Instant,
    until_ms: AtomicU64,
    lease: Duration,
}

impl Deadline {
    /// Counts a renewal sent at `sent` that the database accepted.
    fn renewed(&self, sent: Instant) {
        let until = sent + self.lease - self.lease / SAFETY_DIVISOR;
        let ms = until.saturating_duration_since(self.base).as_millis() as u64;
        self.until_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn check(&self) -> Result<(), String> {
        let now = self.base.elapsed().as_millis() as u64;
        if now >= self.until_ms.load(Ordering::Acquire) {
            return Err(format!(
                "the lease could not be renewed in time (it lasts {} ms)",
                self.lease.as_millis()
            ));
        }
        Ok(())
    }
}

impl LeaseClaim {
    pub(super) fn promote(
        self,
        previous: Option<Holder>,
        settings: &HaSettings,
    ) -> Result<Mastership, HaError> {
        let deadline = Arc::new(Deadline {
            base: self.deadline_from,
            until_ms: AtomicU64::new(0),
            lease: settings.lease(),
        });
        deadline.renewed(self.deadline_from);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HaError::Thread(e.to_string()))?;
        let renewal = Renewal {
            url: self.url,
            epoch: self.me.epoch,
            lease: settings.lease(),
            timeout: settings.keep_alive(),
            deadline: deadline.clone(),
            runtime,
            client: None,
            failing: false,
        };
        Mastership::start(
            self.me,
            previous,
            Keeping {
                every: settings.keep_alive(),
                stall: settings.lease(),
                quick: Box::new(move || deadline.check()),
            },
            renewal,
            Box::new(()),
        )
    }
}

/// The keeper's renewal, on a connection of its own.
struct Renewal {
    url: String,
    epoch: u64,
    lease: Duration,
    /// Each statement (and connecting) must finish within a keep-alive.
    timeout: Duration,
    deadline: Arc<Deadline>,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    /// Renewals are failing (said once at WARN).
    failing: bool,
}

impl Renewal {
    /// One statement on the keeper's connection, within a keep-alive: `$1` is the epoch,
    /// `$2` the lease in milliseconds (if the statement has it).
    fn run(&mut self, sql: &'static str, lease_ms: Option<f64>) -> Result<u64, String> {
        let (url, timeout, epoch) = (self.url.clone(), self.timeout, self.epoch as i64);
        let client = self.client.take();
        let result = self.runtime.block_on(async move {
            let client = match client.filter(|c| !c.is_closed()) {
                Some(client) => client,
                None => tokio::time::timeout(timeout, schema::connect(&url))
                    .await
                    .map_err(|_| "connecting timed out".to_string())?
                    .map_err(|e| e.to_string())?,
            };
            let with_lease: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&epoch, &lease_ms];
            let params = match lease_ms {
                Some(_) => &with_lease[..],
                None => &with_lease[..1],
            };
            let rows = tokio::time::timeout(timeout, client.execute(sql, params))
                .await
                .map_err(|_| format!("no answer in {} ms", timeout.as_millis()))?
                .map_err(|e| PgError::from(e).to_string())?;
            Ok::<_, String>((client, rows))
        });
        // A statement that timed out leaves the connection in doubt: open another.
        result.map(|(client, rows)| {
            self.client = Some(client);
            rows
        })
    }
}

impl KeepAlive for Renewal {
    fn renew(&mut self) -> Result<(), String> {
        let sent = Instant::now();
        let renewed = self.run(
            "UPDATE actormq_lease SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = 1 AND epoch = $1 AND expires_at > now()",
            Some(self.lease.as_millis() as f64),
        );
        match renewed {
            Ok(1) => {
                self.deadline.renewed(sent);
                if self.failing {
                    tracing::info!("the lease is renewed again");
                    self.failing = false;
                }
                Ok(())
            }
            Ok(_) => Err(format!(
                "the lease of epoch {} was taken over or lapsed in the database",
                self.epoch
            )),
            Err(e) => {
                if !self.failing {
                    tracing::warn!("cannot renew the lease: {e}");
                    self.failing = true;
                }
                self.deadline
                    .check()
                    .map_err(|lapsed| format!("{lapsed}: {e}"))
            }
        }
    }

    fn release(&mut self) {
        let released = self.run(
            "UPDATE actormq_lease SET expires_at = now() WHERE id = 1 AND epoch = $1",
            None,
        );
        if let Err(e) = released {
            tracing::warn!("cannot give the lease up (it lapses by itself): {e}");
        }
    }
}
