//! What a benchmark run counts: every message by producer and sequence number (so lost
//! and duplicated messages are reported), latencies in an HdrHistogram, and the summary.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Bytes at the head of every benchmark message: producer, sequence, send time.
pub const HEADER_BYTES: usize = 4 + 8 + 8;

/// Writes the header into `body` (at least [`HEADER_BYTES`] long).
pub fn stamp(body: &mut [u8], producer: u32, seq: u64, sent_nanos: u64) {
    body[0..4].copy_from_slice(&producer.to_be_bytes());
    body[4..12].copy_from_slice(&seq.to_be_bytes());
    body[12..20].copy_from_slice(&sent_nanos.to_be_bytes());
}

/// Reads the header back.
pub fn read_stamp(body: &[u8]) -> Option<(u32, u64, u64)> {
    if body.len() < HEADER_BYTES {
        return None;
    }
    let producer = u32::from_be_bytes(body[0..4].try_into().ok()?);
    let seq = u64::from_be_bytes(body[4..12].try_into().ok()?);
    let sent = u64::from_be_bytes(body[12..20].try_into().ok()?);
    Some((producer, seq, sent))
}

/// Which messages one receiver (or the union of competing receivers) has seen. A copy
/// the broker marks redelivered (after a consumer or a connection went away, or a
/// failover) is counted as such; a duplicate is a second copy not marked so.
pub struct Tracker {
    /// Per producer and sequence number: copies received (saturating), and whether any
    /// was unmarked beyond the first.
    copies: Vec<Vec<u8>>,
    unmarked: Vec<Vec<u8>>,
    pub unique: u64,
    pub redelivered: u64,
    pub foreign: u64,
    pub latency: Histogram<u64>,
}

/// A histogram of durations in µs, from 1 µs to a minute.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Tracker {
    pub fn new(producers: usize, per_producer: u64) -> Tracker {
        Tracker {
            copies: vec![vec![0; per_producer as usize]; producers],
            unmarked: vec![vec![0; per_producer as usize]; producers],
            unique: 0,
            redelivered: 0,
            foreign: 0,
            latency: micros_histogram(),
        }
    }

    /// Records one received body; `now_nanos` on the same clock as the sender's stamp.
    /// Returns the message's producer and sequence number.
    pub fn record(&mut self, body: &[u8], now_nanos: u64, redelivered: bool) -> Option<(u32, u64)> {
        let Some((producer, seq, sent)) = read_stamp(body) else {
            self.foreign += 1;
            return None;
        };
        let (p, s) = (producer as usize, seq as usize);
        let Some(copies) = self.copies.get_mut(p).and_then(|c| c.get_mut(s)) else {
            self.foreign += 1;
            return None;
        };
        if *copies == 0 {
            self.unique += 1;
        }
        *copies = copies.saturating_add(1);
        if redelivered {
            self.redelivered += 1;
        } else if let Some(unmarked) = self.unmarked.get_mut(p).and_then(|u| u.get_mut(s)) {
            *unmarked = unmarked.saturating_add(1);
        }
        let micros = now_nanos.saturating_sub(sent) / 1000;
        let _ = self.latency.record(micros.max(1));
        Some((producer, seq))
    }

    /// Second and later copies not marked redelivered.
    pub fn duplicates(&self) -> u64 {
        self.unmarked
            .iter()
            .flatten()
            .map(|&u| u64::from(u.saturating_sub(1)))
            .sum()
    }

    pub fn merge(&mut self, other: &Tracker) {
        for (mine, theirs) in self.copies.iter_mut().zip(&other.copies) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                if *m == 0 && *t > 0 {
                    self.unique += 1;
                }
                *m = m.saturating_add(*t);
            }
        }
        for (mine, theirs) in self.unmarked.iter_mut().zip(&other.unmarked) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = m.saturating_add(*t);
            }
        }
        self.redelivered += other.redelivered;
        self.foreign += other.foreign;
        let _ = self.latency.add(&other.latency);
    }
}

/// One run's result.
pub struct Summary {
    pub workload: String,
    pub target: String,
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Copies marked redelivered (not duplicates).
    pub redelivered: u64,
    /// The longest wait between two messages at a receiver: across a failover, the time
    /// the flow stood still.
    pub longest_pause: Duration,
    /// Sends' round trips (send to confirmation), p50 and p99 in µs: over STOMP with
    /// receipts (timed as each arrives), natively with a confirm window of 1.
    pub confirm_us: Option<(u64, u64)>,
}

impl Summary {
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn line(&self) -> String {
        format!(
            "{} on {}: {} messages in {:.2?}: {:.0} msg/s, {:.1} MB/s, latency p50 {} µs, p99 {} µs, p99.9 {} µs, lost {}, duplicates {}, redelivered {}, longest pause {} ms",
            self.workload,
            self.target,
            self.messages,
            self.elapsed,
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.lost,
            self.duplicates,
            self.redelivered,
            self.longest_pause.as_millis()
        ) + &self
            .confirm_us
            .map(|(p50, p99)| format!(", send to confirmation p50 {p50} µs, p99 {p99} µs"))
            .unwrap_or_default()
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"target\":\"{}\",\"messages\":{},\"elapsed_s\":{:.3},\"msgs_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"lost\":{},\"duplicates\":{},\"redelivered\":{},\"longest_pause_ms\":{}{}}}",
            self.workload,
            self.target.replace('"', "'"),
            self.messages,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.lost,
            self.duplicates,
            self.redelivered,
            self.longest_pause.as_millis(),
            self.confirm_us
                .map(|(p50, p99)| format!(",\"confirm_p50_us\":{p50},\"confirm_p99_us\":{p99}"))
                .unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_duplicates_count() {
        let mut body = vec![0u8; 32];
        stamp(&mut body, 1, 7, 1_000_000);
        assert_eq!(read_stamp(&body), Some((1, 7, 1_000_000)));
        let mut tracker = Tracker::new(2, 10);
        tracker.record(&body, 3_000_000, false);
        tracker.record(&body, 3_000_000, true);
        assert_eq!((tracker.duplicates(), tracker.redelivered), (0, 1));
        tracker.record(&body, 3_000_000, false);
        tracker.record(b"short", 0, false);
        assert_eq!(
            (tracker.unique, tracker.duplicates(), tracker.foreign),
            (1, 1, 1)
        );
        assert_eq!(tracker.latency.value_at_quantile(0.5), 2000);
    }
}
