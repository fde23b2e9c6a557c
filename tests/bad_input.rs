//! Bad input over raw sockets: each case gets an `Error` frame naming the reason and a
//! closed connection, and a good client that comes next is served as before.

mod common;

use std::time::Duration;

use actormq::BrokerThread;
use actormq::client::ErrorCode;
use actormq::protocol::{Frame, FrameCodec, PROTOCOL_VERSION, encode_frame};
use actormq::{Destination, Message};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use common::{broker, broker_with, connect};

const WAIT: Duration = Duration::from_secs(10);

fn hello(version: u32) -> Vec<u8> {
    let frame = Frame::Hello {
        version,
        client_id: "raw".into(),
    };
    encode_frame(&frame, 1 << 20).unwrap().to_vec()
}

/// Writes `bytes` on a fresh socket and returns the `Error` frame the broker answers
/// with (after any frames before it), checking that the broker then closes the socket.
async fn error_for(broker: &BrokerThread, bytes: &[u8]) -> (ErrorCode, String) {
    let mut socket = TcpStream::connect(broker.local_addr()).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut frames = FramedRead::new(socket, FrameCodec::new(1 << 24));
    loop {
        let frame = tokio::time::timeout(WAIT, frames.next())
            .await
            .expect("the broker answers")
            .expect("a frame before the close")
            .expect("a well-formed frame");
        match frame {
            Frame::Welcome { .. } => continue,
            Frame::Error { code, message } => {
                let rest = tokio::time::timeout(WAIT, frames.next())
                    .await
                    .expect("closed");
                assert!(rest.is_none(), "the connection closes after the error");
                return (code, message);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A good client still sends and receives.
async fn good_client_works(broker: &BrokerThread) {
    let (_connection, session) = connect(broker).await;
    let queue = Destination::queue("after-bad-input");
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    session
        .producer(queue)
        .send(Message::new("ok"))
        .await
        .unwrap();
    let got = consumer.receive(WAIT).await.unwrap().expect("a message");
    assert_eq!(got.body_text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes() {
    let broker = broker();
    // Small length, bytes that are not MessagePack for a frame.
    let mut bytes = vec![0, 0, 0, 6];
    bytes.extend_from_slice(b"\xc1garbg");
    let (code, message) = error_for(&broker, &bytes).await;
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(message.contains("malformed frame"), "{message}");
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_protocol_garbage_reads_as_an_oversize_length() {
    let broker = broker();
    let (code, message) = error_for(&broker, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(message.contains("exceeds the limit"), "{message}");
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_length_is_refused_without_reading_the_body() {
    let broker = broker_with(|c| c.limits.max_frame_bytes = 4096);
    let mut bytes = hello(PROTOCOL_VERSION);
    bytes.extend_from_slice(&5000u32.to_be_bytes());
    let (code, message) = error_for(&broker, &bytes).await;
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(
        message.contains("5000 bytes exceeds the limit of 4096"),
        "{message}"
    );
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame() {
    #[derive(Serialize)]
    enum Bogus {
        Explode { power: u32 },
    }
    let body = rmp_serde::to_vec_named(&Bogus::Explode { power: 9 }).unwrap();
    let mut bytes = hello(PROTOCOL_VERSION);
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    let broker = broker();
    let (code, message) = error_for(&broker, &bytes).await;
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(message.contains("Explode"), "{message}");
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_version() {
    let broker = broker();
    let (code, message) = error_for(&broker, &hello(PROTOCOL_VERSION + 1)).await;
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert!(
        message.contains(&format!("version {PROTOCOL_VERSION}")),
        "{message}"
    );
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_before_the_handshake() {
    let broker = broker();
    let frame = Frame::Send {
        session: 1,
        destination: Destination::queue("q"),
        receipt: None,
        messages: vec![Message::new("sneaky")],
        origin: None,
    };
    let bytes = encode_frame(&frame, 1 << 20).unwrap();
    let (code, message) = error_for(&broker, &bytes).await;
    assert_eq!(code, ErrorCode::ProtocolViolation);
    assert!(
        message.contains("expected Hello first, got Send"),
        "{message}"
    );
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_for_a_session_that_is_not_open() {
    let broker = broker();
    let mut bytes = hello(PROTOCOL_VERSION);
    let frame = Frame::Send {
        session: 7,
        destination: Destination::queue("q"),
        receipt: Some(1),
        messages: vec![Message::new("x")],
        origin: None,
    };
    bytes.extend_from_slice(&encode_frame(&frame, 1 << 20).unwrap());
    let (code, message) = error_for(&broker, &bytes).await;
    assert_eq!(code, ErrorCode::ProtocolViolation);
    assert!(message.contains("session 7 is not open"), "{message}");
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let broker = broker_with(|c| c.limits.handshake_timeout_ms = 200);
    let (code, _message) = error_for(&broker, b"").await;
    assert_eq!(code, ErrorCode::HandshakeTimeout);
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_frame_then_a_hang_up_harms_nobody() {
    let broker = broker();
    let mut socket = TcpStream::connect(broker.local_addr()).await.unwrap();
    let mut bytes = hello(PROTOCOL_VERSION);
    bytes.extend_from_slice(&[0, 0, 0, 100, 1, 2, 3]);
    socket.write_all(&bytes).await.unwrap();
    drop(socket);
    good_client_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_socket_stops_draining_is_dropped_and_its_messages_go_elsewhere() {
    let broker = broker_with(|c| {
        c.limits.max_frame_bytes = 1 << 20;
        c.limits.max_pending_write_bytes = 1 << 20;
        c.limits.write_timeout_ms = 1000;
    });
    let queue = Destination::queue("stuck");
    // A raw client subscribes with a huge prefetch and never reads its socket.
    let mut stuck = TcpStream::connect(broker.local_addr()).await.unwrap();
    let mut bytes = hello(PROTOCOL_VERSION);
    for frame in [
        Frame::OpenSession {
            session: 1,
            ack_mode: actormq::AckMode::Auto,
        },
        Frame::Subscribe {
            session: 1,
            consumer: 1,
            destination: queue.clone(),
            prefetch: 1_000_000,
            receipt: 1,
        },
    ] {
        bytes.extend_from_slice(&encode_frame(&frame, 1 << 20).unwrap());
    }
    stuck.write_all(&bytes).await.unwrap();

    let (connection, session) = connect(&broker).await;
    let producer = session.producer(queue.clone());
    let body = bytes::Bytes::from(vec![7u8; 16 * 1024]);
    let total = 2000; // 32 MiB: far more than the socket buffers and the 1 MiB cap.
    for _ in 0..total / 50 {
        let batch = (0..50).map(|_| Message::new(body.clone())).collect();
        producer.send_batch(batch).await.unwrap();
    }
    // The stuck consumer is dropped; everything it held returns to the queue.
    common::eventually(WAIT, "the stuck consumer to be dropped", || async {
        common::stat_of(&connection, "queue", "stuck")
            .await
            .filter(|s| s.consumers == 0)
    })
    .await;
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let mut received = 0;
    while consumer
        .receive(Duration::from_secs(2))
        .await
        .unwrap()
        .is_some()
    {
        received += 1;
    }
    // Whatever the stuck client's socket buffers swallowed was never acknowledged.
    assert_eq!(
        received, total,
        "every message is delivered to the healthy consumer"
    );

    // The broker closed the stuck socket: reading it reaches the end.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stuck.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the stuck socket is closed: {read:?}"
    );
}
