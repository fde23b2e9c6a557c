//! Producer flow control: a send that does not fit the queue's memory limit (or the
//! broker's) waits, behind earlier waiting sends, until consumers make room; it fails at
//! once with `fail_when_full`, or after the send timeout, with the limits named.

use actix::prelude::*;

use super::QueueActor;
use crate::destination::memory::footprint;
use crate::destination::{DestinationError, Enqueue};

/// A send waiting for the queue to have room.
pub(super) struct Blocked {
    pub(super) enqueue: Enqueue,
    pub(super) bytes: usize,
    pub(super) since: std::time::Instant,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<(), DestinationError>>,
}

impl QueueActor {
    /// Room was made: admits waiting sends, oldest first, while they fit.
    pub(super) fn admit_blocked(&mut self, ctx: &mut Context<Self>) {
        while let Some(front) = self.blocked.front() {
            if !self.memory.take(self.held, front.bytes) {
                break;
            }
            let Some(blocked) = self.blocked.pop_front() else {
                break;
            };
            self.held += blocked.bytes;
            let accepted = self.accept(blocked.enqueue, blocked.bytes);
            let reply = blocked.reply;
            ctx.spawn(accepted.map(move |result, _act, _ctx| {
                let _ = reply.send(result);
            }));
        }
    }

    /// Fails sends that have waited longer than the send timeout.
    pub(super) fn expire_blocked(&mut self) {
        while self
            .blocked
            .front()
            .is_some_and(|b| b.since.elapsed() >= self.send_timeout)
        {
            if let Some(blocked) = self.blocked.pop_front() {
                let reason = format!(
                    "{}; the send waited {} ms for room",
                    self.memory
                        .full_reason(&self.destination.to_string(), self.held),
                    self.send_timeout.as_millis()
                );
                let _ = blocked.reply.send(Err(DestinationError::Refused(reason)));
            }
        }
    }

    /// Messages leave the queue for good: their bytes are free again.
    pub(super) fn release_memory(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.memory.give_back(bytes);
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), DestinationError>>;

    /// Flow control: a send that does not fit in the queue's or the broker's memory waits
    /// (behind earlier waiting sends) until consumers make room, or fails at once with
    /// `fail_when_full`, or after the send timeout.
    fn handle(&mut self, msg: Enqueue, _ctx: &mut Context<Self>) -> Self::Result {
        let bytes: usize = msg.messages.iter().map(|m| footprint(m)).sum();
        // Stored messages of a paging queue go to disk only once durable: no need to wait.
        let pages_out =
            msg.stored.is_empty() && self.paging() && msg.messages.iter().all(|m| m.persistent);
        if pages_out {
            self.memory.force_take(bytes);
            self.held += bytes;
            return self.accept(msg, bytes);
        }
        if self.blocked.is_empty() && self.memory.take(self.held, bytes) {
            self.held += bytes;
            return self.accept(msg, bytes);
        }
        let full = self
            .memory
            .full_reason(&self.destination.to_string(), self.held);
        if self.fail_when_full {
            return Box::pin(fut::ready(Err(DestinationError::Refused(full))));
        }
        tracing::debug!(queue = %self.destination, "a producer waits: {full}");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.blocked.push_back(Blocked {
            enqueue: msg,
            bytes,
            since: std::time::Instant::now(),
            reply,
        });
        let gone = DestinationError::Unavailable(self.destination.to_string());
        Box::pin(fut::wrap_future(async move {
            answer.await.unwrap_or(Err(gone))
        }))
    }
}
