//! `actormq bench`: the same workload against actormq (embedded, or by URL), any STOMP
//! broker, or nats-server. Every message carries its producer, sequence number and send
//! time; the run reports throughput, latency percentiles, and lost and duplicated messages,
//! and fails if any message was lost.

mod disk;
mod nats_client;
mod report;
mod stomp_client;
mod target;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actormq::client::{AckMode, Connection, Destination, Message};
use actormq::protocol::stomp::{Command, StompFrame};
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use report::{HEADER_BYTES, Summary, Tracker, micros_histogram, stamp};
use target::{PublishOptions, Publisher, Subscriber, Target};

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// P producers, C competing consumers on one queue.
    Queue,
    /// 1 publisher, M subscribers on one topic.
    Topic,
    /// 1 producer at a fixed rate for a duration, 1 consumer; latency percentiles.
    Latency,
    /// Sequential request/reply round trips.
    RequestReply,
    /// No broker: 4 KiB appends to a preallocated file in `--dir`, each followed by an
    /// fdatasync (`--count` of them) — the floor under a durable round trip.
    Disk,
}

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "queue")]
    workload: Workload,
    /// tcp://HOST:PORT or failover:(tcp://…,tcp://…)?OPTIONS (actormq), stomp://[LOGIN:PASSCODE@]HOST:PORT[/VHOST] (any STOMP
    /// broker; login defaults to guest:guest) or nats://HOST:PORT. Default: an embedded
    /// actormq broker started for the run, on a temporary folder.
    #[arg(long, env = "ACTORMQ_URL")]
    url: Option<String>,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Topic workload: subscribers.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Messages in all (queue, topic) or round trips (request-reply).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Message body size in bytes (at least 20: producer, sequence, timestamp).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Persistent messages (as JMS and STOMP's `persistent:true`).
    #[arg(long)]
    persistent: bool,
    /// Unconfirmed sends in flight (native: batches; STOMP: receipts). 0: confirm at the end.
    #[arg(long, default_value_t = 16)]
    confirm_window: usize,
    /// Native: messages per Send frame; STOMP: SENDs per receipt asked for.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 1000)]
    prefetch: u32,
    /// Latency workload: messages per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Latency workload: seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Give up on a receiver that has had nothing for this many seconds (looked at every
    /// as many seconds: it gives up within twice this).
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
    /// Disk workload: the folder to write in (put it on the broker's data disk).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: std::path::PathBuf,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A topic publisher stays at most this many messages ahead of its slowest subscriber
/// (half of the broker's default `max_subscriber_backlog`)...
const TOPIC_AHEAD: u64 = 50_000;
/// ...and at most this many bytes (half of `max_subscriber_backlog_bytes`).
const TOPIC_AHEAD_BYTES: u64 = 32 << 20;

/// Messages per step of the progress bar while receiving.
const PROGRESS_STEP: u64 = 1_000;

/// Nanoseconds since the run began, on one clock for senders and receivers.
fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The instant [`now_nanos`] counts from.
fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A batching writer for a benchmark client's socket, on its own task.
fn client_writer(socket: tokio::net::tcp::OwnedWriteHalf) -> actormq::net::writer::FrameSink {
    let (sink, run) = actormq::net::writer::writer(
        socket,
        actormq::net::writer::WriterLimits {
            max_pending_bytes: 256 << 20,
            batch_bytes: 256 << 10,
            write_timeout: Duration::from_secs(30),
            slow_consumer_frame: None,
        },
    );
    tokio::spawn(run);
    sink
}

fn body(size: usize, producer: u32, seq: u64) -> Bytes {
    let mut buf = BytesMut::zeroed(size.max(HEADER_BYTES));
    stamp(&mut buf, producer, seq, now_nanos());
    buf.freeze()
}

/// A folder removed when dropped (after the embedded broker that used it).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES} bytes");
    }
    // An embedded broker lives as long as the run, on a folder of its own (never the
    // journal of a broker the user runs), removed after it.
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "actormq-bench-{}-{}",
        std::process::id(),
        now_nanos()
    )));
    let mut _embedded = None;
    let (target, target_name) = match &args.url {
        // No broker: the disk itself is measured.
        _ if args.workload == Workload::Disk => (
            Target::Native(String::new()),
            args.dir.display().to_string(),
        ),
        Some(url) => (Target::parse(url)?, url.clone()),
        None => {
            let mut config = actormq::Config::default();
            config.broker.listen = "127.0.0.1:0".into();
            config.broker.data_dir = scratch.0.clone();
            config.stomp.enabled = false;
            let broker = actormq::BrokerThread::spawn(config)?;
            let url = broker.url();
            _embedded = Some(broker);
            (Target::parse(&url)?, format!("embedded actormq ({url})"))
        }
    };
    let run_id = format!(
        "{:x}",
        std::process::id() as u64 * 1_000_003 + now_nanos() % 1_000_003
    );
    let summary = match args.workload {
        Workload::Queue => {
            flow(
                &args,
                &target,
                &format!("bench.queue.{run_id}"),
                false,
                args.producers,
                args.consumers,
                args.count,
            )
            .await?
        }
        Workload::Topic => {
            flow(
                &args,
                &target,
                &format!("bench.topic.{run_id}"),
                true,
                1,
                args.subscribers,
                args.count,
            )
            .await?
        }
        Workload::Latency => {
            let count = (args.rate as f64 * args.duration) as u64;
            flow(
                &args,
                &target,
                &format!("bench.latency.{run_id}"),
                false,
                1,
                1,
                count,
            )
            .await?
        }
        Workload::Disk => disk::run(&args.dir, args.count)?,
        Workload::RequestReply => {
            request_reply(&args, &target, &format!("bench.rr.{run_id}")).await?
        }
    };
    let summary = Summary {
        workload: clap::ValueEnum::to_possible_value(&args.workload)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        target: target_name,
        ..summary
    };
    if args.json {
        println!("{}", summary.json());
    } else {
        println!("{}", summary.line());
    }
    if summary.lost > 0 {
        eprintln!("actormq bench: {} messages were lost", summary.lost);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Producers → a queue or topic → receivers. Each receiver of a topic must get all
/// `count`; the receivers of a queue must get all `count` between them.
async fn flow(
    args: &BenchArgs,
    target: &Target,
    name: &str,
    topic: bool,
    producers: usize,
    receivers: usize,
    count: u64,
) -> anyhow::Result<Summary> {
    let producers = producers.max(1);
    let per_producer = count.div_ceil(producers as u64);
    let count = per_producer * producers as u64;
    let expected_per_receiver = if topic { count } else { u64::MAX };
    let expected_total = if topic {
        count * receivers as u64
    } else {
        count
    };
    let idle = Duration::from_secs_f64(args.idle_timeout);
    let bar = crate::cmd::progress(Some(expected_total), "bench");
    let delivered = Arc::new(AtomicU64::new(0));
    // Which messages any receiver has had: the run is done when each has come once
    // (redelivered copies do not count twice).
    let arrived: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
        (0..producers as u64 * per_producer)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    // What each receiver has had: a topic's publisher keeps within reach of the slowest,
    // since a broker drops a subscriber that falls too far behind (as NATS does).
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..receivers.max(1)).map(|_| AtomicU64::new(0)).collect());
    let ahead = (TOPIC_AHEAD_BYTES / args.size.max(1) as u64).clamp(1, TOPIC_AHEAD);
    let (done_tx, done_rx) = watch::channel(false);
    let done_tx = Arc::new(done_tx);

    let mut receiving = Vec::new();
    for receiver in 0..receivers.max(1) {
        let mut subscriber = Subscriber::open(target, name, topic, args.prefetch).await?;
        let delivered = delivered.clone();
        let arrived = arrived.clone();
        let received = received.clone();
        let bar = bar.clone();
        let mut done = done_rx.clone();
        let done_tx = done_tx.clone();
        receiving.push(tokio::spawn(async move {
            let mut tracker = Tracker::new(producers, per_producer);
            // One clock read per message (its arrival), no timer per message: the idle
            // check looks every `idle` whether anything came since it last looked.
            let mut last = now_nanos();
            let mut longest_pause = 0;
            let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
            // A late look must not be followed at once by another that sees nothing new.
            idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut mine_at_check = 0u64;
            let mut mine = 0u64;
            while mine < expected_per_receiver && !*done.borrow() {
                // The subscriber first: while messages are ready the other two are never
                // polled (a poll registers a waiter, dropped again: most of this loop's cost
                // per message when the branch to poll first was drawn at random). `done`
                // is still read by the loop's condition.
                let next = tokio::select! {
                    biased;
                    next = subscriber.next() => next,
                    _ = done.changed() => break,
                    _ = idle_check.tick() => {
                        if mine == mine_at_check {
                            break;
                        }
                        mine_at_check = mine;
                        continue;
                    }
                };
                let (body, redelivered) = match next {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(e) => return Err(e),
                };
                let now = now_nanos();
                let stamp = tracker.record(&body, now, redelivered);
                if mine > 0 {
                    longest_pause = longest_pause.max(now.saturating_sub(last));
                }
                last = now;
                mine += 1;
                received[receiver].store(mine, Ordering::Relaxed);
                // A topic's receivers each get every message; a queue's share them.
                let first = match stamp {
                    Some((p, seq)) if !topic => arrived
                        .get(p as usize * per_producer as usize + seq as usize)
                        .is_some_and(|a| !a.swap(true, Ordering::Relaxed)),
                    _ => !redelivered,
                };
                if first {
                    let total = delivered.fetch_add(1, Ordering::Relaxed) + 1;
                    // The bar reads the clock on each step: a step per thousand messages.
                    if total.is_multiple_of(PROGRESS_STEP) {
                        bar.inc(PROGRESS_STEP);
                    }
                    if total >= expected_total {
                        let _ = done_tx.send(true);
                    }
                }
            }
            subscriber.close().await;
            let last = epoch() + Duration::from_nanos(last);
            Ok::<_, anyhow::Error>((tracker, last, Duration::from_nanos(longest_pause)))
        }));
    }

    let options = PublishOptions {
        persistent: args.persistent,
        confirm_window: args.confirm_window,
        batch: args.batch.max(1),
    };
    let rate_per_producer =
        (args.workload == Workload::Latency).then(|| args.rate as f64 / producers as f64);
    let started = Instant::now();
    let mut sending = Vec::new();
    for producer in 0..producers {
        let mut publisher = Publisher::open(target, name, topic, options).await?;
        let size = args.size;
        let received = received.clone();
        sending.push(tokio::spawn(async move {
            let tick = Duration::from_millis(1);
            let begun = Instant::now();
            let mut seq = 0;
            while seq < per_producer {
                let due = match rate_per_producer {
                    Some(rate) => ((begun.elapsed().as_secs_f64() * rate) as u64).min(per_producer),
                    None => per_producer,
                };
                while seq < due {
                    if topic {
                        let slowest = received
                            .iter()
                            .map(|r| r.load(Ordering::Relaxed))
                            .min()
                            .unwrap_or(0);
                        if seq >= slowest + ahead {
                            publisher.send_pending().await?;
                            tokio::time::sleep(tick).await;
                            continue;
                        }
                    }
                    publisher.publish(body(size, producer as u32, seq)).await?;
                    seq += 1;
                }
                if rate_per_producer.is_some() {
                    publisher.send_pending().await?;
                    tokio::time::sleep(tick).await;
                }
            }
            publisher.finish().await
        }));
    }
    let mut round_trips: Option<Histogram<u64>> = None;
    for task in sending {
        if let Some(more) = task.await.context("a producer task failed")?? {
            match &mut round_trips {
                Some(all) => {
                    let _ = all.add(&more);
                }
                None => round_trips = Some(more),
            }
        }
    }
    let mut merged = Tracker::new(producers, per_producer);
    let mut lost = 0;
    let mut duplicates = 0;
    let mut redelivered = 0;
    let mut last = started;
    let mut longest_pause = Duration::ZERO;
    for task in receiving {
        let (tracker, at, pause) = task.await.context("a receiver task failed")??;
        last = last.max(at);
        longest_pause = longest_pause.max(pause);
        if topic {
            lost += count - tracker.unique;
            duplicates += tracker.duplicates();
            redelivered += tracker.redelivered;
            let _ = merged.latency.add(&tracker.latency);
        } else {
            merged.merge(&tracker);
        }
    }
    bar.finish_and_clear();
    if !topic {
        lost = count - merged.unique;
        duplicates = merged.duplicates();
        redelivered = merged.redelivered;
    }
    let messages = delivered.load(Ordering::Relaxed);
    Ok(Summary {
        workload: String::new(),
        target: String::new(),
        messages,
        bytes: messages * args.size as u64,
        elapsed: last.duration_since(started),
        p50_us: merged.latency.value_at_quantile(0.5),
        p99_us: merged.latency.value_at_quantile(0.99),
        p999_us: merged.latency.value_at_quantile(0.999),
        lost,
        duplicates,
        redelivered,
        longest_pause,
        confirm_us: round_trips
            .filter(|h| !h.is_empty())
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99))),
    })
}

/// Sequential round trips through a responder that echoes each request.
async fn request_reply(args: &BenchArgs, target: &Target, name: &str) -> anyhow::Result<Summary> {
    let mut latency = micros_histogram();
    let timeout = Duration::from_secs_f64(args.idle_timeout);
    let bar = crate::cmd::progress(Some(args.count), "bench");
    let payload = Bytes::from(vec![b'r'; args.size]);
    let started;
    match target {
        Target::Native(url) => {
            let server = Connection::connect(url).await?;
            let serving = server
                .session(AckMode::Auto)?
                .responder()
                .serve(Destination::queue(name), |request| async move {
                    Message::new(request.body)
                })
                .await?;
            let client = Connection::connect(url).await?;
            let requestor = client.session(AckMode::Auto)?.requestor().await?;
            started = Instant::now();
            for _ in 0..args.count {
                let sent = Instant::now();
                requestor
                    .request(
                        Destination::queue(name),
                        Message::new(payload.clone()).with_persistent(args.persistent),
                        timeout,
                    )
                    .await?;
                let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
                bar.inc(1);
            }
            serving.abort();
        }
        Target::Stomp(stomp) => {
            let service = format!("/queue/{name}");
            let (server_writer, mut server_reader) = stomp_client::connect(stomp).await?;
            server_writer.send(
                &StompFrame::new(Command::Subscribe)
                    .header("destination", service.clone())
                    .header("id", "svc")
                    .header("ack", "auto")
                    .header("receipt", "svc"),
            )?;
            server_reader.receipt("svc").await?;
            let serving = tokio::spawn(async move {
                while let Some(frame) = server_reader.next().await? {
                    let (Some(reply_to), Some(correlation)) =
                        (frame.get("reply-to"), frame.get("correlation-id"))
                    else {
                        continue;
                    };
                    server_writer.send(
                        &StompFrame::new(Command::Send)
                            .header("destination", reply_to)
                            .header("correlation-id", correlation)
                            .header("content-length", frame.body.len().to_string())
                            .body(frame.body.clone()),
                    )?;
                }
                Ok::<_, anyhow::Error>(())
            });
            let (writer, mut reader) = stomp_client::connect(stomp).await?;
            writer.send(
                &StompFrame::new(Command::Subscribe)
                    .header("destination", "/temp-queue/bench-replies")
                    .header("id", "replies")
                    .header("ack", "auto")
                    .header("receipt", "replies"),
            )?;
            reader.receipt("replies").await?;
            started = Instant::now();
            for i in 0..args.count {
                let sent = Instant::now();
                let correlation = i.to_string();
                writer.send(
                    &StompFrame::new(Command::Send)
                        .header("destination", service.clone())
                        .header("reply-to", "/temp-queue/bench-replies")
                        .header("correlation-id", correlation.clone())
                        .header("content-length", payload.len().to_string())
                        .body(payload.clone()),
                )?;
                loop {
                    let frame = tokio::time::timeout(timeout, reader.next())
                        .await
                        .context("no reply in time")??
                        .context("the connection closed")?;
                    if frame.get("correlation-id") == Some(correlation.as_str()) {
                        break;
                    }
                }
                let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
                bar.inc(1);
            }
            serving.abort();
        }
        Target::Nats(_) => bail!("request-reply over NATS is not implemented in this benchmark"),
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Summary {
        workload: String::new(),
        target: String::new(),
        messages: args.count,
        bytes: args.count * args.size as u64 * 2,
        elapsed,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        p999_us: latency.value_at_quantile(0.999),
        lost: 0,
        duplicates: 0,
        redelivered: 0,
        longest_pause: Duration::ZERO,
        confirm_us: None,
    })
}
