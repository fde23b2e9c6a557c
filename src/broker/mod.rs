//! The broker process, composed: the store, the arbiters, the destination registry, the
//! cluster, and a listener per front-end. [`Broker::start`] wires them up inside a running
//! actix system; [`serve`] runs a broker until shutdown, as a master/slave pair's member
//! when `[ha]` says so (`node`); [`BrokerThread`] runs a whole broker on its own thread
//! (for tests and for embedding in another program). Nothing below depends on this module.

mod listener;
mod node;
mod standby;

pub use node::serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Actor, Addr};

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, StoreKind};
use crate::destination::{CollectStats, DestinationRegistry};
use crate::runtime::ArbiterPool;
use crate::stats::DestinationStat;
use crate::store::{
    Journal, JournalSettings, MemoryStore, PostgresSettings, PostgresStore, Recovered, SharedStore,
};

/// Errors of the broker module.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "cannot listen on {addr}: {source} (is another broker running there? stop it, or \
         choose another address with --listen / --stomp-listen)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the broker thread failed to start: {0}")]
    Thread(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0} is not a broker this can start")]
    Unsupported(&'static str),
    #[error("master/slave: {0}")]
    Ha(#[from] crate::ha::HaError),
}

/// Binds a listening socket and says where it is (port 0 picks a free port).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), BrokerError> {
    let bind_error = |source| BrokerError::Bind { addr, source };
    let socket = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = socket.local_addr().map_err(bind_error)?;
    Ok((socket, local))
}

/// The client listeners of a broker, bound once: a master/slave broker keeps them while it
/// waits as a standby (refusing clients) and serves on them once it is the master.
#[derive(Clone)]
pub struct Listeners {
    native: Arc<tokio::net::TcpListener>,
    native_addr: SocketAddr,
    stomp: Option<(Arc<tokio::net::TcpListener>, SocketAddr)>,
}

impl Listeners {
    /// Binds the native listener and, if enabled, the STOMP one.
    pub async fn bind(config: &Config) -> Result<Listeners, BrokerError> {
        let (native, native_addr) = bind(config.broker.listen_addr()?).await?;
        let stomp = match config.stomp.enabled {
            true => {
                let (socket, addr) = bind(config.stomp.listen_addr()?).await?;
                Some((Arc::new(socket), addr))
            }
            false => None,
        };
        Ok(Listeners {
            native: Arc::new(native),
            native_addr,
            stomp,
        })
    }
}

/// A running broker inside an actix system.
pub struct Broker {
    local_addr: SocketAddr,
    store: SharedStore,
    stomp_addr: Option<SocketAddr>,
    arbiters: ArbiterPool,
    registry: Addr<DestinationRegistry>,
    accept: Vec<tokio::task::JoinHandle<()>>,
    cluster: Option<Cluster>,
}

impl Broker {
    /// Binds the listeners and starts a lone broker. Call inside an actix system.
    pub async fn start(config: Config) -> Result<Broker, BrokerError> {
        config.validate()?;
        let listeners = Listeners::bind(&config).await?;
        Broker::start_on(config, listeners, None).await
    }

    /// Starts the store, the arbiters, the registry and the cluster, and serves on
    /// `listeners`; as the master of a pair when `master` is given (the store writes behind
    /// its fence).
    pub async fn start_on(
        config: Config,
        listeners: Listeners,
        master: Option<&crate::ha::Mastership>,
    ) -> Result<Broker, BrokerError> {
        config.validate()?;
        let local_addr = listeners.native_addr;
        let (store, recovered): (SharedStore, Recovered) = match config.store.kind {
            StoreKind::Journal => {
                let settings = JournalSettings {
                    dir: journal_dir(&config),
                    fsync: config.store.fsync,
                    segment_bytes: config.store.segment_bytes,
                    preallocate: config.store.preallocate,
                };
                let (journal, recovered) = match master {
                    Some(master) => Journal::open_fenced(settings, master.fence())?,
                    None => Journal::open(settings)?,
                };
                (Arc::new(journal), recovered)
            }
            StoreKind::Memory => (Arc::new(MemoryStore), Recovered::default()),
            StoreKind::Postgres => {
                // Validation saw to it that a broker on PostgreSQL holds the lease.
                let Some(master) = master else {
                    return Err(BrokerError::Unsupported(
                        "store.kind = \"postgres\" without ha.mode = \"database\"",
                    ));
                };
                let settings = PostgresSettings {
                    url: config.store.url.clone(),
                    write_timeout: config.ha.lease(),
                };
                let (store, recovered) = PostgresStore::open(settings, master.fence())?;
                (Arc::new(store), recovered)
            }
        };
        let cluster = if config.cluster.enabled {
            Some(Cluster::start(&config, local_addr).await?)
        } else {
            None
        };
        let arbiters = ArbiterPool::start(config.broker.arbiter_count());
        let resends = crate::session::Resends::new(&recovered.sends);
        let registry = DestinationRegistry::new(
            arbiters.clone(),
            &config,
            store.clone(),
            recovered,
            cluster
                .as_ref()
                .map(|cluster| Box::new(cluster.view()) as Box<dyn crate::destination::Homes>),
        )
        .with_master(master.map(|m| master_stat(&config, m)))
        .start();
        if let Some(cluster) = &cluster {
            cluster.serve(registry.clone());
        }
        let services = crate::frontend::Services {
            registry: registry.clone(),
            config: config.clone(),
            // Frames still arriving, across both listeners.
            budget: crate::net::reader::ReadBudget::new(config.limits.max_partial_frame_bytes),
            resends,
        };
        let mut accept = vec![listener::spawn(
            listeners.native.clone(),
            arbiters.clone(),
            services.clone(),
            listener::native,
        )];
        let mut stomp_addr = None;
        if let Some((socket, addr)) = listeners.stomp {
            accept.push(listener::spawn(
                socket,
                arbiters.clone(),
                services,
                listener::stomp,
            ));
            tracing::info!("STOMP listening on {addr}");
            stomp_addr = Some(addr);
        }
        // Last of the listeners: once this is logged, every one of them accepts.
        tracing::info!(name = %config.broker.name, "listening on {local_addr}");
        match config.store.kind {
            StoreKind::Journal => tracing::info!(
                arbiters = arbiters.len(),
                fsync = ?config.store.fsync,
                "store: journal in {}",
                journal_dir(&config).display()
            ),
            StoreKind::Memory => tracing::info!(arbiters = arbiters.len(), "store: memory"),
            StoreKind::Postgres => tracing::info!(arbiters = arbiters.len(), "store: postgres"),
        }
        Ok(Broker {
            local_addr,
            store,
            stomp_addr,
            arbiters,
            registry,
            accept,
            cluster,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The STOMP listener's address, if it is enabled.
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.stomp_addr
    }

    /// Counters of every destination.
    pub async fn stats(&self) -> Vec<DestinationStat> {
        self.registry
            .send(CollectStats)
            .await
            .map(|stats| stats.destinations)
            .unwrap_or_default()
    }

    /// Stops accepting, stops the arbiters, and closes the journal (everything accepted is
    /// on disk when this returns).
    pub fn stop(self) {
        for accept in &self.accept {
            accept.abort();
        }
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
        self.arbiters.stop();
        self.store.close();
    }
}

/// Where the journal lives.
fn journal_dir(config: &Config) -> std::path::PathBuf {
    config.broker.data_dir.join("journal")
}

/// What `stat` shows of a master.
fn master_stat(config: &Config, master: &crate::ha::Mastership) -> crate::stats::MasterStat {
    crate::stats::MasterStat {
        epoch: master.epoch(),
        since_ms: master.me.since_ms,
        lock: match config.ha.mode {
            crate::config::HaMode::Database => "database lease".into(),
            _ => format!("shared-file lock on {}", config.broker.data_dir.display()),
        },
        previous: master.previous.as_ref().map(|p| p.name.clone()),
    }
}

/// A broker on a thread of its own, with its own actix system. Dropping it stops the broker.
pub struct BrokerThread {
    local_addr: SocketAddr,
    stomp_addr: Option<SocketAddr>,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl BrokerThread {
    /// Starts a broker and returns once it is listening.
    pub fn spawn(config: Config) -> Result<BrokerThread, BrokerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actormq-broker".into())
            .spawn(move || {
                let system = actix::System::new();
                let started = system.block_on(Broker::start(config));
                match started {
                    Ok(broker) => {
                        let addrs = (broker.local_addr(), broker.stomp_addr());
                        let _ = tx.send(Ok((addrs, actix::System::current())));
                        let _ = system.run();
                        broker.stop();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| BrokerError::Thread(e.to_string()))?;
        let ((local_addr, stomp_addr), system) = rx
            .recv()
            .map_err(|e| BrokerError::Thread(e.to_string()))??;
        Ok(BrokerThread {
            local_addr,
            stomp_addr,
            system,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The STOMP listener's address, if it is enabled.
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.stomp_addr
    }

    /// `tcp://host:port` of this broker.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.local_addr)
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
