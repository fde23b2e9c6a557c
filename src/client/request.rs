//! Request/response and callbacks on top of sessions, producers and consumers.
//!
//! A [`Requestor`] owns one temporary reply queue and a task that routes each reply to
//! the call waiting for it by correlation id, so thousands of requests can be in flight on
//! one connection. A [`Responder`] serves a queue: each request goes to an async closure or
//! an actix actor, and what it returns is sent to the request's `reply_to` with the
//! request's correlation id (or, if it had none, its message id).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::consumer::{ConsumerOptions, TaskHandle};
use super::session::Session;
use super::{ClientError, Consumer};
use crate::constants::REPLY_PREFETCH;
use crate::message::{Destination, Message};

/// A request handed to an actor by [`Responder::serve_actor`]; the actor's answer is the reply.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct Request {
    pub message: Message,
}

/// Lets an actor's `Handler<Request>` declare `type Result = Message`.
impl<A, M> actix::dev::MessageResponse<A, M> for Message
where
    A: actix::Actor,
    M: actix::Message<Result = Message>,
{
    fn handle(self, _ctx: &mut A::Context, tx: Option<actix::dev::OneshotSender<Message>>) {
        if let Some(tx) = tx {
            let _ = tx.send(self);
        }
    }
}

/// An answer handed to an actor by a [`Session::callback_endpoint`].
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Reply {
    pub message: Message,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Message>>>>;

/// Sends requests and waits for their replies on one temporary queue.
pub struct Requestor {
    session: Session,
    reply_to: Destination,
    waiting: Waiters,
    next: AtomicU64,
    router: TaskHandle,
}

impl Session {
    /// A requestor with its own temporary reply queue.
    pub async fn requestor(&self) -> Result<Requestor, ClientError> {
        let reply_to = self.temp_queue().await?;
        let mut replies = self
            .consumer_with(reply_to.clone(), ConsumerOptions::prefetch(REPLY_PREFETCH))
            .await?;
        let waiting: Waiters = Arc::default();
        let routes = waiting.clone();
        let task = tokio::spawn(async move {
            loop {
                let reply = replies.next_delivery().await?.message;
                let waiter = reply
                    .correlation_id
                    .as_ref()
                    .and_then(|id| routes.lock().ok()?.remove(id));
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    // Its caller gave up (timed out) before it came.
                    None => {
                        tracing::debug!(correlation_id = ?reply.correlation_id, "late reply dropped")
                    }
                }
            }
        });
        Ok(Requestor {
            session: self.clone(),
            reply_to,
            waiting,
            next: AtomicU64::new(1),
            router: TaskHandle { task },
        })
    }

    /// A responder that serves queues with this session.
    pub fn responder(&self) -> Responder {
        Responder {
            session: self.clone(),
        }
    }

    /// A temporary queue whose messages are handed to `recipient` as [`Reply`]s: pass
    /// [`CallbackEndpoint::destination`] as the callback of a request, and the actor
    /// handles the answer whenever it comes.
    pub async fn callback_endpoint(
        &self,
        recipient: Recipient<Reply>,
    ) -> Result<CallbackEndpoint, ClientError> {
        let destination = self.temp_queue().await?;
        let mut consumer = self.consumer(destination.clone()).await?;
        let task = tokio::spawn(async move {
            loop {
                let (delivery, tag) = consumer.next_pending().await?;
                let reply = Reply {
                    message: delivery.message,
                };
                if recipient.send(reply).await.is_err() {
                    return Ok(());
                }
                consumer.done(tag)?;
            }
        });
        Ok(CallbackEndpoint {
            destination,
            task: TaskHandle { task },
        })
    }
}

impl Requestor {
    /// Where replies come back to.
    pub fn reply_to(&self) -> &Destination {
        &self.reply_to
    }

    /// Sends `message` to `destination` and waits for its reply, at most `timeout` in all.
    pub async fn request(
        &self,
        destination: Destination,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        self.request_future(destination, message, timeout).await
    }

    /// Sends `message` now and returns a future of its reply, to await later. Many may be
    /// in flight at once.
    pub fn request_future(
        &self,
        destination: Destination,
        message: Message,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, ClientError>> + Send + 'static {
        let deadline = Instant::now() + timeout;
        let correlation_id = format!(
            "{}:rq:{}",
            self.session.connection_id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(correlation_id.clone(), tx);
        }
        let message = message
            .with_reply_to(self.reply_to.clone())
            .with_correlation_id(correlation_id.clone());
        let sent = self.session.producer(destination).begin_send(vec![message]);
        let waiting = self.waiting.clone();
        async move {
            let result = async {
                let confirmed = tokio::time::timeout_at(deadline, sent?).await;
                confirmed
                    .map_err(|_| ClientError::Timeout("the request to be accepted".into()))??;
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(_)) => Err(ClientError::ConnectionClosed(
                        "the reply queue closed".into(),
                    )),
                    Err(_) => Err(ClientError::Timeout(format!(
                        "the reply to {correlation_id}"
                    ))),
                }
            }
            .await;
            if result.is_err()
                && let Ok(mut waiting) = waiting.lock()
            {
                waiting.remove(&correlation_id);
            }
            result
        }
    }

    /// Requests still waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }
}

impl Drop for Requestor {
    fn drop(&mut self) {
        self.router.abort();
    }
}

/// A temporary queue that feeds an actor; see [`Session::callback_endpoint`].
pub struct CallbackEndpoint {
    destination: Destination,
    task: TaskHandle,
}

impl CallbackEndpoint {
    /// Name this as the callback of a request.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Stops handing answers to the actor.
    pub fn close(self) {
        self.task.abort();
    }
}

/// Serves queues: each request's answer goes back to its `reply_to`.
pub struct Responder {
    session: Session,
}

type Handler = Box<dyn FnMut(Message) -> BoxFuture<'static, Option<Message>> + Send>;

impl Responder {
    /// Answers each request on `queue` with what `handler` returns. Requests are handled
    /// one at a time, in order; a request counts as consumed only once its reply is sent,
    /// so if this responder dies mid-request the broker gives the request to another.
    pub async fn serve<F, Fut>(
        &self,
        queue: Destination,
        mut handler: F,
    ) -> Result<TaskHandle, ClientError>
    where
        F: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = Message> + Send + 'static,
    {
        self.serve_with(
            queue,
            Box::new(move |m| {
                let answer = handler(m);
                Box::pin(async move { Some(answer.await) })
            }),
        )
        .await
    }

    /// Answers each request on `queue` with what the actor returns for it. Serving stops
    /// when the actor stops.
    pub async fn serve_actor(
        &self,
        queue: Destination,
        recipient: Recipient<Request>,
    ) -> Result<TaskHandle, ClientError> {
        self.serve_with(
            queue,
            Box::new(move |message| {
                let answer = recipient.send(Request { message });
                Box::pin(async move { answer.await.ok() })
            }),
        )
        .await
    }

    async fn serve_with(
        &self,
        queue: Destination,
        mut handler: Handler,
    ) -> Result<TaskHandle, ClientError> {
        let mut consumer: Consumer = self.session.consumer(queue).await?;
        let session = self.session.clone();
        let task = tokio::spawn(async move {
            loop {
                let (delivery, tag) = consumer.next_pending().await?;
                let request = delivery.message;
                let Some(reply_to) = request.reply_to.clone() else {
                    tracing::debug!(id = %request.id, "request without reply_to: nothing to answer");
                    consumer.done(tag)?;
                    continue;
                };
                let correlation_id = request
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| request.id.clone());
                let Some(mut reply) = handler(request).await else {
                    return Ok(()); // the actor is gone: leave the request to another
                };
                reply.correlation_id = Some(correlation_id);
                let confirmation = session.producer(reply_to.clone()).begin_send(vec![reply])?;
                tokio::spawn(async move {
                    if let Err(e) = confirmation.await {
                        tracing::debug!(%reply_to, "reply not delivered: {e}");
                    }
                });
                consumer.done(tag)?;
            }
        });
        Ok(TaskHandle { task })
    }
}
