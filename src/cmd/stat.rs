//! `actormq stat`: one row per destination (with its home broker in a cluster), the store,
//! the broker's role in a master/slave pair, and the cluster's members with their state.
//! (A standby answers no `stat`: it refuses the connection, naming the master it waits
//! for, and `stat` prints that.)

use std::process::ExitCode;

use actormq::client::Connection;

#[derive(clap::Args)]
pub struct StatArgs {
    /// Broker URL: tcp://HOST:PORT, or failover:(tcp://HOST:PORT,…)?OPTIONS.
    #[arg(long, env = "ACTORMQ_URL", default_value = "tcp://127.0.0.1:7670")]
    url: String,
}

/// The widest the NAME column gets.
const MAX_NAME_COLUMN: usize = 60;

pub async fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let connection = Connection::connect(&args.url).await?;
    let reply = connection.stat_with_store().await?;
    connection.close().await?;
    let (stats, store) = (reply.destinations, reply.store);
    // Long names run past their column rather than widen it for everyone.
    let width = stats
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, MAX_NAME_COLUMN);
    // A HOME column only in a cluster.
    let clustered = !reply.members.is_empty();
    println!(
        "{:<5}  {:<width$}  {:>10}  {:>10}  {:>10}  {:>9}{}",
        "KIND",
        "NAME",
        "DEPTH",
        "ENQUEUED",
        "DEQUEUED",
        "CONSUMERS",
        if clustered { "  HOME" } else { "" }
    );
    for s in stats {
        let home = match (&s.home, clustered) {
            (Some(home), true) => format!("  {home}"),
            _ => String::new(),
        };
        println!(
            "{:<5}  {:<width$}  {:>10}  {:>10}  {:>10}  {:>9}{home}",
            s.kind.as_str(),
            s.name,
            s.depth,
            s.enqueued,
            s.dequeued,
            s.consumers,
        );
    }
    match store {
        Some(store) if store.kind == "postgres" => println!("store: postgres"),
        Some(store) => {
            println!(
                "store: journal, {} segments, {} bytes, {} paged messages, {} skipped records",
                store.segments, store.bytes, store.paged, store.skipped
            );
            if let Some((queue, count)) = &store.oldest_holder {
                println!("store: the oldest segment holds {count} messages of queue {queue}");
            }
            if store.unwritten > 0 {
                println!(
                    "store: {} acknowledgements wait for disk space to be written",
                    store.unwritten
                );
            }
        }
        None => println!("store: memory"),
    }
    if let Some(master) = &reply.master {
        println!(
            "role: master, epoch {}, since {}, holding the {}{}",
            master.epoch,
            actormq::ha::utc(master.since_ms),
            master.lock,
            master
                .previous
                .as_ref()
                .map(|p| format!(", after {p}"))
                .unwrap_or_default()
        );
    }
    for m in reply.members {
        println!(
            "member {}: {:?}{}, generation {}, client {}, bridge {}",
            m.name,
            m.state,
            if m.local { " (this broker)" } else { "" },
            m.generation,
            m.client_addr,
            m.bridge_addr
        );
    }
    Ok(ExitCode::SUCCESS)
}
