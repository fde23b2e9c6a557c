//! Memory after load: what a burst of large messages took is given back once the broker is
//! idle, so its resident memory returns near where it started.

mod common;

use std::time::Duration;

use actormq::client::{AckMode, Connection};
use actormq::{Destination, Message};
use bytes::Bytes;

use common::eventually;
use common::process::{MIB, Measured};

/// 300 messages of 1 MiB through a queue (native and STOMP), then nothing: within 30 s the
/// broker's resident memory is back within 64 MiB of its start (it held hundreds of MiB
/// for minutes, in the allocator's caches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_a_burst_of_large_messages() {
    let measured = Measured::start("after-load", &[]);
    let connection = Connection::connect(&measured.broker.url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let producer = session.producer(Destination::queue("large"));
    let mut consumer = session.consumer(Destination::queue("large")).await.unwrap();
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let mut peak = 0;
    for _ in 0..30 {
        let batch = (0..10).map(|_| Message::new(body.clone())).collect();
        producer.send_batch(batch).await.unwrap();
        for _ in 0..10 {
            assert!(
                consumer
                    .receive(Duration::from_secs(30))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        peak = peak.max(measured.grown());
    }
    eprintln!("during the burst: {} MiB above the start", peak / MIB);
    connection.close().await.unwrap();
    eventually(Duration::from_secs(30), "memory to come back", || async {
        (measured.grown() < 64 * MIB).then_some(())
    })
    .await;
    measured.assert_grown_below(None, 64 * MIB);
}
