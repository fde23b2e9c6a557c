//! `actormq send`: sends N messages, pipelined in batches, and exits once all are confirmed.

use std::collections::VecDeque;
use std::process::ExitCode;

use actormq::client::{AckMode, Connection};
use actormq::{Destination, Message, Property};
use bytes::Bytes;

/// Unconfirmed batches kept in flight.
const WINDOW: usize = 16;
/// Most messages in one `Send` frame.
const MAX_BATCH: usize = 500;
/// Most body bytes in one `Send` frame (well under the default 16 MiB frame limit).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(clap::Args)]
pub struct SendArgs {
    /// Broker URL: tcp://HOST:PORT, or failover:(tcp://HOST:PORT,…)?OPTIONS.
    #[arg(long, env = "ACTORMQ_URL", default_value = "tcp://127.0.0.1:7670")]
    url: String,
    /// Destination: queue:NAME or topic:NAME.
    #[arg(long)]
    to: Destination,
    /// How many messages.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Body size in bytes (ignored with --body or --body-file).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Body text; `-` reads the body from standard input.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the body from this file.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// A header, NAME=VALUE (repeat for more).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Priority, 0 (lowest) to 9; 4 by default, as in JMS.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Time to live in milliseconds: the message expires after it.
    #[arg(long, value_name = "MS")]
    ttl: Option<u64>,
    /// Correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Where replies go: queue:NAME or topic:NAME.
    #[arg(long)]
    reply_to: Option<Destination>,
    /// Persistent messages (the default, as in JMS): confirmed once on disk.
    #[arg(long, conflicts_with = "non_persistent")]
    persistent: bool,
    /// Non-persistent messages: kept in memory only.
    #[arg(long)]
    non_persistent: bool,
}

/// `NAME=VALUE`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

/// The body the options ask for.
fn body(args: &SendArgs) -> anyhow::Result<Bytes> {
    use anyhow::Context;
    Ok(match (&args.body, &args.body_file) {
        (Some(dash), _) if dash == "-" => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("cannot read the body from standard input")?;
            Bytes::from(body)
        }
        (Some(text), _) => Bytes::from(text.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, None) => Bytes::from(vec![b'x'; args.size]),
    })
}

/// One message as the options describe it.
fn message(args: &SendArgs, body: &Bytes, seq: u64) -> Message {
    let mut message = Message::new(body.clone())
        .with_property("seq", Property::Int(seq as i64))
        .with_persistent(!args.non_persistent);
    for (name, value) in &args.headers {
        message = message.with_header(name.clone(), value.clone());
    }
    if let Some(priority) = args.priority {
        message = message.with_priority(priority);
    }
    if let Some(ttl) = args.ttl {
        message = message.with_time_to_live(std::time::Duration::from_millis(ttl));
    }
    if let Some(id) = &args.correlation_id {
        message = message.with_correlation_id(id.clone());
    }
    if let Some(to) = &args.reply_to {
        message = message.with_reply_to(to.clone());
    }
    message
}

/// "1 message", "2 messages".
fn messages(n: u64) -> String {
    super::count(n, "message")
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let body = body(&args)?;
    let connection = Connection::connect(&args.url).await?;
    let session = connection.session(AckMode::Auto)?;
    let producer = session.producer(args.to.clone());
    let mut confirmed = 0u64;
    let sending = send_all(&args, &producer, &body, &mut confirmed);
    let interrupted = tokio::select! {
        result = sending => {
            if let Err(e) = result {
                eprintln!("{} of {} confirmed before the error", messages(confirmed), args.count);
                return Err(e);
            }
            false
        }
        _ = super::shutdown_signal() => true,
    };
    if interrupted {
        eprintln!(
            "interrupted: {} of {} confirmed",
            messages(confirmed),
            args.count
        );
        return Ok(ExitCode::from(130));
    }
    drop(producer);
    drop(session);
    connection.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// Sends every message, counting those confirmed in `confirmed`.
async fn send_all(
    args: &SendArgs,
    producer: &actormq::client::Producer,
    body: &Bytes,
    confirmed: &mut u64,
) -> anyhow::Result<()> {
    let per_batch = (MAX_BATCH_BYTES / body.len().max(1)).clamp(1, MAX_BATCH) as u64;
    let bar = super::progress(Some(args.count), "send");
    let started = std::time::Instant::now();
    let mut window = VecDeque::with_capacity(WINDOW);
    let mut sent = 0u64;
    while sent < args.count {
        let n = per_batch.min(args.count - sent);
        let batch = (sent..sent + n)
            .map(|seq| message(args, body, seq))
            .collect();
        window.push_back((n, producer.begin_send(batch)?));
        sent += n;
        if window.len() >= WINDOW
            && let Some((n, confirmation)) = window.pop_front()
        {
            confirmation.await?;
            *confirmed += n;
            bar.inc(n);
        }
    }
    for (n, confirmation) in window {
        confirmation.await?;
        *confirmed += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    eprintln!(
        "sent {} to {} in {:.2?} ({} msg/s)",
        messages(args.count),
        args.to,
        elapsed,
        (args.count as f64 / elapsed.as_secs_f64().max(1e-9)) as u64
    );
    Ok(())
}
