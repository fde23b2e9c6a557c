//! A soak of a few minutes (opt-in: `ACTORMQ_SOAK=1 ./scripts/test.sh`, or `cargo test --test
//! soak -- --ignored`; `ACTORMQ_SOAK_SECS` sets its length, 180 by default). Against one
//! broker process, all at once: confirmed persistent producers (native and STOMP), a slow
//! STOMP consumer, one that stalls until the broker closes it, an `ack:auto` one, a native
//! consumer, a STOMP flood without receipts, clients that send half a frame and hang, and a
//! `kill -9` and restart every 40 s. At the end every confirmed message has been received,
//! and the broker's resident memory never passed its bound.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq::client::{AckMode, Connection};
use actormq::protocol::stomp::{Command, Inbound, StompCodec, StompFrame, encode_into};
use actormq::{Destination, Message, Property};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use common::process::{BrokerProcess, MIB};

const QUEUE: &str = "soak";
/// STOMP producers number their messages from here, native ones from 0.
const STOMP_SEQ: i64 = 1 << 40;

/// Where the broker is now (it moves at every restart) and what the test has seen.
struct World {
    url: Mutex<String>,
    stomp: Mutex<SocketAddr>,
    confirmed: Mutex<BTreeSet<i64>>,
    received: Mutex<BTreeSet<i64>>,
    stop_producing: AtomicBool,
    stop: AtomicBool,
}

impl World {
    fn url(&self) -> String {
        self.url.lock().unwrap().clone()
    }

    fn stomp(&self) -> SocketAddr {
        *self.stomp.lock().unwrap()
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ACTORMQ__LIMITS__MAX_QUEUE_MEMORY_BYTES", "16777216"),
        ("ACTORMQ__LIMITS__MAX_MEMORY_BYTES", "67108864"),
        ("ACTORMQ__LIMITS__SEND_TIMEOUT_MS", "2000"),
        ("ACTORMQ__LIMITS__WRITE_TIMEOUT_MS", "2000"),
        ("ACTORMQ__LIMITS__FRAME_READ_TIMEOUT_MS", "3000"),
        ("ACTORMQ__STORE__SEGMENT_BYTES", "4194304"),
    ]
}

/// A STOMP connection that reports failures instead of panicking.
struct Stomp {
    reader: FramedRead<tokio::net::tcp::OwnedReadHalf, StompCodec>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Stomp {
    async fn connect(addr: SocketAddr) -> Option<Stomp> {
        let socket = TcpStream::connect(addr).await.ok()?;
        let (read, writer) = socket.into_split();
        let codec = common::raw_stomp::codec();
        let mut stomp = Stomp {
            reader: FramedRead::new(read, codec),
            writer,
        };
        stomp
            .send(&StompFrame::new(Command::Connect).header("accept-version", "1.2"))
            .await?;
        (stomp.next().await?.command == Command::Connected).then_some(stomp)
    }

    async fn send(&mut self, frame: &StompFrame) -> Option<()> {
        let mut buf = BytesMut::new();
        encode_into(frame, &mut buf);
        tokio::time::timeout(Duration::from_secs(10), self.writer.write_all(&buf))
            .await
            .ok()?
            .ok()
    }

    async fn next(&mut self) -> Option<StompFrame> {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.reader.next())
                .await
                .ok()??
                .ok()?;
            if let Inbound::Frame(frame) = item {
                return Some(frame);
            }
        }
    }
}

fn seq_header(frame: &StompFrame) -> Option<i64> {
    frame.get("seq")?.parse().ok()
}

async fn native_producer(world: Arc<World>, next: Arc<AtomicI64>) {
    while !world.stop_producing.load(Ordering::Relaxed) {
        let Ok(connection) = Connection::connect(&world.url()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(session) = connection.session(AckMode::Auto) else {
            continue;
        };
        let producer = session.producer(Destination::queue(QUEUE));
        while !world.stop_producing.load(Ordering::Relaxed) {
            let seq = next.fetch_add(1, Ordering::Relaxed);
            let message = Message::new(vec![b'n'; 2048]).with_property("seq", Property::Int(seq));
            match producer.send(message).await {
                Ok(()) => {
                    world.confirmed.lock().unwrap().insert(seq);
                }
                Err(_) => break,
            }
        }
    }
}

async fn stomp_producer(world: Arc<World>) {
    let mut seq = STOMP_SEQ;
    while !world.stop_producing.load(Ordering::Relaxed) {
        let Some(mut stomp) = Stomp::connect(world.stomp()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !world.stop_producing.load(Ordering::Relaxed) {
            seq += 1;
            let send = StompFrame::new(Command::Send)
                .header("destination", format!("/queue/{QUEUE}"))
                .header("persistent", "true")
                .header("seq", seq.to_string())
                .header("receipt", seq.to_string())
                .body(vec![b's'; 4096]);
            if stomp.send(&send).await.is_none() {
                break;
            }
            match stomp.next().await {
                Some(frame) if frame.get("receipt-id") == Some(&seq.to_string()) => {
                    world.confirmed.lock().unwrap().insert(seq);
                }
                _ => break,
            }
        }
    }
}

/// Subscribes over STOMP and records every message; `ack` decides how it acknowledges.
/// With `stall`, it reads a little, then stops reading for a while (the broker closes it
/// after its write timeout). A stalling `ack:auto` consumer would lose what the socket
/// held if the broker were killed meanwhile (written is consumed; a reset discards it), so
/// only a client-acknowledging one stalls here; `tests/slow_consumers.rs` covers the other.
async fn stomp_consumer(world: Arc<World>, ack: &'static str, stall: bool) {
    while world.running() {
        let Some(mut stomp) = Stomp::connect(world.stomp()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let subscribe = StompFrame::new(Command::Subscribe)
            .header("destination", format!("/queue/{QUEUE}"))
            .header("id", "0")
            .header("ack", ack);
        if stomp.send(&subscribe).await.is_none() {
            continue;
        }
        let mut read = 0;
        while world.running() {
            let Some(frame) = stomp.next().await else {
                break;
            };
            if frame.command != Command::Message {
                break;
            }
            record(&world, &frame);
            if ack != "auto" {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let ack = StompFrame::new(Command::Ack)
                    .header("id", frame.get("ack").unwrap_or_default());
                if stomp.send(&ack).await.is_none() {
                    break;
                }
            }
            read += 1;
            if stall && read == 50 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                break;
            }
        }
        if ack == "auto" {
            drain(&world, &mut stomp).await;
        }
    }
}

/// An `ack:auto` message counts as consumed once written to the socket, so a consumer
/// that leaves must first read what was written. First whatever has arrived (a connection
/// the broker closed ends there: writing to it would reset it and discard what the socket
/// holds); then, if it is still open, UNSUBSCRIBE and every MESSAGE up to its RECEIPT.
async fn drain(world: &World, stomp: &mut Stomp) {
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stomp.reader.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Inbound::Frame(frame)))) if frame.command == Command::Message => {
                record(world, &frame)
            }
            Ok(Some(Ok(_))) => {}
            Ok(None | Some(Err(_))) => return,
        }
    }
    let unsubscribe = StompFrame::new(Command::Unsubscribe)
        .header("id", "0")
        .header("receipt", "unsubscribed");
    let _ = stomp.send(&unsubscribe).await;
    while let Some(frame) = stomp.next().await {
        match frame.command {
            Command::Message => record(world, &frame),
            Command::Receipt if frame.get("receipt-id") == Some("unsubscribed") => return,
            _ => {}
        }
    }
}

fn record(world: &World, frame: &StompFrame) {
    if let Some(seq) = seq_header(frame) {
        world.received.lock().unwrap().insert(seq);
    }
}

async fn native_consumer(world: Arc<World>) {
    while world.running() {
        let Ok(connection) = Connection::connect(&world.url()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(session) = connection.session(AckMode::Auto) else {
            continue;
        };
        let Ok(mut consumer) = session.consumer(Destination::queue(QUEUE)).await else {
            continue;
        };
        while world.running() {
            match consumer.receive(Duration::from_millis(500)).await {
                Ok(Some(message)) => {
                    // Native producers number messages by property, STOMP ones by header.
                    let seq = match message.properties.get("seq") {
                        Some(Property::Int(seq)) => Some(*seq),
                        _ => message.headers.get("seq").and_then(|s| s.parse().ok()),
                    };
                    world.received.lock().unwrap().extend(seq);
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

/// STOMP SENDs without receipts to a queue nobody reads: pushed back, then told it is full.
async fn flooder(world: Arc<World>) {
    while world.running() {
        let Some(mut stomp) = Stomp::connect(world.stomp()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let send = StompFrame::new(Command::Send)
            .header("destination", "/queue/soak-flood")
            .body(vec![b'f'; 8192]);
        while world.running() && stomp.send(&send).await.is_some() {}
    }
}

/// Connections that send half a frame and hang; the broker closes them.
async fn half_senders(world: Arc<World>) {
    while world.running() {
        if let Ok(mut socket) = TcpStream::connect(world.stomp()).await {
            let _ = socket
                .write_all(b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/queue/x\ncontent-length:9000000\n\npartial")
                .await;
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut sink))
                        .await;
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes: ACTORMQ_SOAK=1 ./scripts/test.sh, or cargo test --test soak -- --ignored"]
async fn soak() {
    let seconds: u64 = std::env::var("ACTORMQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let dir = common::data_dir("soak");
    let env = env();
    let mut broker = BrokerProcess::start_with_env(&dir, &[], &env);
    let world = Arc::new(World {
        url: Mutex::new(broker.url.clone()),
        stomp: Mutex::new(broker.stomp_addr()),
        confirmed: Mutex::new(BTreeSet::new()),
        received: Mutex::new(BTreeSet::new()),
        stop_producing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let next = Arc::new(AtomicI64::new(0));
    let mut tasks = vec![
        tokio::spawn(native_producer(world.clone(), next.clone())),
        tokio::spawn(native_producer(world.clone(), next.clone())),
        tokio::spawn(stomp_producer(world.clone())),
        tokio::spawn(stomp_consumer(world.clone(), "client-individual", false)),
        tokio::spawn(stomp_consumer(world.clone(), "client-individual", true)),
        tokio::spawn(stomp_consumer(world.clone(), "auto", false)),
        tokio::spawn(native_consumer(world.clone())),
        tokio::spawn(flooder(world.clone())),
        tokio::spawn(half_senders(world.clone())),
    ];
    let started = Instant::now();
    let mut last_restart = Instant::now();
    let mut peak = 0;
    let mut restarts = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(broker.resident_bytes().unwrap_or(0));
        if last_restart.elapsed() >= Duration::from_secs(40) {
            broker.kill();
            broker = BrokerProcess::start_with_env(&dir, &[], &env);
            *world.url.lock().unwrap() = broker.url.clone();
            *world.stomp.lock().unwrap() = broker.stomp_addr();
            last_restart = Instant::now();
            restarts += 1;
        }
    }
    // Producers stop; consumers drain what is left.
    world.stop_producing.store(true, Ordering::Relaxed);
    let connection = Connection::connect(&world.url()).await.expect("connects");
    common::eventually(
        Duration::from_secs(120),
        "the soak queue to drain",
        || async {
            let depth = common::stat_of(&connection, "queue", QUEUE)
                .await
                .map(|s| s.depth)
                .unwrap_or(0);
            (depth == 0).then_some(())
        },
    )
    .await;
    // Consumers finish what they hold (a stalled one reads its socket to the end).
    world.stop.store(true, Ordering::Relaxed);
    for task in tasks.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let confirmed = world.confirmed.lock().unwrap().clone();
    let received = world.received.lock().unwrap().clone();
    let missing: Vec<i64> = confirmed.difference(&received).copied().collect();
    for stat in connection.stat().await.unwrap_or_default() {
        eprintln!(
            "soak: {} {}: depth {}, enqueued {}, dequeued {}",
            stat.kind.as_str(),
            stat.name,
            stat.depth,
            stat.enqueued,
            stat.dequeued
        );
    }
    eprintln!(
        "soak: {seconds} s, {restarts} restarts, {} confirmed, {} received, peak {} MiB",
        confirmed.len(),
        received.len(),
        peak / MIB
    );
    if !missing.is_empty() {
        let mut runs: Vec<(i64, i64, usize)> = Vec::new();
        for &m in &missing {
            match runs.last_mut() {
                Some((_, end, n)) if m - *end < 1000 => {
                    *end = m;
                    *n += 1;
                }
                _ => runs.push((m, m, 1)),
            }
        }
        eprintln!("soak: missing runs (first, last, count): {runs:?}");
        let native: Vec<i64> = confirmed
            .iter()
            .copied()
            .filter(|s| *s < STOMP_SEQ)
            .collect();
        eprintln!(
            "soak: confirmed native {}, max {:?}",
            native.len(),
            native.last()
        );
    }
    assert!(
        confirmed.len() > 1000,
        "too little traffic: {}",
        confirmed.len()
    );
    assert!(
        missing.is_empty(),
        "{} confirmed messages never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        peak < 512 * MIB,
        "resident memory reached {} MiB",
        peak / MIB
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
