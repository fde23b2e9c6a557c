//! [`Placement`]: which broker a destination lives on. Pure and deterministic, so every
//! broker of a cluster computes the same home for every destination from the same
//! configuration: placement rules first (as ActiveMQ users split unrelated queues onto
//! separate brokers), otherwise rendezvous (highest-random-weight) hashing over the
//! configured broker names — adding a broker moves only the destinations it now wins.

use crate::config::{ClusterSettings, PlacementRule};
use crate::message::{Destination, DestinationKind, wildcard_matches};

/// Where destinations live.
#[derive(Clone, Debug)]
pub struct Placement {
    me: String,
    brokers: Vec<String>,
    rules: Vec<PlacementRule>,
    /// Dead-letter queues live with the queue they serve.
    dlq_prefix: String,
}

impl Placement {
    pub fn new(me: &str, settings: &ClusterSettings, dlq_prefix: &str) -> Placement {
        Placement {
            me: me.to_string(),
            brokers: settings.brokers.clone(),
            rules: settings.placement.clone(),
            dlq_prefix: dlq_prefix.to_string(),
        }
    }

    /// This broker's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The broker a queue or topic called `name` lives on.
    pub fn home_of_name(&self, name: &str) -> &str {
        let name = name.strip_prefix(&self.dlq_prefix).unwrap_or(name);
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| wildcard_matches(&rule.pattern, name))
        {
            return &rule.home;
        }
        self.brokers
            .iter()
            .max_by_key(|broker| (weight(broker, name), *broker))
            .map(String::as_str)
            .unwrap_or(&self.me)
    }

    /// The broker `destination` lives on. Temporary destinations live with their owner's
    /// connection, whose broker starts their name (`node2.17.1`); wildcard subscription
    /// points with their subscriber (here); a durable subscription with its topic.
    pub fn home(&self, destination: &Destination) -> &str {
        match destination.kind() {
            DestinationKind::TempQueue | DestinationKind::TempTopic => {
                let owner = destination.name().split('.').next().unwrap_or_default();
                self.brokers
                    .iter()
                    .find(|broker| *broker == owner)
                    .map(String::as_str)
                    .unwrap_or(&self.me)
            }
            DestinationKind::Topic if destination.is_wildcard() => &self.me,
            DestinationKind::Durable => match destination.durable_topic() {
                Some(topic) => self.home_of_name(topic.name()),
                None => &self.me,
            },
            _ => self.home_of_name(destination.name()),
        }
    }

    /// Whether `destination` lives on another broker, and which.
    pub fn remote_home(&self, destination: &Destination) -> Option<String> {
        let home = self.home(destination);
        (home != self.me).then(|| home.to_string())
    }
}

/// The rendezvous weight of `name` on `broker`: FNV-1a over both, stable across builds
/// and platforms (the std hasher is not), finished with a mixer so that similar names
/// spread evenly.
fn weight(broker: &str, name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in broker.bytes().chain([0]).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(me: &str) -> Placement {
        let settings = ClusterSettings {
            brokers: vec!["node1".into(), "node2".into(), "node3".into()],
            placement: vec![PlacementRule {
                pattern: "orders.*".into(),
                home: "node2".into(),
            }],
            ..ClusterSettings::default()
        };
        Placement::new(me, &settings, "DLQ.")
    }

    #[test]
    fn rules_win_then_every_broker_agrees_on_the_hash() {
        let (a, b) = (placement("node1"), placement("node3"));
        assert_eq!(a.home(&Destination::queue("orders.eu")), "node2");
        assert_eq!(a.home(&Destination::queue("DLQ.orders.eu")), "node2");
        let mut per_broker = std::collections::HashMap::new();
        for i in 0..3000 {
            let d = Destination::queue(format!("q{i}"));
            assert_eq!(a.home(&d), b.home(&d));
            *per_broker.entry(a.home(&d).to_string()).or_insert(0) += 1;
        }
        // Rendezvous spreads names evenly: each broker gets roughly a third.
        for count in per_broker.values() {
            assert!((800..1200).contains(count), "{per_broker:?}");
        }
    }

    #[test]
    fn temporaries_live_with_their_owner_and_wildcards_here() {
        let p = placement("node3");
        let temp: Destination = "temp-queue:c1-reply".parse().expect("a temp queue");
        assert_eq!(p.remote_home(&temp), None);
        let temp: Destination = "temp-queue:node1.17.1".parse().expect("a temp queue");
        assert_eq!(p.remote_home(&temp).as_deref(), Some("node1"));
        assert_eq!(p.remote_home(&Destination::topic("orders.>")), None);
    }
}
