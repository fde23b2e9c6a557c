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
    /// Print one JSON object (destinations, store, members, master) instead of a table.
    #[arg(long)]
    json: bool,
}

/// `n` bytes for a person: 41402398 → "39.5 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 if n == 1 => "1 byte".into(),
        0 => format!("{n} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// The widest the NAME column gets.
const MAX_NAME_COLUMN: usize = 60;

pub async fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let connection = Connection::connect(&args.url).await?;
    let reply = connection.stat_with_store().await?;
    connection.close().await?;
    if args.json {
        let json = serde_json::json!({
            "destinations": reply.destinations,
            "store": reply.store,
            "members": reply.members,
            "master": reply.master,
        });
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    // In a cluster, a destination whose home is down has counters nobody can read now.
    let down: Vec<&str> = reply
        .members
        .iter()
        .filter(|m| m.state != actormq::protocol::MemberState::Up)
        .map(|m| m.name.as_str())
        .collect();
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
        let home_down = s.home.as_deref().is_some_and(|h| down.contains(&h));
        let home = match (&s.home, clustered) {
            (Some(home), true) if home_down => format!("  {home} (down: counters unknown)"),
            (Some(home), true) => format!("  {home}"),
            _ => String::new(),
        };
        let shown = |n: u64| {
            if home_down {
                "?".to_string()
            } else {
                n.to_string()
            }
        };
        println!(
            "{:<5}  {:<width$}  {:>10}  {:>10}  {:>10}  {:>9}{home}",
            s.kind.as_str(),
            s.name,
            shown(s.depth),
            shown(s.enqueued),
            shown(s.dequeued),
            shown(s.consumers),
        );
    }
    match store {
        Some(store) if store.kind == "postgres" => println!("store: postgres"),
        Some(store) => {
            println!(
                "store: journal, {}, {}, {}, {}",
                super::count(store.segments, "segment"),
                human_bytes(store.bytes),
                super::count(store.paged, "paged message"),
                super::count(store.skipped, "skipped record")
            );
            if let Some((queue, held)) = &store.oldest_holder {
                println!(
                    "store: the oldest segment holds {} of queue {queue}",
                    super::count(*held, "message")
                );
            }
            if store.unwritten > 0 {
                println!(
                    "store: {} wait for disk space to be written",
                    super::count(store.unwritten, "acknowledgement")
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
