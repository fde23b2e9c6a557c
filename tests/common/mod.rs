//! Shared by the integration tests: real brokers on port 0, and polling with a deadline.
#![allow(dead_code)]

pub mod postgres;
pub mod process;
pub mod proxy;
pub mod raw_stomp;
pub mod small_disk;

use std::time::{Duration, Instant};

use actormq::client::{AckMode, Connection, Session};
use actormq::{BrokerThread, Config};

/// A broker on its own thread, on a free port, with default settings.
pub fn broker() -> BrokerThread {
    broker_with(|_| {})
}

/// A broker on a free port, with settings adjusted by `adjust`. Its store is memory
/// unless `adjust` says otherwise (see `data_dir` for a journal of its own).
pub fn broker_with(adjust: impl FnOnce(&mut Config)) -> BrokerThread {
    let mut config = Config::default();
    config.broker.listen = "127.0.0.1:0".into();
    config.stomp.listen = "127.0.0.1:0".into();
    config.store.kind = actormq::config::StoreKind::Memory;
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

/// A fresh folder for one test's data, under the system's temporary folder.
pub fn data_dir(test: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("actormq-test-{}-{test}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// The `seq` property a test numbered its messages with.
pub fn seq_of(message: &actormq::Message) -> i64 {
    match message.properties.get("seq") {
        Some(actormq::Property::Int(n)) => *n,
        other => panic!("message without a seq property: {other:?}"),
    }
}

/// Checks that nothing more arrives. An absence can only be seen by waiting a little: this
/// is the one short wait the tests allow themselves, and it can only make a test fail.
pub async fn assert_nothing_more(consumer: &mut actormq::client::Consumer) {
    let extra = consumer
        .receive(Duration::from_millis(200))
        .await
        .expect("the consumer is open");
    assert!(
        extra.is_none(),
        "a message beyond those expected: {extra:?}"
    );
}

/// Sends persistent messages numbered `seq` = 0, 1, … below `count` to `queue`, in batches
/// of 100 with 8 batches in flight, until they are all sent or a send fails. Reports the
/// first number of each confirmed batch and when its confirmation came; the channel closes
/// when the producer stops.
pub fn produce_numbered(
    connection: Connection,
    queue: actormq::Destination,
    count: i64,
) -> tokio::sync::mpsc::UnboundedReceiver<(i64, std::time::SystemTime)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let producer = connection.session(AckMode::Auto).unwrap().producer(queue);
        let mut in_flight = std::collections::VecDeque::new();
        for start in (0..count).step_by(100) {
            let batch = (start..start + 100)
                .map(|n| {
                    actormq::Message::new(vec![1u8; 64])
                        .with_property("seq", actormq::Property::Int(n))
                })
                .collect();
            let Ok(confirmation) = producer.begin_send(batch) else {
                break;
            };
            in_flight.push_back((start, confirmation));
            if in_flight.len() >= 8 {
                let (start, confirmation) = in_flight.pop_front().unwrap();
                if confirmation.await.is_err()
                    || tx.send((start, std::time::SystemTime::now())).is_err()
                {
                    break;
                }
            }
        }
    });
    rx
}

/// Receives from `queue` at `url` until every message in `confirmed` has come and nothing
/// more arrives; fails on a message delivered twice or a confirmed one missing.
pub async fn drain_exactly_once(
    url: &str,
    queue: actormq::Destination,
    confirmed: &std::collections::HashSet<i64>,
) -> usize {
    let connection = Connection::connect(url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session
        .consumer_with(queue, actormq::client::ConsumerOptions::prefetch(5000))
        .await
        .unwrap();
    let mut received = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if confirmed.is_subset(&received) {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let Some(m) = consumer.receive(wait).await.unwrap() else {
            break;
        };
        assert!(
            received.insert(seq_of(&m)),
            "message {} delivered twice",
            seq_of(&m)
        );
    }
    let missing: Vec<&i64> = confirmed.difference(&received).take(5).collect();
    assert!(
        missing.is_empty(),
        "confirmed messages lost, e.g. {missing:?} (of {} confirmed, {} received)",
        confirmed.len(),
        received.len()
    );
    drop(consumer);
    drop(session);
    connection.close().await.unwrap();
    received.len()
}

/// Polls (for up to 30 s) until a client is served at `url`, not refused as a standby.
pub async fn served(url: &str) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Connection::connect(url).await {
            Ok(connection) => return connection,
            Err(e) => assert!(Instant::now() < deadline, "{url} never served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
