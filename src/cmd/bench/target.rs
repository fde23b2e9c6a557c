//! The brokers a benchmark can drive — actormq natively, any STOMP broker, nats-server — and
//! one publisher and subscriber type over all of them, so every workload is written once.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actormq::client::{
    AckMode, Connection, Consumer, ConsumerOptions, Destination, Message, Producer,
    SendConfirmation, Session,
};
use actormq::protocol::stomp::{Command, FrameWriter, StompFrame};
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::nats_client::{self, NatsReader, NatsWriter};
use super::report::micros_histogram;
use super::stomp_client::{self, StompReader, StompTarget, StompWriter};

/// A broker to measure.
#[derive(Clone, Debug)]
pub enum Target {
    Native(String),
    Stomp(StompTarget),
    Nats(SocketAddr),
}

fn native_destination(name: &str, topic: bool) -> Destination {
    if topic {
        Destination::topic(name)
    } else {
        Destination::queue(name)
    }
}

fn resolve(hostport: &str) -> anyhow::Result<SocketAddr> {
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{hostport}`"))?
        .next()
        .with_context(|| format!("`{hostport}` has no address"))
}

impl Target {
    /// `tcp://HOST:PORT` or `failover:(…)` (actormq), `stomp://[LOGIN:PASSCODE@]HOST:PORT[/VHOST]`
    /// or `nats://HOST:PORT`.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        if url.starts_with("tcp://") || url.starts_with("failover:") {
            return Ok(Target::Native(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("nats://") {
            return Ok(Target::Nats(resolve(rest)?));
        }
        if let Some(rest) = url.strip_prefix("stomp://") {
            let (credentials, rest) = match rest.rsplit_once('@') {
                Some((c, r)) => (Some(c), r),
                None => (None, rest),
            };
            let (hostport, vhost) = match rest.split_once('/') {
                Some((h, v)) => (h, if v.is_empty() { "/" } else { v }),
                None => (rest, "/"),
            };
            let (login, passcode) = credentials
                .map(|c| c.split_once(':').unwrap_or((c, "")))
                .unwrap_or(("guest", "guest"));
            return Ok(Target::Stomp(StompTarget {
                addr: resolve(hostport)?,
                host: vhost.to_string(),
                login: login.to_string(),
                passcode: passcode.to_string(),
            }));
        }
        bail!("unknown URL `{url}`: use tcp://, failover:(…), stomp:// or nats://")
    }
}

/// How a publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct PublishOptions {
    pub persistent: bool,
    /// Unconfirmed sends (native: batches) allowed in flight; 0 = confirm only at the end.
    pub confirm_window: usize,
    /// Native only: messages per `Send` frame.
    pub batch: usize,
}

/// Bytes of unconfirmed native sends a publisher keeps in flight at most: a few large
/// messages (more only queues them in socket buffers and lengthens every message's trip).
const IN_FLIGHT_BYTES: usize = 4 << 20;
/// Bytes of one native batch at most: small messages are batched by the hundred, a large
/// one goes in a frame of its own (an 8 MiB frame of eight 1 MiB bodies is decoded whole
/// before any is delivered, halving the rate).
const BATCH_BYTES: usize = 256 << 10;

pub enum Publisher {
    Native {
        /// Bytes of one batch at most: [`BATCH_BYTES`], or half a frame if that is less.
        batch_bytes: usize,
        _connection: Connection,
        producer: Producer,
        pending: Vec<Message>,
        pending_bytes: usize,
        /// Unconfirmed batches, their bytes and when they were sent.
        confirmations: VecDeque<(SendConfirmation, usize, Instant)>,
        in_flight: usize,
        /// Each batch's time from send to confirmation, µs.
        round_trips: Histogram<u64>,
        options: PublishOptions,
    },
    Stomp {
        writer: StompWriter,
        reader: Option<StompReader>,
        receipts: Option<(Arc<Semaphore>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
        /// When each send still waiting for its receipt went (receipts come in order), and
        /// each one's time from send to receipt, µs.
        round_trips: Arc<Mutex<(VecDeque<Instant>, Histogram<u64>)>>,
        destination: String,
        options: PublishOptions,
        next_receipt: u64,
        /// SENDs (and their bytes) since the last one that asked for a receipt: one in
        /// `batch`, or after [`BATCH_BYTES`], asks (a receipt covers every SEND before it
        /// on the connection, as a native confirmation covers its batch).
        unreceipted: usize,
        unreceipted_bytes: usize,
    },
    Nats {
        writer: NatsWriter,
        reader: NatsReader,
        subject: String,
        /// Bytes published since the last PING, and PINGs sent: NATS confirms nothing, so
        /// a PING every [`NATS_PING_BYTES`] keeps at most [`IN_FLIGHT_BYTES`] unanswered,
        /// as the native publisher's confirmations do.
        unpinged: usize,
        pings: u64,
    },
}

/// The receipt a STOMP publisher's closing DISCONNECT asks for.
const LAST_RECEIPT: &str = "done";

/// Bytes a NATS publisher writes between PINGs.
const NATS_PING_BYTES: usize = IN_FLIGHT_BYTES / 4;

impl Publisher {
    pub async fn open(
        target: &Target,
        name: &str,
        topic: bool,
        options: PublishOptions,
    ) -> anyhow::Result<Publisher> {
        Ok(match target {
            Target::Native(url) => {
                let connection = Connection::connect(url).await?;
                let session = connection.session(AckMode::Auto)?;
                let destination = native_destination(name, topic);
                Publisher::Native {
                    batch_bytes: BATCH_BYTES.min(connection.max_frame_bytes() / 2),
                    producer: session.producer(destination),
                    _connection: connection,
                    pending: Vec::with_capacity(options.batch),
                    pending_bytes: 0,
                    confirmations: VecDeque::new(),
                    in_flight: 0,
                    round_trips: micros_histogram(),
                    options,
                }
            }
            Target::Stomp(stomp) => {
                let (writer, reader) = stomp_client::connect(stomp).await?;
                let destination = format!("{}{name}", if topic { "/topic/" } else { "/queue/" });
                let round_trips = Arc::new(Mutex::new((VecDeque::new(), micros_histogram())));
                let (reader, receipts) = if options.confirm_window > 0 {
                    let window = Arc::new(Semaphore::new(options.confirm_window));
                    let permits = window.clone();
                    let timings = round_trips.clone();
                    let mut reader = reader;
                    let task = tokio::spawn(async move {
                        let result: anyhow::Result<()> = async {
                            while let Some(frame) = reader.next().await? {
                                if frame.command == Command::Receipt {
                                    if let Ok(mut timings) = timings.lock() {
                                        let (sent, histogram) = &mut *timings;
                                        if let Some(at) = sent.pop_front() {
                                            let _ = histogram.record(micros(at));
                                        }
                                    }
                                    permits.add_permits(1);
                                    // The DISCONNECT's, last of all (see `finish`).
                                    if frame.get("receipt-id") == Some(LAST_RECEIPT) {
                                        return Ok(());
                                    }
                                }
                            }
                            bail!("the broker closed the connection")
                        }
                        .await;
                        // Senders waiting for a receipt learn that none will come.
                        permits.close();
                        result
                    });
                    (None, Some((window, task)))
                } else {
                    (Some(reader), None)
                };
                Publisher::Stomp {
                    writer,
                    reader,
                    receipts,
                    round_trips,
                    destination,
                    options,
                    next_receipt: 1,
                    unreceipted: 0,
                    unreceipted_bytes: 0,
                }
            }
            Target::Nats(addr) => {
                let (writer, reader) = nats_client::connect(*addr).await?;
                Publisher::Nats {
                    writer,
                    reader,
                    subject: name.to_string(),
                    unpinged: 0,
                    pings: 0,
                }
            }
        })
    }

    pub async fn publish(&mut self, body: Bytes) -> anyhow::Result<()> {
        match self {
            Publisher::Native {
                pending,
                pending_bytes,
                batch_bytes,
                options,
                ..
            } => {
                // The next message would make the frame too large: send what is batched.
                if !pending.is_empty() && *pending_bytes + body.len() > *batch_bytes {
                    self.send_pending().await?;
                    return Box::pin(self.publish(body)).await;
                }
                *pending_bytes += body.len();
                pending.push(Message::new(body).with_persistent(options.persistent));
                if pending.len() >= options.batch {
                    self.send_pending().await?;
                }
            }
            Publisher::Stomp {
                writer,
                receipts,
                round_trips,
                destination,
                options,
                next_receipt,
                unreceipted,
                unreceipted_bytes,
                ..
            } => {
                // Written straight into its buffer, as the broker writes MESSAGE frames:
                // the load tool's own cost per SEND is not what is measured.
                let mut buf = BytesMut::with_capacity(128 + body.len());
                let mut frame = FrameWriter::start(&mut buf, Command::Send, 128 + body.len());
                frame
                    .protocol_header("destination", destination)
                    .protocol_header_u64("content-length", body.len() as u64);
                if options.persistent {
                    // Absent means non-persistent (ActiveMQ, RabbitMQ and actormq agree).
                    frame.protocol_header("persistent", "true");
                }
                *unreceipted += 1;
                *unreceipted_bytes += body.len();
                if let Some((window, task)) = receipts
                    .as_mut()
                    .filter(|_| *unreceipted >= options.batch || *unreceipted_bytes >= BATCH_BYTES)
                {
                    *unreceipted = 0;
                    *unreceipted_bytes = 0;
                    match window.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return Err(receipt_failure(task).await),
                    }
                    frame.protocol_header_u64("receipt", *next_receipt);
                    *next_receipt += 1;
                    if let Ok(mut timings) = round_trips.lock() {
                        timings.0.push_back(Instant::now());
                    }
                }
                frame.body(&body);
                writer.send_encoded(buf.freeze())?;
            }
            Publisher::Nats {
                writer,
                reader,
                subject,
                unpinged,
                pings,
            } => {
                writer.publish(subject, &body)?;
                *unpinged += body.len();
                if *unpinged >= NATS_PING_BYTES {
                    writer.ping()?;
                    *unpinged = 0;
                    *pings += 1;
                    let answered = pings.saturating_sub((IN_FLIGHT_BYTES / NATS_PING_BYTES) as u64);
                    reader.pongs_reach(answered).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is batched (native), with at most the confirm window (and
    /// [`IN_FLIGHT_BYTES`]) unconfirmed once it is sent: with a window of 1, each send
    /// waits for the one before it to be confirmed.
    pub async fn send_pending(&mut self) -> anyhow::Result<()> {
        if let Publisher::Native {
            producer,
            pending,
            pending_bytes,
            confirmations,
            in_flight,
            round_trips,
            options,
            ..
        } = self
        {
            if pending.is_empty() {
                return Ok(());
            }
            let bytes = std::mem::take(pending_bytes);
            while !confirmations.is_empty()
                && ((options.confirm_window > 0 && confirmations.len() >= options.confirm_window)
                    || *in_flight + bytes > IN_FLIGHT_BYTES)
            {
                if let Some((confirmation, bytes, sent)) = confirmations.pop_front() {
                    confirmation.await?;
                    let _ = round_trips.record(micros(sent));
                    *in_flight -= bytes;
                }
            }
            let batch = std::mem::replace(pending, Vec::with_capacity(options.batch));
            confirmations.push_back((producer.begin_send(batch)?, bytes, Instant::now()));
            *in_flight += bytes;
        }
        Ok(())
    }

    /// Sends what is left and waits until the broker has confirmed (or processed) all of
    /// it. Returns the sends' round trips (send to confirmation, µs) where they were timed
    /// (see [`super::report::Summary::confirm_us`]).
    pub async fn finish(mut self) -> anyhow::Result<Option<Histogram<u64>>> {
        self.send_pending().await?;
        match self {
            Publisher::Native {
                confirmations,
                mut round_trips,
                options,
                ..
            } => {
                for (confirmation, _, sent) in confirmations {
                    confirmation.await?;
                    let _ = round_trips.record(micros(sent));
                }
                // A confirmation is timed when it is awaited: only with a window of 1 is
                // that at once (the next send waits for it); with a wider window the
                // figure would include the wait for the window to fill.
                return Ok((options.confirm_window == 1).then_some(round_trips));
            }
            Publisher::Stomp {
                writer,
                reader,
                receipts,
                round_trips,
                options,
                unreceipted,
                ..
            } => {
                if let Some((window, mut task)) = receipts {
                    if unreceipted > 0 {
                        // The last SENDs asked for no receipt: a DISCONNECT's covers them,
                        // and the reader stops at it, every receipt before it read.
                        if let Ok(mut timings) = round_trips.lock() {
                            timings.0.push_back(Instant::now());
                        }
                        writer.send(
                            &StompFrame::new(Command::Disconnect).header("receipt", LAST_RECEIPT),
                        )?;
                        match task.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(e),
                            Err(e) => bail!("the receipt reader failed: {e}"),
                        }
                    } else {
                        match window.acquire_many(options.confirm_window as u32).await {
                            Ok(all) => all.forget(),
                            Err(_) => return Err(receipt_failure(&mut task).await),
                        }
                        task.abort();
                    }
                    if let Ok(timings) = round_trips.lock() {
                        return Ok(Some(timings.1.clone()));
                    }
                }
                if let Some(mut reader) = reader {
                    // Everything before a DISCONNECT's RECEIPT has been processed.
                    writer.send(&StompFrame::new(Command::Disconnect).header("receipt", "done"))?;
                    reader.receipt("done").await?;
                }
            }
            Publisher::Nats {
                writer,
                mut reader,
                pings,
                ..
            } => {
                writer.ping()?;
                reader.pongs_reach(pings + 1).await?;
            }
        }
        Ok(None)
    }
}

/// Microseconds since `at`.
fn micros(at: Instant) -> u64 {
    at.elapsed().as_micros() as u64
}

/// Why the receipt reader of a STOMP publisher stopped.
async fn receipt_failure(task: &mut tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Error {
    match task.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => anyhow::anyhow!("the receipt reader stopped"),
        Err(e) => anyhow::anyhow!("the receipt reader failed: {e}"),
    }
}

/// A subscription; the `_open` fields keep its connection alive.
pub enum Subscriber {
    Native {
        consumer: Consumer,
        _open: (Session, Connection),
    },
    Stomp {
        reader: StompReader,
        _open: StompWriter,
    },
    Nats {
        reader: NatsReader,
        _open: NatsWriter,
    },
}

impl Subscriber {
    /// Subscribes and returns once the subscription is active. `competing` subscribers
    /// of NATS share a queue group.
    pub async fn open(
        target: &Target,
        name: &str,
        topic: bool,
        prefetch: u32,
    ) -> anyhow::Result<Subscriber> {
        Ok(match target {
            Target::Native(url) => {
                let connection = Connection::connect(url).await?;
                let session = connection.session(AckMode::Auto)?;
                let destination = native_destination(name, topic);
                let consumer = session
                    .consumer_with(destination, ConsumerOptions::prefetch(prefetch))
                    .await?;
                Subscriber::Native {
                    consumer,
                    _open: (session, connection),
                }
            }
            Target::Stomp(stomp) => {
                let (writer, mut reader) = stomp_client::connect(stomp).await?;
                let destination = format!("{}{name}", if topic { "/topic/" } else { "/queue/" });
                writer.send(
                    &StompFrame::new(Command::Subscribe)
                        .header("destination", destination)
                        .header("id", "bench")
                        .header("ack", "auto")
                        .header("activemq.prefetchSize", prefetch.to_string())
                        .header("receipt", "subscribed"),
                )?;
                reader.receipt("subscribed").await?;
                Subscriber::Stomp {
                    reader,
                    _open: writer,
                }
            }
            Target::Nats(addr) => {
                let (writer, mut reader) = nats_client::connect(*addr).await?;
                writer.subscribe(name, (!topic).then_some("bench"), 1)?;
                writer.ping()?;
                reader.pongs_reach(1).await?;
                Subscriber::Nats {
                    reader,
                    _open: writer,
                }
            }
        })
    }

    /// Acknowledges what was taken and closes the connection cleanly.
    pub async fn close(self) {
        match self {
            Subscriber::Native {
                consumer,
                _open: (session, connection),
            } => {
                drop(consumer);
                drop(session);
                let _ = connection.close().await;
            }
            Subscriber::Stomp { _open: writer, .. } => {
                let _ = writer.send(&StompFrame::new(Command::Disconnect));
            }
            Subscriber::Nats { .. } => {}
        }
    }

    /// The next message body, and whether the broker marked it redelivered; `None` once
    /// the connection has closed.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Bytes, bool)>> {
        match self {
            Subscriber::Native { consumer, .. } => match consumer.next_delivery().await {
                Ok(delivery) => Ok(Some((delivery.message.body, delivery.redelivered))),
                Err(e) => Err(e.into()),
            },
            Subscriber::Stomp { reader, .. } => loop {
                match reader.next().await? {
                    None => return Ok(None),
                    Some(frame) if frame.command == Command::Message => {
                        let redelivered = frame.get("redelivered") == Some("true");
                        return Ok(Some((frame.body, redelivered)));
                    }
                    Some(_) => continue,
                }
            },
            Subscriber::Nats { reader, .. } => Ok(reader.next().await?.map(|b| (b, false))),
        }
    }
}
