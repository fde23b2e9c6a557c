//! The counters `stat` reports: one row per destination, the store, the cluster's members.
//! Plain data below every module that fills them in (destinations, the store, the cluster)
//! and the protocol that carries them.

use serde::{Deserialize, Serialize};

use crate::message::{Destination, DestinationKind};

/// The broker's store, as `stat` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStat {
    /// `journal` or `postgres`.
    pub kind: String,
    /// Bytes in the journal's segment files.
    pub bytes: u64,
    pub segments: u64,
    /// Torn or corrupt records skipped when the journal was opened.
    pub skipped: u64,
    /// Messages, over all queues, waiting on disk only.
    pub paged: u64,
    /// Records (acknowledgements) the journal could not write yet, for want of disk space;
    /// it tries again until they are written.
    pub unwritten: u64,
    /// The queue with the most live messages in the oldest segment (the one that keeps the
    /// journal from shrinking), and how many it has there.
    pub oldest_holder: Option<(String, u64)>,
}

/// One row of `stat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStat {
    pub kind: DestinationKind,
    pub name: String,
    /// Messages waiting plus messages delivered and not yet acknowledged.
    pub depth: u64,
    /// Messages delivered and not yet acknowledged (part of `depth`).
    pub in_flight: u64,
    /// Messages waiting on disk only (part of `depth`).
    pub paged: u64,
    pub enqueued: u64,
    pub dequeued: u64,
    pub consumers: u64,
    /// The broker this destination lives on (in a cluster; `None` on a lone broker).
    pub home: Option<String>,
}

impl DestinationStat {
    /// The row of a destination whose counters cannot be read (its home is down).
    pub fn unknown(destination: &Destination, home: Option<String>) -> DestinationStat {
        DestinationStat {
            kind: destination.kind(),
            name: destination.name().to_string(),
            depth: 0,
            in_flight: 0,
            paged: 0,
            enqueued: 0,
            dequeued: 0,
            consumers: 0,
            home,
        }
    }
}

/// A master/slave broker that is the master, as `stat` shows it. (A standby serves no
/// client; it refuses them, naming the master it waits for.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStat {
    pub epoch: u64,
    /// When it became the master, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The lock it holds: `shared-file lock on DIR` or `database lease`.
    pub lock: String,
    /// The master before it, if one is recorded.
    pub previous: Option<String>,
}

/// Whether a cluster member is reachable, as the membership protocol sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Up,
    Down,
}

/// One member of the cluster, as `stat` and cluster metadata show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStat {
    pub name: String,
    /// Changes on every restart of the broker.
    pub generation: u64,
    /// Its native protocol listener (where a client connects).
    pub client_addr: String,
    /// Its bridge listener (where other brokers connect).
    pub bridge_addr: String,
    pub state: MemberState,
    /// This is the broker that answered.
    pub local: bool,
}
