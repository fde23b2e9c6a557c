//! [`ProducerWindows`]: which sends of each producer are stored, so that a send a failover
//! client makes again after reconnecting (it never learnt whether the first one was kept)
//! is confirmed without being stored twice. Plain data: the journal's writer keeps one to
//! write it forward at the head of every new segment, the PostgreSQL store keeps its rows,
//! and the broker's sessions keep one in memory (`session::resends`).
//!
//! What is remembered is bounded three ways (numbers in [`crate::constants`]):
//! - **by the producer's own window:** every send carries `confirmed_below`, the lowest
//!   number the producer has not yet been told was stored; numbers below it are forgotten
//!   (the producer never sends them again), so a producer costs as many entries as it has
//!   sends in flight, at most [`MAX_SENDS_PER_PRODUCER`] (the oldest go first);
//! - **by time:** a producer that has stored nothing for [`PRODUCER_IDLE`] is forgotten;
//! - **by count:** past [`MAX_PRODUCERS`] producers, or [`MAX_REMEMBERED_SENDS`] sends in
//!   all (STOMP producers need not say what was confirmed), the producer idle longest is
//!   forgotten.
//!
//! A producer forgotten while it still had a send in flight can, if it sends it again,
//! have it stored twice: that takes an hour-long disconnection or 100,000 producers.

use std::collections::{BTreeSet, HashMap};

use super::record::SendMark;
use crate::constants::{
    MAX_PRODUCERS, MAX_REMEMBERED_SENDS, MAX_SENDS_PER_PRODUCER, PRODUCER_IDLE,
};

/// One producer's stored sends that it may not yet know about.
#[derive(Debug, Default)]
struct Window {
    confirmed_below: u64,
    stored: BTreeSet<u64>,
    at_ms: u64,
}

/// Stored sends per producer, within the bounds above.
#[derive(Debug, Default)]
pub struct ProducerWindows {
    producers: HashMap<String, Window>,
    /// Sends remembered, over every producer.
    sends: usize,
}

impl ProducerWindows {
    /// Notes that `mark`'s send was stored.
    pub fn note(&mut self, mark: &SendMark) {
        if !self.producers.contains_key(&mark.producer) && self.producers.len() >= MAX_PRODUCERS {
            self.forget_idlest();
        }
        let window = self.producers.entry(mark.producer.clone()).or_default();
        let before = window.stored.len();
        window.at_ms = window.at_ms.max(mark.at_ms);
        if mark.confirmed_below > window.confirmed_below {
            window.confirmed_below = mark.confirmed_below;
            window.stored = window.stored.split_off(&mark.confirmed_below);
        }
        if mark.seq >= window.confirmed_below {
            window.stored.insert(mark.seq);
        }
        while window.stored.len() > MAX_SENDS_PER_PRODUCER {
            window.stored.pop_first();
        }
        self.sends = self.sends + window.stored.len() - before;
        while self.sends > MAX_REMEMBERED_SENDS && self.producers.len() > 1 {
            self.forget_idlest();
        }
    }

    /// Whether the send `seq` of `producer` is known to be stored (or was confirmed to it
    /// already, so that it cannot be a new send).
    pub fn contains(&self, producer: &str, seq: u64) -> bool {
        self.producers
            .get(producer)
            .is_some_and(|w| seq < w.confirmed_below || w.stored.contains(&seq))
    }

    /// Forgets producers that have stored nothing since `now_ms - PRODUCER_IDLE`.
    pub fn forget_idle(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(PRODUCER_IDLE.as_millis() as u64);
        self.producers.retain(|_, w| w.at_ms >= cutoff);
        self.sends = self.producers.values().map(|w| w.stored.len()).sum();
    }

    fn forget_idlest(&mut self) {
        let idlest = self
            .producers
            .iter()
            .min_by_key(|(_, w)| w.at_ms)
            .map(|(name, _)| name.clone());
        if let Some(window) = idlest.and_then(|name| self.producers.remove(&name)) {
            self.sends -= window.stored.len();
        }
    }

    /// What must outlive the records it came from: one mark per remembered send.
    pub fn marks(&self) -> Vec<SendMark> {
        self.producers
            .iter()
            .flat_map(|(producer, w)| {
                w.stored.iter().map(|&seq| SendMark {
                    producer: producer.clone(),
                    seq,
                    confirmed_below: w.confirmed_below,
                    at_ms: w.at_ms,
                })
            })
            .collect()
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(producer: &str, seq: u64, confirmed_below: u64, at_ms: u64) -> SendMark {
        SendMark {
            producer: producer.into(),
            seq,
            confirmed_below,
            at_ms,
        }
    }

    #[test]
    fn a_window_keeps_what_the_producer_may_send_again() {
        let mut windows = ProducerWindows::default();
        for seq in 1..=5 {
            windows.note(&mark("p", seq, 1, 10));
        }
        assert!((1..=5).all(|seq| windows.contains("p", seq)));
        assert!(!windows.contains("p", 6));
        assert!(!windows.contains("q", 1));
        // Confirmed up to 4: 1..=3 are forgotten but still count as not new.
        windows.note(&mark("p", 6, 4, 11));
        assert_eq!(windows.marks().len(), 3); // 4, 5, 6
        assert!(windows.contains("p", 2));
    }

    #[test]
    fn idle_producers_are_forgotten_and_marks_rebuild_the_windows() {
        let mut windows = ProducerWindows::default();
        windows.note(&mark("old", 1, 1, 0));
        let now = PRODUCER_IDLE.as_millis() as u64 + 10;
        windows.note(&mark("new", 1, 1, now));
        windows.forget_idle(now);
        assert!(!windows.contains("old", 1));
        let mut rebuilt = ProducerWindows::default();
        for m in windows.marks() {
            rebuilt.note(&m);
        }
        assert!(rebuilt.contains("new", 1));
        assert_eq!(rebuilt.len(), 1);
    }

    #[test]
    fn all_windows_together_are_bounded_and_the_idlest_producer_goes() {
        let mut windows = ProducerWindows::default();
        let producers = MAX_REMEMBERED_SENDS / MAX_SENDS_PER_PRODUCER + 2;
        for p in 0..producers {
            for seq in 0..MAX_SENDS_PER_PRODUCER as u64 {
                windows.note(&mark(&format!("p{p}"), seq, 0, p as u64));
            }
        }
        assert!(windows.sends <= MAX_REMEMBERED_SENDS, "{}", windows.sends);
        assert!(!windows.contains("p0", 0), "the idlest went first");
        assert!(windows.contains(&format!("p{}", producers - 1), 0));
    }

    #[test]
    fn a_window_is_bounded() {
        let mut windows = ProducerWindows::default();
        for seq in 0..(MAX_SENDS_PER_PRODUCER as u64 + 10) {
            windows.note(&mark("p", seq, 0, 1));
        }
        assert_eq!(windows.marks().len(), MAX_SENDS_PER_PRODUCER);
        assert!(windows.contains("p", MAX_SENDS_PER_PRODUCER as u64 + 9));
    }
}
