//! Topic semantics against a real broker: fan-out, late subscribers, slow subscribers.

mod common;

use std::time::Duration;

use actormq::client::{ClientError, ConsumerOptions, ErrorCode};
use actormq::{Destination, Message};
use common::{broker, broker_with, connect};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_subscribers_each_receive_every_message() {
    let broker = broker();
    let topic = Destination::topic("prices");
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let (c, s) = connect(&broker).await;
        let consumer = s.consumer(topic.clone()).await.unwrap();
        subscribers.push((c, s, consumer));
    }
    let (_connection, session) = connect(&broker).await;
    let producer = session.producer(topic.clone());
    for chunk in 0..10 {
        let batch = (0..100)
            .map(|i| Message::new(format!("{}", chunk * 100 + i)))
            .collect();
        producer.send_batch(batch).await.unwrap();
    }
    for (_c, _s, consumer) in &mut subscribers {
        for expected in 0..1000 {
            let m = consumer.receive(WAIT).await.unwrap().expect("a message");
            assert_eq!(m.body_text(), expected.to_string());
        }
        assert!(
            consumer
                .receive(Duration::from_millis(50))
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_none_of_the_earlier_messages() {
    let broker = broker();
    let topic = Destination::topic("news");
    let (_connection, session) = connect(&broker).await;
    let mut early = session.consumer(topic.clone()).await.unwrap();
    let producer = session.producer(topic.clone());
    producer.send(Message::new("before")).await.unwrap();
    // The early subscriber has it, so the broker has published it.
    assert_eq!(
        early.receive(WAIT).await.unwrap().unwrap().body_text(),
        "before"
    );

    let mut late = session.consumer(topic.clone()).await.unwrap();
    producer.send(Message::new("after")).await.unwrap();
    assert_eq!(
        late.receive(WAIT).await.unwrap().unwrap().body_text(),
        "after"
    );
    assert_eq!(
        early.receive(WAIT).await.unwrap().unwrap().body_text(),
        "after"
    );
    assert!(
        late.receive(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_too_far_behind_is_told_why_and_others_carry_on() {
    let broker = broker_with(|c| c.limits.max_subscriber_backlog = 100);
    let topic = Destination::topic("firehose");
    // Pull mode with no receive: this subscriber never has credit.
    let (_slow_connection, slow_session) = connect(&broker).await;
    let mut slow = slow_session
        .consumer_with(topic.clone(), ConsumerOptions::prefetch(0))
        .await
        .unwrap();
    let (_c, session) = connect(&broker).await;
    let mut healthy = session.consumer(topic.clone()).await.unwrap();
    let producer = session.producer(topic.clone());
    for i in 0..150 {
        producer.send(Message::new(format!("{i}"))).await.unwrap();
        assert_eq!(
            healthy.receive(WAIT).await.unwrap().unwrap().body_text(),
            i.to_string()
        );
    }
    match slow.next_delivery().await {
        Err(ClientError::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::SlowConsumer);
            assert!(message.contains("topic:firehose"), "{message}");
        }
        other => panic!("expected a slow-consumer error, got {other:?}"),
    }
}
