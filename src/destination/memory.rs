//! [`MemoryBudget`]: how many bytes of queued messages the broker holds, against its
//! limits. Each queue counts its own bytes and asks the shared budget before it takes more;
//! a producer whose messages do not fit waits (flow control) instead of the broker growing
//! until the OS kills it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Limits;
use crate::message::Message;

/// Bytes a message is counted as, in memory and on the wire: its body plus a fixed
/// allowance for the rest (ids, headers, framing).
pub fn footprint(message: &Message) -> usize {
    message.body.len() + crate::constants::MESSAGE_OVERHEAD
}

/// The broker-wide count, shared by every queue (an atomic counter, not shared state that
/// anyone mutates but through `take` and `give_back`).
#[derive(Clone)]
pub struct MemoryBudget {
    used: Arc<AtomicUsize>,
    broker_limit: usize,
    queue_limit: usize,
}

impl MemoryBudget {
    pub fn new(limits: &Limits) -> MemoryBudget {
        MemoryBudget {
            used: Arc::new(AtomicUsize::new(0)),
            broker_limit: limits.max_memory_bytes,
            queue_limit: limits.max_queue_memory_bytes,
        }
    }

    /// Takes `bytes` for a queue that holds `held` if both limits allow it. A queue that
    /// holds nothing always gets its batch, so a batch larger than a limit cannot wait
    /// forever.
    pub fn take(&self, held: usize, bytes: usize) -> bool {
        let fits_queue = held == 0 || held + bytes <= self.queue_limit;
        let used = self.used.load(Ordering::Relaxed);
        let fits_broker = held == 0 || used + bytes <= self.broker_limit;
        if fits_queue && fits_broker {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Takes `bytes` whatever the limits (recovered or paged-in messages).
    pub fn force_take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Whether a queue holding `held`, or the broker, is past half its limit: new stored
    /// messages are then kept on disk only (paged).
    pub fn past_half(&self, held: usize) -> bool {
        held > self.queue_limit / 2 || self.used.load(Ordering::Relaxed) > self.broker_limit / 2
    }

    pub fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Why a queue holding `held` is full, for the producer.
    pub fn full_reason(&self, queue: &str, held: usize) -> String {
        format!(
            "{queue} is full: it holds {held} bytes (limit {}), the broker {} (limit {})",
            self.queue_limit,
            self.used.load(Ordering::Relaxed),
            self.broker_limit
        )
    }
}
