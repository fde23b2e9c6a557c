//! [`Connection`]: a socket to a broker, its handshake, and the driver task that routes
//! what the broker sends. With a `failover:` URL the driver also reconnects: when the
//! socket is lost it tries the list (with back-off) and gives the new socket the
//! connection's sessions, consumers and unanswered requests again (see [`super::shared`]).
//!
//! What a reconnect restores, and how:
//! - **Sends** not yet confirmed are written again. Each carries its producer's origin
//!   (`<connection instance>:<session>`, a sequence number), so a broker that had kept one
//!   — the same broker, or a new master that recovered it — confirms it without keeping
//!   it twice.
//! - **Commits** whose confirmation was lost: the driver asks the broker (`Resolve`)
//!   whether it was kept. Kept: `commit` returns `Ok`. Not kept: written again, unless it
//!   acknowledged deliveries of the old socket — those come again, marked redelivered, so
//!   the commit fails with [`ClientError::TransactionRolledBack`].
//! - **Consumers** subscribe again; what they had buffered from the old socket is dropped
//!   (the broker delivers it again, marked redelivered), and acknowledgements of old
//!   deliveries are never written to the new socket (their tags mean nothing there).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use super::ClientError;
use super::session::Session;
use super::shared::{
    Command, ConnectionEvent, Core, Link, Pending, Replay, Reply, Routed, SessionInner, Shared,
    StatReply, State,
};
use super::url::{BrokerUrl, FailoverOptions};
use crate::config::Limits;
use crate::message::{AckMode, Destination};
use crate::net::writer::{FrameSink, WriterLimits, writer};
use crate::protocol::{
    DestinationStat, Frame, FrameCodec, MemberStat, PROTOCOL_VERSION, ProtocolError, encode_frame,
};

/// Settings of a connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Sent in `Hello`; shows up in the broker's logs.
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long `close` waits for the broker to acknowledge the disconnect.
    pub close_timeout: Duration,
    pub max_frame_bytes: u32,
    pub max_pending_write_bytes: usize,
    pub write_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        let limits = Limits::default();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectOptions {
            client_id: format!(
                "client-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_frame_bytes: limits.max_frame_bytes,
            max_pending_write_bytes: limits.max_pending_write_bytes,
            write_timeout: Duration::from_millis(limits.write_timeout_ms),
        }
    }
}

/// A connection to a broker (or, with a `failover:` URL, to whichever broker of a list
/// serves). Cheap to clone; the socket closes when `close` is called or every clone,
/// session, producer and consumer is dropped.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    close_timeout: Duration,
}

/// A socket after its handshake.
struct Opened {
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    sink: FrameSink,
    writer: JoinHandle<()>,
    broker: String,
    connection_id: String,
    max_frame_bytes: usize,
}

/// Connects to `addr` and says hello.
async fn open(addr: &str, options: &ConnectOptions) -> Result<Opened, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| connect_error(e.to_string()))?;
    let (read, write) = stream.into_split();
    let max_frame_bytes = options.max_frame_bytes as usize;
    let (sink, run_writer) = writer(
        write,
        WriterLimits {
            max_pending_bytes: options.max_pending_write_bytes,
            batch_bytes: Limits::default().write_batch_bytes,
            write_timeout: options.write_timeout,
            slow_consumer_frame: None,
        },
    );
    let writer_task = tokio::spawn(async move {
        run_writer.await;
    });
    // A large frame is read into one allocation reserved for it, which its long bodies
    // then keep instead of being copied out.
    let codec = FrameCodec::new(max_frame_bytes)
        .reserving_whole_frames()
        .sharing_bodies();
    let mut reader = FramedRead::new(read, codec);
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        client_id: options.client_id.clone(),
    };
    sink.send(encode_frame(&hello, max_frame_bytes)?)?;
    let welcome = tokio::time::timeout(options.connect_timeout, reader.next())
        .await
        .map_err(|_| ClientError::Handshake("no answer to Hello".into()))?;
    // Frames the broker would refuse are refused here, before they cost the connection.
    match welcome {
        Some(Ok(Frame::Welcome {
            broker,
            connection_id,
            max_frame_bytes: broker_max,
            ..
        })) => Ok(Opened {
            reader,
            sink,
            writer: writer_task,
            broker,
            connection_id,
            max_frame_bytes: max_frame_bytes.min(broker_max as usize),
        }),
        Some(Ok(Frame::Error { code, message })) => Err(ClientError::Broker { code, message }),
        Some(Ok(other)) => Err(ClientError::Handshake(format!(
            "expected Welcome, got {}",
            other.name()
        ))),
        Some(Err(e)) => Err(ClientError::Handshake(
            foreign_protocol(addr, reader.read_buffer()).unwrap_or_else(|| e.to_string()),
        )),
        None => Err(ClientError::Handshake(
            foreign_protocol(addr, reader.read_buffer())
                .unwrap_or_else(|| "the broker closed the connection".into()),
        )),
    }
}

/// What a server that answered Hello with text is, said plainly (rather than "a frame of
/// 1,163,022,927 bytes"): another protocol's port.
fn foreign_protocol(addr: &str, answer: &[u8]) -> Option<String> {
    let head = &answer[..answer.len().min(64)];
    if head.len() < 4 || !head.iter().take(4).all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let text = String::from_utf8_lossy(head);
    let first = text.lines().next().unwrap_or_default().trim();
    let what = if first.starts_with("HTTP/") {
        "an HTTP server"
    } else if matches!(first, "ERROR" | "CONNECTED") {
        "a STOMP port (use actormq's native port, 7670 by default, or a stomp:// URL with bench)"
    } else if first.starts_with("INFO ") || first.starts_with("-ERR") {
        "a NATS server"
    } else if first.starts_with("AMQP") {
        "an AMQP broker"
    } else {
        "not an actormq broker"
    };
    Some(format!(
        "{addr} does not speak actormq's native protocol: it answered `{first}` ({what})"
    ))
}

/// A number no other connection object of any process is likely to draw.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// The order to try `addrs` in, this round.
fn order(addrs: &[String], randomize: bool, round: u32) -> Vec<String> {
    let mut order = addrs.to_vec();
    if randomize && order.len() > 1 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(round);
        let mut seed = hasher.finish();
        for i in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
    }
    order
}

/// Tries each address of the list once; the first that serves wins.
async fn round(
    addrs: &[String],
    options: &ConnectOptions,
    failover: &FailoverOptions,
    round_no: u32,
) -> Result<(String, Opened), ClientError> {
    let mut last = None;
    for addr in order(addrs, failover.randomize, round_no) {
        match open(&addr, options).await {
            Ok(opened) => return Ok((addr, opened)),
            Err(e) => {
                tracing::debug!(%addr, "failover: cannot connect: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ClientError::InvalidUrl("an empty list".into())))
}

impl Connection {
    /// Connects with default options.
    pub async fn connect(url: &str) -> Result<Connection, ClientError> {
        Connection::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects to `url`: `tcp://HOST:PORT`, or `failover:(tcp://…,tcp://…)?OPTIONS`
    /// (ActiveMQ's options, see [`FailoverOptions`]), which connects to the first broker of
    /// the list that serves and reconnects by itself when it is lost.
    pub async fn connect_with(
        url: &str,
        options: ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let target = BrokerUrl::parse(url)?;
        let (addr, opened) = match &target.failover {
            None => {
                let addr = target.addrs[0].clone();
                let opened = open(&addr, &options).await?;
                (addr, opened)
            }
            Some(failover) => {
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    match round(&target.addrs, &options, failover, attempt).await {
                        Ok(found) => break found,
                        Err(e) => {
                            let limit = failover.startup_max_reconnect_attempts;
                            if limit >= 0 && i64::from(attempt) > limit {
                                return Err(e);
                            }
                            if attempt == 1 {
                                tracing::warn!(
                                    "failover: no broker of {url} serves yet ({e}); trying again"
                                );
                            }
                            tokio::time::sleep(failover.delay(attempt)).await;
                        }
                    }
                }
            }
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            link: RwLock::new(Link {
                sink: opened.sink.clone(),
                generation: 1,
                up: true,
                url: addr,
                broker: opened.broker.clone(),
            }),
            live: AtomicU64::new((1 << 1) | 1),
            state: Mutex::new(State::default()),
            max_frame_bytes: opened.max_frame_bytes,
            client_id: options.client_id.clone(),
            connection_id: opened.connection_id.clone(),
            next_id: AtomicU32::new(1),
            next_request: AtomicU64::new(1),
            failure: Mutex::new(None),
            failover: target.failover.clone(),
            instance: instance_id(),
            events: broadcast::channel(64).0,
        });
        let driver = Driver {
            core: core.clone(),
            commands: command_rx,
            reader: opened.reader,
            writer: opened.writer,
            addrs: target.addrs,
            options: options.clone(),
        };
        tokio::spawn(driver.run());
        Ok(Connection {
            shared: Arc::new(Shared { core, commands }),
            close_timeout: options.close_timeout,
        })
    }

    /// Connects to the broker `destination` lives on, as Kafka clients go to a partition's
    /// leader: asks the broker at `url` (any member of the cluster) and connects to the
    /// home directly, which saves each message a hop over the bridge. On a lone broker, or
    /// when `url` is the home, this is [`Connection::connect`].
    pub async fn connect_to_home(
        url: &str,
        destination: &Destination,
    ) -> Result<Connection, ClientError> {
        let first = Connection::connect(url).await?;
        let home = match first.locate(destination).await? {
            Some(home) if home.name != first.broker_name() => home,
            _ => return Ok(first),
        };
        first.close().await?;
        Connection::connect(&format!("tcp://{}", home.client_addr)).await
    }

    /// The name of the broker this connection is connected to now (from its `Welcome`).
    pub fn broker_name(&self) -> String {
        self.shared.broker()
    }

    /// The address (`host:port`) of the broker this connection is connected to now.
    pub fn broker_addr(&self) -> String {
        self.shared.link().url.clone()
    }

    /// The largest frame this connection sends: the smaller of this client's and the
    /// broker's limits. A batch of messages must fit in one.
    pub fn max_frame_bytes(&self) -> usize {
        self.shared.max_frame_bytes
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// What happens to a failover connection: `Disconnected`, `Reconnected`, `GaveUp`
    /// (also logged). A plain connection has none. Events before the call are not seen;
    /// a receiver that falls more than 64 behind misses the oldest.
    pub fn events(&self) -> impl Stream<Item = ConnectionEvent> + Send + 'static {
        let rx = self.shared.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Opens a session. With `Client` or `Individual` acknowledgement the application
    /// acknowledges with [`Session::acknowledge`].
    pub fn session(&self, ack_mode: AckMode) -> Result<Session, ClientError> {
        let id = self.shared.next_id();
        self.shared.open_session(id, ack_mode)?;
        Ok(Session::new(Arc::new(SessionInner::new(
            id,
            ack_mode,
            self.shared.clone(),
        ))))
    }

    /// Counters of every destination on the broker.
    pub async fn stat(&self) -> Result<Vec<DestinationStat>, ClientError> {
        Ok(self.stat_with_store().await?.destinations)
    }

    /// The cluster's members as this broker sees them (empty on a lone broker).
    pub async fn members(&self) -> Result<Vec<MemberStat>, ClientError> {
        Ok(self.stat_with_store().await?.members)
    }

    /// The member `destination` lives on (`None` on a lone broker: this one). Its
    /// `client_addr` is where to connect to use the destination without a hop.
    pub async fn locate(
        &self,
        destination: &Destination,
    ) -> Result<Option<MemberStat>, ClientError> {
        let request = self.shared.next_request();
        let (reply, rx) = oneshot::channel();
        let frame = Frame::Locate {
            request,
            destination: destination.clone(),
        };
        self.shared
            .register(request, &frame, Replay::Resend, Reply::Located(reply), None)?;
        rx.await.map_err(|_| self.shared.failure())
    }

    /// Counters of every destination, and of the broker's journal if it has one.
    pub async fn stat_with_store(&self) -> Result<StatReply, ClientError> {
        let request = self.shared.next_request();
        let (reply, rx) = oneshot::channel();
        let frame = Frame::StatRequest { request };
        self.shared
            .register(request, &frame, Replay::Resend, Reply::Stat(reply), None)?;
        rx.await.map_err(|_| self.shared.failure())
    }

    /// Acknowledges what consumers have taken, closes every session (the broker
    /// redelivers what was not acknowledged) and waits for the broker to close the socket.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (done, rx) = oneshot::channel();
        if self.shared.commands.send(Command::Close { done }).is_err() {
            return Ok(()); // already closed
        }
        tokio::time::timeout(self.close_timeout + Duration::from_secs(1), rx)
            .await
            .map_err(|_| ClientError::Timeout("the broker to close the connection".into()))?
            .ok();
        Ok(())
    }
}

/// The task that reads the current socket, routes what arrives, and (failover) reconnects.
struct Driver {
    core: Arc<Core>,
    commands: mpsc::UnboundedReceiver<Command>,
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: JoinHandle<()>,
    addrs: Vec<String>,
    options: ConnectOptions,
}

/// How the socket's life ended.
enum Ended {
    /// The socket failed, or the broker ended it.
    Lost(ClientError),
    /// The application closed the connection (or dropped every handle).
    Closed,
}

impl Driver {
    async fn run(mut self) {
        let error = loop {
            let lost = match self.serve().await {
                Ended::Closed => {
                    break ClientError::ConnectionClosed("the connection was closed".into());
                }
                Ended::Lost(error) => error,
            };
            let Some(failover) = self.core.failover.clone() else {
                break lost;
            };
            match self.reconnect(&failover, lost).await {
                Ok(()) => continue,
                Err(error) => break error,
            }
        };
        if let Ok(mut slot) = self.core.failure.lock() {
            *slot = Some(error.clone());
        }
        let link = self.core.link.write().unwrap_or_else(|e| e.into_inner());
        let pending = std::mem::take(&mut self.core.state().pending);
        for (_, request) in pending {
            request.answer(Err(error.clone()));
        }
        for (_, route) in self.core.state().consumers.drain() {
            let _ = route.deliveries.send(Routed::Failed(error.clone()));
        }
        link.sink.close(None);
    }

    /// Reads the current socket until it ends.
    async fn serve(&mut self) -> Ended {
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let done = command.map(|Command::Close { done }| done);
                    self.goodbye().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return Ended::Closed;
                }
                frame = self.reader.next() => {
                    if let Err(error) = self.on_frame(frame) {
                        return Ended::Lost(error);
                    }
                }
            }
        }
    }

    /// Finds a broker again, with back-off; `Err` once the connection is given up.
    async fn reconnect(
        &mut self,
        failover: &FailoverOptions,
        lost: ClientError,
    ) -> Result<(), ClientError> {
        let url = {
            let mut link = self.core.link.write().unwrap_or_else(|e| e.into_inner());
            link.up = false;
            self.core.publish(&link);
            link.sink.close(None);
            link.url.clone()
        };
        self.writer.abort();
        tracing::warn!(%url, "failover: connection lost ({lost}); reconnecting");
        let _ = self.core.events.send(ConnectionEvent::Disconnected {
            url: url.clone(),
            reason: lost.to_string(),
        });
        let since = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.expire(failover, since);
            let found = tokio::select! {
                found = round(&self.addrs, &self.options, failover, attempt) => found,
                command = self.commands.recv() => {
                    if let Some(Command::Close { done }) = command {
                        let _ = done.send(());
                    }
                    return Err(ClientError::ConnectionClosed("the connection was closed".into()));
                }
            };
            match found {
                Ok((addr, opened)) => {
                    self.switch(addr.clone(), opened);
                    tracing::info!(url = %addr, after_ms = since.elapsed().as_millis() as u64, "failover: reconnected");
                    let _ = self
                        .core
                        .events
                        .send(ConnectionEvent::Reconnected { url: addr });
                    return Ok(());
                }
                Err(e) => {
                    let limit = failover.max_reconnect_attempts;
                    if limit >= 0 && i64::from(attempt) > limit {
                        let reason = format!(
                            "no broker of {} could be reached in {attempt} attempts: {e}",
                            self.addrs.join(", ")
                        );
                        tracing::error!("failover: giving up: {reason}");
                        let _ = self.core.events.send(ConnectionEvent::GaveUp {
                            reason: reason.clone(),
                        });
                        return Err(ClientError::GaveUp(reason));
                    }
                    // Waits out the back-off in slices of a quarter of `timeout`, so that a
                    // send fails on time however long the back-off.
                    let until = Instant::now() + failover.delay(attempt);
                    let slice = failover
                        .timeout
                        .map(|t| (t / 4).max(Duration::from_millis(1)));
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        if left.is_zero() {
                            break;
                        }
                        let nap = slice.map_or(left, |s| s.min(left));
                        tokio::select! {
                            _ = tokio::time::sleep(nap) => self.expire(failover, since),
                            command = self.commands.recv() => {
                                if let Some(Command::Close { done }) = command {
                                    let _ = done.send(());
                                }
                                return Err(ClientError::ConnectionClosed("the connection was closed".into()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Requests that have waited longer than `timeout` while disconnected (counted from
    /// the later of their making and the loss, `since`) fail.
    fn expire(&self, failover: &FailoverOptions, since: Instant) {
        let Some(timeout) = failover.timeout else {
            return;
        };
        let expired: Vec<Pending> = {
            let mut state = self.core.state();
            let ids: Vec<u64> = state
                .pending
                .iter()
                .filter(|(_, p)| !matches!(p.replay, Replay::Subscription | Replay::Forget))
                .filter(|(_, p)| p.made.max(since).elapsed() >= timeout)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| state.pending.remove(id))
                .collect()
        };
        for request in expired {
            request.answer(Err(ClientError::Timeout(format!(
                "a broker to reconnect to (failover timeout {} ms)",
                timeout.as_millis()
            ))));
        }
    }

    /// Makes `opened` the connection's socket and gives it the connection's state again.
    fn switch(&mut self, addr: String, opened: Opened) {
        let mut link = self.core.link.write().unwrap_or_else(|e| e.into_inner());
        link.generation += 1;
        link.up = true;
        self.core.publish(&link);
        link.url = addr;
        link.broker = opened.broker;
        link.sink = opened.sink;
        self.reader = opened.reader;
        self.writer = opened.writer;
        let generation = link.generation;
        let mut state = self.core.state();
        let state = &mut *state;
        let write = |frame: &Frame| {
            if let Ok(bytes) = encode_frame(frame, self.core.max_frame_bytes) {
                let _ = link.sink.send(bytes);
            }
        };
        for (&session, &ack_mode) in &state.sessions {
            write(&Frame::OpenSession { session, ack_mode });
        }
        state.resubscribing.clear();
        let mut consumers: Vec<_> = state.consumers.iter().collect();
        consumers.sort_by_key(|(id, _)| **id);
        for (&consumer, route) in consumers {
            let _ = route.deliveries.send(Routed::Reconnected(generation));
            let _ = route.acks.lock().map(|mut acks| acks.clear());
            let _ = link.sink.send(route.subscribe.clone());
            state.resubscribing.insert(route.receipt, consumer);
        }
        state.resolving.clear();
        let forgotten: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.replay, Replay::Forget))
            .map(|(id, _)| *id)
            .collect();
        for id in forgotten {
            if let Some(pending) = state.pending.remove(&id) {
                pending.answer(Err(ClientError::NotAcknowledged(
                    "the connection was lost before the acknowledgement was stored: the \
                     messages come again, marked redelivered"
                        .into(),
                )));
            }
        }
        for (&id, pending) in &state.pending {
            match &pending.replay {
                Replay::Resend => {
                    let _ = link.sink.send_parts(pending.parts.clone());
                }
                Replay::Subscription | Replay::Forget => {}
                Replay::Commit { producer, seq, .. } => {
                    let request = self.core.next_request();
                    state.resolving.insert(request, id);
                    write(&Frame::Resolve {
                        request,
                        producer: producer.clone(),
                        seq: *seq,
                    });
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Frame, ProtocolError>>) -> Result<(), ClientError> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ClientError::ConnectionClosed(
                    "the broker closed the connection".into(),
                ));
            }
        };
        match frame {
            Frame::Deliver { mut deliveries } => {
                let state = self.core.state();
                // A frame's deliveries are usually all for one consumer: one send each run.
                while !deliveries.is_empty() {
                    let consumer = deliveries[0].consumer;
                    let run = deliveries
                        .iter()
                        .position(|d| d.consumer != consumer)
                        .unwrap_or(deliveries.len());
                    let rest = deliveries.split_off(run);
                    // Deliveries for a consumer that is gone are dropped: they were never
                    // acknowledged, so the broker delivers them again elsewhere.
                    if let Some(route) = state.consumers.get(&consumer) {
                        let _ = route.deliveries.send(Routed::Deliveries(deliveries));
                    }
                    deliveries = rest;
                }
            }
            Frame::Receipt { receipt, error } => {
                let result = match error {
                    None => Ok(()),
                    Some(refusal) => Err(ClientError::from(refusal)),
                };
                let mut state = self.core.state();
                if let Some(consumer) = state.resubscribing.remove(&receipt)
                    && !state.pending.contains_key(&receipt)
                {
                    if let Err(e) = result {
                        tracing::warn!(
                            consumer,
                            "failover: a consumer could not subscribe again: {e}"
                        );
                        if let Some(route) = state.consumers.remove(&consumer) {
                            let _ = route.deliveries.send(Routed::Failed(e));
                        }
                    }
                    return Ok(());
                }
                let pending = state.pending.remove(&receipt);
                drop(state);
                if let Some(pending) = pending {
                    pending.answer(result);
                }
            }
            Frame::StatReply {
                request,
                destinations,
                store,
                members,
                master,
            } => {
                let pending = self.core.state().pending.remove(&request);
                if let Some(Pending {
                    reply: Reply::Stat(reply),
                    ..
                }) = pending
                {
                    let _ = reply.send(StatReply {
                        destinations,
                        store,
                        members,
                        master,
                    });
                }
            }
            Frame::Located { request, home } => {
                let pending = self.core.state().pending.remove(&request);
                if let Some(Pending {
                    reply: Reply::Located(reply),
                    ..
                }) = pending
                {
                    let _ = reply.send(home);
                }
            }
            Frame::Resolved { request, kept } => self.on_resolved(request, kept),
            Frame::Error { code, message } => return Err(ClientError::Broker { code, message }),
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected {} frame from the broker",
                    other.name()
                )));
            }
        }
        Ok(())
    }

    /// The broker's answer about a commit whose confirmation was lost.
    fn on_resolved(&mut self, request: u64, kept: bool) {
        let link = self.core.link();
        let mut state = self.core.state();
        let Some(receipt) = state.resolving.remove(&request) else {
            return;
        };
        let has_acks = match state.pending.get(&receipt).map(|p| &p.replay) {
            Some(Replay::Commit { has_acks, .. }) => *has_acks,
            _ => return,
        };
        if !kept && !has_acks {
            // Not kept, and nothing in it depends on the old socket: commit it now.
            if let Some(pending) = state.pending.get(&receipt) {
                let _ = link.sink.send_parts(pending.parts.clone());
            }
            return;
        }
        let Some(pending) = state.pending.remove(&receipt) else {
            return;
        };
        drop(state);
        drop(link);
        pending.answer(if kept {
            Ok(())
        } else {
            Err(ClientError::TransactionRolledBack(
                "the connection was lost before the commit was confirmed, and the broker \
                 had not kept it: its messages are not sent, and the messages it received \
                 come again, marked redelivered"
                    .into(),
            ))
        });
    }

    /// Flushes acknowledgements, sends `Disconnect`, and waits (bounded) for the broker to
    /// close its side, so that everything before it has been processed.
    async fn goodbye(&mut self) {
        {
            let link = self.core.link();
            if !link.up {
                return;
            }
            let state = self.core.state();
            for (&consumer, route) in &state.consumers {
                self.core.flush_acks(&link, consumer, route);
            }
            if let Ok(bytes) = encode_frame(&Frame::Disconnect, self.core.max_frame_bytes) {
                let _ = link.sink.send(bytes);
            }
        }
        let drain = async { while let Some(Ok(_)) = self.reader.next().await {} };
        let _ = tokio::time::timeout(self.options.close_timeout, drain).await;
    }
}
