//! Queue semantics against a real broker: competing consumers, order, credit, redelivery.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use actormq::client::ConsumerOptions;
use actormq::{Destination, Message, Property};
use common::{broker, connect, eventually, seq_of, stat_of};

const WAIT: Duration = Duration::from_secs(10);

async fn send_numbered(producer: &actormq::client::Producer, range: std::ops::Range<i64>) {
    let mut pending = Vec::new();
    let numbers: Vec<i64> = range.collect();
    for chunk in numbers.chunks(250) {
        let batch = chunk
            .iter()
            .map(|n| Message::new(format!("m{n}")).with_property("seq", Property::Int(*n)))
            .collect();
        pending.push(producer.begin_send(batch).expect("send is written"));
    }
    for confirmation in pending {
        confirmation.await.expect("send is confirmed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_competing_consumers_share_ten_thousand_messages_exactly_once() {
    let broker = broker();
    let (connection, session) = connect(&broker).await;
    let queue = Destination::queue("shared");
    // Small prefetch so both consumers take part while the producer is still sending.
    let options = ConsumerOptions::prefetch(50);
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (c, s) = connect(&broker).await;
        let consumer = s
            .consumer_with(queue.clone(), options.clone())
            .await
            .unwrap();
        consumers.push((c, s, consumer));
    }
    let receivers: Vec<_> = consumers
        .into_iter()
        .map(|(c, s, mut consumer)| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(m) = consumer.receive(Duration::from_secs(2)).await.unwrap() {
                    seen.push(seq_of(&m));
                }
                drop(consumer);
                drop(s);
                c.close().await.unwrap();
                seen
            })
        })
        .collect();
    send_numbered(&session.producer(queue.clone()), 0..10_000).await;

    let mut all = Vec::new();
    for receiver in receivers {
        let seen = receiver.await.unwrap();
        assert!(
            seen.len() > 1000,
            "each consumer should take a fair part, one took {}",
            seen.len()
        );
        // FIFO per producer, as each consumer sees it.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
        all.extend(seen);
    }
    assert_eq!(all.len(), 10_000, "every message delivered exactly once");
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 10_000, "no message delivered twice");

    let stat = eventually(WAIT, "the queue to drain", || async {
        stat_of(&connection, "queue", "shared")
            .await
            .filter(|s| s.dequeued == 10_000)
    })
    .await;
    assert_eq!((stat.depth, stat.enqueued, stat.consumers), (0, 10_000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_with_a_timeout_returns_none_on_an_empty_queue() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let mut consumer = session.consumer(Destination::queue("empty")).await.unwrap();
    let started = std::time::Instant::now();
    let got = consumer.receive(Duration::from_millis(200)).await.unwrap();
    assert!(got.is_none());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_field_arrives_as_sent() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let queue = Destination::queue("fields");
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let sent = Message::new(&b"binary\0body"[..])
        .with_header("region", "eu")
        .with_property("count", Property::Int(-7))
        .with_property("ratio", Property::Float(0.25))
        .with_property("flag", Property::Bool(true))
        .with_property("name", Property::Text("x".into()))
        .with_correlation_id("corr-1")
        .with_reply_to(Destination::queue("replies"))
        .with_priority(8)
        .with_time_to_live(Duration::from_secs(60));
    session
        .producer(queue.clone())
        .send(sent.clone())
        .await
        .unwrap();
    let got = consumer.receive(WAIT).await.unwrap().expect("a message");
    assert!(!got.id.is_empty());
    assert!(got.timestamp > 0);
    assert_eq!(got.destination, Some(queue));
    assert_eq!(got.body, sent.body);
    assert_eq!(got.headers, sent.headers);
    assert_eq!(got.properties, sent.properties);
    assert_eq!(got.correlation_id, sent.correlation_id);
    assert_eq!(got.reply_to, sent.reply_to);
    assert_eq!(got.priority, 8);
    assert_eq!(got.expiration, sent.expiration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_never_delivered() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let queue = Destination::queue("expiring");
    let producer = session.producer(queue.clone());
    let mut stale = Message::new("stale");
    stale.expiration = 1; // long past
    producer.send(stale).await.unwrap();
    producer.send(Message::new("fresh")).await.unwrap();
    let mut consumer = session.consumer(queue).await.unwrap();
    let got = consumer.receive(WAIT).await.unwrap().expect("a message");
    assert_eq!(got.body_text(), "fresh");
    assert!(
        consumer
            .receive(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_zero_pulls_one_message_per_receive() {
    let broker = broker();
    let (connection, session) = connect(&broker).await;
    let queue = Destination::queue("pull");
    send_numbered(&session.producer(queue.clone()), 0..10).await;
    let mut puller = session
        .consumer_with(queue.clone(), ConsumerOptions::prefetch(0))
        .await
        .unwrap();
    let first = puller.receive(WAIT).await.unwrap().expect("a message");
    assert_eq!(seq_of(&first), 0);
    // The puller holds nothing ahead: a second consumer gets the next message.
    let (_c2, s2) = connect(&broker).await;
    let mut other = s2.consumer(queue.clone()).await.unwrap();
    let next = other.receive(WAIT).await.unwrap().expect("a message");
    assert_eq!(seq_of(&next), 1);
    drop(other);
    let stat = stat_of(&connection, "queue", "pull").await.unwrap();
    assert_eq!(stat.enqueued, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_closed_consumer_did_not_take_goes_to_the_next_one_marked_redelivered() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let queue = Destination::queue("handover");
    send_numbered(&session.producer(queue.clone()), 0..100).await;
    {
        let (c1, s1) = connect(&broker).await;
        let mut first = s1.consumer(queue.clone()).await.unwrap();
        // All 100 are prefetched to this consumer; it takes 10.
        for n in 0..10 {
            let m = first.receive(WAIT).await.unwrap().expect("a message");
            assert_eq!(seq_of(&m), n);
        }
        drop(first);
        drop(s1);
        c1.close().await.unwrap();
    }
    let mut second = session.consumer(queue).await.unwrap();
    for n in 10..100 {
        let d = second.next_delivery().await.unwrap();
        assert_eq!(seq_of(&d.message), n, "order kept across the handover");
        assert!(d.redelivered, "message {n} should be marked redelivered");
    }
    assert!(
        second
            .receive(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
}

/// Long bodies travel by reference (spliced into frames on the way out, left in the read
/// buffer on the way in) and short ones are copied: batches that mix them, of distinct
/// content, arrive byte for byte, in order, once each, persistent or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_short_bodies_mixed_in_batches_arrive_intact() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let queue = Destination::queue("mixed-sizes");
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let producer = session.producer(queue);
    let sizes = [
        100,
        actormq::constants::SHARED_BODY_BYTES - 1,
        actormq::constants::SHARED_BODY_BYTES,
        1 << 20,
        3,
    ];
    let body = |n: usize| -> Vec<u8> {
        let size = sizes[n % sizes.len()];
        (0..size).map(|i| (i * 31 + n * 7) as u8).collect()
    };
    let mut sent = 0;
    for batch in 0..6 {
        let messages = (0..sizes.len())
            .map(|i| {
                let n = batch * sizes.len() + i;
                Message::new(body(n))
                    .with_property("seq", Property::Int(n as i64))
                    .with_persistent(batch % 2 == 0)
            })
            .collect();
        producer.send_batch(messages).await.unwrap();
        sent += sizes.len();
    }
    for n in 0..sent {
        let message = consumer.receive(WAIT).await.unwrap().expect("a message");
        assert_eq!(seq_of(&message), n as i64);
        assert!(message.body[..] == body(n)[..], "body of message {n}");
    }
    common::assert_nothing_more(&mut consumer).await;
}
