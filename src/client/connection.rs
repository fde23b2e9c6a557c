//! [`Connection`]: one socket to a broker, its handshake, and the driver task that routes
//! what the broker sends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use super::ClientError;
use super::session::Session;
use super::shared::{Command, ConsumerRoute, SessionInner, Shared, StatReply};
use crate::config::Limits;
use crate::message::{AckMode, Destination};
use crate::net::writer::{FrameSink, WriterLimits, writer};
use crate::protocol::{
    DestinationStat, Frame, FrameCodec, MemberStat, PROTOCOL_VERSION, encode_frame,
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

/// A connection to one broker. Cheap to clone; the socket closes when `close` is called or
/// every clone, session, producer and consumer is dropped.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    broker: String,
    close_timeout: Duration,
}

/// `tcp://host:port` (or `host:port`) → `host:port`.
fn parse_url(url: &str) -> Result<&str, ClientError> {
    let addr = url.strip_prefix("tcp://").unwrap_or(url);
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr),
        _ => Err(ClientError::InvalidUrl(url.to_string())),
    }
}

impl Connection {
    /// Connects with default options.
    pub async fn connect(url: &str) -> Result<Connection, ClientError> {
        Connection::connect_with(url, ConnectOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        options: ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let addr = parse_url(url)?;
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
        let writer_task = tokio::spawn(run_writer);
        let mut reader = FramedRead::new(read, FrameCodec::new(max_frame_bytes));

        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            client_id: options.client_id.clone(),
        };
        sink.send(encode_frame(&hello, max_frame_bytes)?)?;
        let welcome = tokio::time::timeout(options.connect_timeout, reader.next())
            .await
            .map_err(|_| ClientError::Handshake("no answer to Hello".into()))?;
        // Frames the broker would refuse are refused here, before they cost the connection.
        let (broker, connection_id, max_frame_bytes) = match welcome {
            Some(Ok(Frame::Welcome {
                broker,
                connection_id,
                max_frame_bytes: broker_max,
                ..
            })) => (
                broker,
                connection_id,
                max_frame_bytes.min(broker_max as usize),
            ),
            Some(Ok(Frame::Error { code, message })) => {
                return Err(ClientError::Broker { code, message });
            }
            Some(Ok(other)) => {
                return Err(ClientError::Handshake(format!(
                    "expected Welcome, got {}",
                    other.name()
                )));
            }
            Some(Err(e)) => return Err(ClientError::Handshake(e.to_string())),
            None => {
                return Err(ClientError::Handshake(
                    "the broker closed the connection".into(),
                ));
            }
        };

        let (commands, command_rx) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            commands,
            sink: sink.clone(),
            max_frame_bytes,
            client_id: options.client_id,
            connection_id,
            next_id: AtomicU32::new(1),
            next_request: AtomicU64::new(1),
            failure: failure.clone(),
        });
        let driver = Driver {
            reader,
            commands: command_rx,
            sink,
            max_frame_bytes,
            receipts: HashMap::new(),
            stats: HashMap::new(),
            located: HashMap::new(),
            consumers: HashMap::new(),
            deferred: VecDeque::new(),
            close_timeout: options.close_timeout,
        };
        tokio::spawn(async move {
            let error = driver.run().await;
            if let Ok(mut slot) = failure.lock() {
                *slot = Some(error);
            }
            let _ = writer_task.await;
        });
        Ok(Connection {
            shared,
            broker,
            close_timeout: options.close_timeout,
        })
    }

    /// The broker's name, from its `Welcome`.
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

    pub fn broker_name(&self) -> &str {
        &self.broker
    }

    /// The largest frame this connection sends: the smaller of this client's and the
    /// broker's limits. A batch of messages must fit in one.
    pub fn max_frame_bytes(&self) -> usize {
        self.shared.max_frame_bytes
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Opens a session. With `Client` or `Individual` acknowledgement the application
    /// acknowledges with [`Session::acknowledge`].
    pub fn session(&self, ack_mode: AckMode) -> Result<Session, ClientError> {
        let id = self.shared.next_id();
        self.shared.write(&Frame::OpenSession {
            session: id,
            ack_mode,
        })?;
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
        self.shared
            .command(Command::ExpectLocated { request, reply })?;
        self.shared.write(&Frame::Locate {
            request,
            destination: destination.clone(),
        })?;
        rx.await.map_err(|_| self.shared.failure())
    }

    /// Counters of every destination, and of the broker's journal if it has one.
    pub async fn stat_with_store(&self) -> Result<StatReply, ClientError> {
        let request = self.shared.next_request();
        let (reply, rx) = oneshot::channel();
        self.shared
            .command(Command::ExpectStat { request, reply })?;
        self.shared.write(&Frame::StatRequest { request })?;
        rx.await.map_err(|_| self.shared.failure())
    }

    /// Acknowledges what consumers have taken, closes every session (the broker
    /// redelivers what was not acknowledged) and waits for the broker to close the socket.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (done, rx) = oneshot::channel();
        if self.shared.command(Command::Close { done }).is_err() {
            return Ok(()); // already closed
        }
        tokio::time::timeout(self.close_timeout + Duration::from_secs(1), rx)
            .await
            .map_err(|_| ClientError::Timeout("the broker to close the connection".into()))?
            .ok();
        Ok(())
    }
}

/// The task that owns a connection's read half and routing tables.
struct Driver {
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    commands: mpsc::UnboundedReceiver<Command>,
    sink: FrameSink,
    max_frame_bytes: usize,
    receipts: HashMap<u64, oneshot::Sender<Result<(), ClientError>>>,
    stats: HashMap<u64, oneshot::Sender<StatReply>>,
    located: HashMap<u64, oneshot::Sender<Option<MemberStat>>>,
    consumers: HashMap<u32, ConsumerRoute>,
    /// Commands taken from the channel early by `drain_commands`, oldest first.
    deferred: VecDeque<Command>,
    close_timeout: Duration,
}

/// What the driver does after an event.
enum Next {
    Continue,
    Stop(ClientError),
}

impl Driver {
    /// Runs until the connection ends; returns why.
    async fn run(mut self) -> ClientError {
        let error = loop {
            if let Some(command) = self.deferred.pop_front() {
                if let Next::Stop(error) = self.on_command(command).await {
                    break error;
                }
                continue;
            }
            let next = tokio::select! {
                // Commands first: a reply is never read before the command that expects it.
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.goodbye().await;
                        Next::Stop(ClientError::ConnectionClosed("the connection was closed".into()))
                    }
                },
                frame = self.reader.next() => self.on_frame(frame),
            };
            if let Next::Stop(error) = next {
                break error;
            }
        };
        for (_, reply) in self.receipts.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        self.sink.close(None);
        error
    }

    /// Takes in a registration (something a later frame will be routed to); hands any
    /// other command back.
    fn register(&mut self, command: Command) -> Option<Command> {
        match command {
            Command::Expect { receipt, reply } => {
                self.receipts.insert(receipt, reply);
            }
            Command::ExpectStat { request, reply } => {
                self.stats.insert(request, reply);
            }
            Command::ExpectLocated { request, reply } => {
                self.located.insert(request, reply);
            }
            Command::AddConsumer { consumer, route } => {
                self.consumers.insert(consumer, route);
            }
            other => return Some(other),
        }
        None
    }

    async fn on_command(&mut self, command: Command) -> Next {
        let Some(command) = self.register(command) else {
            return Next::Continue;
        };
        match command {
            Command::Expect { .. }
            | Command::ExpectStat { .. }
            | Command::ExpectLocated { .. }
            | Command::AddConsumer { .. } => {}
            Command::RemoveConsumer { consumer } => {
                if let Some(route) = self.consumers.remove(&consumer) {
                    self.flush_acks(consumer, &route);
                    self.write(&Frame::Unsubscribe {
                        session: route.session,
                        consumer,
                    });
                }
            }
            Command::CloseSession { session } => self.write(&Frame::CloseSession { session }),
            Command::Close { done } => {
                self.goodbye().await;
                let _ = done.send(());
                return Next::Stop(ClientError::ConnectionClosed(
                    "the connection was closed".into(),
                ));
            }
        }
        Next::Continue
    }

    fn on_frame(&mut self, frame: Option<Result<Frame, crate::protocol::ProtocolError>>) -> Next {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Next::Stop(e.into()),
            None => {
                return Next::Stop(ClientError::ConnectionClosed(
                    "the broker closed the connection".into(),
                ));
            }
        };
        match frame {
            Frame::Deliver { mut deliveries } => {
                // A frame's deliveries are usually all for one consumer: one send each run.
                while !deliveries.is_empty() {
                    let consumer = deliveries[0].consumer;
                    let run = deliveries
                        .iter()
                        .position(|d| d.consumer != consumer)
                        .unwrap_or(deliveries.len());
                    let rest = deliveries.split_off(run);
                    if !self.consumers.contains_key(&consumer) {
                        self.drain_commands();
                    }
                    // Deliveries for a consumer that is gone are dropped: they were never
                    // acknowledged, so the broker delivers them again elsewhere.
                    if let Some(route) = self.consumers.get(&consumer) {
                        let _ = route.deliveries.send(deliveries);
                    }
                    deliveries = rest;
                }
            }
            Frame::Receipt { receipt, error } => {
                if !self.receipts.contains_key(&receipt) {
                    self.drain_commands();
                }
                if let Some(reply) = self.receipts.remove(&receipt) {
                    let _ = reply.send(match error {
                        None => Ok(()),
                        Some(refusal) => Err(refusal.into()),
                    });
                }
            }
            Frame::StatReply {
                request,
                destinations,
                store,
                members,
                master,
            } => {
                if !self.stats.contains_key(&request) {
                    self.drain_commands();
                }
                if let Some(reply) = self.stats.remove(&request) {
                    let _ = reply.send(StatReply {
                        destinations,
                        store,
                        members,
                        master,
                    });
                }
            }
            Frame::Located { request, home } => {
                if !self.located.contains_key(&request) {
                    self.drain_commands();
                }
                if let Some(reply) = self.located.remove(&request) {
                    let _ = reply.send(home);
                }
            }
            Frame::Error { code, message } => {
                return Next::Stop(ClientError::Broker { code, message });
            }
            other => {
                return Next::Stop(ClientError::Protocol(format!(
                    "unexpected {} frame from the broker",
                    other.name()
                )));
            }
        }
        Next::Continue
    }

    /// Takes in the registrations already queued (a reply can race the command that
    /// expects it); any other command is kept, in order, for the main loop.
    fn drain_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if let Some(other) = self.register(command) {
                self.deferred.push_back(other);
            }
        }
    }

    fn write(&self, frame: &Frame) {
        if let Ok(bytes) = encode_frame(frame, self.max_frame_bytes) {
            let _ = self.sink.send(bytes);
        }
    }

    fn flush_acks(&self, consumer: u32, route: &ConsumerRoute) {
        let tags = match route.acks.lock() {
            Ok(mut acks) => std::mem::take(&mut *acks),
            Err(_) => return,
        };
        if !tags.is_empty() {
            self.write(&Frame::Ack {
                session: route.session,
                acks: tags.into_iter().map(|tag| (consumer, tag)).collect(),
            });
        }
    }

    /// Flushes acknowledgements, sends `Disconnect`, and waits (bounded) for the broker to
    /// close its side, so that everything before it has been processed.
    async fn goodbye(&mut self) {
        for (consumer, route) in &self.consumers {
            self.flush_acks(*consumer, route);
        }
        self.write(&Frame::Disconnect);
        let drain = async { while let Some(Ok(_)) = self.reader.next().await {} };
        let _ = tokio::time::timeout(self.close_timeout, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("tcp://127.0.0.1:7670").unwrap(), "127.0.0.1:7670");
        assert_eq!(parse_url("localhost:1").unwrap(), "localhost:1");
        assert!(parse_url("tcp://nowhere").is_err());
        assert!(parse_url("tcp://:80").is_err());
    }
}
