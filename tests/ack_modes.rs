//! Acknowledgement modes: what is acknowledged stays consumed, what is not comes back.

mod common;

use std::time::Duration;

use actormq::client::{AckMode, Connection, ConsumerOptions};
use actormq::{BrokerThread, Destination, Message};
use common::broker;

const WAIT: Duration = Duration::from_secs(10);

/// Sends `bodies` to `queue`.
async fn fill(broker: &BrokerThread, queue: &Destination, bodies: &[&str]) {
    let (_c, session) = common::connect(broker).await;
    let batch = bodies.iter().map(|b| Message::new(b.to_string())).collect();
    session
        .producer(queue.clone())
        .send_batch(batch)
        .await
        .unwrap();
}

/// Everything left on `queue`, in order, each with its redelivered flag.
async fn drain(broker: &BrokerThread, queue: &Destination) -> Vec<(String, bool)> {
    let (_c, session) = common::connect(broker).await;
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let mut left = Vec::new();
    while let Ok(Ok(d)) =
        tokio::time::timeout(Duration::from_millis(300), consumer.next_delivery()).await
    {
        left.push((d.message.body_text().to_string(), d.redelivered));
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn individual_acknowledges_one_message_only() {
    let broker = broker();
    let queue = Destination::queue("individual");
    fill(&broker, &queue, &["a", "b", "c"]).await;
    {
        let connection = Connection::connect(&broker.url()).await.unwrap();
        let session = connection.session(AckMode::Individual).unwrap();
        let mut consumer = session.consumer(queue.clone()).await.unwrap();
        let mut messages = Vec::new();
        for _ in 0..3 {
            messages.push(consumer.receive(WAIT).await.unwrap().unwrap());
        }
        session.acknowledge(&messages[1]).unwrap();
        session.acknowledge(&messages[1]).unwrap(); // twice is harmless
        drop(consumer);
        drop(session);
        connection.close().await.unwrap();
    }
    assert_eq!(
        drain(&broker, &queue).await,
        [("a".into(), true), ("c".into(), true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_acknowledges_everything_the_session_took_before() {
    let broker = broker();
    let (q1, q2) = (
        Destination::queue("client.one"),
        Destination::queue("client.two"),
    );
    fill(&broker, &q1, &["a1", "a2"]).await;
    fill(&broker, &q2, &["b1"]).await;
    {
        let connection = Connection::connect(&broker.url()).await.unwrap();
        let session = connection.session(AckMode::Client).unwrap();
        let options = ConsumerOptions::prefetch(10);
        let mut one = session
            .consumer_with(q1.clone(), options.clone())
            .await
            .unwrap();
        let mut two = session.consumer_with(q2.clone(), options).await.unwrap();
        let a1 = one.receive(WAIT).await.unwrap().unwrap();
        let b1 = two.receive(WAIT).await.unwrap().unwrap();
        let a2 = one.receive(WAIT).await.unwrap().unwrap();
        assert_eq!((a1.body_text(), a2.body_text()), ("a1".into(), "a2".into()));
        // Acknowledging b1 acknowledges a1 (taken before it), not a2 (taken after).
        session.acknowledge(&b1).unwrap();
        drop((one, two));
        drop(session);
        connection.close().await.unwrap();
    }
    assert_eq!(drain(&broker, &q1).await, [("a2".into(), true)]);
    assert!(drain(&broker, &q2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dups_ok_acknowledges_what_was_taken_lazily() {
    let broker = broker();
    let queue = Destination::queue("dupsok");
    fill(&broker, &queue, &["x", "y", "z"]).await;
    {
        let connection = Connection::connect(&broker.url()).await.unwrap();
        let session = connection.session(AckMode::DupsOk).unwrap();
        let mut consumer = session.consumer(queue.clone()).await.unwrap();
        for _ in 0..2 {
            consumer.receive(WAIT).await.unwrap().unwrap();
        }
        drop(consumer);
        drop(session);
        connection.close().await.unwrap();
    }
    // x and y were taken (acknowledged on close); z was only prefetched.
    assert_eq!(drain(&broker, &queue).await, [("z".into(), true)]);
}

/// `acknowledge_stored` confirms only what it stored: a message whose consumer closed first
/// went back to the queue, and the call says so instead of confirming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_acknowledgement_is_refused_once_its_consumer_has_closed() {
    let broker = broker();
    let connection = Connection::connect(&broker.url()).await.unwrap();
    let session = connection.session(AckMode::Client).unwrap();
    let queue = Destination::queue("acks.stored");
    session
        .producer(queue.clone())
        .send(Message::new("one"))
        .await
        .unwrap();
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let message = consumer
        .receive(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a message");
    drop(consumer);
    let refused = session.acknowledge_stored(&message).await;
    match refused {
        Err(actormq::client::ClientError::Refused(reason)) => {
            assert!(reason.contains("is closed"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And it comes again.
    let mut again = session.consumer(queue).await.unwrap();
    let back = again.receive(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        back.map(|m| m.body_text().to_string()).as_deref(),
        Some("one")
    );
}
