//! The broker process, composed: the store, the arbiters, the destination registry, the
//! cluster, and a listener per front-end. [`Broker::start`] wires them up inside a running
//! actix system; [`BrokerThread`] runs a whole broker on its own thread (for tests and for
//! embedding in another program). Nothing below depends on this module.

mod listener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Actor, Addr};

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, StoreKind};
use crate::destination::{CollectStats, DestinationRegistry};
use crate::runtime::ArbiterPool;
use crate::stats::DestinationStat;
use crate::store::{Journal, JournalSettings, MemoryStore, Recovered, SharedStore};

/// Errors of the broker module.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
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
    /// Starts the arbiters, the registry and the listener. Call inside an actix system.
    pub async fn start(config: Config) -> Result<Broker, BrokerError> {
        config.validate()?;
        let (socket, local_addr) = bind(config.broker.listen_addr()?).await?;
        let (store, recovered): (SharedStore, Recovered) = match config.store.kind {
            StoreKind::Journal => {
                let settings = JournalSettings {
                    dir: config.broker.data_dir.join("journal"),
                    fsync: config.store.fsync,
                    segment_bytes: config.store.segment_bytes,
                };
                let (journal, recovered) = Journal::open(settings)?;
                (Arc::new(journal), recovered)
            }
            StoreKind::Memory => (Arc::new(MemoryStore), Recovered::default()),
        };
        let cluster = if config.cluster.enabled {
            Some(Cluster::start(&config, local_addr).await?)
        } else {
            None
        };
        let arbiters = ArbiterPool::start(config.broker.arbiter_count());
        let registry = DestinationRegistry::new(
            arbiters.clone(),
            &config,
            store.clone(),
            recovered,
            cluster
                .as_ref()
                .map(|cluster| Box::new(cluster.view()) as Box<dyn crate::destination::Homes>),
        )
        .start();
        if let Some(cluster) = &cluster {
            cluster.serve(registry.clone());
        }
        // Frames still arriving, across both listeners.
        let budget = crate::net::reader::ReadBudget::new(config.limits.max_partial_frame_bytes);
        let mut accept = vec![listener::spawn(
            socket,
            arbiters.clone(),
            registry.clone(),
            config.clone(),
            budget.clone(),
            listener::native,
        )];
        let mut stomp_addr = None;
        if config.stomp.enabled {
            let (socket, addr) = bind(config.stomp.listen_addr()?).await?;
            accept.push(listener::spawn(
                socket,
                arbiters.clone(),
                registry.clone(),
                config.clone(),
                budget,
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
                config.broker.data_dir.join("journal").display()
            ),
            StoreKind::Memory => tracing::info!(arbiters = arbiters.len(), "store: memory"),
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
