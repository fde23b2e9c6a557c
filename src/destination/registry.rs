//! [`DestinationRegistry`]: name → [`DestinationRef`]. Creates a destination on first use,
//! on the arbiter its name hashes to. The one place that will ask placement where a
//! destination lives once brokers form a cluster.

use std::collections::HashMap;

use actix::{Actor, Context, Handler, Message as ActixMessage, ResponseFuture};

use super::{DestinationError, DestinationRef, QueueActor, TopicActor};
use crate::config::Limits;
use crate::message::{Destination, DestinationKind};
use crate::protocol::DestinationStat;
use crate::runtime::ArbiterPool;

/// Find (or create) a destination.
#[derive(ActixMessage)]
#[rtype(result = "Result<DestinationRef, DestinationError>")]
pub struct Lookup(pub Destination);

/// Counters of every destination, sorted by kind and name.
#[derive(ActixMessage)]
#[rtype(result = "Vec<DestinationStat>")]
pub struct CollectStats;

pub struct DestinationRegistry {
    destinations: HashMap<Destination, DestinationRef>,
    arbiters: ArbiterPool,
    limits: Limits,
}

impl DestinationRegistry {
    pub fn new(arbiters: ArbiterPool, limits: Limits) -> DestinationRegistry {
        DestinationRegistry {
            destinations: HashMap::new(),
            arbiters,
            limits,
        }
    }

    fn create(&self, destination: &Destination) -> DestinationRef {
        let arbiter = self.arbiters.for_name(destination.name());
        let per_dispatch = self.limits.max_deliveries_per_frame;
        let d = destination.clone();
        match destination.kind() {
            DestinationKind::Queue => {
                let addr = QueueActor::start_in_arbiter(arbiter, move |_| {
                    QueueActor::new(d, per_dispatch)
                });
                DestinationRef::local(destination.clone(), addr)
            }
            DestinationKind::Topic => {
                let backlog = self.limits.max_subscriber_backlog;
                let addr = TopicActor::start_in_arbiter(arbiter, move |_| {
                    TopicActor::new(d, per_dispatch, backlog)
                });
                DestinationRef::local(destination.clone(), addr)
            }
        }
    }
}

impl Actor for DestinationRegistry {
    type Context = Context<Self>;
}

impl Handler<Lookup> for DestinationRegistry {
    type Result = Result<DestinationRef, DestinationError>;

    fn handle(&mut self, Lookup(destination): Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(found) = self.destinations.get(&destination) {
            return Ok(found.clone());
        }
        let created = self.create(&destination);
        self.destinations.insert(destination, created.clone());
        Ok(created)
    }
}

impl Handler<CollectStats> for DestinationRegistry {
    type Result = ResponseFuture<Vec<DestinationStat>>;

    fn handle(&mut self, _msg: CollectStats, _ctx: &mut Context<Self>) -> Self::Result {
        let requests: Vec<_> = self.destinations.values().map(|d| d.stat()).collect();
        Box::pin(async move {
            let mut stats: Vec<DestinationStat> = futures::future::join_all(requests)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            stats.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
            stats
        })
    }
}
