//! Brokers as one cluster: who is up ([`Membership`], SWIM via `foca`), how they talk
//! ([`Bridge`], one TCP link per peer carrying typed envelopes), where each destination
//! lives ([`Placement`]), and the stand-in for a destination that lives elsewhere
//! ([`RemoteDestination`]; for a topic, [`TopicMirror`], which fans out locally). The
//! registry asks [`ClusterView::reference`] or [`ClusterView::mirror`] for any destination
//! placed on another broker and hands sessions the same `DestinationRef` type as for a
//! local one.
//!
//! ```text
//!  broker node2                                        broker node1 (home of queue:orders)
//!  SessionActor ─ Enqueue ─► RemoteDestination ─┐      ┌─► HomeSide ─ Enqueue ─► QueueActor
//!  ConsumerActor ◄─ Dispatch ── Bridge sinks ◄──┤ link ├── RemoteConsumer ◄─ Dispatch ─┘
//!  ConsumerActor ─ Settle ─► RemoteDestination ─┘      └─► HomeSide ─ Settle ─► QueueActor
//!  Membership (UDP, SWIM) ◄──────── gossip ────────────► Membership
//! ```

mod bridge;
mod envelope;
mod home;
mod members;
mod membership;
mod mirror;
mod placement;
mod remote;

use std::net::SocketAddr;

use actix::{Actor, Addr};

pub use bridge::{Bridge, BridgeError};
pub use envelope::{
    BRIDGE_VERSION, Envelope, EnvelopeCodec, EnvelopeError, Hello, Refused, Remotable,
};
pub use members::MemberTable;
pub use membership::{Membership, NodeId};
pub use mirror::TopicMirror;
pub use placement::Placement;
pub use remote::RemoteDestination;

use crate::config::Config;
use crate::destination::{DestinationRef, DestinationRegistry, Homes, TopicActor};
use crate::message::Destination;
use crate::stats::MemberStat;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen for the cluster on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster settings: {0}")]
    Config(String),
}

/// What the registry needs of the cluster: where destinations live, the bridge to reach
/// them, and the members. Cheap to clone.
#[derive(Clone)]
pub struct ClusterView {
    pub placement: Placement,
    pub bridge: Bridge,
    pub members: MemberTable,
}

impl Homes for ClusterView {
    fn me(&self) -> &str {
        self.placement.me()
    }

    fn remote_home(&self, destination: &Destination) -> Option<String> {
        self.placement.remote_home(destination)
    }

    /// A proxy on `arbiter` (the one the name hashes to, as a local destination's).
    fn reference(
        &self,
        destination: &Destination,
        home: String,
        arbiter: &actix::ArbiterHandle,
    ) -> DestinationRef {
        let proxy = RemoteDestination::new(destination.clone(), home.clone(), self.bridge.clone());
        let proxy = RemoteDestination::start_in_arbiter(arbiter, move |_| proxy);
        DestinationRef::remote(destination.clone(), home, proxy)
    }

    /// Subscribers here join `local`, fed by one subscription to the home topic.
    fn mirror(
        &self,
        destination: &Destination,
        home: String,
        arbiter: &actix::ArbiterHandle,
        local: Addr<TopicActor>,
        prefetch: u32,
    ) -> DestinationRef {
        let proxy = RemoteDestination::new(destination.clone(), home.clone(), self.bridge.clone());
        let proxy = RemoteDestination::start_in_arbiter(arbiter, move |_| proxy);
        let d = destination.clone();
        let mirror = TopicMirror::start_in_arbiter(arbiter, move |_| {
            TopicMirror::new(d, proxy, local, prefetch)
        });
        DestinationRef::remote(destination.clone(), home, mirror)
    }

    fn locate(&self, destination: &Destination) -> Option<MemberStat> {
        self.members.get(self.placement.home(destination))
    }

    fn members(&self) -> Vec<MemberStat> {
        self.members.all()
    }
}

/// A running cluster node: the bridge listener and the membership actor.
pub struct Cluster {
    view: ClusterView,
    membership: Addr<Membership>,
    listener: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Binds the bridge and gossip sockets and joins through the seeds. `client_addr` is
    /// where this broker's clients connect (told to the other members).
    pub async fn start(config: &Config, client_addr: SocketAddr) -> Result<Cluster, ClusterError> {
        let settings = &config.cluster;
        let invalid = |e: crate::config::ConfigError| ClusterError::Config(e.to_string());
        let bridge_at = settings.bridge_addr().map_err(invalid)?;
        let gossip_at = settings.gossip_addr().map_err(invalid)?;
        let bind = |addr: SocketAddr| move |source| ClusterError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(bridge_at)
            .await
            .map_err(bind(bridge_at))?;
        let bridge_addr = listener.local_addr().map_err(bind(bridge_at))?;
        let gossip = tokio::net::UdpSocket::bind(gossip_at)
            .await
            .map_err(bind(gossip_at))?;
        let gossip_addr = gossip.local_addr().map_err(bind(gossip_at))?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let name = &config.broker.name;
        let members = MemberTable::default();
        let bridge = Bridge::new(name, generation, settings, &config.limits, members.clone());
        let listener = bridge.listen(listener);
        let me = NodeId::new(
            &settings.name,
            name,
            generation,
            gossip_addr,
            client_addr,
            bridge_addr,
        );
        let membership =
            Membership::new(me, gossip, settings, members.clone(), bridge.clone())?.start();
        tracing::info!(
            cluster = %settings.name,
            generation,
            "cluster bridge on {bridge_addr}, gossip on {gossip_addr}"
        );
        Ok(Cluster {
            view: ClusterView {
                placement: Placement::new(name, settings, &config.redelivery.dlq_prefix),
                bridge,
                members,
            },
            membership,
            listener,
        })
    }

    pub fn view(&self) -> ClusterView {
        self.view.clone()
    }

    /// Serve peers' requests from `registry`.
    pub fn serve(&self, registry: Addr<DestinationRegistry>) {
        self.view.bridge.set_registry(registry);
    }

    /// Leaves the cluster and stops accepting links.
    pub fn stop(&self) {
        self.membership.do_send(membership::Leave);
        self.listener.abort();
    }
}
