//! A broker's life until shutdown ([`serve`]). A lone broker starts and runs. A member of a
//! master/slave pair (`[ha]`) binds its listeners once and then goes round:
//!
//! ```text
//!   standby ── lock taken ──▶ master ── lock lost ──▶ standby …
//!   (clients refused,         (store opened behind    (broker stopped: connections
//!    lock polled every         the lock's fence,       closed, nothing more written;
//!    ha.poll_ms)               listeners serve)        listeners refuse again)
//! ```
//!
//! A new master's epoch is one more than any recorded, in the lock or in the journal's
//! segments. While the old master still holds the journal (it is demoting), the new one
//! waits for it. A demoted master waits `ha.lease_ms` before it tries the lock again, so a
//! standby takes over rather than the broker that just lost it (whose disk or network may
//! be what failed).

use std::future::Future;
use std::time::Instant;

use super::standby::{Reason, Standby};
use super::{Broker, BrokerError, Listeners, journal_dir};
use crate::config::{Config, HaMode, StoreKind};
use crate::ha::{Attempt, Claim, Contender, Holder, Mastership};
use crate::store::{Journal, StoreError};

/// Runs a broker as `config` says (alone, or as a master/slave member) until `shutdown`
/// resolves, then stops it. Call inside an actix system.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
    config.validate()?;
    if config.ha.mode == HaMode::None {
        let broker = Broker::start(config).await?;
        shutdown.await;
        tracing::info!("shutting down");
        broker.stop();
        return Ok(());
    }
    let listeners = Listeners::bind(&config).await?;
    let reason: Reason = Default::default();
    let mut contender = Contender::new(&config);
    tokio::pin!(shutdown);
    loop {
        let standby = Standby::serve(&listeners, reason.clone());
        tracing::info!(
            name = %config.broker.name,
            "standby on {}{}: clients are refused until this broker is the master",
            listeners.native_addr,
            listeners
                .stomp
                .as_ref()
                .map(|(_, addr)| format!(" (STOMP {addr})"))
                .unwrap_or_default()
        );
        let claim = tokio::select! {
            claim = wait_for_lock(&config, &mut contender, &reason) => claim?,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let (broker, mut master) = tokio::select! {
            taken = take_over(&config, claim, &listeners, standby) => match taken {
                Ok(taken) => taken,
                // Another broker took over while this one was starting, or the database
                // went away: stand by again.
                Err(BrokerError::Store(e @ (StoreError::Fenced(_) | StoreError::Database(_)))) => {
                    tracing::warn!("cannot become the master: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            },
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        tokio::select! {
            lost = master.lost() => {
                tracing::warn!(
                    epoch = master.epoch(),
                    "demoting: {lost}; closing listeners' connections and becoming a standby"
                );
                broker.stop();
                drop(master);
                if let Ok(mut reason) = reason.lock() {
                    *reason = format!(
                        "broker {} is a standby: it stopped being the master ({lost})",
                        config.broker.name
                    );
                }
                // Let a standby take over first, rather than win the lock straight back.
                let holdoff = Standby::serve(&listeners, reason.clone());
                tokio::select! {
                    () = tokio::time::sleep(config.ha.lease()) => {}
                    () = &mut shutdown => return Ok(()),
                }
                drop(holdoff);
            }
            () = &mut shutdown => {
                tracing::info!("shutting down");
                broker.stop();
                return Ok(());
            }
        }
    }
}

/// Polls the lock every `ha.poll_ms` until it is ours; says once whom it waits for (and
/// again when the master changes), and once what goes wrong while it cannot even look; stops
/// on an error that waiting cannot mend.
async fn wait_for_lock(
    config: &Config,
    contender: &mut Contender,
    reason: &Reason,
) -> Result<Claim, BrokerError> {
    let mut said: Option<Result<Option<(u64, u32)>, String>> = None;
    loop {
        let attempt = match contender.attempt().await {
            Err(e) if e.is_fatal() => return Err(e.into()),
            attempt => attempt,
        };
        let now = match &attempt {
            Ok(Attempt::Claimed(_)) => None,
            Ok(Attempt::Held(holder)) => Some(Ok(holder.as_ref().map(|h| (h.epoch, h.pid)))),
            Err(e) => Some(Err(e.to_string())),
        };
        if now.is_some() && now != said {
            let text = match &attempt {
                Ok(Attempt::Held(holder)) => format!(
                    "standby: waiting for {} held by {}",
                    contender.describe(),
                    holder
                        .as_ref()
                        .map(Holder::describe)
                        .unwrap_or_else(|| "another broker".into())
                ),
                Err(e) => format!("standby: cannot look at {}: {e}", contender.describe()),
                Ok(Attempt::Claimed(_)) => String::new(),
            };
            match &attempt {
                Err(_) => tracing::warn!("{text}"),
                _ => tracing::info!("{text}"),
            }
            if let Ok(mut reason) = reason.lock() {
                *reason = format!("broker {} is a {text}", config.broker.name);
            }
            said = now;
        }
        if let Ok(Attempt::Claimed(claim)) = attempt {
            return Ok(claim);
        }
        tokio::time::sleep(config.ha.poll()).await;
    }
}

/// Makes the claim a mastership and starts the broker behind its fence on `listeners`
/// (the standby stops refusing just before).
async fn take_over(
    config: &Config,
    claim: Claim,
    listeners: &Listeners,
    standby: Standby,
) -> Result<(Broker, Mastership), BrokerError> {
    let started = Instant::now();
    // The newest epoch the journal has seen (a database lease counts its own).
    let newest = match config.store.kind {
        StoreKind::Journal => {
            let journal = journal_dir(config);
            tokio::task::spawn_blocking(move || Journal::newest_epoch(&journal))
                .await
                .map_err(|e| BrokerError::Thread(e.to_string()))??
        }
        _ => 0,
    };
    let master = claim.promote(&config.broker.name, newest, &config.ha)?;
    let epoch = master.epoch();
    // Clients queue in the listen backlog while the store recovers.
    drop(standby);
    let mut waited = false;
    let broker = loop {
        match Broker::start_on(config.clone(), listeners.clone(), Some(&master)).await {
            Ok(broker) => break broker,
            // The old master has not closed the journal yet (it is demoting).
            Err(BrokerError::Store(StoreError::Locked(dir))) => {
                if !waited {
                    tracing::info!(
                        "master: waiting for the previous master to close {}",
                        dir.display()
                    );
                    waited = true;
                }
                if let Some(reason) = master.lost_now() {
                    return Err(BrokerError::Store(StoreError::Fenced(reason)));
                }
                tokio::time::sleep(config.ha.poll()).await;
            }
            Err(e) => return Err(e),
        }
    };
    let took = started.elapsed();
    match &master.previous {
        Some(previous) => tracing::info!(
            "master: epoch {epoch}, took over from {} after {} ms",
            previous.name,
            took.as_millis()
        ),
        None => tracing::info!(
            "master: epoch {epoch}, the first master, serving after {} ms",
            took.as_millis()
        ),
    }
    Ok((broker, master))
}
