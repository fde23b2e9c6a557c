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
    /// Body size in bytes (ignored with --body).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Body text.
    #[arg(long)]
    body: Option<String>,
    /// Persistent messages (the default, as in JMS): confirmed once on disk.
    #[arg(long, conflicts_with = "non_persistent")]
    persistent: bool,
    /// Non-persistent messages: kept in memory only.
    #[arg(long)]
    non_persistent: bool,
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connection = Connection::connect(&args.url).await?;
    let session = connection.session(AckMode::Auto)?;
    let producer = session.producer(args.to.clone());
    let body = match &args.body {
        Some(text) => Bytes::from(text.clone()),
        None => Bytes::from(vec![b'x'; args.size]),
    };
    let per_batch = (MAX_BATCH_BYTES / body.len().max(1)).clamp(1, MAX_BATCH) as u64;
    let bar = super::progress(Some(args.count), "send");
    let started = std::time::Instant::now();
    let mut window = VecDeque::with_capacity(WINDOW);
    let mut sent = 0u64;
    while sent < args.count {
        let n = per_batch.min(args.count - sent);
        let batch = (sent..sent + n)
            .map(|seq| {
                Message::new(body.clone())
                    .with_property("seq", Property::Int(seq as i64))
                    .with_persistent(!args.non_persistent)
            })
            .collect();
        window.push_back((n, producer.begin_send(batch)?));
        sent += n;
        if window.len() >= WINDOW
            && let Some((n, confirmation)) = window.pop_front()
        {
            confirmation.await?;
            bar.inc(n);
        }
    }
    for (n, confirmation) in window {
        confirmation.await?;
        bar.inc(n);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    eprintln!(
        "sent {} messages to {} in {:.2?} ({:.0} msg/s)",
        args.count,
        args.to,
        elapsed,
        args.count as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    drop(producer);
    drop(session);
    connection.close().await?;
    Ok(ExitCode::SUCCESS)
}
