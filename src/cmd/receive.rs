//! `actormq receive`: receives messages and prints their bodies (or, with `--quiet`, a count).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use actormq::Destination;
use actormq::client::DestinationKind;
use actormq::client::{AckMode, Connection};

#[derive(clap::Args)]
pub struct ReceiveArgs {
    /// Broker URL: tcp://HOST:PORT, or failover:(tcp://HOST:PORT,…)?OPTIONS.
    #[arg(long, env = "ACTORMQ_URL", default_value = "tcp://127.0.0.1:7670")]
    url: String,
    /// Destination: queue:NAME or topic:NAME.
    #[arg(long)]
    from: Destination,
    /// Stop after this many messages; exit 1 if fewer arrive.
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no message has arrived for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print only how many messages arrived.
    #[arg(long)]
    quiet: bool,
    /// Create the queue or topic if it does not exist (a consumer creates its destination,
    /// as in ActiveMQ; without this flag a mistyped name is an error, not a new queue).
    #[arg(long)]
    create: bool,
}

pub async fn run(args: ReceiveArgs) -> anyhow::Result<ExitCode> {
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        anyhow::bail!(
            "--timeout must be a number of seconds, not {}",
            args.timeout
        );
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let connection = Connection::connect(&args.url).await?;
    if !args.create
        && matches!(
            args.from.kind(),
            DestinationKind::Queue | DestinationKind::Topic
        )
    {
        let exists = connection
            .stat()
            .await?
            .iter()
            .any(|d| d.kind == args.from.kind() && d.name == args.from.name());
        if !exists {
            connection.close().await?;
            anyhow::bail!(
                "{} does not exist on the broker (check the name, or pass --create to make it)",
                args.from
            );
        }
    }
    let session = connection.session(AckMode::Auto)?;
    let mut consumer = session.consumer(args.from.clone()).await?;
    let bar = super::progress(args.count, "receive");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut received = 0u64;
    while args.count.is_none_or(|n| received < n) {
        let Some(message) = consumer.receive(timeout).await? else {
            break;
        };
        received += 1;
        bar.inc(1);
        if !args.quiet {
            out.write_all(&message.body)?;
            out.write_all(b"\n")?;
        }
    }
    bar.finish_and_clear();
    if args.quiet {
        writeln!(out, "{received}")?;
    }
    out.flush()?;
    drop(out);
    drop(consumer);
    drop(session);
    connection.close().await?;
    match args.count {
        Some(n) if received < n => {
            eprintln!("received {received} of {n}");
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
