//! Paging: a persistent backlog beyond the memory limit waits on disk, not in memory, and
//! is read back in order when consumers come.

mod common;

use std::time::Duration;

use actormq::client::ConsumerOptions;
use actormq::client::{AckMode, Connection};
use actormq::config::StoreKind;
use actormq::{Destination, Message, Property};
use common::process::BrokerProcess;
use common::{broker_with, connect, data_dir, stat_of};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_far_beyond_the_memory_limit_is_paged_and_read_back_in_order() {
    let dir = data_dir("paging");
    let broker = broker_with(|c| {
        c.store.kind = StoreKind::Journal;
        c.broker.data_dir = dir.clone();
        c.limits.max_queue_memory_bytes = 64 * 1024;
        c.limits.send_timeout_ms = 5_000;
    });
    let (connection, session) = connect(&broker).await;
    let queue = Destination::queue("deep");
    let producer = session.producer(queue.clone());
    // 20,000 × 1 KiB: 400 times the queue's memory limit. Without paging the producer
    // would wait for room and time out.
    for chunk in 0..200 {
        let batch = (0..100)
            .map(|i| {
                Message::new(vec![1u8; 1024]).with_property("seq", Property::Int(chunk * 100 + i))
            })
            .collect();
        producer
            .send_batch(batch)
            .await
            .expect("a stored message never waits for memory");
    }
    let stat = stat_of(&connection, "queue", "deep").await.unwrap();
    assert_eq!(stat.depth, 20_000);
    assert!(
        stat.paged > 19_000,
        "nearly all of it waits on disk: {stat:?}"
    );
    let store = connection.stat_with_store().await.unwrap().store;
    assert_eq!(store.map(|s| s.paged), Some(stat.paged));

    let mut consumer = session
        .consumer_with(queue, ConsumerOptions::prefetch(500))
        .await
        .unwrap();
    for expected in 0..20_000i64 {
        let m = consumer
            .receive(WAIT)
            .await
            .unwrap()
            .expect("a paged message read back");
        assert_eq!(
            m.properties.get("seq"),
            Some(&Property::Int(expected)),
            "in order"
        );
        assert_eq!(m.body.len(), 1024);
    }
    common::assert_nothing_more(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_persistent_messages_with_no_consumer_stay_under_a_gibibyte() {
    let dir = data_dir("two-million");
    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();
    let producer = connection
        .session(AckMode::Auto)
        .unwrap()
        .producer(Destination::queue("backlog"));
    let body = bytes::Bytes::from(vec![7u8; 1024]);
    let mut in_flight = std::collections::VecDeque::new();
    let mut peak = 0;
    for chunk in 0..4_000 {
        let batch = (0..500).map(|_| Message::new(body.clone())).collect();
        in_flight.push_back(producer.begin_send(batch).unwrap());
        if in_flight.len() >= 8 {
            in_flight.pop_front().unwrap().await.expect("stored");
        }
        if chunk % 200 == 0 {
            peak = peak.max(broker.resident_bytes().unwrap_or(0));
        }
    }
    for confirmation in in_flight {
        confirmation.await.expect("stored");
    }
    peak = peak.max(broker.resident_bytes().unwrap_or(0));
    let stat = stat_of(&connection, "queue", "backlog").await.unwrap();
    assert_eq!(stat.depth, 2_000_000);
    eprintln!("broker resident memory peaked at {} MiB", peak >> 20);
    assert!(
        peak < 1 << 30,
        "the broker's resident memory peaked at {} MiB",
        peak >> 20
    );
    // The backlog is readable: the first messages come back from disk.
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session
        .consumer(Destination::queue("backlog"))
        .await
        .unwrap();
    for _ in 0..1000 {
        let m = consumer.receive(WAIT).await.unwrap().expect("a message");
        assert_eq!(m.body.len(), 1024);
    }
    drop(consumer);
    let _ = std::fs::remove_dir_all(&dir);
}
