//! Consumers slower than their producers: nothing accepted is lost, a consumer that stops
//! reading is closed with a reason and its undelivered messages go elsewhere, and what is in
//! flight to one consumer is bounded in bytes as well as messages.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actormq::protocol::stomp::{Command, Inbound, StompFrame};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;

use common::process::BrokerProcess;
use common::raw_stomp::RawStomp;
use common::{broker_with, data_dir};

const WAIT: Duration = Duration::from_secs(30);

/// Sends `count` non-persistent messages of `size` bytes to `/queue/<queue>`, each with a
/// `seq` header, the last with a receipt; returns once the broker has answered it.
async fn produce(addr: SocketAddr, queue: &str, count: u32, size: usize) {
    let mut producer = RawStomp::connected(addr).await;
    let body = Bytes::from(vec![b'x'; size]);
    for seq in 0..count {
        let mut send = StompFrame::new(Command::Send)
            .header("destination", format!("/queue/{queue}"))
            .header("seq", seq.to_string())
            .header("content-length", size.to_string())
            .body(body.clone());
        if seq + 1 == count {
            send = send.header("receipt", "last");
        }
        producer.send(&send).await;
    }
    let answer = producer.next().await;
    assert_eq!(
        (answer.command, answer.get("receipt-id")),
        (Command::Receipt, Some("last")),
        "{}",
        describe(&answer)
    );
}

/// A frame's command and headers (bodies here are large).
fn describe(frame: &StompFrame) -> String {
    format!(
        "{} {:?}",
        frame.command.as_str(),
        frame.headers().collect::<Vec<_>>()
    )
}

fn seq_of(frame: &StompFrame) -> u32 {
    frame
        .get("seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a MESSAGE with a seq header: {}", describe(frame)))
}

/// Subscribes and waits for the receipt; returns the messages that came before it (a
/// subscription delivers as soon as it is active).
async fn subscribe(client: &mut RawStomp, queue: &str, ack: &str) -> Vec<StompFrame> {
    let subscribe = StompFrame::new(Command::Subscribe)
        .header("destination", format!("/queue/{queue}"))
        .header("id", "0")
        .header("ack", ack)
        .header("receipt", "subscribed");
    client.send(&subscribe).await;
    let mut early = Vec::new();
    loop {
        let frame = client.next().await;
        match frame.command {
            Command::Message => early.push(frame),
            Command::Receipt if frame.get("receipt-id") == Some("subscribed") => return early,
            _ => panic!("{}", describe(&frame)),
        }
    }
}

/// A consumer with `ack:auto` that takes a millisecond per message, fed 64 KiB messages
/// far faster than that through a 1 MiB write limit, receives every one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_auto_ack_stomp_consumer_receives_everything_once() {
    let broker = broker_with(|c| {
        c.limits.max_frame_bytes = 512 * 1024;
        c.limits.max_pending_write_bytes = 1 << 20;
    });
    let addr = broker.stomp_addr().expect("STOMP is on");
    let mut consumer = RawStomp::connected(addr).await;
    assert!(subscribe(&mut consumer, "slow", "auto").await.is_empty());
    let total = 300;
    let producer = tokio::spawn(produce(addr, "slow", total, 64 * 1024));
    let mut seen = BTreeSet::new();
    while seen.len() < total as usize {
        let frame = consumer.next().await;
        assert_eq!(frame.command, Command::Message, "{}", describe(&frame));
        assert!(
            seen.insert(seq_of(&frame)),
            "a duplicate: {}",
            describe(&frame)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    producer.await.unwrap();
    assert_eq!(seen, (0..total).collect());
}

/// The reproduction from the issue, scaled down: one producer and one `ack:auto` consumer
/// of 1 MiB messages, default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_messages_all_arrive() {
    let broker = broker_with(|_| {});
    let addr = broker.stomp_addr().expect("STOMP is on");
    let mut consumer = RawStomp::connected(addr).await;
    assert!(subscribe(&mut consumer, "big", "auto").await.is_empty());
    let total = 200;
    let producer = tokio::spawn(produce(addr, "big", total, 1 << 20));
    let mut seen = BTreeSet::new();
    while seen.len() < total as usize {
        let frame = consumer.next().await;
        assert_eq!(frame.command, Command::Message, "{}", describe(&frame));
        assert_eq!(frame.body.len(), 1 << 20);
        assert!(
            seen.insert(seq_of(&frame)),
            "a duplicate: {}",
            describe(&frame)
        );
    }
    producer.await.unwrap();
}

/// Every complete frame a socket still holds, after the broker closed it.
async fn drain_frames(mut socket: tokio::net::TcpStream) -> Vec<StompFrame> {
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut bytes))
        .await
        .expect("the broker closes the socket")
        .ok();
    let mut codec = common::raw_stomp::codec();
    let mut buf = BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    // A frame cut short by the close is not a delivery.
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        if let Inbound::Frame(frame) = item {
            frames.push(frame);
        }
    }
    frames
}

/// A consumer that stops reading is closed once its socket takes nothing for the write
/// timeout, with a WARN saying so. What it was written counts as consumed (ack:auto); what
/// was not goes to the next consumer. No message is lost, and one delivered twice is
/// flagged redelivered the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_is_closed_and_its_unwritten_messages_go_elsewhere() {
    let dir = data_dir("stalled");
    let mut broker = BrokerProcess::start_with_env(
        &dir,
        &[],
        &[
            ("ACTORMQ__LIMITS__WRITE_TIMEOUT_MS", "500"),
            ("ACTORMQ__LIMITS__MAX_FRAME_BYTES", "524288"),
            ("ACTORMQ__LIMITS__MAX_PENDING_WRITE_BYTES", "1048576"),
        ],
    );
    let addr = broker.stomp_addr();
    let mut stalled = RawStomp::connected(addr).await;
    assert!(subscribe(&mut stalled, "stalled", "auto").await.is_empty());
    let stalled_socket = stalled.reader.into_inner().reunite(stalled.writer).unwrap();

    let total = 400;
    produce(addr, "stalled", total, 64 * 1024).await;
    assert!(
        broker
            .wait_for_log("the socket took no bytes", WAIT)
            .is_some_and(|line| line.contains("WARN")),
        "a WARN names why the consumer was closed"
    );

    let mut next = RawStomp::connected(addr).await;
    let mut pending = subscribe(&mut next, "stalled", "auto").await;
    let from_stalled = drain_frames(stalled_socket).await;
    let first: BTreeSet<u32> = from_stalled
        .iter()
        .filter(|f| f.command == Command::Message)
        .map(seq_of)
        .collect();
    assert!(
        !first.is_empty() && first.len() < total as usize,
        "the stalled consumer was written some: {}",
        first.len()
    );
    let mut seen = first.clone();
    let deadline = Instant::now() + WAIT;
    while seen.len() < total as usize {
        assert!(Instant::now() < deadline, "only {} of {total}", seen.len());
        let frame = match pending.pop() {
            Some(frame) => frame,
            None => next.next().await,
        };
        assert_eq!(frame.command, Command::Message, "{}", describe(&frame));
        let seq = seq_of(&frame);
        if first.contains(&seq) {
            assert_eq!(
                frame.get("redelivered"),
                Some("true"),
                "{}",
                describe(&frame)
            );
        }
        seen.insert(seq);
    }
    assert_eq!(seen, (0..total).collect());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prefetch is bounded in bytes too: with `prefetch_bytes` of 4 MiB and 1 MiB messages, an
/// unacknowledging consumer holds 4, and each acknowledgement lets one more through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_bounded_in_bytes() {
    let broker = broker_with(|c| c.limits.prefetch_bytes = 4 << 20);
    let addr = broker.stomp_addr().expect("STOMP is on");
    produce(addr, "prefetched", 20, 1 << 20).await;
    let mut consumer = RawStomp::connected(addr).await;
    let mut held = subscribe(&mut consumer, "prefetched", "client-individual").await;
    while held.len() < 4 {
        let frame = consumer.next().await;
        assert_eq!(frame.command, Command::Message, "{}", describe(&frame));
        held.push(frame);
    }
    assert_eq!(held.len(), 4, "more than 4 MiB in flight");
    // An absence can only be seen by waiting a little.
    let quiet = tokio::time::timeout(Duration::from_millis(300), consumer.reader.next()).await;
    assert!(quiet.is_err(), "a fifth message arrived");
    let ack =
        StompFrame::new(Command::Ack).header("id", held[0].get("ack").expect("an ack header"));
    consumer.send(&ack).await;
    let fifth = consumer.next().await;
    assert_eq!(fifth.command, Command::Message, "{}", describe(&fifth));
    assert_eq!(seq_of(&fifth), 4);
}
