//! Producers faster than their queue, and frames that never finish: the broker stops reading
//! a producer whose sends are parked (its memory stays within the limits), never sends a
//! receipt for work it dropped, and buffers only what actually arrived. Memory is read from
//! a broker process's resident set.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actormq::protocol::stomp::{Command, StompFrame};
use actormq::protocol::{Frame, PROTOCOL_VERSION, encode_frame};
use actormq::{AckMode, Destination, Message};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::process::{BrokerProcess, MIB, Measured};
use common::raw_stomp::RawStomp;
use common::{broker_with, connect, eventually, stat_of};

const WAIT: Duration = Duration::from_secs(30);

fn stomp_send(queue: &str, body: &Bytes) -> StompFrame {
    StompFrame::new(Command::Send)
        .header("destination", format!("/queue/{queue}"))
        .header("content-length", body.len().to_string())
        .body(body.clone())
}

fn encoded(frame: &StompFrame) -> Bytes {
    let mut buf = BytesMut::new();
    actormq::protocol::stomp::encode_into(frame, &mut buf);
    buf.freeze()
}

/// 60 SENDs of 256 KiB to a queue that holds 4 MiB and has no consumer, then DISCONNECT
/// with a receipt: the sends that do not fit fail after the send timeout, so the client
/// gets an ERROR, never the receipt, and the queue holds exactly what it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_disconnect_receipt_for_sends_that_were_dropped() {
    let broker = broker_with(|c| {
        c.limits.max_queue_memory_bytes = 4 << 20;
        c.limits.send_timeout_ms = 3000;
        c.limits.write_timeout_ms = 1000;
    });
    let addr = broker.stomp_addr().expect("STOMP is on");
    let mut client = RawStomp::connected(addr).await;
    let body = Bytes::from(vec![b'x'; 256 * 1024]);
    for _ in 0..60 {
        client.send(&stomp_send("full", &body)).await;
    }
    client
        .send(&StompFrame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    let answer = client.next().await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    let message = answer.get("message").unwrap_or_default();
    assert!(message.contains("is full"), "{message}");
    let (connection, _session) = connect(&broker).await;
    let kept = stat_of(&connection, "queue", "full")
        .await
        .expect("a queue");
    assert!(
        kept.enqueued > 0 && kept.enqueued < 60,
        "{} kept",
        kept.enqueued
    );
}

/// The same sends with a consumer draining the queue: the DISCONNECT receipt comes once
/// every one of them is enqueued, and the consumer gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_receipt_means_every_send_was_kept() {
    let broker = broker_with(|c| c.limits.max_queue_memory_bytes = 4 << 20);
    let (_connection, session) = connect(&broker).await;
    let mut consumer = session
        .consumer(Destination::queue("drained"))
        .await
        .unwrap();
    let addr = broker.stomp_addr().expect("STOMP is on");
    // The producer is pushed back while the queue is full, so it runs beside the consumer.
    let producer = tokio::spawn(async move {
        let mut client = RawStomp::connected(addr).await;
        let body = Bytes::from(vec![b'x'; 256 * 1024]);
        for _ in 0..60 {
            client.send(&stomp_send("drained", &body)).await;
        }
        client
            .send(&StompFrame::new(Command::Disconnect).header("receipt", "bye"))
            .await;
        client.next().await
    });
    let mut received = 0;
    while received < 60 {
        let message = consumer.receive(WAIT).await.unwrap();
        assert!(message.is_some(), "only {received} of 60 arrived");
        received += 1;
    }
    let answer = producer.await.unwrap();
    assert_eq!(answer.get("receipt-id"), Some("bye"), "{answer:?}");
}

/// A producer that writes its SENDs (no receipts) and hangs up at once: everything the
/// broker read is enqueued, though the connection (and its session) closed behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_read_before_a_hang_up_are_all_enqueued() {
    let broker = broker_with(|_| {});
    let (_connection, session) = connect(&broker).await;
    let mut consumer = session
        .consumer(Destination::queue("hung-up"))
        .await
        .unwrap();
    let addr = broker.stomp_addr().expect("STOMP is on");
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let producer = tokio::spawn(async move {
        let mut client = RawStomp::connected(addr).await;
        for _ in 0..300 {
            client.send(&stomp_send("hung-up", &body)).await;
        }
        // Dropped: the socket closes right after the last SEND.
    });
    let mut received = 0;
    while received < 300 {
        let message = consumer.receive(WAIT).await.unwrap();
        assert!(message.is_some(), "only {received} of 300 arrived");
        received += 1;
    }
    producer.await.unwrap();
}

/// Writes `frame` over and over for `flood` (or until the broker closes the socket),
/// sampling the broker's resident memory; returns the peak and what the broker said.
async fn flood(
    broker: &BrokerProcess,
    addr: SocketAddr,
    preamble: &[u8],
    frame: Bytes,
    flood: Duration,
) -> (u64, Vec<u8>) {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    write.write_all(preamble).await.unwrap();
    let writer = tokio::spawn(async move {
        let batch: Vec<u8> = frame.repeat(16);
        let deadline = Instant::now() + flood;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), write.write_all(&batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return, // closed by the broker
                Err(_) => {}          // pushed back: try again until the flood ends
            }
        }
        // Keep the socket open until the broker has had its say.
        tokio::time::sleep(WAIT).await;
    });
    let reader = tokio::spawn(async move {
        let mut said = Vec::new();
        let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut said)).await;
        said
    });
    let mut peak = 0;
    let deadline = Instant::now() + flood;
    while Instant::now() < deadline {
        peak = peak.max(broker.resident_bytes().expect("the broker's memory"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = reader.await.unwrap();
    writer.abort();
    (peak, said)
}

/// A broker whose queues hold 16 MiB (32 MiB in all) flooded for 5 s with `frame` on a
/// connection that began with `preamble`, to the listener `listener` picks. Checks that its
/// resident memory grew by less than 96 MiB; returns what it said to the flooder.
async fn flooded(
    listener: fn(&BrokerProcess) -> SocketAddr,
    preamble: &[u8],
    frame: Bytes,
) -> String {
    let measured = Measured::start(
        "flood",
        &[
            ("ACTORMQ__LIMITS__MAX_QUEUE_MEMORY_BYTES", "16777216"),
            ("ACTORMQ__LIMITS__MAX_MEMORY_BYTES", "33554432"),
            ("ACTORMQ__LIMITS__SEND_TIMEOUT_MS", "3000"),
        ],
    );
    let broker = &measured.broker;
    let (peak, said) = flood(
        broker,
        listener(broker),
        preamble,
        frame,
        Duration::from_secs(5),
    )
    .await;
    measured.assert_grown_below(Some(peak), 96 * MIB);
    String::from_utf8_lossy(&said).chars().take(1000).collect()
}

/// A STOMP producer floods 4 KiB SENDs without receipts at a queue nobody consumes. The
/// broker stops reading it once the queue is full: resident memory grows by no more than
/// the queue limit and the send window (plus slack for buffers), where it used to grow by
/// gigabytes. The parked sends fail after the send timeout with an ERROR naming the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_flood_is_pushed_back_and_told_why() {
    let connect = encoded(&StompFrame::new(Command::Connect).header("accept-version", "1.2"));
    let body = Bytes::from(vec![b'x'; 4096]);
    let send = encoded(&stomp_send("flooded", &body));
    let said = flooded(BrokerProcess::stomp_addr, &connect, send).await;
    assert!(
        said.contains("ERROR") && said.contains("queue:flooded is full"),
        "{said}"
    );
}

/// The same with 1 MiB SENDs: each is charged to the connection's send window as it is
/// handled, before the next frame is read, so large frames are held to the window as
/// small ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_flood_of_large_sends_is_pushed_back() {
    let connect = encoded(&StompFrame::new(Command::Connect).header("accept-version", "1.2"));
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let send = encoded(&stomp_send("flooded", &body));
    let said = flooded(BrokerProcess::stomp_addr, &connect, send).await;
    assert!(
        said.contains("ERROR") && said.contains("queue:flooded is full"),
        "{said}"
    );
}

/// The same with native one-way sends (no receipts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_one_way_flood_is_pushed_back_and_told_why() {
    let max = 1 << 24;
    let mut preamble = Vec::new();
    for frame in [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "flood".into(),
        },
        Frame::OpenSession {
            session: 1,
            ack_mode: AckMode::Auto,
        },
    ] {
        preamble.extend_from_slice(&encode_frame(&frame, max).unwrap());
    }
    let send = Frame::Send {
        session: 1,
        destination: Destination::queue("flooded"),
        receipt: None,
        messages: vec![Message::new(vec![b'x'; 4096]).with_persistent(false)],
        origin: None,
    };
    let said = flooded(
        BrokerProcess::addr,
        &preamble,
        encode_frame(&send, max).unwrap(),
    )
    .await;
    assert!(said.contains("queue:flooded is full"), "{said}");
}

/// 300 STOMP and 300 native connections each claim a 16 MB frame and send one byte of it.
/// The broker buffers what arrived, not what was claimed, and closes each once the frame
/// has not finished within the frame timeout, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_cost_what_arrived_and_time_out() {
    let measured = Measured::start(
        "partial",
        &[("ACTORMQ__LIMITS__FRAME_READ_TIMEOUT_MS", "3000")],
    );
    let broker = &measured.broker;
    let stomp = b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/queue/p\ncontent-length:16000000\n\nx";
    let mut native = encode_frame(
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "partial".into(),
        },
        1 << 24,
    )
    .unwrap()
    .to_vec();
    native.extend_from_slice(&16_000_000u32.to_be_bytes());
    native.push(0x93);
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(broker.stomp_addr()).await.unwrap();
        s.write_all(stomp).await.unwrap();
        sockets.push(s);
        let mut n = TcpStream::connect(broker.addr()).await.unwrap();
        n.write_all(&native).await.unwrap();
        sockets.push(n);
    }
    // Every connection has read its byte once a new client is served.
    let (connection, _session) = connect_url(&broker.url).await;
    connection.stat().await.unwrap();
    measured.assert_grown_below(None, 64 * MIB);
    for mut socket in sockets {
        let mut said = Vec::new();
        tokio::time::timeout(WAIT, socket.read_to_end(&mut said))
            .await
            .expect("the broker closes a stalled frame's connection")
            .ok();
        let said = String::from_utf8_lossy(&said);
        assert!(
            said.contains("not finished within 3000 ms"),
            "{}",
            said.chars().take(300).collect::<String>()
        );
    }
}

async fn connect_url(url: &str) -> (actormq::client::Connection, actormq::client::Session) {
    let connection = actormq::client::Connection::connect(url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    (connection, session)
}

/// Partial frames beyond the broker-wide budget wait rather than grow memory: 24
/// connections each send 4 MiB of an 8 MB frame against a 32 MiB budget. Memory stays near
/// the budget; a client with whole frames is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_past_the_budget_wait() {
    let measured = Measured::start(
        "budget",
        &[("ACTORMQ__LIMITS__MAX_PARTIAL_FRAME_BYTES", "33554432")],
    );
    let broker = &measured.broker;
    let mut header = b"CONNECT\naccept-version:1.2\n\n\0".to_vec();
    header.extend_from_slice(b"SEND\ndestination:/queue/b\ncontent-length:8000000\n\n");
    let chunk = vec![b'x'; 4 << 20];
    let mut writers = Vec::new();
    for _ in 0..24 {
        let mut s = TcpStream::connect(broker.stomp_addr()).await.unwrap();
        let (header, chunk) = (header.clone(), chunk.clone());
        writers.push(tokio::spawn(async move {
            let _ = s.write_all(&header).await;
            let _ = s.write_all(&chunk).await;
            s
        }));
    }
    let (connection, session) = connect_url(&broker.url).await;
    let producer = session.producer(Destination::queue("served"));
    let mut peak = 0;
    for _ in 0..20 {
        producer.send(Message::new("fine")).await.unwrap();
        peak = peak.max(broker.resident_bytes().expect("the broker's memory"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    measured.assert_grown_below(Some(peak), 96 * MIB);
    eventually(WAIT, "the served queue", || async {
        stat_of(&connection, "queue", "served")
            .await
            .filter(|s| s.enqueued == 20)
    })
    .await;
    for writer in writers {
        writer.abort();
    }
}
