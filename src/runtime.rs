//! The broker's threads: a fixed set of actix [`Arbiter`]s (`broker.arbiters`; by default one
//! per core but one). Destination actors are placed by a hash of the destination name (so
//! one hot queue stays on one core and many queues use them all); connection actors are
//! placed round-robin.
//!
//! Memory a burst took is given back: every [`TRIM_EVERY`] each arbiter calls the trim hook
//! a program registers with [`set_memory_trim`] — the `actormq` binary's asks its allocator
//! (mimalloc) to return the thread's freed pages to the OS, which it otherwise does only
//! while the thread keeps allocating.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use actix::{Arbiter, ArbiterHandle};

use crate::constants::TRIM_EVERY;

static MEMORY_TRIM: OnceLock<fn()> = OnceLock::new();

/// Registers what gives the calling thread's freed memory back to the OS (once per
/// process; later calls are ignored).
pub fn set_memory_trim(trim: fn()) {
    let _ = MEMORY_TRIM.set(trim);
}

/// Gives the calling thread's freed memory back, if a trim hook is registered.
pub fn trim_memory() {
    if let Some(trim) = MEMORY_TRIM.get() {
        trim();
    }
}

/// A fixed set of arbiters, shared by the registry and the listener.
#[derive(Clone)]
pub struct ArbiterPool {
    arbiters: Arc<Vec<ArbiterHandle>>,
    next: Arc<AtomicUsize>,
}

impl ArbiterPool {
    /// Starts `count` arbiters (at least one). Must be called inside an actix system.
    pub fn start(count: usize) -> ArbiterPool {
        let arbiters: Vec<ArbiterHandle> =
            (0..count.max(1)).map(|_| Arbiter::new().handle()).collect();
        for arbiter in &arbiters {
            arbiter.spawn(async {
                let mut every = tokio::time::interval(TRIM_EVERY);
                loop {
                    every.tick().await;
                    trim_memory();
                }
            });
        }
        ArbiterPool {
            arbiters: Arc::new(arbiters),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The arbiter that owns the destination called `name`; the same name always maps to
    /// the same arbiter.
    pub fn for_name(&self, name: &str) -> &ArbiterHandle {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        &self.arbiters[(hasher.finish() % self.arbiters.len() as u64) as usize]
    }

    /// The next arbiter in turn, for a new connection.
    pub fn next(&self) -> &ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.arbiters[i % self.arbiters.len()]
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Asks every arbiter to stop.
    pub fn stop(&self) {
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
    }
}
