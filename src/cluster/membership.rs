//! [`Membership`]: the live set of brokers, as the SWIM protocol of the `foca` crate sees
//! it. The actor owns foca (a state machine with no I/O), a UDP socket, and foca's timers
//! (`run_later` on its own context); it turns foca's member-up and member-down notices into
//! the [`MemberTable`] that placement errors, `stat` and the bridge read, and tells the
//! bridge so it can dial or drop links.
//!
//! A broker's identity carries its name, its generation (a new one on every start), and the
//! addresses of its client and bridge listeners, so learning of a member is enough to
//! reach it. A stopped or frozen broker stops answering probes: suspected after one probe
//! period, down `suspect_to_down_ms` later.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message as ActixMessage};
use bytes::Bytes;
use foca::{Foca, Identity, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use super::bridge::Bridge;
use super::members::MemberTable;
use crate::config::ClusterSettings;
use crate::constants::REANNOUNCE;
use crate::stats::{MemberStat, MemberState};

/// A broker as the membership protocol knows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeId {
    /// The cluster it belongs to: a broker of another cluster is refused.
    pub cluster: String,
    pub name: String,
    /// The broker's start (milliseconds since the epoch): new on every restart.
    pub generation: u64,
    /// Bumped when foca must renew a falsely suspected identity; not a restart.
    bump: u32,
    pub gossip: SocketAddr,
    pub client: SocketAddr,
    pub bridge: SocketAddr,
}

impl NodeId {
    pub fn new(
        cluster: &str,
        name: &str,
        generation: u64,
        gossip: SocketAddr,
        client: SocketAddr,
        bridge: SocketAddr,
    ) -> NodeId {
        NodeId {
            cluster: cluster.to_string(),
            name: name.to_string(),
            generation,
            bump: 0,
            gossip,
            client,
            bridge,
        }
    }

    /// A stand-in for a seed whose identity is not known yet (loses every conflict).
    fn seed(gossip: SocketAddr) -> NodeId {
        NodeId {
            cluster: String::new(),
            name: String::new(),
            generation: 0,
            bump: 0,
            gossip,
            client: gossip,
            bridge: gossip,
        }
    }

    fn stat(&self, state: MemberState, local: bool) -> MemberStat {
        MemberStat {
            name: self.name.clone(),
            generation: self.generation,
            client_addr: self.client.to_string(),
            bridge_addr: self.bridge.to_string(),
            state,
            local,
        }
    }
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let mut renewed = self.clone();
        renewed.bump = renewed.bump.wrapping_add(1);
        Some(renewed)
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.bump) > (adversary.generation, adversary.bump)
    }
}

type Swim = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// The membership actor.
pub struct Membership {
    foca: Swim,
    runtime: foca::AccumulatingRuntime<NodeId>,
    socket: Arc<UdpSocket>,
    seeds: Vec<SocketAddr>,
    table: MemberTable,
    bridge: Bridge,
    cluster: String,
    /// Brokers of other clusters already refused (logged once each).
    refused: std::collections::HashSet<(String, u64)>,
    /// The identity each member was last seen up with.
    current: std::collections::HashMap<String, NodeId>,
}

/// A datagram from another broker.
#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Datagram(Bytes);

/// Leave the cluster politely (on shutdown).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct Leave;

impl Membership {
    pub fn new(
        me: NodeId,
        socket: UdpSocket,
        settings: &ClusterSettings,
        table: MemberTable,
        bridge: Bridge,
    ) -> Result<Membership, super::ClusterError> {
        table.set(me.stat(MemberState::Up, true));
        let seeds = settings
            .seed_addrs()
            .map_err(|e| super::ClusterError::Config(e.to_string()))?
            .into_iter()
            .filter(|seed| *seed != me.gossip)
            .collect();
        let members = settings.brokers.len().max(2) as u32;
        let mut config = foca::Config::new_lan(
            std::num::NonZeroU32::new(members).unwrap_or(std::num::NonZeroU32::MIN),
        );
        let period = Duration::from_millis(settings.probe_period_ms);
        config.probe_period = period;
        config.probe_rtt = period / 3;
        config.suspect_to_down_after = Duration::from_millis(settings.suspect_to_down_ms);
        config.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: period / 2,
            num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        });
        let rng = StdRng::seed_from_u64(me.generation ^ u64::from(std::process::id()));
        Ok(Membership {
            cluster: me.cluster.clone(),
            refused: Default::default(),
            current: Default::default(),
            foca: Foca::new(me, config, rng, PostcardCodec),

            runtime: foca::AccumulatingRuntime::new(),
            socket: Arc::new(socket),
            seeds,
            table,
            bridge,
        })
    }

    /// Announces this broker to the seeds and to every member it has known.
    fn announce(&mut self) {
        let known = self.current.values().map(|id| id.gossip);
        let mut targets: Vec<SocketAddr> = self.seeds.iter().copied().chain(known).collect();
        targets.sort();
        targets.dedup();
        for target in targets {
            if let Err(e) = self.foca.announce(NodeId::seed(target), &mut self.runtime) {
                tracing::debug!("announce to {target}: {e}");
            }
        }
    }

    /// Carries out what foca asked for: datagrams, timers, notices.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        while let Some((to, data)) = self.runtime.to_send() {
            // UDP: a datagram the kernel cannot take now is one foca will resend or outlive.
            if let Err(e) = self.socket.try_send_to(&data, to.gossip) {
                tracing::debug!("gossip to {}: {e}", to.gossip);
            }
        }
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            ctx.run_later(delay, move |act: &mut Membership, ctx| act.fire(timer, ctx));
        }
        while let Some(notice) = self.runtime.to_notify() {
            match notice {
                OwnedNotification::MemberUp(id) if id.name.is_empty() => {}
                OwnedNotification::MemberUp(id) if id.cluster != self.cluster => {
                    if self.refused.insert((id.name.clone(), id.generation)) {
                        tracing::error!(
                            "refused broker `{}` at {}: it belongs to cluster `{}`, this broker to `{}`",
                            id.name,
                            id.gossip,
                            id.cluster,
                            self.cluster
                        );
                    }
                }
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(
                        member = %id.name,
                        generation = id.generation,
                        "cluster member up (client {}, bridge {})",
                        id.client,
                        id.bridge
                    );
                    let stat = id.stat(MemberState::Up, false);
                    self.current.insert(id.name.clone(), id);
                    self.table.set(stat.clone());
                    self.bridge.member_changed(stat);
                }
                OwnedNotification::MemberDown(id)
                    if !id.name.is_empty() && id.cluster == self.cluster =>
                {
                    // Only the identity last seen up: a newer one (a restart, or a
                    // rejoin after a freeze) may already be up.
                    if self.current.get(&id.name) == Some(&id) {
                        tracing::warn!(
                            member = %id.name,
                            generation = id.generation,
                            "cluster member down"
                        );
                        let stat = id.stat(MemberState::Down, false);
                        self.table.set(stat.clone());
                        self.bridge.member_changed(stat);
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    if self.current.get(&old.name) == Some(&old) {
                        self.current.insert(new.name.clone(), new);
                    }
                }
                OwnedNotification::Rejoin(me) => {
                    tracing::info!("rejoined the cluster after being declared down ({me:?})");
                }
                other => tracing::debug!("membership: {other:?}"),
            }
        }
    }

    fn fire(&mut self, timer: Timer<NodeId>, ctx: &mut Context<Self>) {
        if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
            tracing::debug!("membership timer: {e}");
        }
        self.drain(ctx);
    }
}

impl Actor for Membership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let socket = self.socket.clone();
        let me = ctx.address();
        ctx.spawn(actix::fut::wrap_future(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((len, _)) => {
                        // Not `try_send`: a burst (a broker waking from a freeze) must not
                        // end this loop on a full mailbox.
                        if !me.connected() {
                            break;
                        }
                        me.do_send(Datagram(Bytes::copy_from_slice(&buf[..len])));
                    }
                    Err(e) => tracing::debug!("gossip socket: {e}"),
                }
            }
        }));
        self.announce();
        self.drain(ctx);
        ctx.run_interval(REANNOUNCE, |act, ctx| {
            // Alone (every other broker down or not met yet): knock on the seeds and on
            // every broker known before.
            if act.foca.num_members() == 0 {
                act.announce();
                act.drain(ctx);
            }
        });
    }
}

impl Handler<Datagram> for Membership {
    type Result = ();

    fn handle(&mut self, Datagram(data): Datagram, ctx: &mut Context<Self>) {
        // Garbage on the gossip port is foca's to refuse; it costs that datagram only.
        if let Err(e) = self.foca.handle_data(&data, &mut self.runtime) {
            tracing::debug!("gossip datagram refused: {e}");
        }
        self.drain(ctx);
    }
}

impl Handler<Leave> for Membership {
    type Result = ();

    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!("leaving the cluster: {e}");
        }
        self.drain(ctx);
    }
}
