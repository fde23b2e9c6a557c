//! The broker process: its listener, and the connection, session and consumer actors that
//! stand between a client socket and the destinations. [`Broker::start`] wires them up
//! inside a running actix system; [`BrokerThread`] runs a whole broker on its own thread
//! (for tests and for embedding in another program).

mod connection;
mod consumer;
mod listener;
mod session;
mod wire;

use std::net::SocketAddr;
use std::thread::JoinHandle;

use actix::{Actor, Addr, Message as ActixMessage};
use bytes::Bytes;

pub use connection::ConnectionActor;
pub use consumer::{ConsumerActor, ConsumerCommand};
pub use session::{SessionActor, SessionCommand};
pub use wire::{ClientWire, NativeWire};

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, Limits, StoreKind};
use crate::destination::{CollectStats, DestinationRegistry};
use crate::protocol::{DestinationStat, Frame, ProtocolError, encode_frame};
use crate::runtime::ArbiterPool;
use std::sync::Arc;

use crate::store::{Journal, JournalSettings, MemoryStore, Recovered, SharedStore};
use crate::net::writer::{FrameSink, WriterError, WriterLimits};

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
    Encode(#[from] ProtocolError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The client ended this consumer's subscription: nothing more is written for it.
    #[error("consumer {0} is unsubscribed")]
    Unsubscribed(u32),
}

/// Asks an actor to stop (sessions, consumers).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Encodes `frame` and queues it on `sink`.
pub(crate) fn write_frame(
    sink: &FrameSink,
    frame: &Frame,
    limits: &Limits,
) -> Result<(), BrokerError> {
    let bytes: Bytes = encode_frame(frame, limits.max_frame_bytes as usize)?;
    sink.send(bytes)?;
    Ok(())
}

/// The writer settings from `limits`; `last_words` is written to a slow consumer.
pub(crate) fn writer_limits(limits: &Limits, last_words: Option<Bytes>) -> WriterLimits {
    WriterLimits {
        max_pending_bytes: limits.max_pending_write_bytes,
        batch_bytes: limits.write_batch_bytes,
        write_timeout: std::time::Duration::from_millis(limits.write_timeout_ms),
        slow_consumer_frame: last_words,
    }
}

/// What a slow consumer is told before it is disconnected.
pub(crate) fn slow_consumer_reason(limits: &Limits) -> String {
    format!(
        "slow consumer: more than {} bytes were waiting to be written to this connection",
        limits.max_pending_write_bytes
    )
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

/// A connection's writer stopped, and why.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct WriterStopped(pub crate::net::writer::CloseReason);

/// Starts a connection's writer on the current arbiter; `owner` hears when it stops.
pub(crate) fn start_writer(
    socket: tokio::net::tcp::OwnedWriteHalf,
    limits: WriterLimits,
    owner: actix::Recipient<WriterStopped>,
) -> FrameSink {
    let (sink, run) = crate::net::writer::writer(socket, limits);
    actix::spawn(async move {
        owner.do_send(WriterStopped(run.await));
    });
    sink
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
            cluster.as_ref().map(Cluster::view),
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
