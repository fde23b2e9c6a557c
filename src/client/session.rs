//! [`Session`] and [`Producer`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::ClientError;
use super::consumer::{Consumer, ConsumerOptions};
use super::shared::{Replay, Reply, SessionInner, Shared, Tag, ack_frame, release_frame};
use crate::message::{AckMode, Destination, DestinationKind, Message, now_millis};
use crate::protocol::{Frame, SendOrigin, TransactedSend};

/// A single-threaded context for producing and consuming, with one acknowledgement mode.
/// Closed on the broker when it and all its producers and consumers are dropped.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Session {
    pub(super) fn new(inner: Arc<SessionInner>) -> Session {
        Session { inner }
    }

    pub(super) fn connection_id(&self) -> &str {
        &self.inner.shared.connection_id
    }

    pub fn ack_mode(&self) -> AckMode {
        self.inner.ack_mode
    }

    /// A producer for one destination. No round trip: destinations are created on first use.
    pub fn producer(&self, destination: Destination) -> Producer {
        Producer {
            session: self.inner.clone(),
            destination,
        }
    }

    /// A consumer with the default prefetch (1000). Returns once the broker has made the
    /// subscription active: every message sent to a topic after this returns is received.
    pub async fn consumer(&self, destination: Destination) -> Result<Consumer, ClientError> {
        self.consumer_with(destination, ConsumerOptions::default())
            .await
    }

    pub async fn consumer_with(
        &self,
        destination: Destination,
        options: ConsumerOptions,
    ) -> Result<Consumer, ClientError> {
        Consumer::subscribe(self.inner.clone(), destination, options).await
    }

    /// Acknowledges a message taken from a consumer of this session. `Individual`: that
    /// message alone. `Client`: that message and every message the session took before it,
    /// from any of its consumers (as JMS's CLIENT_ACKNOWLEDGE). `Auto`/`DupsOk`: nothing
    /// to do. Acknowledging twice is harmless; what is never acknowledged is redelivered
    /// once its consumer closes.
    pub fn acknowledge(&self, message: &Message) -> Result<(), ClientError> {
        let taken = self.take_for_ack(message);
        let acks = taken
            .into_iter()
            .map(|(consumer, tag, _)| (consumer, tag))
            .collect();
        self.inner
            .shared
            .write_tagged(self.inner.id, acks, ack_frame)
    }

    /// As [`Session::acknowledge`], and returns once the broker has stored the
    /// acknowledgement: after a crash or a failover those messages never come back. Fails
    /// with [`ClientError::NotAcknowledged`] if the connection was lost first (they come
    /// again, marked redelivered).
    pub async fn acknowledge_stored(&self, message: &Message) -> Result<(), ClientError> {
        let taken = self.take_for_ack(message);
        if taken.is_empty() {
            return Ok(());
        }
        let shared = &self.inner.shared;
        let generation = shared.generation();
        // Messages received over an earlier socket are not acknowledged: they come again.
        if taken
            .last()
            .is_some_and(|(_, tag, _)| tag.generation != generation)
        {
            return Err(ClientError::NotAcknowledged(
                "the connection was replaced since this message was received: it comes \
                 again, marked redelivered"
                    .into(),
            ));
        }
        let taken: Vec<_> = taken
            .into_iter()
            .filter(|(_, tag, _)| tag.generation == generation)
            .collect();
        let receipt = shared.next_request();
        let frame = Frame::Ack {
            session: self.inner.id,
            acks: taken.into_iter().map(|(c, tag, _)| (c, tag.tag)).collect(),
            receipt: Some(receipt),
        };
        let (reply, rx) = oneshot::channel();
        shared.register(receipt, &frame, Replay::Forget, Reply::Receipt(reply), None)?;
        rx.await.map_err(|_| shared.failure())?
    }

    /// What acknowledging `message` covers (and forgets): that message alone
    /// (`Individual`), or it and everything the session took before it (`Client`).
    fn take_for_ack(&self, message: &Message) -> Vec<(u32, Tag, String)> {
        let Ok(mut unacked) = self.inner.unacked.lock() else {
            return Vec::new();
        };
        let Some(position) = unacked.iter().position(|(_, _, id)| *id == message.id) else {
            return Vec::new();
        };
        match self.inner.ack_mode {
            AckMode::Client => unacked.drain(..=position).collect(),
            AckMode::Individual => vec![unacked.remove(position)],
            AckMode::Auto | AckMode::DupsOk | AckMode::Transacted => Vec::new(),
        }
    }

    /// Transacted sessions: applies every send and acknowledgement since the last commit
    /// or rollback at once, and returns when the broker has (persistent messages stored as
    /// one journal record: after a crash, all or none of them exist).
    ///
    /// On a failover connection a commit survives a reconnect: `Ok` means its messages
    /// exist exactly once. It fails with [`ClientError::TransactionRolledBack`] when it
    /// acknowledged messages received before a reconnect that the broker had not kept
    /// (they come again, marked redelivered; its sends are dropped).
    pub async fn commit(&self) -> Result<(), ClientError> {
        let shared = &self.inner.shared;
        let sends = self
            .inner
            .pending_sends
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let taken = self.inner.take_unacked();
        let generation = shared.generation();
        if taken.iter().any(|(_, tag)| tag.generation != generation) {
            return Err(ClientError::TransactionRolledBack(
                "the connection was replaced since this transaction received messages: they                  come again, marked redelivered, and its sends are dropped"
                    .into(),
            ));
        }
        let acks: Vec<(u32, u64)> = taken.into_iter().map(|(c, t)| (c, t.tag)).collect();
        let has_acks = !acks.is_empty();
        let receipt = shared.next_request();
        let origin = self.inner.origin()?;
        let (replay, settle) = match &origin {
            Some((origin, seq)) => (
                Replay::Commit {
                    producer: origin.producer.clone(),
                    seq: origin.seq,
                    has_acks,
                },
                Some((self.inner.in_flight.clone(), *seq)),
            ),
            None => (Replay::Resend, None),
        };
        let frame = Frame::Commit {
            session: self.inner.id,
            receipt,
            sends,
            acks,
            origin: origin.map(|(origin, _)| origin),
        };
        let (reply, rx) = oneshot::channel();
        shared.register(receipt, &frame, replay, Reply::Receipt(reply), settle)?;
        rx.await.map_err(|_| shared.failure())?
    }

    /// Transacted sessions: drops the sends since the last commit and gives every message
    /// received since back to the broker, which redelivers it (after its redelivery delay).
    pub fn rollback(&self) -> Result<(), ClientError> {
        if let Ok(mut pending) = self.inner.pending_sends.lock() {
            pending.clear();
        }
        let releases = self.inner.take_unacked();
        self.inner
            .shared
            .write_tagged(self.inner.id, releases, release_frame)
    }

    /// A durable subscription `name` to `topic`, under this connection's client id: the
    /// broker keeps what is published while it is away (persistent messages in the
    /// journal) and delivers it when it comes back.
    pub async fn durable_consumer(&self, topic: &str, name: &str) -> Result<Consumer, ClientError> {
        let durable = Destination::durable(topic, &self.inner.shared.client_id, name);
        self.consumer(durable).await
    }

    /// Deletes the durable subscription `name` to `topic` and what it kept. Close its
    /// consumer first.
    pub async fn unsubscribe_durable(&self, topic: &str, name: &str) -> Result<(), ClientError> {
        let shared = &self.inner.shared;
        let receipt = shared.next_request();
        let frame = Frame::DeleteDurable {
            destination: Destination::durable(topic, &shared.client_id, name),
            receipt,
        };
        shared
            .request(receipt, &frame)?
            .await
            .map_err(|_| shared.failure())?
    }

    /// A temporary queue: it lives until this connection closes, and only this connection
    /// may consume from it. Anyone may send to it (use it as a `reply_to`).
    pub async fn temp_queue(&self) -> Result<Destination, ClientError> {
        self.temporary(DestinationKind::TempQueue).await
    }

    /// A temporary topic: it lives until this connection closes.
    pub async fn temp_topic(&self) -> Result<Destination, ClientError> {
        self.temporary(DestinationKind::TempTopic).await
    }

    async fn temporary(&self, kind: DestinationKind) -> Result<Destination, ClientError> {
        let shared = &self.inner.shared;
        let name = format!("{}.{}", shared.connection_id, shared.next_id());
        let destination = Destination::with_kind(kind, &name);
        let receipt = shared.next_request();
        let frame = Frame::CreateTemporary {
            destination: destination.clone(),
            receipt,
        };
        shared
            .request(receipt, &frame)?
            .await
            .map_err(|_| shared.failure())??;
        Ok(destination)
    }
}

/// Sends messages to one destination.
pub struct Producer {
    session: Arc<SessionInner>,
    destination: Destination,
}

/// Resolves when the broker confirms a send.
pub struct SendConfirmation {
    reply: oneshot::Receiver<Result<(), ClientError>>,
    shared: Arc<Shared>,
}

impl Future for SendConfirmation {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.reply).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.shared.failure())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Producer {
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Sends one message and waits until the broker has accepted it.
    pub async fn send(&self, message: Message) -> Result<(), ClientError> {
        self.begin_send(vec![message])?.await
    }

    /// Sends messages in one frame and waits until the broker has accepted all of them.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<(), ClientError> {
        self.begin_send(messages)?.await
    }

    /// Writes messages in one frame and returns at once; the returned future resolves when
    /// the broker confirms them. Keep several in flight to pipeline sends.
    pub fn begin_send(&self, messages: Vec<Message>) -> Result<SendConfirmation, ClientError> {
        let shared = &self.session.shared;
        if self.session.ack_mode == AckMode::Transacted {
            self.hold(messages);
            let (done, reply) = oneshot::channel();
            let _ = done.send(Ok(()));
            return Ok(SendConfirmation {
                reply,
                shared: shared.clone(),
            });
        }
        let receipt = shared.next_request();
        let origin = self.session.origin()?;
        let settle = origin
            .as_ref()
            .map(|(_, seq)| (self.session.in_flight.clone(), *seq));
        let frame = self.frame(messages, Some(receipt), origin.map(|(o, _)| o));
        let (reply, rx) = oneshot::channel();
        shared.register(
            receipt,
            &frame,
            Replay::Resend,
            Reply::Receipt(reply),
            settle,
        )?;
        Ok(SendConfirmation {
            reply: rx,
            shared: shared.clone(),
        })
    }

    /// In a transacted session, keeps messages for the commit.
    fn hold(&self, messages: Vec<Message>) {
        let Frame::Send { messages, .. } = self.frame(messages, None, None) else {
            return;
        };
        if let Ok(mut pending) = self.session.pending_sends.lock() {
            pending.push(TransactedSend {
                destination: self.destination.clone(),
                messages,
            });
        }
    }

    /// Writes one message and returns as soon as it is written, awaiting no confirmation.
    /// (In a transacted session it is held for the commit.) On a failover connection it is
    /// still tracked until the broker confirms it, so a reconnect sends it again rather
    /// than losing it (what ActiveMQ calls `trackMessages`, always on).
    pub fn send_oneway(&self, message: Message) -> Result<(), ClientError> {
        if self.session.ack_mode == AckMode::Transacted {
            self.hold(vec![message]);
            return Ok(());
        }
        if self.session.shared.failover.is_some() {
            return self.begin_send(vec![message]).map(drop);
        }
        let frame = self.frame(vec![message], None, None);
        self.session.shared.write(&frame)
    }

    /// Sends a request whose answer goes to `callback` (a queue someone consumes, or a
    /// [`Session::callback_endpoint`]) rather than back to this call. Returns the
    /// correlation id the answer will carry.
    pub async fn send_with_callback(
        &self,
        message: Message,
        callback: &Destination,
    ) -> Result<String, ClientError> {
        let correlation_id = message.correlation_id.clone().unwrap_or_else(|| {
            let seq = self.session.sequence.fetch_add(1, Ordering::Relaxed);
            format!("{}:cb:{seq}", self.session.shared.connection_id)
        });
        let message = message
            .with_reply_to(callback.clone())
            .with_correlation_id(correlation_id.clone());
        self.send(message).await?;
        Ok(correlation_id)
    }

    fn frame(
        &self,
        mut messages: Vec<Message>,
        receipt: Option<u64>,
        origin: Option<SendOrigin>,
    ) -> Frame {
        let now = now_millis();
        for message in &mut messages {
            if message.id.is_empty() {
                message.id = self.session.next_message_id();
            }
            if message.timestamp == 0 {
                message.timestamp = now;
            }
        }
        Frame::Send {
            session: self.session.id,
            destination: self.destination.clone(),
            receipt,
            messages,
            origin,
        }
    }
}
