//! [`StompConnectionActor`]: one STOMP client. It speaks STOMP 1.0–1.2 and maps it onto one
//! [`SessionActor`] (STOMP has one implicit session per connection), so STOMP and native
//! clients share consumers and destinations.
//!
//! - Destinations: `/queue/NAME`, `/topic/NAME` (wildcards too), `/temp-queue/NAME` and
//!   `/temp-topic/NAME`. A temporary name the client makes up (`/temp-queue/replies`) is
//!   created for this connection on first use, as `temp-queue:<connection id>.replies`; in
//!   `reply-to` and `destination` headers the broker writes the full name, which any client
//!   can send to.
//! - Acknowledgement per subscription: `auto` (a message counts as consumed once its
//!   MESSAGE frame has been written to the socket; unwritten ones go back to the queue if
//!   the connection closes), `client` (cumulative, as STOMP defines it) and
//!   `client-individual`; NACK gives a message back to be redelivered. Transactions hold
//!   SENDs, ACKs and NACKs until COMMIT (at most `max_frame_bytes` of messages, as much as
//!   a native commit carries); ABORT drops them (messages ACKed in an aborted transaction
//!   stay unacknowledged). Subscriptions and MESSAGE encoding live in
//!   [`super::subscriptions`].
//! - Every SEND and SUBSCRIBE is confirmed by the session: a `receipt` header is answered
//!   only once the messages are enqueued or the subscription is active; a failure is an
//!   ERROR naming it (with the `receipt-id` of the frame it answers), never a RECEIPT.
//!   A DISCONNECT's receipt comes after every earlier frame's work is done.
//! - Producer flow control: SENDs read and not yet accepted count against the connection's
//!   [`SendWindow`]; while it is full the socket is not read.
//! - Each SEND is given a `message-id` unique in this broker (`<connection>-<n>`: nothing in
//!   it needs escaping in a header, so neither side escapes it per message).
//! - Heart-beats are offered and required as `limits.stomp_heartbeat_ms`; a client silent
//!   past the negotiated interval plus `stomp_heartbeat_grace_ms` is dropped with an ERROR.
//! - Selectors are refused with a clear ERROR until selectors exist; login and passcode
//!   are accepted and not checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use super::frames::{
    Failure, error_bytes, message_from, origin_from, parse_ack_id, parse_heartbeat, receipt_frame,
    transaction_name,
};
use super::receipts::Receipts;
use super::subscriptions::{AckKind, SharedSubscriptions, StompEvent, StompWire};
use crate::config::Limits;
use crate::destination::{
    ConnectionId, CreateTemporary, DestinationError, DestinationRegistry, DropTemporaries,
    footprint,
};
use crate::frontend::{Services, WriterStopped, slow_consumer_reason, start_writer, writer_limits};
use crate::message::decimal::numbered;
use crate::message::{AckMode, Destination, DestinationKind, Message, now_millis};
use crate::net::reader::{FrameReader, MarkIdle, ReadError, Reading, SendWindow, WindowPermit};
use crate::net::writer::{CloseReason, FrameSink};
use crate::protocol::stomp::{
    Command, Inbound, StompCodec, StompError, StompFrame, StompLimits, encode_into,
};
use crate::session::{Resends, SessionActor, SessionCommand, Shutdown};

/// Versions this listener speaks, oldest first.
const VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];
/// The single session of a STOMP connection.
const SESSION: u32 = 1;

/// What to do when the session answers an internal receipt.
struct Pending {
    /// The COMMIT this send belongs to (answered once all its sends are).
    commit: Option<u64>,
}

/// SENDs to one destination, in the order read.
struct SendBatch {
    destination: Destination,
    messages: Vec<Message>,
    receipts: Vec<String>,
    /// Their bytes in the connection's send window.
    permit: WindowPermit,
    /// When the first was read (ms since the epoch): the timestamp of those read after it
    /// too, since a batch is passed on within microseconds (one clock reading per batch).
    read_at: u64,
}

/// Work held back by a transaction until COMMIT.
enum Held {
    Send(StompFrame),
    Ack(StompFrame),
    Nack(StompFrame),
}

/// A transaction's held work and the bytes of its messages.
#[derive(Default)]
struct Transaction {
    held: Vec<Held>,
    bytes: usize,
}

pub struct StompConnectionActor {
    id: ConnectionId,
    connection_id: String,
    /// `<connection id>-`, what its messages' ids start with.
    message_id_prefix: String,
    peer: SocketAddr,
    broker_name: String,
    limits: Limits,
    sink: FrameSink,
    registry: Addr<DestinationRegistry>,
    resends: Arc<Resends>,
    session: Option<Addr<SessionActor<StompWire>>>,
    /// Shared with the session's wire, which records deliveries in it.
    subscriptions: SharedSubscriptions,
    /// Sends read and not yet accepted.
    window: Arc<SendWindow>,
    next_number: u64,
    pending: HashMap<u64, Pending>,
    /// SENDs (outside transactions) to one destination read in a row, passed to the
    /// session as one batch once the frames read so far are handled.
    batch: Option<SendBatch>,
    /// COMMIT id → sends not yet confirmed.
    commits: HashMap<u64, usize>,
    /// RECEIPTs owed, in the order their frames came.
    receipts: Receipts,
    /// DISCONNECT came (with this receipt header): no more frames are read.
    disconnecting: Option<Option<String>>,
    transactions: HashMap<String, Transaction>,
    /// Temporary names this client made up → the destinations created for them.
    temporaries: HashMap<(DestinationKind, String), Destination>,
    /// The queue or topic named last (see `destination`).
    last_destination: Option<Destination>,
    /// Something was read since the heart-beat check last looked (one flag per frame
    /// rather than a clock read per frame).
    read_since_check: bool,
}

impl StompConnectionActor {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        services: Services,
        ctx: &mut Context<Self>,
    ) -> StompConnectionActor {
        let Services {
            registry,
            config,
            budget,
            resends,
        } = services;
        let limits = config.limits;
        let (read, write) = stream.into_split();
        let last_words = error_bytes(&Failure::new(slow_consumer_reason(&limits)));
        let sink = start_writer(
            write,
            writer_limits(&limits, Some(last_words)),
            ctx.address().recipient(),
        );
        let window = SendWindow::new(limits.max_inflight_send_bytes);
        let codec = StompCodec::new(StompLimits {
            max_frame_bytes: limits.max_frame_bytes as usize,
            max_headers: limits.stomp_max_headers,
            max_header_bytes: limits.stomp_max_header_bytes,
            // No body can be larger than the frame that carries it.
            max_body_bytes: limits.max_body_bytes.min(limits.max_frame_bytes as usize),
        });
        // Frames, and word when those read so far are all handled (see the `StreamHandler`).
        ctx.add_stream(MarkIdle::new(FrameReader::new(
            read,
            codec,
            window.clone(),
            budget,
            Duration::from_millis(limits.frame_read_timeout_ms),
        )));
        ctx.run_later(
            Duration::from_millis(limits.handshake_timeout_ms),
            |act, ctx| {
                if act.session.is_none() {
                    act.fail(Failure::new("no CONNECT within the handshake timeout"), ctx);
                }
            },
        );
        let id = ConnectionId::next();
        let connection_id = format!("{}.s{}", config.broker.name, id.0);
        StompConnectionActor {
            id,
            message_id_prefix: format!("{connection_id}-"),
            connection_id,
            peer,
            broker_name: config.broker.name,
            limits,
            sink,
            registry,
            resends,
            session: None,
            subscriptions: SharedSubscriptions::default(),
            window,
            next_number: 1,
            pending: HashMap::new(),
            batch: None,
            receipts: Receipts::default(),
            disconnecting: None,
            commits: HashMap::new(),
            transactions: HashMap::new(),
            temporaries: HashMap::new(),
            last_destination: None,
            read_since_check: false,
        }
    }

    fn next(&mut self) -> u64 {
        let n = self.next_number;
        self.next_number += 1;
        n
    }

    fn write(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) {
        let mut buf = BytesMut::new();
        encode_into(frame, &mut buf);
        if self.sink.send(buf.freeze()).is_err() {
            ctx.stop();
        }
    }

    /// Sends an ERROR naming the problem, closes the connection, and stops.
    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        tracing::warn!(peer = %self.peer, "closing STOMP connection: {}", failure.message);
        self.sink.close(Some(error_bytes(&failure)));
        ctx.stop();
    }

    fn session(&self) -> Result<&Addr<SessionActor<StompWire>>, Failure> {
        self.session
            .as_ref()
            .ok_or_else(|| Failure::new("CONNECT first"))
    }

    fn on_frame(&mut self, frame: StompFrame, ctx: &mut Context<Self>) {
        if self.disconnecting.is_some() {
            return; // nothing after DISCONNECT
        }
        let receipt = frame.get("receipt").map(str::to_string);
        let result = if self.session.is_none() {
            match frame.command {
                Command::Connect | Command::Stomp => self.on_connect(&frame, ctx),
                other => Err(Failure::new(format!(
                    "expected CONNECT first, got {}",
                    other.as_str()
                ))),
            }
        } else {
            self.on_command(frame, ctx)
        };
        if let Err(mut failure) = result {
            // STOMP 1.2: an ERROR caused by a frame with a receipt carries its receipt-id.
            failure.headers.extend(receipt.map(|r| ("receipt-id", r)));
            self.fail(failure, ctx);
        }
    }

    fn on_connect(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        let accepted = frame.get("accept-version").unwrap_or("1.0");
        let version = VERSIONS
            .iter()
            .rev()
            .find(|v| accepted.split(',').any(|a| a.trim() == **v))
            .ok_or_else(|| Failure {
                message: format!(
                    "unsupported STOMP version `{accepted}`; this broker speaks {}",
                    VERSIONS.join(",")
                ),
                // STOMP 1.2, protocol negotiation: the versions the server supports.
                headers: vec![("version", VERSIONS.join(","))],
            })?;
        let ours = self.limits.stomp_heartbeat_ms;
        let (client_sends, client_wants) = parse_heartbeat(frame.get("heart-beat"))?;
        let wire = StompWire {
            sink: self.sink.clone(),
            subscriptions: self.subscriptions.clone(),
            connection: ctx.address().recipient(),
        };
        let session = SessionActor::new(
            SESSION,
            self.id,
            AckMode::Auto,
            wire,
            self.registry.clone(),
            self.limits.clone(),
            self.resends.clone(),
        )
        .start();
        self.session = Some(session);
        let connected = StompFrame::new(Command::Connected)
            .header("version", *version)
            .header("heart-beat", format!("{ours},{ours}"))
            .header("session", self.connection_id.clone())
            .header(
                "server",
                format!(
                    "actormq/{} ({})",
                    env!("CARGO_PKG_VERSION"),
                    self.broker_name
                ),
            );
        self.write(&connected, ctx);

        if ours > 0 && client_wants > 0 {
            let every = Duration::from_millis(ours.max(client_wants));
            ctx.run_interval(every, |act, _ctx| {
                let _ = act.sink.send(Bytes::from_static(b"\n"));
            });
        }
        if ours > 0 && client_sends > 0 {
            let within = Duration::from_millis(
                ours.max(client_sends) + self.limits.stomp_heartbeat_grace_ms,
            );
            let mut last_read = Instant::now();
            ctx.run_interval(within / 4, move |act, ctx| {
                if std::mem::take(&mut act.read_since_check) {
                    last_read = Instant::now();
                } else if last_read.elapsed() > within {
                    act.fail(
                        Failure::new(format!(
                            "no heart-beat from the client within {} ms",
                            within.as_millis()
                        )),
                        ctx,
                    );
                }
            });
        }
        tracing::debug!(peer = %self.peer, version, "STOMP client connected");
        Ok(())
    }

    fn on_command(&mut self, frame: StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        // Everything else keeps its order after the SENDs before it.
        if frame.command != Command::Send {
            self.flush_sends()?;
        }
        match frame.command {
            Command::Send => self.on_send(frame, None, ctx),
            Command::Subscribe => self.on_subscribe(frame, ctx),
            Command::Unsubscribe => self.on_unsubscribe(&frame, ctx),
            Command::Ack | Command::Nack => self.on_ack(frame, ctx),
            Command::Begin => self.on_begin(&frame, ctx),
            Command::Commit => self.on_commit(&frame, ctx),
            Command::Abort => self.on_abort(&frame, ctx),
            Command::Disconnect => {
                // Every earlier frame's work ends: a send the queue cannot take fails after
                // the send timeout, with an ERROR instead of this receipt.
                self.disconnecting = Some(frame.get("receipt").map(str::to_string));
                self.finish_disconnect(ctx);
                Ok(())
            }
            Command::Connect | Command::Stomp => Err(Failure::new("already connected")),
            other @ (Command::Connected | Command::Message | Command::Receipt | Command::Error) => {
                Err(Failure::new(format!(
                    "a client may not send {}",
                    other.as_str()
                )))
            }
        }
    }

    fn on_unsubscribe(
        &mut self,
        frame: &StompFrame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Failure> {
        let id = frame
            .get("id")
            .or(frame.get("destination"))
            .ok_or_else(|| Failure::new("UNSUBSCRIBE needs an id header"))?;
        let consumer = self
            .subscriptions
            .lock()
            .remove(id)
            .ok_or_else(|| Failure::new(format!("no subscription `{id}`")))?;
        self.session()?
            .do_send(SessionCommand::Unsubscribe { consumer });
        self.answer(frame, ctx);
        Ok(())
    }

    /// ACK or NACK, now or (in a transaction) at COMMIT.
    fn on_ack(&mut self, frame: StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        if let Some(tx) = frame.get("transaction") {
            let held = if frame.command == Command::Ack {
                Held::Ack(frame.clone())
            } else {
                Held::Nack(frame.clone())
            };
            self.transaction(tx)?.held.push(held);
        } else if let (Command::Ack, Some(receipt)) = (frame.command, frame.get("receipt")) {
            // An ACK's RECEIPT means stored: after a crash those messages do not come back.
            let key = self.next();
            self.settle(&frame, Some(key))?;
            self.pending.insert(key, Pending { commit: None });
            self.receipt_later(key, vec![receipt.to_string()]);
            return Ok(());
        } else {
            self.settle(&frame, None)?;
        }
        self.answer(&frame, ctx);
        Ok(())
    }

    fn on_begin(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        let tx = transaction_name(frame)?;
        if self.transactions.contains_key(tx) {
            return Err(Failure::new(format!(
                "transaction `{tx}` has already begun"
            )));
        }
        self.transactions
            .insert(tx.to_string(), Transaction::default());
        self.answer(frame, ctx);
        Ok(())
    }

    /// Applies what the transaction held, in order; its RECEIPT waits for every send.
    fn on_commit(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        let tx = transaction_name(frame)?.to_string();
        let held = self
            .transactions
            .remove(&tx)
            .ok_or_else(|| Failure::new(format!("unknown transaction `{tx}`")))?
            .held;
        let commit = self.next();
        let sends = held.iter().filter(|h| matches!(h, Held::Send(_))).count();
        self.commits.insert(commit, sends);
        let receipts = frame
            .get("receipt")
            .map(str::to_string)
            .into_iter()
            .collect();
        self.receipt_later(commit, receipts);
        for work in held {
            match work {
                Held::Send(send) => self.on_send(send, Some(commit), ctx)?,
                Held::Ack(ack) | Held::Nack(ack) => self.settle(&ack, None)?,
            }
        }
        self.commit_progress(commit, ctx);
        Ok(())
    }

    fn on_abort(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        let tx = transaction_name(frame)?;
        self.transactions
            .remove(tx)
            .ok_or_else(|| Failure::new(format!("unknown transaction `{tx}`")))?;
        self.answer(frame, ctx);
        Ok(())
    }

    /// Answers a frame's `receipt` header (frames with nothing to wait for), after the
    /// RECEIPTs of earlier frames.
    fn answer(&mut self, frame: &StompFrame, ctx: &mut Context<Self>) {
        if let Some(receipt) = frame.get("receipt") {
            self.receipt_now(receipt.to_string(), ctx);
        }
    }

    /// `receipts` are answered once the work `key` is done, in the order frames came.
    fn receipt_later(&mut self, key: u64, receipts: Vec<String>) {
        self.receipts.later(key, receipts);
    }

    fn receipt_now(&mut self, receipt: String, ctx: &mut Context<Self>) {
        self.receipts.now(receipt);
        self.write_receipts(ctx);
    }

    /// The work `key` is done: its RECEIPTs go once those before them have.
    fn receipt_done(&mut self, key: u64, ctx: &mut Context<Self>) {
        self.receipts.done(key);
        self.write_receipts(ctx);
    }

    fn write_receipts(&mut self, ctx: &mut Context<Self>) {
        for receipt in self.receipts.ready() {
            self.write(&receipt_frame(&receipt), ctx);
        }
    }

    /// After DISCONNECT: once every earlier frame's work is done (a persistent SEND is
    /// stored), its RECEIPT goes last and the connection closes.
    fn finish_disconnect(&mut self, ctx: &mut Context<Self>) {
        let Some(receipt) = &self.disconnecting else {
            return;
        };
        if !self.pending.is_empty() {
            return;
        }
        let last = receipt.as_ref().map(|r| {
            let mut buf = BytesMut::new();
            encode_into(&receipt_frame(r), &mut buf);
            buf.freeze()
        });
        self.write_receipts(ctx);
        self.sink.close(last);
        ctx.stop();
    }

    fn transaction(&mut self, tx: &str) -> Result<&mut Transaction, Failure> {
        self.transactions
            .get_mut(tx)
            .ok_or_else(|| Failure::new(format!("unknown transaction `{tx}`")))
    }

    fn on_send(
        &mut self,
        frame: StompFrame,
        commit: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<(), Failure> {
        if commit.is_none()
            && let Some(tx) = frame.get("transaction")
        {
            let tx = tx.to_string();
            let receipt = frame.get("receipt").map(str::to_string);
            // Its RECEIPT must not overtake those of SENDs read before it.
            self.flush_sends()?;
            let limit = self.limits.max_frame_bytes as usize;
            let transaction = self.transaction(&tx)?;
            transaction.bytes += frame.body.len();
            if transaction.bytes > limit {
                return Err(Failure::new(format!(
                    "transaction `{tx}` holds more than {limit} bytes of messages: commit smaller transactions"
                )));
            }
            transaction.held.push(Held::Send(frame));
            if let Some(receipt) = receipt {
                self.receipt_now(receipt, ctx);
            }
            return Ok(());
        }
        let name = frame
            .get("destination")
            .ok_or_else(|| Failure::new("SEND needs a destination header"))?;
        let destination = self.destination(name, false, ctx)?;
        let reply_to = match frame.get("reply-to") {
            Some(reply_to) => Some(self.destination(reply_to, true, ctx)?),
            None => None,
        };
        let now = self
            .batch
            .as_ref()
            .map_or_else(now_millis, |batch| batch.read_at);
        let mut message = message_from(&frame, reply_to, now)?;
        let n = self.next();
        message.id = numbered(&self.message_id_prefix, n);
        let permit = self.window.take(footprint(&message));
        // Inside a transaction the COMMIT is what is confirmed: no duplicate detection.
        let origin = match commit {
            None => origin_from(&frame)?,
            Some(_) => None,
        };
        if commit.is_none() && origin.is_none() {
            return self.batch_send(destination, message, permit, frame.get("receipt"));
        }
        // Alone: a send with an origin is kept once, whatever else is batched.
        self.flush_sends()?;
        let receipt = self.next();
        self.pending.insert(receipt, Pending { commit });
        if commit.is_none() {
            let receipts = frame
                .get("receipt")
                .map(str::to_string)
                .into_iter()
                .collect();
            self.receipt_later(receipt, receipts);
        }
        self.session()?.do_send(SessionCommand::Send {
            destination,
            receipt: Some(receipt),
            messages: vec![message],
            permit,
            origin,
        });
        Ok(())
    }

    /// Adds a SEND to the batch, which is passed on once the frames read so far are handled
    /// (or sooner: another destination, a full batch, any other frame).
    fn batch_send(
        &mut self,
        destination: Destination,
        message: Message,
        permit: WindowPermit,
        receipt: Option<&str>,
    ) -> Result<(), Failure> {
        let full = self.batch.as_ref().is_some_and(|batch| {
            batch.destination != destination
                || batch.messages.len() >= self.limits.max_deliveries_per_frame
        });
        if full {
            self.flush_sends()?;
        }
        let batch = self.batch.get_or_insert_with(|| SendBatch {
            destination,
            read_at: message.timestamp,
            messages: Vec::new(),
            receipts: Vec::new(),
            permit: WindowPermit::default(),
        });
        batch.messages.push(message);
        batch.receipts.extend(receipt.map(str::to_string));
        batch.permit.absorb(permit);
        Ok(())
    }

    /// Passes the batched SENDs to the session; their RECEIPTs follow its answer.
    fn flush_sends(&mut self) -> Result<(), Failure> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let receipt = self.next();
        self.pending.insert(receipt, Pending { commit: None });
        self.receipt_later(receipt, batch.receipts);
        self.session()?.do_send(SessionCommand::Send {
            destination: batch.destination,
            receipt: Some(receipt),
            messages: batch.messages,
            permit: batch.permit,
            origin: None,
        });
        Ok(())
    }

    fn on_subscribe(&mut self, frame: StompFrame, ctx: &mut Context<Self>) -> Result<(), Failure> {
        let name = frame
            .get("destination")
            .ok_or_else(|| Failure::new("SUBSCRIBE needs a destination header"))?;
        let id = frame.get("id").unwrap_or(name).to_string();
        if self.subscriptions.lock().contains(&id) {
            return Err(Failure::new(format!("subscription `{id}` already exists")));
        }
        if frame.get("selector").is_some() {
            return Err(Failure::new("selectors are not supported yet"));
        }
        let ack_header = frame.get("ack").unwrap_or("auto");
        let ack = AckKind::parse(ack_header)
            .ok_or_else(|| Failure::new(format!("unknown ack mode `{ack_header}`")))?;
        let prefetch = match frame
            .get("activemq.prefetchSize")
            .or(frame.get("prefetch-count"))
        {
            Some(p) => p
                .trim()
                .parse::<u32>()
                .map_err(|_| Failure::new(format!("prefetch `{p}` is not a number")))?,
            None => self.limits.default_prefetch,
        };
        let destination = self.destination(name, true, ctx)?;
        let consumer = self.next() as u32;
        self.subscriptions.lock().insert(consumer, id, ack);
        let receipt = self.next();
        self.pending.insert(receipt, Pending { commit: None });
        self.receipt_later(
            receipt,
            frame
                .get("receipt")
                .map(str::to_string)
                .into_iter()
                .collect(),
        );
        self.session()?.do_send(SessionCommand::Subscribe {
            consumer,
            destination,
            prefetch,
            receipt,
        });
        Ok(())
    }

    /// ACK or NACK: (consumer, tags) to settle, cumulative for `client` subscriptions; an
    /// ACK with `stored` is answered (that internal receipt) once the removals are durable.
    fn settle(&mut self, frame: &StompFrame, stored: Option<u64>) -> Result<(), Failure> {
        let tags = {
            let mut table = self.subscriptions.lock();
            let (consumer, tag) = match frame.get("id") {
                Some(id) => parse_ack_id(id)
                    .ok_or_else(|| Failure::new(format!("unknown ack id `{id}`")))?,
                None => {
                    // STOMP 1.0/1.1: message-id, and subscription (1.1).
                    let message_id = frame.get("message-id").ok_or_else(|| {
                        Failure::new(format!("{} needs an id header", frame.command.as_str()))
                    })?;
                    let in_subscription = frame.get("subscription").and_then(|s| {
                        let (consumer, subscription) = table.by_id(s)?;
                        subscription
                            .unacked
                            .iter()
                            .find(|(_, m)| m == message_id)
                            .map(|(tag, _)| (consumer, *tag))
                    });
                    in_subscription
                        .or_else(|| table.find_unacked(message_id))
                        .ok_or_else(|| {
                            Failure::new(format!("no unacknowledged message `{message_id}`"))
                        })?
                }
            };
            let subscription = table.by_consumer(consumer).ok_or_else(|| {
                Failure::new(format!("no subscription for ack id `{consumer}:{tag}`"))
            })?;
            let Some(position) = subscription.unacked.iter().position(|(t, _)| *t == tag) else {
                return Err(Failure::new(format!(
                    "message `{consumer}:{tag}` is not waiting for an acknowledgement"
                )));
            };
            let tags: Vec<u64> = match subscription.ack {
                AckKind::Client => subscription
                    .unacked
                    .drain(..=position)
                    .map(|(t, _)| t)
                    .collect(),
                _ => subscription
                    .unacked
                    .remove(position)
                    .map(|(t, _)| t)
                    .into_iter()
                    .collect(),
            };
            tags.into_iter().map(|t| (consumer, t)).collect()
        };
        let command = if frame.command == Command::Nack {
            SessionCommand::Release { releases: tags }
        } else {
            SessionCommand::Ack {
                acks: tags,
                receipt: stored,
            }
        };
        self.session()?.do_send(command);
        Ok(())
    }

    /// A STOMP destination name as a broker destination. Temporary names the client made
    /// up are created for this connection when `create` is set (SUBSCRIBE, reply-to).
    fn destination(
        &mut self,
        name: &str,
        create: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Destination, Failure> {
        let (kind, rest) = if let Some(rest) = name.strip_prefix("/queue/") {
            (DestinationKind::Queue, rest)
        } else if let Some(rest) = name.strip_prefix("/topic/") {
            (DestinationKind::Topic, rest)
        } else if let Some(rest) = name.strip_prefix("/temp-queue/") {
            (DestinationKind::TempQueue, rest)
        } else if let Some(rest) = name.strip_prefix("/temp-topic/") {
            (DestinationKind::TempTopic, rest)
        } else {
            return Err(Failure::new(format!(
                "unknown destination `{name}`: use /queue/, /topic/, /temp-queue/ or /temp-topic/"
            )));
        };
        if rest.is_empty() {
            return Err(Failure::new(format!("destination `{name}` has no name")));
        }
        if !matches!(
            kind,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        ) {
            // A producer mostly sends to one destination: parsed once, then shared.
            if let Some(last) = &self.last_destination
                && last.kind() == kind
                && last.name() == rest
            {
                return Ok(last.clone());
            }
            let destination = Destination::with_kind(kind, rest);
            self.last_destination = Some(destination.clone());
            return Ok(destination);
        }
        if let Some(found) = self.temporaries.get(&(kind, rest.to_string())) {
            return Ok(found.clone());
        }
        // Someone's full temporary name (from a reply-to), or one of ours to create.
        let is_full_name = rest.contains('.') && !create;
        if is_full_name || !create {
            return Ok(Destination::with_kind(kind, rest));
        }
        let created = Destination::with_kind(kind, &format!("{}.{rest}", self.connection_id));
        self.temporaries
            .insert((kind, rest.to_string()), created.clone());
        // Held: nothing else from this client is handled until the queue exists.
        let create = self.registry.send(CreateTemporary {
            destination: created.clone(),
            owner: self.id,
        });
        ctx.wait(create.into_actor(self).map(|result, act, ctx| {
            if let Ok(Err(e)) | Err(e) =
                result.map_err(|e| DestinationError::Unavailable(e.to_string()))
            {
                act.fail(
                    Failure::new(format!("cannot create a temporary destination: {e}")),
                    ctx,
                );
            }
        }));
        Ok(created)
    }

    /// One send of a COMMIT was answered (or none were pending): answer the COMMIT once all are.
    fn commit_progress(&mut self, commit: u64, ctx: &mut Context<Self>) {
        if self.commits.get(&commit) == Some(&0) {
            self.commits.remove(&commit);
            self.receipt_done(commit, ctx);
        }
    }
}

impl Actor for StompConnectionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // SENDs read before the connection ended still go (as they would unbatched).
        let _ = self.flush_sends();
        if let Some(session) = self.session.take() {
            session.do_send(Shutdown);
        }
        self.registry.do_send(DropTemporaries(self.id));
        self.sink.close(None);
        tracing::debug!(peer = %self.peer, "STOMP connection closed");
    }
}

/// Each frame is handled as it comes (a SEND's bytes charged to the send window before the
/// next is read); the SENDs batched from them go to the session when the reader has
/// nothing more ready ([`Reading::Idle`]) — one enqueue, one dispatch and one write of
/// MESSAGEs for all that arrived together. (Flushed at actix's next turn instead, which
/// comes after 16 stream items, a batch held about 16 messages.)
impl StreamHandler<Reading<Result<Inbound, ReadError<StompError>>>> for StompConnectionActor {
    fn handle(
        &mut self,
        reading: Reading<Result<Inbound, ReadError<StompError>>>,
        ctx: &mut Context<Self>,
    ) {
        let item = match reading {
            Reading::Item(item) => item,
            Reading::Idle => {
                if let Err(failure) = self.flush_sends() {
                    self.fail(failure, ctx);
                }
                return;
            }
        };
        self.read_since_check = true;
        match item {
            Ok(Inbound::Frame(frame)) => self.on_frame(frame, ctx),
            Ok(Inbound::Heartbeat) => {}
            Err(ReadError::Decode(StompError::Io(e))) => {
                tracing::debug!(peer = %self.peer, "STOMP read failed: {e}");
                ctx.stop();
            }
            Err(e) => self.fail(Failure::from(e), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StompEvent> for StompConnectionActor {
    type Result = ();

    fn handle(&mut self, event: StompEvent, ctx: &mut Context<Self>) {
        match event {
            StompEvent::Receipt { receipt, result } => {
                let Some(pending) = self.pending.remove(&receipt) else {
                    return;
                };
                if let Err(e) = result {
                    // The frame (or COMMIT) this answers is named by its first receipt.
                    let key = pending.commit.unwrap_or(receipt);
                    let receipt_id = self.receipts.first_of(key);
                    let mut failure = Failure::from(e);
                    failure
                        .headers
                        .extend(receipt_id.map(|r| ("receipt-id", r)));
                    return self.fail(failure, ctx);
                }
                self.receipt_done(receipt, ctx);
                if let Some(commit) = pending.commit {
                    if let Some(remaining) = self.commits.get_mut(&commit) {
                        *remaining = remaining.saturating_sub(1);
                    }
                    self.commit_progress(commit, ctx);
                }
                self.finish_disconnect(ctx);
            }
            StompEvent::Evicted { reason, .. } => self.fail(Failure::new(reason), ctx),
        }
    }
}

impl Handler<WriterStopped> for StompConnectionActor {
    type Result = ();

    fn handle(&mut self, WriterStopped(reason): WriterStopped, ctx: &mut Context<Self>) {
        if !matches!(reason, CloseReason::Finished | CloseReason::Io(_)) {
            tracing::warn!(peer = %self.peer, "closing STOMP connection: {reason}");
        }
        ctx.stop();
    }
}
