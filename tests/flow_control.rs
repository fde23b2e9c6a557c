//! Flow control: a full queue makes producers wait (or fail), never the broker grow
//! without bound; a consumer that drains the queue lets them go on.

mod common;

use std::time::Duration;

use actormq::client::ClientError;
use actormq::{Destination, Message};
use common::{broker_with, connect, eventually, stat_of};

const WAIT: Duration = Duration::from_secs(10);
/// 1 KiB bodies are counted as 1,280 bytes each: 12 fit in 16 KiB.
const LIMIT: usize = 16 * 1024;

fn kib() -> Message {
    Message::new(vec![0u8; 1024]).with_persistent(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_blocks_its_producer_until_a_consumer_drains_the_queue() {
    let broker = broker_with(|c| c.limits.max_queue_memory_bytes = LIMIT);
    let queue = Destination::queue("flood");
    let (connection, session) = connect(&broker).await;
    let producer = session.producer(queue.clone());
    let flood = tokio::spawn(async move {
        for _ in 0..100 {
            producer.send(kib()).await?;
        }
        Ok::<_, ClientError>(())
    });
    let stat = eventually(WAIT, "the queue to fill", || async {
        stat_of(&connection, "queue", "flood")
            .await
            .filter(|s| s.depth >= 12)
    })
    .await;
    assert!(
        stat.depth <= 13,
        "the queue holds no more than its limit: {stat:?}"
    );
    // Blocked, not failed: still running a while later (an absence cannot be polled for).
    let mut flood = flood;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut flood)
            .await
            .is_err()
    );

    let (_c, consumer_session) = connect(&broker).await;
    let mut consumer = consumer_session.consumer(queue).await.unwrap();
    for _ in 0..100 {
        consumer
            .receive(WAIT)
            .await
            .unwrap()
            .expect("every message arrives");
    }
    flood
        .await
        .unwrap()
        .expect("the producer went on once there was room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_when_configured_to_fail() {
    let broker = broker_with(|c| {
        c.limits.max_queue_memory_bytes = LIMIT;
        c.limits.fail_when_full = true;
    });
    let (_c, session) = connect(&broker).await;
    let producer = session.producer(Destination::queue("strict"));
    let mut refused = None;
    for _ in 0..20 {
        if let Err(e) = producer.send(kib()).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(ClientError::Refused(message)) => {
            assert!(message.contains("queue:strict is full"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_send_fails_after_the_send_timeout() {
    let broker = broker_with(|c| {
        c.limits.max_queue_memory_bytes = LIMIT;
        c.limits.send_timeout_ms = 300;
    });
    let (_c, session) = connect(&broker).await;
    let producer = session.producer(Destination::queue("patient"));
    let started = std::time::Instant::now();
    let mut failed = None;
    for _ in 0..20 {
        if let Err(e) = producer.send(kib()).await {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(ClientError::Refused(message)) => {
            assert!(message.contains("waited 300 ms"), "{message}");
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
        other => panic!("expected a timeout refusal, got {other:?}"),
    }
}
