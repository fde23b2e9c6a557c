//! Typed settings and every limit in one commented place.
//!
//! Settings are layered with the `config` crate: the embedded `config/default.toml`, then
//! `config/<profile>.toml` (`--profile`), then a file from anywhere (`--config`), then
//! `ACTORMQ__SECTION__KEY` environment variables (prefix and separator both `__`, since keys
//! contain `_`), then command-line overrides. Each layer is checked on its own, so an
//! unknown key or a bad value is reported with the key *and* the file (or variable) that
//! set it. `config/default.toml` lists every key; a unit test keeps it equal to
//! [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config as Layers, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use serde::{Deserialize, Serialize};

/// The embedded default profile.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const DEFAULT_ORIGIN: &str = "config/default.toml (embedded)";
const ENV_PREFIX: &str = "ACTORMQ";
const ENV_SEPARATOR: &str = "__";

/// Why settings could not be loaded. Every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key `{key}` in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("bad value for key `{key}` in {origin}: {reason}")]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
    #[error("profile `{profile}` not found: there is no {profile}.toml in {looked}")]
    ProfileNotFound { profile: String, looked: String },
    #[error("cannot read {origin}: {reason}")]
    Read { origin: String, reason: String },
    /// A value of the wrong type; the `config` crate's message names the key and the file.
    #[error("{0}")]
    Type(#[from] config::ConfigError),
}

/// All settings of one broker.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerSettings,
    pub store: StoreSettings,
    pub redelivery: RedeliveryPolicy,
    pub stomp: StompSettings,
    pub limits: Limits,
    /// Named groups of destinations: a send to `group:NAME` puts a copy on each member.
    pub groups: Vec<GroupSettings>,
    pub cluster: ClusterSettings,
    pub ha: HaSettings,
}

/// Master/slave: brokers that share one store, of which one (the master, holding the
/// lock) serves and the others wait to take over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSettings {
    /// `none`, `shared-file` (a lock on `broker.data_dir`) or `database` (a lease row in the
    /// PostgreSQL store).
    pub mode: HaMode,
    /// How often a standby tries to take the lock.
    pub poll_ms: u64,
    /// How often the master checks (file) or renews (database) its lock.
    pub keep_alive_ms: u64,
    /// How long a database lease lasts without renewal; in file mode, the longest a journal
    /// write may stall before the master demotes. At least 3 × keep_alive_ms.
    pub lease_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaMode {
    None,
    SharedFile,
    Database,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings {
            mode: HaMode::None,
            poll_ms: 500,
            keep_alive_ms: 1000,
            lease_ms: 5000,
        }
    }
}

impl HaSettings {
    fn validate(&self, store: StoreKind) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            origin: "settings".into(),
            reason,
        };
        if self.mode == HaMode::None {
            if store == StoreKind::Postgres {
                return Err(invalid(
                    "store.kind",
                    "\"postgres\" needs ha.mode = \"database\" (a broker on PostgreSQL holds its lease, even alone)".into(),
                ));
            }
            return Ok(());
        }
        if self.poll_ms == 0 {
            return Err(invalid("ha.poll_ms", "must be greater than 0".into()));
        }
        if self.keep_alive_ms == 0 || self.keep_alive_ms.saturating_mul(3) > self.lease_ms {
            return Err(invalid(
                "ha.keep_alive_ms",
                format!(
                    "{} must be greater than 0 and at most a third of ha.lease_ms ({}), so that a lease is renewed at least twice before it lapses",
                    self.keep_alive_ms, self.lease_ms
                ),
            ));
        }
        let wanted = match self.mode {
            HaMode::SharedFile => StoreKind::Journal,
            _ => StoreKind::Postgres,
        };
        if store != wanted {
            return Err(invalid(
                "ha.mode",
                format!(
                    "{:?} needs store.kind = \"{}\"",
                    self.mode,
                    match wanted {
                        StoreKind::Journal => "journal",
                        _ => "postgres",
                    }
                ),
            ));
        }
        Ok(())
    }

    pub fn poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.poll_ms)
    }

    pub fn keep_alive(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.keep_alive_ms)
    }

    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms)
    }
}

/// Brokers that form a cluster: membership, the bridge between them, and where each
/// destination lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Off: a lone broker (every destination is local).
    pub enabled: bool,
    /// Brokers of another cluster name are refused by the bridge.
    pub name: String,
    /// This broker's bridge listener (other brokers connect here), `host:port`.
    pub bridge_listen: String,
    /// This broker's membership (SWIM, UDP) socket, `host:port`.
    pub gossip_listen: String,
    /// Membership addresses of brokers to join through (any live one is enough).
    pub seeds: Vec<String>,
    /// The names of the cluster's brokers: a destination without a placement rule lives
    /// on the one rendezvous hashing picks among them. Must include `broker.name`.
    pub brokers: Vec<String>,
    /// Placement rules, first match wins, before hashing.
    pub placement: Vec<PlacementRule>,
    /// Membership probe interval; a silent member is suspected after one probe.
    pub probe_period_ms: u64,
    /// A suspected member not heard from for this long is marked down.
    pub suspect_to_down_ms: u64,
    /// Bridge links send a heartbeat this often and close after 4 silent intervals.
    pub link_heartbeat_ms: u64,
    /// Bytes queued for one bridge link before its senders wait (back-pressure).
    pub link_buffer_bytes: usize,
}

/// One `[[cluster.placement]]` rule: destinations whose name matches `pattern` (`*` one
/// segment, `>` the rest, as topic wildcards) live on the broker `home`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRule {
    pub pattern: String,
    pub home: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            name: "actormq".into(),
            bridge_listen: "127.0.0.1:7680".into(),
            gossip_listen: "127.0.0.1:7690".into(),
            seeds: Vec::new(),
            brokers: Vec::new(),
            placement: Vec::new(),
            probe_period_ms: 500,
            suspect_to_down_ms: 2000,
            link_heartbeat_ms: 1000,
            link_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `host:port` as a socket address; a host name is resolved (as every server does), its
/// first IPv4 address preferred so that `localhost` means 127.0.0.1.
fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.into(),
        origin: "settings".into(),
        reason,
    };
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| invalid(format!("`{value}` is not host:port ({e})")))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| invalid(format!("`{value}` resolves to no address")))
}

impl ClusterSettings {
    fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        socket_addr(key, value)
    }

    pub fn bridge_addr(&self) -> Result<SocketAddr, ConfigError> {
        Self::addr("cluster.bridge_listen", &self.bridge_listen)
    }

    pub fn gossip_addr(&self) -> Result<SocketAddr, ConfigError> {
        Self::addr("cluster.gossip_listen", &self.gossip_listen)
    }

    pub fn seed_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.seeds
            .iter()
            .map(|s| Self::addr("cluster.seeds", s))
            .collect()
    }

    /// Checks addresses, names and rules (with the broker's own name).
    fn validate(&self, me: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            origin: "settings".into(),
            reason,
        };
        self.bridge_addr()?;
        self.gossip_addr()?;
        self.seed_addrs()?;
        if self.name.trim().is_empty() {
            return Err(invalid("cluster.name", "must not be empty".into()));
        }
        if !self.brokers.iter().any(|b| b == me) {
            return Err(invalid(
                "cluster.brokers",
                format!("{:?} does not include this broker, `{me}`", self.brokers),
            ));
        }
        for rule in &self.placement {
            if !self.brokers.contains(&rule.home) {
                return Err(invalid(
                    "cluster.placement",
                    format!(
                        "rule `{}` = `{}`: `{}` is not in cluster.brokers",
                        rule.pattern, rule.home, rule.home
                    ),
                ));
            }
        }
        for (key, value) in [
            ("cluster.probe_period_ms", self.probe_period_ms),
            ("cluster.suspect_to_down_ms", self.suspect_to_down_ms),
            ("cluster.link_heartbeat_ms", self.link_heartbeat_ms),
            ("cluster.link_buffer_bytes", self.link_buffer_bytes as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        Ok(())
    }
}

/// One `[[groups]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    pub name: String,
    /// Queues and topics, written `queue:NAME` / `topic:NAME`.
    pub members: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// This broker's name.
    pub name: String,
    /// Native protocol listener, `host:port` (port 0 picks a free port).
    pub listen: String,
    /// Where persistent data lives.
    pub data_dir: PathBuf,
    /// Arbiters (threads) for destination and connection actors; 0 = one per core but
    /// one, at least one ([`BrokerSettings::arbiter_count`]).
    pub arbiters: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            name: "actormq".into(),
            listen: "127.0.0.1:7670".into(),
            data_dir: PathBuf::from("./data"),
            arbiters: 0,
        }
    }
}

impl BrokerSettings {
    /// The listen address; valid once [`Config::validate`] has passed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        socket_addr("broker.listen", &self.listen)
    }

    /// How many arbiters to run: `arbiters`, or when it is 0 one per core but one, at least
    /// one. The core left over runs what is not an actor — the journal's threads, the
    /// system arbiter (registry, listeners, cluster), the kernel's network work — so the
    /// arbiters do not take turns with it; and every arbiter fewer is one cross-CPU
    /// wake-up fewer for a message whose producer, queue and consumer land on different
    /// ones (about 50 µs each on a VM). On a 2-core machine one arbiter moved as much or
    /// more than two in every workload measured, at a quarter of the latency (README,
    /// Performance).
    pub fn arbiter_count(&self) -> usize {
        if self.arbiters > 0 {
            return self.arbiters;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }
}

/// What happens to a queue message that is given back (NACK, rollback) or whose consumer
/// went away before acknowledging it, as ActiveMQ's redelivery policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliveryPolicy {
    /// Deliveries after the first before the message goes to the dead-letter queue (6).
    pub max_redeliveries: u32,
    /// Wait before redelivering a message that was given back (1 s); a message whose
    /// consumer went away is redelivered at once.
    pub initial_delay_ms: u64,
    /// Each further redelivery waits this much longer (2.0).
    pub multiplier: f64,
    /// Longest wait (60 s).
    pub max_delay_ms: u64,
    /// Dead letters of queue `orders` go to `<dlq_prefix>orders` (`DLQ.`). Queues with this
    /// prefix redeliver without end rather than dead-letter again.
    pub dlq_prefix: String,
    /// An expired queue message goes to the dead-letter queue (true) or is dropped (false,
    /// the default).
    pub expired_to_dlq: bool,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        RedeliveryPolicy {
            max_redeliveries: 6,
            initial_delay_ms: 1000,
            multiplier: 2.0,
            max_delay_ms: 60_000,
            dlq_prefix: "DLQ.".into(),
            expired_to_dlq: false,
        }
    }
}

impl RedeliveryPolicy {
    /// The wait before redelivery number `redelivery` (1 = the first) of a given-back message.
    pub fn delay(&self, redelivery: u32) -> std::time::Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(redelivery.saturating_sub(1).min(64) as i32);
        let ms = (self.initial_delay_ms as f64 * factor).min(self.max_delay_ms as f64);
        std::time::Duration::from_millis(ms as u64)
    }
}

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// One fsync per group of appends (group commit).
    Batch,
    /// One fsync per append.
    Always,
    /// Never fsync (the OS writes when it likes; a machine crash can lose messages).
    Never,
}

/// Where persistent messages live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `journal` (persistent messages on disk under `broker.data_dir`) or `memory`.
    pub kind: StoreKind,
    /// `batch` (one fsync per group of appends), `always` or `never`.
    pub fsync: FsyncMode,
    /// A journal segment is closed and a new one started past this size (64 MiB).
    pub segment_bytes: u64,
    /// Start journal segments on files of zeros written ahead, in the background (true):
    /// a durable append's fsync then writes data only, not the file's new size. Costs up
    /// to one segment of disk beyond the journal's. Off for filesystems that write every
    /// block anew (copy-on-write: btrfs, ZFS), where zeros written ahead do not help.
    pub preallocate: bool,
    /// Deliver a persistent message to a consumer that is waiting for it while it is being
    /// written (true), and confirm it to its producer as soon as it is either durable or
    /// acknowledged by its consumer — ActiveMQ's `concurrentStoreAndDispatchQueues`,
    /// RabbitMQ's publisher confirms. Either way a confirmed message is never lost; what
    /// changes is that after a crash a consumer may see again a message whose send was
    /// never confirmed (its producer sends it again). Sends that carry a failover
    /// producer's mark and transactions are always written before they are delivered.
    pub concurrent_store_and_dispatch: bool,
    /// The PostgreSQL store's connection string (`postgres://user@host:port/db`).
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Journal,
    Memory,
    Postgres,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            kind: StoreKind::Journal,
            fsync: FsyncMode::Batch,
            segment_bytes: 64 * 1024 * 1024,
            preallocate: true,
            concurrent_store_and_dispatch: true,
            url: String::new(),
        }
    }
}

/// The STOMP 1.2 listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StompSettings {
    pub enabled: bool,
    /// `host:port` (port 0 picks a free port).
    pub listen: String,
}

impl Default for StompSettings {
    fn default() -> Self {
        StompSettings {
            enabled: true,
            listen: "127.0.0.1:61613".into(),
        }
    }
}

impl StompSettings {
    /// The STOMP listen address; valid once [`Config::validate`] has passed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        socket_addr("stomp.listen", &self.listen)
    }
}

/// Every limit the broker enforces, with its default. Mirrored in `config/default.toml`.
///
/// What bounds the broker's memory, whatever clients do:
/// - stored messages: `max_memory_bytes` across queues (`max_queue_memory_bytes` each);
///   producers wait (flow control) rather than the broker growing;
/// - sends on their way in: `max_inflight_send_bytes` per connection (then the broker
///   stops reading it) and `max_partial_frame_bytes` of frames still arriving, broker-wide;
/// - deliveries on their way out: `prefetch_bytes` per consumer and
///   `max_pending_write_bytes` per connection; a topic subscriber's backlog is bounded by
///   `max_subscriber_backlog` messages and `max_subscriber_backlog_bytes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest frame either side may send, excluding the 4-byte length (17 MiB: the
    /// largest body and room for its headers). A longer length prefix is refused before
    /// its body is read.
    pub max_frame_bytes: u32,
    /// Largest message body (16 MiB, as ActiveMQ's and RabbitMQ's STOMP accept). The
    /// frame that carries it may be larger by its headers; a frame past `max_frame_bytes`
    /// is refused whatever its body.
    pub max_body_bytes: usize,
    /// Bytes queued for one connection's socket before the connection is closed as a slow
    /// consumer (64 MiB). Consumers pace themselves to half of it, so only a client that
    /// stops reading gets there.
    pub max_pending_write_bytes: usize,
    /// Bytes gathered into one socket write (256 KiB): one syscall per batch of frames.
    pub write_batch_bytes: usize,
    /// A socket that takes no bytes for this long closes its connection (10 s).
    pub write_timeout_ms: u64,
    /// Time a new connection has to send its `Hello` (10 s).
    pub handshake_timeout_ms: u64,
    /// A frame that has started arriving must be complete within this time (60 s), or
    /// its connection is closed with a reason. Time the broker itself stopped reading
    /// (flow control) does not count.
    pub frame_read_timeout_ms: u64,
    /// Bytes of frames still arriving that the whole broker buffers (256 MiB). Past it,
    /// connections holding part of a frame wait until others finish theirs.
    pub max_partial_frame_bytes: usize,
    /// Bytes of sends one connection may have read that destinations have not yet
    /// accepted (8 MiB). Past it the broker stops reading the connection until they are,
    /// so TCP pushes back on a producer whose queue is full (producer flow control). A
    /// single larger send is still read when nothing else is on its way.
    pub max_inflight_send_bytes: usize,
    /// Credit of a consumer that does not choose its own (1000, as ActiveMQ's queue prefetch).
    pub default_prefetch: u32,
    /// Largest prefetch a consumer may ask for (1,000,000).
    pub max_prefetch: u32,
    /// Bytes of bodies delivered to one consumer and not yet acknowledged (16 MiB): its
    /// prefetch in bytes, beside the prefetch in messages. A consumer with nothing in flight
    /// always gets one message, however large.
    pub prefetch_bytes: usize,
    /// Most deliveries in one `Deliver` frame (256).
    pub max_deliveries_per_frame: usize,
    /// Messages a topic keeps for a subscriber without credit before that subscriber's
    /// connection is closed as a slow consumer (100,000).
    pub max_subscriber_backlog: usize,
    /// The same in bytes of bodies (64 MiB).
    pub max_subscriber_backlog_bytes: usize,
    /// Longest destination name, in bytes (1024). Longer names are refused wherever they
    /// appear (send, subscribe, temporary and durable names).
    pub max_destination_name_bytes: usize,
    /// Most headers in one STOMP frame (128).
    pub stomp_max_headers: usize,
    /// Longest STOMP header line, escaped, in bytes (8 KiB). A STOMP frame's body is bounded
    /// by `max_body_bytes`, the whole frame by `max_frame_bytes`.
    pub stomp_max_header_bytes: usize,
    /// Bytes of messages one queue may hold in memory (64 MiB). Past it, producers wait
    /// (or fail, with `fail_when_full`) until consumers make room.
    pub max_queue_memory_bytes: usize,
    /// Bytes of queued messages the whole broker may hold in memory (1 GiB).
    pub max_memory_bytes: usize,
    /// A producer kept waiting this long by a full queue gets an error naming it (30 s).
    pub send_timeout_ms: u64,
    /// Refuse sends to a full queue at once instead of making the producer wait.
    pub fail_when_full: bool,
    /// Heart-beat interval the broker offers and asks for (`heart-beat: N,N`; 10 s).
    pub stomp_heartbeat_ms: u64,
    /// Grace beyond the negotiated interval before a silent STOMP client is dropped (5 s).
    pub stomp_heartbeat_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 17 * 1024 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            max_pending_write_bytes: 64 * 1024 * 1024,
            write_batch_bytes: 256 * 1024,
            write_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            frame_read_timeout_ms: 60_000,
            max_partial_frame_bytes: 256 * 1024 * 1024,
            max_inflight_send_bytes: 8 * 1024 * 1024,
            default_prefetch: 1000,
            max_prefetch: 1_000_000,
            prefetch_bytes: 16 * 1024 * 1024,
            max_deliveries_per_frame: 256,
            max_subscriber_backlog: 100_000,
            max_subscriber_backlog_bytes: 64 * 1024 * 1024,
            max_destination_name_bytes: 1024,
            max_queue_memory_bytes: 64 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            send_timeout_ms: 30_000,
            fail_when_full: false,
            stomp_max_headers: 128,
            stomp_max_header_bytes: 8 * 1024,
            stomp_heartbeat_ms: 10_000,
            stomp_heartbeat_grace_ms: 5_000,
        }
    }
}

/// Where `--profile` looks when no `--config-dir` is given, in order.
pub const PROFILE_DIRS: [&str; 2] = ["./config", "/etc/actormq"];

/// The folders a profile is looked for in: `$ACTORMQ_CONFIG_DIR` (if set), then
/// [`PROFILE_DIRS`].
fn profile_dirs() -> Vec<PathBuf> {
    std::env::var_os("ACTORMQ_CONFIG_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(PROFILE_DIRS.iter().map(PathBuf::from))
        .collect()
}

/// Where to read settings from.
#[derive(Clone, Debug, Default)]
pub struct ConfigSources {
    /// `<profile>.toml`, found in `config_dir` or (unset) the first of
    /// [`PROFILE_DIRS`] that has it.
    pub profile: Option<String>,
    /// The folder of profiles; unset: search `$ACTORMQ_CONFIG_DIR`, `./config`,
    /// `/etc/actormq`, in that order.
    pub config_dir: Option<PathBuf>,
    /// A settings file from anywhere.
    pub file: Option<PathBuf>,
    /// Read `ACTORMQ__*` environment variables.
    pub environment: bool,
    /// Final `(key, value)` overrides, e.g. from the command line, with their origin.
    pub overrides: Vec<(String, String, String)>,
}

/// One layer of settings and where it came from.
struct Layer {
    origin: String,
    source: Box<dyn Source + Send + Sync>,
    /// The layer's values alone, for checking its keys.
    values: Map<String, Value>,
}

impl Layer {
    fn new(origin: &str, source: Box<dyn Source + Send + Sync>) -> Result<Layer, ConfigError> {
        let values = Layers::builder()
            .add_source(vec![source.clone_into_box()])
            .build()
            .and_then(|c| c.try_deserialize::<Map<String, Value>>())
            .map_err(|e| ConfigError::Read {
                origin: origin.into(),
                reason: e.to_string(),
            })?;
        Ok(Layer {
            origin: origin.into(),
            source,
            values,
        })
    }
}

/// Command-line overrides as a `config` source whose values name their origin.
#[derive(Clone, Debug)]
struct Overrides(Map<String, Value>);

impl Source for Overrides {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

impl Config {
    /// Loads and validates settings from `sources`.
    pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
        let mut layers = vec![Layer::new(
            DEFAULT_ORIGIN,
            Box::new(File::from_str(DEFAULT_TOML, FileFormat::Toml)),
        )?];
        if let Some(profile) = &sources.profile {
            let dirs = match &sources.config_dir {
                Some(dir) => vec![dir.clone()],
                None => profile_dirs(),
            };
            let file = format!("{profile}.toml");
            let Some(path) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) else {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                return Err(ConfigError::ProfileNotFound {
                    profile: profile.clone(),
                    looked: looked.join(", "),
                });
            };
            layers.push(path_layer(&path)?);
        }
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(ConfigError::Read {
                    origin: path.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            layers.push(path_layer(path)?);
        }
        if sources.environment {
            let env = Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true);
            layers.push(Layer::new("the environment (ACTORMQ__*)", Box::new(env))?);
        }
        for (key, value, origin) in &sources.overrides {
            let Some((section, name)) = key.split_once('.') else {
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    origin: origin.clone(),
                });
            };
            let mut table = Map::new();
            table.insert(
                name.to_string(),
                Value::new(Some(origin), ValueKind::String(value.clone())),
            );
            let mut values = Map::new();
            values.insert(
                section.to_string(),
                Value::new(Some(origin), ValueKind::Table(table)),
            );
            layers.push(Layer::new(origin, Box::new(Overrides(values)))?);
        }

        let known = &layers[0].values;
        for layer in &layers[1..] {
            check_known_keys(known, &layer.values, "", &layer.origin)?;
        }

        let mut builder = Layers::builder();
        for layer in &layers {
            builder = builder.add_source(vec![layer.source.clone_into_box()]);
        }
        let config: Config = builder.build()?.try_deserialize().map_err(|e| match e {
            config::ConfigError::Type {
                unexpected,
                expected,
                key: Some(key),
                ..
            } => ConfigError::Invalid {
                origin: origin_of(&layers, &key),
                reason: format!("expected {expected}, found {unexpected}"),
                key,
            },
            other => ConfigError::Type(other),
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => ConfigError::Invalid {
                origin: origin_of(&layers, &key),
                key,
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks values that have a type but not every value of it makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, reason: String) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                origin: "settings".into(),
                reason,
            }
        }
        self.broker.listen_addr()?;
        if self.stomp.enabled {
            self.stomp.listen_addr()?;
        }
        if self.broker.name.trim().is_empty() {
            return Err(invalid("broker.name", "must not be empty".into()));
        }
        if self.cluster.enabled {
            self.cluster.validate(&self.broker.name)?;
        }
        self.ha.validate(self.store.kind)?;
        let l = &self.limits;
        if !(1024..=1 << 30).contains(&l.max_frame_bytes) {
            return Err(invalid(
                "limits.max_frame_bytes",
                format!("{} is outside 1024..=1073741824", l.max_frame_bytes),
            ));
        }
        if l.max_pending_write_bytes < l.max_frame_bytes as usize {
            return Err(invalid(
                "limits.max_pending_write_bytes",
                format!(
                    "{} is smaller than limits.max_frame_bytes ({})",
                    l.max_pending_write_bytes, l.max_frame_bytes
                ),
            ));
        }
        let positive = [
            ("store.segment_bytes", self.store.segment_bytes),
            ("limits.write_batch_bytes", l.write_batch_bytes as u64),
            ("limits.write_timeout_ms", l.write_timeout_ms),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.frame_read_timeout_ms", l.frame_read_timeout_ms),
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            (
                "limits.max_partial_frame_bytes",
                l.max_partial_frame_bytes as u64,
            ),
            (
                "limits.max_inflight_send_bytes",
                l.max_inflight_send_bytes as u64,
            ),
            ("limits.prefetch_bytes", l.prefetch_bytes as u64),
            (
                "limits.max_subscriber_backlog_bytes",
                l.max_subscriber_backlog_bytes as u64,
            ),
            (
                "limits.max_destination_name_bytes",
                l.max_destination_name_bytes as u64,
            ),
            (
                "limits.max_deliveries_per_frame",
                l.max_deliveries_per_frame as u64,
            ),
            (
                "limits.max_subscriber_backlog",
                l.max_subscriber_backlog as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        for group in &self.groups {
            if group.name.trim().is_empty() || group.members.is_empty() {
                return Err(invalid(
                    "groups",
                    format!(
                        "group `{}` needs a name and at least one member",
                        group.name
                    ),
                ));
            }
            for member in &group.members {
                match member.parse::<crate::message::Destination>() {
                    Ok(d)
                        if (d.is_queue() || d.is_topic())
                            && !d.is_temporary()
                            && !d.is_wildcard() => {}
                    _ => {
                        return Err(invalid(
                            "groups",
                            format!(
                                "member `{member}` of group `{}` is not a queue:NAME or topic:NAME",
                                group.name
                            ),
                        ));
                    }
                }
            }
        }
        let r = &self.redelivery;
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            return Err(invalid(
                "redelivery.multiplier",
                format!("{} is not a number of at least 1.0", r.multiplier),
            ));
        }
        if r.dlq_prefix.is_empty() {
            return Err(invalid("redelivery.dlq_prefix", "must not be empty".into()));
        }
        if l.default_prefetch > l.max_prefetch {
            return Err(invalid(
                "limits.default_prefetch",
                format!(
                    "{} is greater than limits.max_prefetch ({})",
                    l.default_prefetch, l.max_prefetch
                ),
            ));
        }
        Ok(())
    }
}

fn path_layer(path: &Path) -> Result<Layer, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        origin: origin.clone(),
        reason: e.to_string(),
    })?;
    Layer::new(&origin, Box::new(File::from_str(&text, FileFormat::Toml)))
}

/// Fails on the first key of `values` that `known` does not have.
fn check_known_keys(
    known: &Map<String, Value>,
    values: &Map<String, Value>,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (key, value) in values {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(known_value) = known.get(key) else {
            return Err(ConfigError::UnknownKey {
                key: path,
                origin: origin.into(),
            });
        };
        if let (ValueKind::Table(known_table), ValueKind::Table(table)) =
            (&known_value.kind, &value.kind)
        {
            check_known_keys(known_table, table, &path, origin)?;
        }
    }
    Ok(())
}

/// The origin of the last layer that set `key` (`section.name`).
fn origin_of(layers: &[Layer], key: &str) -> String {
    let mut parts = key.split('.');
    let section = parts.next().unwrap_or_default();
    let name = parts.next();
    layers
        .iter()
        .rev()
        .find(
            |layer| match (layer.values.get(section).map(|v| &v.kind), name) {
                (Some(ValueKind::Table(t)), Some(name)) => t.contains_key(name),
                (Some(_), None) => true,
                _ => false,
            },
        )
        .map(|layer| layer.origin.clone())
        .unwrap_or_else(|| DEFAULT_ORIGIN.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_the_code_default() {
        let loaded = Config::load(&ConfigSources::default()).unwrap();
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn arbiters_leave_a_core_unless_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut broker = BrokerSettings::default();
        let count = broker.arbiter_count();
        assert!(count >= 1, "{count}");
        if cores > 1 {
            assert_eq!(count, cores - 1);
        }
        broker.arbiters = cores + 3;
        assert_eq!(broker.arbiter_count(), cores + 3);
    }

    #[test]
    fn cluster_settings_are_checked_against_each_other() {
        let mut config = Config::default();
        config.broker.name = "node1".into();
        config.cluster.enabled = true;
        config.cluster.brokers = vec!["node2".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster.brokers") && err.contains("node1"),
            "{err}"
        );
        config.cluster.brokers = vec!["node1".into(), "node2".into()];
        config.cluster.placement = vec![PlacementRule {
            pattern: "orders.>".into(),
            home: "node9".into(),
        }];
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster.placement") && err.contains("node9"),
            "{err}"
        );
        config.cluster.placement.clear();
        config.cluster.seeds = vec!["nowhere".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.seeds"), "{err}");
        config.cluster.seeds = vec!["127.0.0.1:7721".into()];
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_three_node_profiles_load_and_agree_on_placement() {
        let load = |profile: &str| {
            Config::load(&ConfigSources {
                profile: Some(profile.into()),
                config_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("config")),
                ..ConfigSources::default()
            })
            .unwrap_or_else(|e| panic!("{profile}: {e}"))
        };
        let nodes: Vec<Config> = ["node1", "node2", "node3"].map(load).into();
        for node in &nodes {
            assert!(node.cluster.enabled);
            assert_eq!(node.cluster.brokers, nodes[0].cluster.brokers);
            assert_eq!(node.cluster.placement, nodes[0].cluster.placement);
        }
    }

    #[test]
    fn overrides_win_and_are_validated() {
        let mut sources = ConfigSources::default();
        sources.overrides.push((
            "broker.listen".into(),
            "127.0.0.1:0".into(),
            "--listen".into(),
        ));
        assert_eq!(Config::load(&sources).unwrap().broker.listen, "127.0.0.1:0");
        sources
            .overrides
            .push(("broker.listen".into(), "nowhere".into(), "--listen".into()));
        let err = Config::load(&sources).unwrap_err().to_string();
        assert!(
            err.contains("broker.listen") && err.contains("--listen"),
            "{err}"
        );
    }
}
