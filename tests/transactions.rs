//! Transacted sessions: sends and acknowledgements are held until commit; rollback drops
//! the sends and redelivers what was received.

mod common;

use std::time::Duration;

use actormq::client::{AckMode, Connection};
use actormq::{Destination, Message};
use common::{broker_with, connect};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_wait_for_commit_and_vanish_on_rollback() {
    let broker = broker_with(|_| {});
    let queue = Destination::queue("tx.sends");
    let (_c, observer) = connect(&broker).await;
    let mut consumer = observer.consumer(queue.clone()).await.unwrap();

    let connection = Connection::connect(&broker.url()).await.unwrap();
    let session = connection.session(AckMode::Transacted).unwrap();
    let producer = session.producer(queue.clone());
    producer.send(Message::new("rolled back")).await.unwrap();
    session.rollback().unwrap();
    for i in 0..3 {
        producer.send(Message::new(format!("m{i}"))).await.unwrap();
    }
    // Not before the commit (an absence: a short wait is the only way to see it).
    common::assert_nothing_more(&mut consumer).await;
    session.commit().await.unwrap();
    for i in 0..3 {
        let m = consumer.receive(WAIT).await.unwrap().expect("committed");
        assert_eq!(m.body_text(), format!("m{i}"));
    }
    common::assert_nothing_more(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_messages_come_back_on_rollback_and_are_consumed_on_commit() {
    let broker = broker_with(|c| c.redelivery.initial_delay_ms = 10);
    let queue = Destination::queue("tx.receive");
    let (_c, plain) = connect(&broker).await;
    let batch = ["a", "b"]
        .iter()
        .map(|b| Message::new(b.to_string()))
        .collect();
    plain
        .producer(queue.clone())
        .send_batch(batch)
        .await
        .unwrap();

    let connection = Connection::connect(&broker.url()).await.unwrap();
    let session = connection.session(AckMode::Transacted).unwrap();
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let first = consumer.next_delivery().await.unwrap();
    assert_eq!(
        (first.message.body_text().to_string(), first.redelivered),
        ("a".into(), false)
    );
    session.rollback().unwrap();
    // "a" comes back after its redelivery delay, marked redelivered; "b" was still waiting.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(WAIT, consumer.next_delivery())
            .await
            .unwrap()
            .unwrap();
        seen.push((d.message.body_text().to_string(), d.redelivered));
    }
    seen.sort();
    assert_eq!(seen, [("a".into(), true), ("b".into(), false)]);
    session.commit().await.unwrap();
    drop(consumer);
    drop(session);
    connection.close().await.unwrap();

    let mut after = plain.consumer(queue).await.unwrap();
    assert!(
        after
            .receive(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "committed acks hold"
    );
}
