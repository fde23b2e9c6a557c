//! [`Resends`]: the broker's memory of which producers' sends it has kept, so that a send
//! a failover client makes again (it lost the connection before the confirmation came) is
//! confirmed without being kept twice. Shared by every session of the broker.
//!
//! A send is *new* (this session stores it, and says so when done), *kept* (confirm it at
//! once), or *pending* (the same send is still being stored through another connection —
//! the old one, which the broker has not yet seen die): wait for that one's outcome. What
//! was stored comes back from the store at start ([`crate::store::Recovered::sends`]), so a
//! new master knows what the old one kept. The bounds are those of [`ProducerWindows`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::constants::PRODUCER_SWEEP_EVERY;
use crate::message::now_millis;
use crate::store::producers::ProducerWindows;
use crate::store::record::SendMark;

/// Producers' sends kept by this broker, and those being stored now.
pub struct Resends {
    inner: Mutex<Inner>,
}

struct Inner {
    windows: ProducerWindows,
    /// Sends being stored: their outcome (`Some(kept)`) once known.
    pending: HashMap<(String, u64), watch::Sender<Option<bool>>>,
    swept_at: Instant,
}

/// What to do with a send that carries its producer's mark.
pub enum Begin {
    /// Not seen: store it, then [`Token::finish`].
    New(Token),
    /// Already kept: confirm it without storing it again.
    Kept,
    /// Being stored through another connection: wait for [`Outcome::kept`].
    Pending(Outcome),
}

/// The outcome of a send being stored elsewhere.
pub struct Outcome(watch::Receiver<Option<bool>>);

impl Outcome {
    /// Whether it was kept (`false` if it failed or its session went away).
    pub async fn kept(mut self) -> bool {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// A send this session is storing; dropped without `finish`, it counts as not kept.
pub struct Token {
    resends: Arc<Resends>,
    mark: SendMark,
    done: bool,
}

impl Token {
    /// The mark to store with the send's messages.
    pub fn mark(&self) -> &SendMark {
        &self.mark
    }

    /// The send was kept (`true`) or refused.
    pub fn finish(mut self, kept: bool) {
        self.done = true;
        self.resends.settle(&self.mark, kept);
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if !self.done {
            self.resends.settle(&self.mark, false);
        }
    }
}

impl Resends {
    /// Remembers what the store recovered.
    pub fn new(recovered: &[SendMark]) -> Arc<Resends> {
        let mut windows = ProducerWindows::default();
        for mark in recovered {
            windows.note(mark);
        }
        Arc::new(Resends {
            inner: Mutex::new(Inner {
                windows,
                pending: HashMap::new(),
                swept_at: Instant::now(),
            }),
        })
    }

    /// What to do with a send of `producer` numbered `seq`.
    pub fn begin(self: &Arc<Self>, producer: String, seq: u64, confirmed_below: u64) -> Begin {
        let Ok(mut inner) = self.inner.lock() else {
            return Begin::Kept;
        };
        if inner.swept_at.elapsed() >= PRODUCER_SWEEP_EVERY {
            inner.swept_at = Instant::now();
            inner.windows.forget_idle(now_millis());
        }
        if inner.windows.contains(&producer, seq) {
            return Begin::Kept;
        }
        let key = (producer, seq);
        if let Some(outcome) = inner.pending.get(&key) {
            return Begin::Pending(Outcome(outcome.subscribe()));
        }
        inner.pending.insert(key.clone(), watch::channel(None).0);
        let (producer, seq) = key;
        Begin::New(Token {
            resends: self.clone(),
            mark: SendMark {
                producer,
                seq,
                confirmed_below,
                at_ms: now_millis(),
            },
            done: false,
        })
    }

    /// Whether the send was kept, waiting for it if it is being stored now: what a client
    /// asks about a commit whose confirmation it never got.
    pub async fn was_kept(&self, producer: &str, seq: u64) -> bool {
        let pending = {
            let Ok(inner) = self.inner.lock() else {
                return false;
            };
            if inner.windows.contains(producer, seq) {
                return true;
            }
            match inner.pending.get(&(producer.to_string(), seq)) {
                Some(outcome) => Outcome(outcome.subscribe()),
                None => return false,
            }
        };
        pending.kept().await
    }

    fn settle(&self, mark: &SendMark, kept: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if kept {
            inner.windows.note(mark);
        }
        if let Some(outcome) = inner.pending.remove(&(mark.producer.clone(), mark.seq)) {
            outcome.send_replace(Some(kept));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_is_new_once_then_kept_and_a_racing_resend_waits_for_it() {
        let resends = Resends::new(&[]);
        let Begin::New(token) = resends.begin("p".into(), 1, 1) else {
            panic!("new");
        };
        let Begin::Pending(outcome) = resends.begin("p".into(), 1, 1) else {
            panic!("pending");
        };
        token.finish(true);
        assert!(outcome.kept().await);
        assert!(matches!(resends.begin("p".into(), 1, 1), Begin::Kept));
        assert!(resends.was_kept("p", 1).await);
        assert!(!resends.was_kept("p", 2).await);
    }

    #[tokio::test]
    async fn a_send_that_failed_may_be_sent_again() {
        let resends = Resends::new(&[]);
        let Begin::New(token) = resends.begin("p".into(), 1, 1) else {
            panic!("new");
        };
        let Begin::Pending(outcome) = resends.begin("p".into(), 1, 1) else {
            panic!("pending");
        };
        drop(token);
        assert!(!outcome.kept().await);
        assert!(matches!(resends.begin("p".into(), 1, 1), Begin::New(_)));
    }

    #[test]
    fn what_the_store_recovered_is_kept() {
        let resends = Resends::new(&[SendMark {
            producer: "p".into(),
            seq: 7,
            confirmed_below: 5,
            at_ms: now_millis(),
        }]);
        assert!(matches!(resends.begin("p".into(), 7, 5), Begin::Kept));
        assert!(matches!(resends.begin("p".into(), 8, 5), Begin::New(_)));
    }
}
