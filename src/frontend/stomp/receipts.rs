//! [`Receipts`]: the RECEIPTs a STOMP connection owes, in the order of the frames that
//! asked for them. A frame whose work is done at once is answered after every earlier
//! frame's; one whose work is under way (a batch of SENDs, a SUBSCRIBE, a COMMIT) holds a
//! slot keyed by that work until it is done.

use std::collections::VecDeque;

/// RECEIPTs owed for one frame (or a batch of SENDs), sent once `done` and once every
/// slot before it has gone.
struct Slot {
    /// The work it waits for (0: nothing).
    key: u64,
    receipts: Vec<String>,
    done: bool,
}

#[derive(Default)]
pub(super) struct Receipts {
    slots: VecDeque<Slot>,
}

impl Receipts {
    /// `receipts` are owed once the work `key` is done.
    pub fn later(&mut self, key: u64, receipts: Vec<String>) {
        if !receipts.is_empty() {
            self.slots.push_back(Slot {
                key,
                receipts,
                done: false,
            });
        }
    }

    /// `receipt` is owed now, after those before it.
    pub fn now(&mut self, receipt: String) {
        self.slots.push_back(Slot {
            key: 0,
            receipts: vec![receipt],
            done: true,
        });
    }

    /// The work `key` is done.
    pub fn done(&mut self, key: u64) {
        if let Some(slot) = self.slots.iter_mut().find(|slot| slot.key == key) {
            slot.done = true;
        }
    }

    /// The receipts that may be written now, in order.
    pub fn ready(&mut self) -> Vec<String> {
        let mut ready = Vec::new();
        while self.slots.front().is_some_and(|slot| slot.done) {
            if let Some(slot) = self.slots.pop_front() {
                ready.extend(slot.receipts);
            }
        }
        ready
    }

    /// The first receipt that waits for the work `key` (an ERROR for it names it).
    pub fn first_of(&self, key: u64) -> Option<String> {
        self.slots
            .iter()
            .find(|slot| slot.key == key)
            .and_then(|slot| slot.receipts.first().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_keep_the_order_of_their_frames() {
        let mut receipts = Receipts::default();
        receipts.later(7, vec!["send-a".into(), "send-b".into()]);
        receipts.now("ack".into());
        assert!(
            receipts.ready().is_empty(),
            "the ACK waits for the SENDs before it"
        );
        assert_eq!(receipts.first_of(7).as_deref(), Some("send-a"));
        receipts.done(7);
        assert_eq!(receipts.ready(), vec!["send-a", "send-b", "ack"]);
    }
}
