//! The `actormq` command line: run a broker, send, receive, and look at a broker's counters.

mod cmd;

/// mimalloc instead of glibc's malloc: allocation and free were a sixth of the broker's CPU
/// in a profile of a queue run (messages, batches and frames are allocated per message).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "actormq",
    version,
    about = "A small, fast message broker built on actors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (embedded defaults, then --profile, then --config, then ACTORMQ__* variables).
    Broker(BrokerArgs),
    /// Send messages to a queue or topic.
    Send(cmd::send::SendArgs),
    /// Receive messages from a queue or topic.
    Receive(cmd::receive::ReceiveArgs),
    /// Show each destination's depth and counters.
    Stat(cmd::stat::StatArgs),
    /// Measure throughput and latency against actormq, a STOMP broker or nats-server.
    Bench(cmd::bench::BenchArgs),
    /// Set up the PostgreSQL store.
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// Layer config/<PROFILE>.toml over the defaults.
    #[arg(long)]
    profile: Option<String>,
    /// Layer this settings file (from anywhere) over the defaults and the profile.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder that holds the profiles (default: $ACTORMQ_CONFIG_DIR, ./config, /etc/actormq,
    /// the first that has the profile).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Listen address, overriding the settings (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    listen: Option<String>,
    /// STOMP listen address, overriding the settings.
    #[arg(long)]
    stomp_listen: Option<String>,
    /// Data folder, overriding the settings.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// mimalloc's `mi_option_purge_delay` (15 in both its v2 and v3 headers; v3 is the one built;
/// the crate does not name the option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the process before mimalloc returns it. Its default,
/// 10 ms, makes a stream of large messages fault in fresh zeroed pages for every one; at
/// 1 s a steady flood of small ones still had the kernel zero 0.4–1 GB of huge pages per
/// million messages (12 % of the broker's samples), because the pages a connection's
/// thread frees are given back before it allocates them again. The periodic trim
/// (`constants::TRIM_EVERY`) returns them within this delay plus one period once traffic
/// stops.
const PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

fn main() -> ExitCode {
    // SAFETY: mi_option_set takes plain integers; the option is read at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => {
            init_logging("info");
            return run_broker(args);
        }
        Command::Send(args) => {
            init_logging("warn");
            cmd::client_runtime().and_then(|rt| rt.block_on(cmd::send::run(args)))
        }
        Command::Receive(args) => {
            init_logging("warn");
            cmd::client_runtime().and_then(|rt| rt.block_on(cmd::receive::run(args)))
        }
        Command::Stat(args) => {
            init_logging("warn");
            cmd::client_runtime().and_then(|rt| rt.block_on(cmd::stat::run(args)))
        }
        Command::Bench(args) => {
            init_logging("warn");
            cmd::client_runtime().and_then(|rt| rt.block_on(cmd::bench::run(args)))
        }
        Command::Db(command) => {
            init_logging("warn");
            cmd::client_runtime().and_then(|rt| rt.block_on(cmd::db::run(command)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("actormq: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: a cause whose text the message already holds
/// (an error that quotes its source) is not repeated.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run_broker(args: BrokerArgs) -> ExitCode {
    let mut sources = actormq::ConfigSources {
        profile: args.profile.clone(),
        config_dir: args.config_dir,
        file: args.config.clone(),
        environment: true,
        overrides: Vec::new(),
    };
    if let Some(listen) = args.listen {
        sources
            .overrides
            .push(("broker.listen".into(), listen, "--listen".into()));
    }
    if let Some(listen) = args.stomp_listen {
        sources
            .overrides
            .push(("stomp.listen".into(), listen, "--stomp-listen".into()));
    }
    if let Some(dir) = args.data_dir {
        sources.overrides.push((
            "broker.data_dir".into(),
            dir.display().to_string(),
            "--data-dir".into(),
        ));
    }
    let config = match actormq::Config::load(&sources) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actormq: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let profile = args.profile.as_deref().unwrap_or("default");
    match &args.config {
        Some(file) => tracing::info!("profile: {profile}, with settings from {}", file.display()),
        None => tracing::info!("profile: {profile}"),
    }
    actormq::runtime::set_memory_trim(|| {
        // SAFETY: mi_collect takes no pointers; it frees the calling thread's unused pages.
        unsafe { libmimalloc_sys::mi_collect(false) }
    });
    let system = actix_rt::System::new();
    let result: anyhow::Result<()> = system.block_on(async move {
        actormq::broker::serve(config, cmd::shutdown_signal()).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actormq: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}
