//! The broker's threads: one actix [`Arbiter`] per core. Destination actors are placed by a
//! hash of the destination name (so one hot queue stays on one core and many queues use
//! them all); connection actors are placed round-robin.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Arbiter, ArbiterHandle};

/// A fixed set of arbiters, shared by the registry and the listener.
#[derive(Clone)]
pub struct ArbiterPool {
    arbiters: Arc<Vec<ArbiterHandle>>,
    next: Arc<AtomicUsize>,
}

impl ArbiterPool {
    /// Starts `count` arbiters (at least one). Must be called inside an actix system.
    pub fn start(count: usize) -> ArbiterPool {
        let arbiters = (0..count.max(1)).map(|_| Arbiter::new().handle()).collect();
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
