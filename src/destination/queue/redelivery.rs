//! What happens to a message that comes back or runs out of time: redelivery (at once, or
//! after the policy's delay), the dead-letter queue past the redelivery limit, and expiry.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{QueueActor, Queued};
use crate::destination::{DestinationError, Resolve};
use crate::message::Destination;
use crate::store::record::Record;

/// Header of a dead letter: the queue it came from.
pub const DLQ_ORIGINAL_DESTINATION: &str = "actormq.dlq.original-destination";
/// Header of a dead letter: why it was dead-lettered.
pub const DLQ_REASON: &str = "actormq.dlq.reason";

impl QueueActor {
    /// A delivered message comes back: to the front of the backlog after `delay`, or, past
    /// the maximum redeliveries, to the dead-letter queue.
    pub(super) fn redeliver(
        &mut self,
        queued: Queued,
        delay: Duration,
        why: &str,
        ctx: &mut Context<Self>,
    ) {
        let is_dlq = self.destination.name().starts_with(&self.policy.dlq_prefix);
        if queued.deliveries > self.policy.max_redeliveries && !is_dlq {
            let reason = format!(
                "delivered {} times without acknowledgement (the last time {why}); maximum redeliveries {}",
                queued.deliveries, self.policy.max_redeliveries
            );
            return self.dead_letter(queued, reason);
        }
        if delay.is_zero() {
            self.backlog.push_front(queued);
            return;
        }
        self.delayed += 1;
        ctx.run_later(delay, move |act, _ctx| {
            act.delayed -= 1;
            act.backlog.push_front(queued);
            act.dispatch();
        });
    }

    /// An expired message leaves the queue, never delivered: to the dead-letter queue if
    /// the policy says so, else dropped. Counted as dequeued so depth stays
    /// enqueued - dequeued.
    pub(super) fn expire(&mut self, queued: Queued) {
        let is_dlq = self.destination.name().starts_with(&self.policy.dlq_prefix);
        if self.policy.expired_to_dlq && !is_dlq {
            return self.dead_letter(queued, "expired before it was delivered".into());
        }
        self.release_memory(queued.held_bytes());
        self.dequeued += 1;
        if let (Some(store), Some(id)) = (&self.store, queued.store_id) {
            store.append_lazy(vec![Record::Remove {
                queue: self.destination.name().to_string(),
                id,
            }]);
        }
    }

    /// Moves a message to this queue's dead-letter queue, naming where it came from and
    /// why; it leaves this queue's journal only once the dead-letter queue has it.
    pub(super) fn dead_letter(&mut self, queued: Queued, reason: String) {
        self.dequeued += 1;
        self.release_memory(queued.held_bytes());
        let Some(message) = queued.message().cloned() else {
            tracing::error!(queue = %self.destination, "a paged message cannot be dead-lettered");
            return;
        };
        let dlq = Destination::queue(format!(
            "{}{}",
            self.policy.dlq_prefix,
            self.destination.name()
        ));
        tracing::warn!(queue = %self.destination, message = %message.id, %dlq, "dead-lettered: {reason}");
        let Some(registry) = self.registry.clone() else {
            return;
        };
        let mut copy = (*message).clone();
        copy.headers.insert(
            DLQ_ORIGINAL_DESTINATION.into(),
            self.destination.to_string(),
        );
        copy.headers.insert(DLQ_REASON.into(), reason);
        // A dead letter stays until someone looks at it (or it would expire again there).
        copy.expiration = 0;
        let store = self.store.clone();
        let queue = self.destination.name().to_string();
        let moved = async move {
            let targets = registry
                .send(Resolve(dlq.clone()))
                .await
                .map_err(|e| DestinationError::Unavailable(e.to_string()))??;
            for target in targets {
                target.enqueue(vec![Arc::new(copy.clone())]).await?;
            }
            if let (Some(store), Some(id)) = (store, queued.store_id) {
                store.append_lazy(vec![Record::Remove {
                    queue: queue.clone(),
                    id,
                }]);
            }
            Ok::<_, DestinationError>(())
        };
        // A task of this arbiter: the move finishes even if this queue is busy or stops.
        actix::spawn(async move {
            if let Err(e) = moved.await {
                tracing::error!("cannot dead-letter a message: {e}");
            }
        });
    }
}
