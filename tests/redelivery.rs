//! Redelivery policy, dead-letter queue and priority order against a real broker.

mod common;

use std::time::{Duration, Instant};

use actormq::destination::{DLQ_ORIGINAL_DESTINATION, DLQ_REASON};
use actormq::protocol::stomp::{Command, StompFrame};
use actormq::protocol::{Frame, FrameCodec, PROTOCOL_VERSION, encode_frame};
use actormq::{AckMode, BrokerThread, Destination, Message};
use common::raw_stomp::RawStomp;
use common::{broker_with, connect, stat_of};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(10);

/// A native client that subscribes with prefetch 1, takes one delivery and dies without
/// acknowledging it (its socket closes when this returns). Returns the delivery's count.
async fn take_one_and_die(broker: &BrokerThread, queue: &Destination) -> u32 {
    let socket = TcpStream::connect(broker.local_addr()).await.unwrap();
    let (read, mut write) = socket.into_split();
    let mut bytes = Vec::new();
    for frame in [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "doomed".into(),
        },
        Frame::OpenSession {
            session: 1,
            ack_mode: AckMode::Auto,
        },
        Frame::Subscribe {
            session: 1,
            consumer: 1,
            destination: queue.clone(),
            prefetch: 1,
            receipt: 1,
        },
    ] {
        bytes.extend_from_slice(&encode_frame(&frame, 1 << 20).unwrap());
    }
    write.write_all(&bytes).await.unwrap();
    let mut frames = FramedRead::new(read, FrameCodec::new(1 << 24));
    loop {
        let frame = tokio::time::timeout(WAIT, frames.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("well-formed");
        if let Frame::Deliver { deliveries } = frame {
            return deliveries[0].delivery_count;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumers_keep_dying_goes_to_the_dead_letter_queue() {
    let broker = broker_with(|c| c.redelivery.max_redeliveries = 2);
    let queue = Destination::queue("poison");
    let (connection, session) = connect(&broker).await;
    session
        .producer(queue.clone())
        .send(Message::new("poison pill").with_header("kind", "bad"))
        .await
        .unwrap();
    // Delivered 1 + 2 redeliveries, each consumer dying without an ack.
    for expected in 1..=3 {
        assert_eq!(take_one_and_die(&broker, &queue).await, expected);
    }
    let mut dlq = session
        .consumer(Destination::queue("DLQ.poison"))
        .await
        .unwrap();
    let dead = dlq
        .receive(WAIT)
        .await
        .unwrap()
        .expect("the message in DLQ.poison");
    assert_eq!(dead.body_text(), "poison pill");
    assert_eq!(dead.headers.get("kind").map(String::as_str), Some("bad"));
    assert_eq!(
        dead.headers
            .get(DLQ_ORIGINAL_DESTINATION)
            .map(String::as_str),
        Some("queue:poison")
    );
    let reason = dead.headers.get(DLQ_REASON).cloned().unwrap_or_default();
    assert!(
        reason.contains("delivered 3 times") && reason.contains("maximum redeliveries 2"),
        "{reason}"
    );
    let stat = stat_of(&connection, "queue", "poison").await.unwrap();
    assert_eq!((stat.depth, stat.enqueued, stat.dequeued), (0, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_back_message_is_redelivered_with_back_off_then_dead_lettered() {
    let broker = broker_with(|c| {
        c.redelivery.max_redeliveries = 3;
        c.redelivery.initial_delay_ms = 100;
        c.redelivery.multiplier = 2.0;
        c.redelivery.max_delay_ms = 250;
    });
    let mut client = RawStomp::connected(broker.stomp_addr().unwrap()).await;
    client
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/flaky")
                .header("id", "s")
                .header("ack", "client-individual")
                .header("receipt", "r"),
        )
        .await;
    assert_eq!(client.next().await.get("receipt-id"), Some("r"));
    client
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", "/queue/flaky")
                .body("retry"),
        )
        .await;
    // Waits before redelivery 1, 2, 3: 100, 200, 250 (capped) ms.
    let mut message = client.next().await;
    for minimum in [100, 200, 250] {
        let nacked = Instant::now();
        client
            .send(&StompFrame::new(Command::Nack).header("id", message.get("ack").unwrap()))
            .await;
        message = client.next().await;
        assert_eq!(message.get("redelivered"), Some("true"));
        assert!(
            nacked.elapsed() >= Duration::from_millis(minimum),
            "redelivered after {:?}, expected at least {minimum} ms",
            nacked.elapsed()
        );
    }
    client
        .send(&StompFrame::new(Command::Nack).header("id", message.get("ack").unwrap()))
        .await;
    let (_c, session) = connect(&broker).await;
    let mut dlq = session
        .consumer(Destination::queue("DLQ.flaky"))
        .await
        .unwrap();
    let dead = dlq.receive(WAIT).await.unwrap().expect("dead-lettered");
    assert_eq!(dead.body_text(), "retry");
    assert!(
        dead.headers[DLQ_REASON].contains("given back"),
        "{:?}",
        dead.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_is_delivered_first_and_order_holds_within_a_priority() {
    let broker = broker_with(|_| {});
    let (_c, session) = connect(&broker).await;
    let queue = Destination::queue("ranked");
    let producer = session.producer(queue.clone());
    let sent = [(4, "a"), (9, "b"), (0, "c"), (4, "d"), (9, "e"), (7, "f")];
    for (priority, body) in sent {
        producer
            .send(Message::new(body).with_priority(priority))
            .await
            .unwrap();
    }
    let mut consumer = session.consumer(queue).await.unwrap();
    let mut got = String::new();
    for _ in 0..sent.len() {
        got.push_str(&consumer.receive(WAIT).await.unwrap().unwrap().body_text());
    }
    assert_eq!(got, "befadc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_dead_lettered_when_the_policy_says_so() {
    let broker = broker_with(|c| c.redelivery.expired_to_dlq = true);
    let (_c, session) = connect(&broker).await;
    let mut stale = Message::new("too late");
    stale.expiration = 1; // long past
    session
        .producer(Destination::queue("perishable"))
        .send(stale)
        .await
        .unwrap();
    // Expired messages are found when the queue dispatches: a consumer looks.
    let mut consumer = session
        .consumer(Destination::queue("perishable"))
        .await
        .unwrap();
    common::assert_nothing_more(&mut consumer).await;
    let mut dlq = session
        .consumer(Destination::queue("DLQ.perishable"))
        .await
        .unwrap();
    let dead = dlq.receive(WAIT).await.unwrap().expect("dead-lettered");
    assert_eq!(dead.body_text(), "too late");
    assert!(
        dead.headers[DLQ_REASON].contains("expired"),
        "{:?}",
        dead.headers
    );
}

/// Deliveries a consumer never got — still waiting in the broker for room on its socket
/// when it closed — go back uncounted: consumers that keep subscribing and closing without
/// reading cannot push messages they never saw to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_never_left_the_broker_do_not_count() {
    let broker = broker_with(|c| {
        c.redelivery.max_redeliveries = 1;
        c.limits.max_frame_bytes = 256 * 1024;
        c.limits.max_pending_write_bytes = 512 * 1024;
    });
    let queue = Destination::queue("unread");
    let (connection, session) = connect(&broker).await;
    let producer = session.producer(queue.clone());
    let total = 200;
    for _ in 0..total {
        producer
            .send(Message::new(vec![b'x'; 64 * 1024]))
            .await
            .unwrap();
    }
    // Three times: a consumer with room for everything subscribes, reads nothing, and goes.
    for _ in 0..3 {
        let mut client = RawStomp::connected(broker.stomp_addr().expect("STOMP")).await;
        client
            .send(
                &StompFrame::new(Command::Subscribe)
                    .header("destination", "/queue/unread")
                    .header("id", "0")
                    .header("ack", "client-individual")
                    .header("receipt", "sub"),
            )
            .await;
        common::eventually(
            WAIT,
            "deliveries to the reader that never reads",
            || async {
                stat_of(&connection, "queue", "unread")
                    .await
                    .filter(|s| s.in_flight > 0)
            },
        )
        .await;
        drop(client);
        common::eventually(WAIT, "the consumer to be gone", || async {
            stat_of(&connection, "queue", "unread")
                .await
                .filter(|s| s.consumers == 0)
        })
        .await;
    }
    // At most what fitted in the socket's buffers each time was really delivered.
    let dead = stat_of(&connection, "queue", "DLQ.unread")
        .await
        .map(|s| s.enqueued)
        .unwrap_or(0);
    let left = stat_of(&connection, "queue", "unread")
        .await
        .expect("the queue");
    assert_eq!(dead + left.depth, total);
    assert!(
        dead < total / 2,
        "{dead} of {total} dead-lettered, though most never left the broker"
    );
}
