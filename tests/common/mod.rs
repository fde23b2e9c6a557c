//! Shared by the integration tests: real brokers on port 0, and polling with a deadline.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use actormq::client::{AckMode, Connection, Session};
use actormq::{BrokerThread, Config};

/// A broker on its own thread, on a free port, with default settings.
pub fn broker() -> BrokerThread {
    broker_with(|_| {})
}

/// A broker on a free port, with settings adjusted by `adjust`.
pub fn broker_with(adjust: impl FnOnce(&mut Config)) -> BrokerThread {
    let mut config = Config::default();
    config.broker.listen = "127.0.0.1:0".into();
    config.stomp.listen = "127.0.0.1:0".into();
    config.broker.arbiters = 2;
    adjust(&mut config);
    BrokerThread::spawn(config).expect("the broker starts")
}

/// A connection and an auto-acknowledge session.
pub async fn connect(broker: &BrokerThread) -> (Connection, Session) {
    let connection = Connection::connect(&broker.url())
        .await
        .expect("the client connects");
    let session = connection.session(AckMode::Auto).expect("a session opens");
    (connection, session)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stat row of one destination, if the broker has it.
pub async fn stat_of(
    connection: &Connection,
    kind: &str,
    name: &str,
) -> Option<actormq::protocol::DestinationStat> {
    connection
        .stat()
        .await
        .expect("stat answers")
        .into_iter()
        .find(|s| s.kind.as_str() == kind && s.name == name)
}
