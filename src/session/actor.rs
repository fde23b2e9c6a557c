//! [`SessionActor`]: one client session. It owns the session's ack mode, its consumers, and
//! the references to the destinations it has used; it turns `Send` frames into enqueues
//! (confirmed with a `Receipt`), `Subscribe` frames into [`ConsumerActor`]s, and routes
//! acknowledgements to the consumer they belong to.
//!
//! Messages from one session reach a destination in the order they were sent: a
//! destination not yet known is resolved with `ctx.wait`, which holds back the session's
//! later commands until the registry has answered. A session asked to stop while sends are
//! under way stops once they are answered: a send read from the socket is never dropped
//! because its connection closed behind it. A send to a composite destination or a
//! group is resolved to all its members before anything is enqueued, and confirmed once
//! every member has accepted it.
//!
//! A send or commit with an origin (a failover client's) is looked up in [`Resends`]
//! first: one already kept is confirmed without being kept again, one being kept through
//! another connection waits for that, and a new one is stored with its producer's mark in
//! the same record as its messages.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::Shutdown;
use super::consumer::{ConsumerActor, SettleStored};
use super::resends::{Begin, Resends, Token};
use super::wire::ClientWire;
use crate::config::Limits;
use crate::destination::{
    ConnectionId, ConsumerControl, ConsumerId, DestinationError, DestinationRef,
    DestinationRegistry, Lookup, Resolve, Subscribe,
};
use crate::message::{AckMode, Destination, Message};
use crate::net::reader::WindowPermit;
use crate::protocol::{SendOrigin, TransactedSend};
use crate::store::record::{Record, SendMark};

/// One copy of `messages` per target, each naming the destination it was sent to (bodies
/// are shared). The last target takes the originals, so the usual single destination costs
/// no copy at all.
fn addressed(mut messages: Vec<Message>, targets: &[DestinationRef]) -> Vec<Vec<Arc<Message>>> {
    let mut all = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        let batch = if i + 1 == targets.len() {
            std::mem::take(&mut messages)
        } else {
            messages.clone()
        };
        all.push(
            batch
                .into_iter()
                .map(|mut message| {
                    message.destination = Some(target.destination().clone());
                    Arc::new(message)
                })
                .collect(),
        );
    }
    all
}

/// `(consumer, tag)` pairs, grouped by consumer.
fn by_consumer(pairs: Vec<(u32, u64)>) -> HashMap<u32, Vec<u64>> {
    let mut grouped: HashMap<u32, Vec<u64>> = HashMap::new();
    for (consumer, tag) in pairs {
        grouped.entry(consumer).or_default().push(tag);
    }
    grouped
}

/// What a connection asks of one of its sessions.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SessionCommand {
    Send {
        destination: Destination,
        receipt: Option<u64>,
        messages: Vec<Message>,
        /// The messages' bytes in the connection's send window, given back once they are
        /// accepted or refused.
        permit: WindowPermit,
        origin: Option<SendOrigin>,
    },
    Subscribe {
        consumer: u32,
        destination: Destination,
        prefetch: u32,
        receipt: u64,
    },
    Unsubscribe {
        consumer: u32,
    },
    Ack {
        acks: Vec<(u32, u64)>,
        /// Answered once the acknowledgements are stored.
        receipt: Option<u64>,
    },
    /// Give deliveries back (NACK): `(consumer, tag)` pairs.
    Release {
        releases: Vec<(u32, u64)>,
    },
    /// A transaction's sends and acknowledgements, applied at once.
    Commit {
        receipt: u64,
        sends: Vec<TransactedSend>,
        acks: Vec<(u32, u64)>,
        permit: WindowPermit,
        origin: Option<SendOrigin>,
    },
    Pull {
        consumer: u32,
        count: u32,
    },
}

pub struct SessionActor<W: ClientWire> {
    id: u32,
    connection: ConnectionId,
    ack_mode: AckMode,
    wire: W,
    registry: Addr<DestinationRegistry>,
    limits: Limits,
    resends: Arc<Resends>,
    /// Where a send to each destination this session has used goes (one reference, or
    /// the parts of a composite or group).
    targets: HashMap<Destination, Vec<DestinationRef>>,
    consumers: HashMap<u32, Addr<ConsumerActor<W>>>,
    /// Sends under way (their enqueues not yet answered).
    sending: usize,
    /// Asked to stop: it does once `sending` is 0.
    closing: bool,
}

impl<W: ClientWire> SessionActor<W> {
    pub fn new(
        id: u32,
        connection: ConnectionId,
        ack_mode: AckMode,
        wire: W,
        registry: Addr<DestinationRegistry>,
        limits: Limits,
        resends: Arc<Resends>,
    ) -> SessionActor<W> {
        SessionActor {
            id,
            connection,
            ack_mode,
            wire,
            registry,
            limits,
            resends,
            targets: HashMap::new(),
            consumers: HashMap::new(),
            sending: 0,
            closing: false,
        }
    }

    fn receipt(&self, receipt: u64, result: Result<(), DestinationError>) {
        self.wire.receipt(receipt, result);
    }

    /// Answers a send: its receipt, or, for a one-way send that failed, an error that
    /// closes the connection (the client must not believe it was kept).
    fn answer_send(
        &self,
        destination: &Destination,
        receipt: Option<u64>,
        result: Result<(), DestinationError>,
    ) {
        match (receipt, result) {
            (Some(receipt), result) => self.receipt(receipt, result),
            (None, Err(e)) => self
                .wire
                .send_failed(format!("a one-way send to {destination} failed: {e}")),
            (None, Ok(())) => {}
        }
    }

    /// Enqueues `messages` on every target of `destination` — resolved through the
    /// registry the first time, holding back the session's later commands meanwhile so that
    /// order is kept — and answers the receipt once all have accepted them.
    fn send(
        &mut self,
        destination: Destination,
        receipt: Option<u64>,
        messages: Vec<Message>,
        permit: WindowPermit,
        token: Option<Token>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(targets) = self.targets.get(&destination) {
            let targets = targets.clone();
            return self.enqueue(destination, targets, receipt, messages, permit, token, ctx);
        }
        let resolve = self.registry.send(Resolve(destination.clone()));
        ctx.wait(resolve.into_actor(self).map(move |result, act, ctx| {
            let result = result
                .unwrap_or_else(|_| Err(DestinationError::Unavailable(destination.to_string())));
            match result {
                Ok(targets) => {
                    act.targets.insert(destination.clone(), targets.clone());
                    act.enqueue(destination, targets, receipt, messages, permit, token, ctx);
                }
                Err(e) => {
                    tracing::debug!(session = act.id, "send to {destination} refused: {e}");
                    act.answer_send(&destination, receipt, Err(e));
                }
            }
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        destination: Destination,
        targets: Vec<DestinationRef>,
        receipt: Option<u64>,
        messages: Vec<Message>,
        permit: WindowPermit,
        token: Option<Token>,
        ctx: &mut Context<Self>,
    ) {
        if token.is_some() && targets.len() > 1 {
            // A marked send to several destinations: one record for all of them, as a
            // transaction is.
            let send = TransactedSend {
                destination: destination.clone(),
                messages,
            };
            let stored = self.store_all(vec![send], token.as_ref().map(|t| t.mark().clone()));
            return self.apply(
                stored,
                Vec::new(),
                permit,
                token,
                move |act, result| act.answer_send(&destination, receipt, result),
                ctx,
            );
        }
        let mark = token.as_ref().map(|t| t.mark().clone());
        let enqueued: Vec<_> = addressed(messages, &targets)
            .into_iter()
            .zip(&targets)
            .map(|(copies, target)| target.enqueue_marked(copies, mark.clone()))
            .collect();
        let all = futures::future::join_all(enqueued);
        self.sending += 1;
        ctx.spawn(all.into_actor(self).map(move |results, act, ctx| {
            drop(permit);
            act.sending -= 1;
            if act.closing && act.sending == 0 {
                ctx.stop();
            }
            let result = results
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ());
            if let Some(token) = token {
                token.finish(result.is_ok());
            }
            if let Err(e) = &result {
                tracing::debug!(session = act.id, "send to {destination} failed: {e}");
                // Look it up afresh next time (a temporary destination may be gone).
                act.targets.remove(&destination);
            }
            act.answer_send(&destination, receipt, result);
        }));
    }

    fn subscribe(
        &mut self,
        consumer: u32,
        destination: Destination,
        prefetch: u32,
        receipt: u64,
        ctx: &mut Context<Self>,
    ) {
        if self.consumers.contains_key(&consumer) {
            let e = DestinationError::Refused(format!("consumer {consumer} already exists"));
            return self.receipt(receipt, Err(e));
        }
        if prefetch > self.limits.max_prefetch {
            let max = self.limits.max_prefetch;
            let e = DestinationError::Refused(format!(
                "prefetch {prefetch} is above the limit of {max}"
            ));
            return self.receipt(receipt, Err(e));
        }
        let lookup = self.registry.send(Lookup {
            destination: destination.clone(),
            connection: self.connection,
        });
        ctx.wait(lookup.into_actor(self).map(move |found, act, ctx| {
            let found = match found {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return act.receipt(receipt, Err(e)),
                Err(_) => {
                    let e = DestinationError::Unavailable(destination.to_string());
                    return act.receipt(receipt, Err(e));
                }
            };
            let id = ConsumerId::next();
            let addr = ConsumerActor::new(
                id,
                act.id,
                consumer,
                found.clone(),
                act.wire.clone(),
                act.limits.clone(),
            )
            .start();
            act.consumers.insert(consumer, addr.clone());
            let subscribed = found.subscribe(Subscribe {
                consumer: id,
                prefetch,
                sink: addr.clone().recipient(),
            });
            ctx.spawn(subscribed.into_actor(act).map(move |result, act, _ctx| {
                if result.is_err() {
                    act.consumers.remove(&consumer);
                    addr.do_send(Shutdown);
                }
                act.receipt(receipt, result);
            }));
        }));
    }
}

impl<W: ClientWire> SessionActor<W> {
    /// Commits a transaction: resolves every destination, stores all persistent messages
    /// bound for stored queues as one journal record, then enqueues everything and settles
    /// the acknowledgements. The session handles nothing else meanwhile, so commits are
    /// applied in order.
    fn commit(
        &mut self,
        receipt: u64,
        sends: Vec<TransactedSend>,
        acks: Vec<(u32, u64)>,
        permit: WindowPermit,
        token: Option<Token>,
        ctx: &mut Context<Self>,
    ) {
        let stored = self.store_all(sends, token.as_ref().map(|t| t.mark().clone()));
        self.apply(
            stored,
            acks,
            permit,
            token,
            move |act, result| act.receipt(receipt, result),
            ctx,
        );
    }

    /// Resolves every destination of `sends`, stores their persistent messages bound for
    /// stored queues (and the producer's mark, if any) as one record, then enqueues
    /// everything.
    fn store_all(
        &self,
        sends: Vec<TransactedSend>,
        mark: Option<SendMark>,
    ) -> impl Future<Output = Result<(), DestinationError>> + 'static {
        let registry = self.registry.clone();
        async move {
            let mut resolved = Vec::with_capacity(sends.len());
            for send in sends {
                let targets = registry
                    .send(Resolve(send.destination.clone()))
                    .await
                    .map_err(|_| DestinationError::Unavailable(send.destination.to_string()))??;
                resolved.push((targets, send.messages));
            }
            // Every copy, with its journal id where it is stored.
            let mut records = Vec::new();
            let mut store = None;
            let mut deliveries = Vec::new();
            for (targets, messages) in resolved {
                let all = addressed(messages, &targets);
                for (copies, target) in all.into_iter().zip(targets) {
                    let mut ids = Vec::with_capacity(copies.len());
                    for copy in &copies {
                        let id = match target.store() {
                            Some(journal) if copy.persistent => {
                                let id = journal.next_id();
                                records.push(Record::Enqueue {
                                    queue: target.destination().name().to_string(),
                                    id,
                                    message: copy.clone(),
                                });
                                store.get_or_insert_with(|| journal.clone());
                                Some(id)
                            }
                            _ => None,
                        };
                        ids.push(id);
                    }
                    deliveries.push((target, copies, ids));
                }
            }
            if let Some(journal) = store {
                records.extend(mark.map(Record::Sent));
                journal
                    .append(vec![Record::Transaction { records }])
                    .await
                    .map_err(|e| {
                        DestinationError::Refused(format!(
                            "the transaction could not be stored: {e}"
                        ))
                    })?;
            }
            for (target, copies, ids) in deliveries {
                let stored = if ids.iter().any(Option::is_some) {
                    ids
                } else {
                    Vec::new()
                };
                target.enqueue_stored(copies, stored).await?;
            }
            Ok::<_, DestinationError>(())
        }
    }

    /// Waits (holding back the session's later commands) for `stored`; then settles `acks`
    /// if it succeeded, says whether the producer's send was kept, and `answer`s.
    fn apply(
        &mut self,
        stored: impl Future<Output = Result<(), DestinationError>> + 'static,
        acks: Vec<(u32, u64)>,
        permit: WindowPermit,
        token: Option<Token>,
        answer: impl FnOnce(&mut Self, Result<(), DestinationError>) + 'static,
        ctx: &mut Context<Self>,
    ) {
        ctx.wait(stored.into_actor(self).map(move |result, act, _ctx| {
            drop(permit);
            if result.is_ok() {
                act.per_consumer(acks, ConsumerControl::Settle);
            }
            if let Some(token) = token {
                token.finish(result.is_ok());
            }
            answer(act, result);
        }));
    }

    /// Runs `work` for a send or commit — with a token to store its producer's mark, if it
    /// has an origin — unless that origin's send was kept already: then `kept` answers it
    /// at once. If the same send is being stored through another connection, waits for
    /// that first.
    fn once(
        &mut self,
        origin: Option<SendOrigin>,
        work: impl FnOnce(&mut Self, Option<Token>, &mut Context<Self>) + 'static,
        kept: impl FnOnce(&mut Self) + 'static,
        ctx: &mut Context<Self>,
    ) {
        let Some(origin) = origin else {
            return work(self, None, ctx);
        };
        let SendOrigin {
            producer,
            seq,
            confirmed_below,
        } = origin.clone();
        match self.resends.begin(producer, seq, confirmed_below) {
            Begin::New(token) => work(self, Some(token), ctx),
            Begin::Kept => {
                tracing::debug!(
                    session = self.id,
                    producer = %origin.producer,
                    seq = origin.seq,
                    "a send kept before was sent again: confirmed without keeping it twice"
                );
                kept(self);
            }
            Begin::Pending(outcome) => {
                ctx.wait(
                    outcome
                        .kept()
                        .into_actor(self)
                        .map(move |was_kept, act, ctx| {
                            if was_kept {
                                kept(act);
                            } else {
                                act.once(Some(origin), work, kept, ctx);
                            }
                        }),
                );
            }
        }
    }

    /// Acknowledges, and answers `receipt` once the acknowledgements are stored.
    fn ack_stored(&mut self, acks: Vec<(u32, u64)>, receipt: u64, ctx: &mut Context<Self>) {
        let mut stored = Vec::new();
        for (consumer, tags) in by_consumer(acks) {
            let Some(addr) = self.consumers.get(&consumer) else {
                // Its deliveries went back to the queue with it: nothing was acknowledged.
                let e = DestinationError::Refused(format!(
                    "consumer {consumer} is closed: its unacknowledged messages are delivered again"
                ));
                return self.receipt(receipt, Err(e));
            };
            let (done, settled) = tokio::sync::oneshot::channel();
            addr.do_send(SettleStored { tags, done });
            stored.push(settled);
        }
        let all = futures::future::join_all(stored);
        ctx.spawn(all.into_actor(self).map(move |results, act, _ctx| {
            // A consumer that stopped first, or a store that could not write, confirms nothing.
            let result = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|_| Err("its consumer stopped first".into())))
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
                .map_err(|e| {
                    DestinationError::Refused(format!("the acknowledgement was not stored: {e}"))
                });
            act.receipt(receipt, result);
        }));
    }

    /// Groups `(consumer, tag)` pairs by consumer and sends each consumer its tags.
    fn per_consumer(&self, pairs: Vec<(u32, u64)>, command: fn(Vec<u64>) -> ConsumerControl) {
        for (consumer, tags) in by_consumer(pairs) {
            match self.consumers.get(&consumer) {
                Some(addr) => addr.do_send(command(tags)),
                None => tracing::debug!(
                    session = self.id,
                    consumer,
                    "ack for a closed consumer ignored"
                ),
            }
        }
    }
}

impl<W: ClientWire> Actor for SessionActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(session = self.id, ack_mode = ?self.ack_mode, "session opened");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, consumer) in self.consumers.drain() {
            consumer.do_send(Shutdown);
        }
        tracing::debug!(session = self.id, "session closed");
    }
}

impl<W: ClientWire> Handler<SessionCommand> for SessionActor<W> {
    type Result = ();

    fn handle(&mut self, command: SessionCommand, ctx: &mut Context<Self>) {
        match command {
            SessionCommand::Send {
                destination,
                receipt,
                messages,
                permit,
                origin,
            } => {
                let again = destination.clone();
                self.once(
                    origin,
                    move |act, token, ctx| {
                        act.send(destination, receipt, messages, permit, token, ctx)
                    },
                    move |act| act.answer_send(&again, receipt, Ok(())),
                    ctx,
                );
            }
            SessionCommand::Subscribe {
                consumer,
                destination,
                prefetch,
                receipt,
            } => self.subscribe(consumer, destination, prefetch, receipt, ctx),
            SessionCommand::Unsubscribe { consumer } => {
                if let Some(addr) = self.consumers.remove(&consumer) {
                    addr.do_send(Shutdown);
                }
            }
            SessionCommand::Ack {
                acks,
                receipt: None,
            } => self.per_consumer(acks, ConsumerControl::Settle),
            SessionCommand::Ack {
                acks,
                receipt: Some(receipt),
            } => self.ack_stored(acks, receipt, ctx),
            SessionCommand::Release { releases } => {
                self.per_consumer(releases, ConsumerControl::Release)
            }
            SessionCommand::Commit {
                receipt,
                sends,
                acks,
                permit,
                origin,
            } => self.once(
                origin,
                move |act, token, ctx| act.commit(receipt, sends, acks, permit, token, ctx),
                move |act| act.receipt(receipt, Ok(())),
                ctx,
            ),
            SessionCommand::Pull { consumer, count } => {
                if let Some(addr) = self.consumers.get(&consumer) {
                    addr.do_send(ConsumerControl::Grant(count));
                }
            }
        }
    }
}

impl<W: ClientWire> Handler<Shutdown> for SessionActor<W> {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        // Consumers go now (what they hold is redelivered); sends finish first.
        for (_, consumer) in self.consumers.drain() {
            consumer.do_send(Shutdown);
        }
        if self.sending == 0 {
            ctx.stop();
        } else {
            self.closing = true;
        }
    }
}
