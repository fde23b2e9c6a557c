//! [`Consumer`]: receives from one destination, as calls to `receive`, as a
//! `futures::Stream`, or forwarded to an actix actor as [`Delivery`] messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use futures::Stream;
use tokio::sync::mpsc;

use super::ClientError;
use super::shared::{ConsumerRoute, Routed, SessionInner, Tag, ack_frame};
use crate::config::Limits;
use crate::message::{AckMode, Destination, Message};
use crate::protocol::{Frame, WireDelivery, encode_frame};

/// Settings of one consumer.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Deliveries the broker may send ahead of acknowledgements. 0: nothing is sent until
    /// `receive` asks for one message (pull).
    pub prefetch: u32,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            prefetch: Limits::default().default_prefetch,
        }
    }
}

impl ConsumerOptions {
    pub fn prefetch(prefetch: u32) -> ConsumerOptions {
        ConsumerOptions { prefetch }
    }
}

/// One message handed to an actor by [`Consumer::forward_to`].
#[derive(Clone, Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Delivery {
    pub message: Message,
    /// The broker delivered it before and it was not acknowledged.
    pub redelivered: bool,
    /// How many times the broker has delivered it, this time included.
    pub delivery_count: u32,
}

/// A subscription to one destination.
pub struct Consumer {
    session: Arc<SessionInner>,
    id: u32,
    destination: Destination,
    prefetch: u32,
    deliveries: mpsc::UnboundedReceiver<Routed>,
    /// Deliveries received and not yet taken, oldest first, all over the socket of
    /// `generation`.
    buffered: std::collections::VecDeque<WireDelivery>,
    generation: u64,
    /// The socket of `generation` was lost: what it delivered is dropped until the
    /// driver says it has reconnected.
    stale: bool,
    acks: Arc<Mutex<Vec<Tag>>>,
    /// Acknowledgements are sent once this many have gathered.
    ack_batch: usize,
    /// Pull mode: one message has been asked for and not yet arrived.
    pull_outstanding: bool,
}

impl Consumer {
    pub(super) async fn subscribe(
        session: Arc<SessionInner>,
        destination: Destination,
        options: ConsumerOptions,
    ) -> Result<Consumer, ClientError> {
        let shared = session.shared.clone();
        let id = shared.next_id();
        let (tx, deliveries) = mpsc::unbounded_channel();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let receipt = shared.next_request();
        let subscribe = encode_frame(
            &Frame::Subscribe {
                session: session.id,
                consumer: id,
                destination: destination.clone(),
                prefetch: options.prefetch,
                receipt,
            },
            shared.max_frame_bytes,
        )?;
        let route = ConsumerRoute {
            session: session.id,
            deliveries: tx,
            acks: acks.clone(),
            subscribe,
            receipt,
        };
        let consumer = Consumer {
            session,
            id,
            destination,
            prefetch: options.prefetch,
            deliveries,
            buffered: std::collections::VecDeque::new(),
            generation: shared.generation(),
            stale: false,
            acks,
            ack_batch: (options.prefetch as usize / 2).max(1),
            pull_outstanding: false,
        };
        // From here on, dropping `consumer` unsubscribes.
        let confirmed = shared.subscribe(id, route)?;
        confirmed.await.map_err(|_| shared.failure())??;
        Ok(consumer)
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The next message, or `None` if none arrives within `timeout`.
    pub async fn receive(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        match tokio::time::timeout(timeout, self.next_delivery()).await {
            Ok(delivery) => delivery.map(|d| Some(d.message)),
            Err(_) => Ok(None),
        }
    }

    /// The next message, waiting as long as it takes.
    pub async fn next_delivery(&mut self) -> Result<Delivery, ClientError> {
        let (delivery, tag) = self.next_pending().await?;
        match self.session.ack_mode {
            AckMode::Auto | AckMode::DupsOk => self.done(tag)?,
            // Acknowledged by the application (`Session::acknowledge`) or the commit.
            AckMode::Client | AckMode::Individual | AckMode::Transacted => {
                if let Ok(mut unacked) = self.session.unacked.lock() {
                    unacked.push((self.id, tag, delivery.message.id.clone()));
                }
            }
        }
        Ok(delivery)
    }

    /// The next delivery and its tag; it counts as taken only once `done(tag)` is called.
    pub(super) async fn next_pending(&mut self) -> Result<(Delivery, Tag), ClientError> {
        if self.buffered.is_empty()
            && let Ok(routed) = self.deliveries.try_recv()
        {
            self.take(routed)?;
        }
        let delivery = loop {
            if !self.buffered.is_empty() && !self.session.shared.is_live(self.generation) {
                // Delivered over a socket that is gone: they come again (marked
                // redelivered) over the next one, and must not be taken twice.
                self.buffered.clear();
                self.stale = true;
            }
            if let Some(delivery) = self.buffered.pop_front() {
                break delivery;
            }
            // Caught up: acknowledge everything taken before waiting.
            self.flush_acks()?;
            if self.prefetch == 0 && !self.pull_outstanding {
                self.session.shared.write(&Frame::Pull {
                    session: self.session.id,
                    consumer: self.id,
                    count: 1,
                })?;
                self.pull_outstanding = true;
            }
            match self.deliveries.recv().await {
                Some(routed) => self.take(routed)?,
                None => return Err(self.session.shared.failure()),
            }
        };
        self.pull_outstanding = false;
        let message = Arc::try_unwrap(delivery.message).unwrap_or_else(|shared| (*shared).clone());
        let taken = Delivery {
            message,
            redelivered: delivery.redelivered,
            delivery_count: delivery.delivery_count,
        };
        let tag = Tag {
            generation: self.generation,
            tag: delivery.tag,
        };
        Ok((taken, tag))
    }

    /// Takes in what the driver routed here.
    fn take(&mut self, routed: Routed) -> Result<(), ClientError> {
        match routed {
            Routed::Deliveries(batch) if !self.stale => self.buffered.extend(batch),
            Routed::Deliveries(_) => {}
            Routed::Reconnected(generation) => {
                // Delivered again by the broker, marked redelivered.
                self.buffered.clear();
                self.generation = generation;
                self.stale = false;
                self.pull_outstanding = false;
            }
            Routed::Failed(e) => return Err(e),
        }
        Ok(())
    }

    /// The application is done with the delivery `tag`: acknowledge it (in a batch).
    pub(super) fn done(&mut self, tag: Tag) -> Result<(), ClientError> {
        let full = match self.acks.lock() {
            Ok(mut acks) => {
                acks.push(tag);
                acks.len() >= self.ack_batch
            }
            Err(_) => false,
        };
        if full {
            self.flush_acks()?;
        }
        Ok(())
    }

    fn flush_acks(&self) -> Result<(), ClientError> {
        let tags = match self.acks.lock() {
            Ok(mut acks) if !acks.is_empty() => std::mem::take(&mut *acks),
            _ => return Ok(()),
        };
        let acks = tags.into_iter().map(|tag| (self.id, tag)).collect();
        self.session
            .shared
            .write_tagged(self.session.id, acks, ack_frame)
    }

    /// The consumer as a stream of messages. It ends after yielding the error that closed
    /// the connection. Credit gives back-pressure: the broker sends no more than `prefetch`
    /// messages ahead of what the stream's reader has taken.
    pub fn into_stream(self) -> impl Stream<Item = Result<Message, ClientError>> + Send {
        futures::stream::unfold(Some(self), |consumer| async move {
            let mut consumer = consumer?;
            match consumer.next_delivery().await {
                Ok(delivery) => Some((Ok(delivery.message), Some(consumer))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// Hands every message to an actix actor, one at a time: the next is sent once the
    /// actor has handled the previous one (and only then is the previous one acknowledged),
    /// so a slow actor slows delivery. Runs until the connection closes, the actor stops, or
    /// the handle is aborted.
    pub fn forward_to(mut self, recipient: Recipient<Delivery>) -> TaskHandle {
        let task = tokio::spawn(async move {
            loop {
                let (delivery, tag) = self.next_pending().await?;
                if recipient.send(delivery).await.is_err() {
                    return Ok(());
                }
                self.done(tag)?;
            }
        });
        TaskHandle { task }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // The driver flushes our acknowledgements, then unsubscribes; the broker redelivers
        // whatever was prefetched and not taken.
        self.session.shared.unsubscribe(self.id);
    }
}

/// A background task that consumes: [`Consumer::forward_to`], a responder's `serve`, a
/// callback endpoint.
pub struct TaskHandle {
    pub(super) task: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl TaskHandle {
    /// Stops the task (and closes its consumer).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits for the task to end: `Ok` when its actor stopped (or it was aborted), the
    /// error that closed the connection otherwise.
    pub async fn join(self) -> Result<(), ClientError> {
        match self.task.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}
