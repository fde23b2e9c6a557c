//! The STOMP listener over raw sockets: native ↔ STOMP exchange both ways, receipts,
//! escaping, and every malformed-input case, each followed by a good client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use actormq::protocol::stomp::{Command, StompFrame};
use actormq::{BrokerThread, Destination, Message, Property};
use futures::StreamExt;

use common::raw_stomp::RawStomp;
use common::{broker, broker_with, connect, stat_of};

const WAIT: Duration = Duration::from_secs(10);

fn stomp_addr(broker: &BrokerThread) -> SocketAddr {
    broker.stomp_addr().expect("the STOMP listener is on")
}

/// A STOMP client and a native client both still work.
async fn good_clients_work(broker: &BrokerThread) {
    let mut client = RawStomp::connected(stomp_addr(broker)).await;
    let subscribe = StompFrame::new(Command::Subscribe)
        .header("destination", "/queue/after-bad-input")
        .header("id", "0")
        .header("receipt", "sub");
    client.send(&subscribe).await;
    assert_eq!(client.next().await.get("receipt-id"), Some("sub"));
    let send = StompFrame::new(Command::Send)
        .header("destination", "/queue/after-bad-input")
        .body("fine");
    client.send(&send).await;
    let message = client.next().await;
    assert_eq!(
        (message.command, &message.body[..]),
        (Command::Message, &b"fine"[..])
    );

    let (_c, session) = connect(broker).await;
    session
        .producer(Destination::queue("native-after-bad-input"))
        .send(Message::new("fine"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_to_stomp_on_a_queue_with_every_field() {
    let broker = broker();
    let mut stomp = RawStomp::connected(stomp_addr(&broker)).await;
    stomp
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/interop")
                .header("id", "s1")
                .header("ack", "client-individual")
                .header("receipt", "r"),
        )
        .await;
    assert_eq!(stomp.next().await.get("receipt-id"), Some("r"));

    let (_c, session) = connect(&broker).await;
    let sent = Message::new(&b"bin\0ary"[..])
        .with_header("region", "eu:west\nline")
        .with_property("count", Property::Int(3))
        .with_correlation_id("corr-9")
        .with_reply_to(Destination::queue("answers"))
        .with_priority(6);
    session
        .producer(Destination::queue("interop"))
        .send(sent)
        .await
        .unwrap();

    let message = stomp.next().await;
    assert_eq!(message.command, Command::Message);
    assert_eq!(&message.body[..], b"bin\0ary");
    assert_eq!(message.get("content-length"), Some("7"));
    assert_eq!(message.get("destination"), Some("/queue/interop"));
    assert_eq!(message.get("subscription"), Some("s1"));
    assert_eq!(
        message.get("region"),
        Some("eu:west\nline"),
        "escaped and unescaped"
    );
    assert_eq!(message.get("count"), Some("3"));
    assert_eq!(message.get("correlation-id"), Some("corr-9"));
    assert_eq!(message.get("reply-to"), Some("/queue/answers"));
    assert_eq!(message.get("priority"), Some("6"));
    let ack = message.get("ack").expect("an ack header").to_string();
    stomp
        .send(
            &StompFrame::new(Command::Ack)
                .header("id", ack)
                .header("receipt", "a"),
        )
        .await;
    assert_eq!(stomp.next().await.get("receipt-id"), Some("a"));
    let (observer, _s) = connect(&broker).await;
    let stat = stat_of(&observer, "queue", "interop").await.unwrap();
    assert_eq!((stat.enqueued, stat.dequeued, stat.depth), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_to_native_on_a_queue_with_every_header() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    let mut consumer = session
        .consumer(Destination::queue("from-stomp"))
        .await
        .unwrap();
    let mut stomp = RawStomp::connected(stomp_addr(&broker)).await;
    stomp
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", "/queue/from-stomp")
                .header("content-type", "application/octet-stream")
                .header("content-length", "5")
                .header("persistent", "false")
                .header("correlation-id", "c-1")
                .header("reply-to", "/queue/back")
                .header("priority", "9")
                .header("x-app", "a:b")
                .header("receipt", "sent")
                .body(&b"\0\x01\0\x02\0"[..]),
        )
        .await;
    assert_eq!(stomp.next().await.get("receipt-id"), Some("sent"));
    let got = consumer.receive(WAIT).await.unwrap().expect("a message");
    assert_eq!(&got.body[..], b"\0\x01\0\x02\0");
    assert!(!got.persistent);
    assert_eq!(got.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(got.reply_to, Some(Destination::queue("back")));
    assert_eq!(got.priority, 9);
    assert_eq!(got.headers.get("x-app").map(String::as_str), Some("a:b"));
    assert_eq!(
        got.headers.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );
    assert!(!got.headers.contains_key("receipt") && !got.headers.contains_key("destination"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_both_ways_with_wildcards() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    let mut native = session
        .consumer(Destination::topic("prices.eu"))
        .await
        .unwrap();
    let mut stomp = RawStomp::connected(stomp_addr(&broker)).await;
    stomp
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/topic/prices.>")
                .header("id", "w")
                .header("receipt", "r"),
        )
        .await;
    assert_eq!(stomp.next().await.get("receipt-id"), Some("r"));

    // Native publishes; the STOMP wildcard subscriber gets it.
    session
        .producer(Destination::topic("prices.us"))
        .send(Message::new("from native"))
        .await
        .unwrap();
    let m = stomp.next().await;
    assert_eq!(
        (&m.body[..], m.get("destination")),
        (&b"from native"[..], Some("/topic/prices.us"))
    );

    // STOMP publishes; the native subscriber and the wildcard both get it.
    stomp
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", "/topic/prices.eu")
                .body("from stomp"),
        )
        .await;
    assert_eq!(
        native.receive(WAIT).await.unwrap().unwrap().body_text(),
        "from stomp"
    );
    assert_eq!(&stomp.next().await.body[..], b"from stomp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_request_answered_over_stomp_through_a_temporary_queue() {
    let broker = broker();
    let mut server = RawStomp::connected(stomp_addr(&broker)).await;
    server
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/svc")
                .header("id", "svc")
                .header("receipt", "r"),
        )
        .await;
    assert_eq!(server.next().await.get("receipt-id"), Some("r"));
    let (_c, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    let reply = requestor.request_future(Destination::queue("svc"), Message::new("hi"), WAIT);
    let request = server.next().await;
    let reply_to = request.get("reply-to").expect("reply-to").to_string();
    assert!(reply_to.starts_with("/temp-queue/"), "{reply_to}");
    server
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", reply_to)
                .header("correlation-id", request.get("correlation-id").unwrap())
                .body("HI"),
        )
        .await;
    assert_eq!(reply.await.unwrap().body_text(), "HI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_written_at_once_are_receipted_and_delivered_in_order() {
    let broker = broker();
    let mut stomp = RawStomp::connected(stomp_addr(&broker)).await;
    // 300 SENDs to two queues in one write (the broker batches runs of them) with a
    // SUBSCRIBE between them: every RECEIPT in the order asked.
    let mut bytes = bytes::BytesMut::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        if i == 150 {
            let subscribe = StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/batched-b")
                .header("id", "b")
                .header("receipt", "sub");
            actormq::protocol::stomp::encode_into(&subscribe, &mut bytes);
            expected.push("sub".to_string());
        }
        let queue = if i % 100 < 50 {
            "batched-a"
        } else {
            "batched-b"
        };
        let send = StompFrame::new(Command::Send)
            .header("destination", format!("/queue/{queue}"))
            .header("receipt", format!("r{i}"))
            .body(format!("{i}"));
        actormq::protocol::stomp::encode_into(&send, &mut bytes);
        expected.push(format!("r{i}"));
    }
    stomp.raw(&bytes).await;
    let mut receipts = Vec::new();
    let mut on_b = Vec::new();
    while receipts.len() < expected.len() {
        let frame = stomp.next().await;
        match frame.command {
            Command::Receipt => receipts.push(frame.get("receipt-id").unwrap().to_string()),
            Command::Message => on_b.push(String::from_utf8(frame.body.to_vec()).unwrap()),
            other => panic!("unexpected {other:?}: {frame:?}"),
        }
    }
    assert_eq!(receipts, expected);

    let (_c, session) = connect(&broker).await;
    let mut a = session
        .consumer(Destination::queue("batched-a"))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = a.receive(Duration::from_millis(500)).await.unwrap() {
        got.push(m.body_text().parse::<u32>().unwrap());
    }
    let sent_to_a: Vec<u32> = (0..300).filter(|i| i % 100 < 50).collect();
    assert_eq!(got, sent_to_a, "in the order sent");
    // The STOMP subscriber of batched-b got all of it (a queue keeps what came before
    // the subscription), in the order sent.
    let sent_to_b: Vec<String> = (0..300)
        .filter(|i| i % 100 >= 50)
        .map(|i| i.to_string())
        .collect();
    while on_b.len() < sent_to_b.len() {
        let frame = stomp.next().await;
        on_b.push(String::from_utf8(frame.body.to_vec()).unwrap());
    }
    assert_eq!(on_b, sent_to_b);
}

async fn refused(broker: &BrokerThread, bytes: &[u8], connect_first: bool) -> String {
    let mut client = if connect_first {
        RawStomp::connected(stomp_addr(broker)).await
    } else {
        RawStomp::open(stomp_addr(broker)).await
    };
    client.raw(bytes).await;
    client.error().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_before_connect() {
    let broker = broker();
    let message = refused(&broker, b"SEND\ndestination:/queue/a\n\nx\0", false).await;
    assert!(
        message.contains("expected CONNECT first, got SEND"),
        "{message}"
    );
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command() {
    let broker = broker();
    let message = refused(&broker, b"EXPLODE\n\n\0", true).await;
    assert!(message.contains("unknown command `EXPLODE`"), "{message}");
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers() {
    let broker = broker_with(|c| c.limits.stomp_max_headers = 8);
    let frame: Vec<u8> = [
        &b"SEND\ndestination:/queue/a\n"[..],
        &b"h:v\n".repeat(20),
        b"\nx\0",
    ]
    .concat();
    let message = refused(&broker, &frame, true).await;
    assert!(message.contains("more than 8 headers"), "{message}");
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_too_long() {
    let broker = broker_with(|c| c.limits.stomp_max_header_bytes = 1024);
    let frame: Vec<u8> = [&b"SEND\nh:"[..], &vec![b'v'; 5000], b"\n\nx\0"].concat();
    let message = refused(&broker, &frame, true).await;
    assert!(message.contains("longer than 1024 bytes"), "{message}");
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large() {
    let broker = broker_with(|c| {
        c.limits.max_frame_bytes = 64 * 1024;
    });
    let message = refused(
        &broker,
        b"SEND\ndestination:/queue/a\ncontent-length:100000\n\n",
        true,
    )
    .await;
    assert!(
        message.contains("100000 bytes exceeds the limit"),
        "{message}"
    );
    // Without content-length: the body is refused once it passes the limit unterminated.
    let frame: Vec<u8> = [
        &b"SEND\ndestination:/queue/a\n\n"[..],
        &vec![b'x'; 70 * 1024],
    ]
    .concat();
    let message = refused(&broker, &frame, true).await;
    assert!(message.contains("exceeds the limit"), "{message}");
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_and_values() {
    let broker = broker();
    for (frame, expected) in [
        (
            &b"SEND\ndestination:/queue/a\nbad\\tescape:1\n\nx\0"[..],
            "invalid escape",
        ),
        (b"SEND\ndestination:/queue/a\nnocolon\n\nx\0", "no colon"),
        (
            b"SEND\ndestination:/nowhere/a\n\nx\0",
            "unknown destination `/nowhere/a`",
        ),
        (
            b"SEND\ndestination:/topic/a.*\nreceipt:r\n\nx\0",
            "wildcard",
        ),
        (
            b"SEND\ndestination:/queue/a\npriority:high\n\nx\0",
            "priority `high`",
        ),
        (
            b"SUBSCRIBE\ndestination:/queue/a\nid:1\nselector:x = 1\n\n\0",
            "selectors are not supported yet",
        ),
        (
            b"SUBSCRIBE\ndestination:/queue/a\nid:1\nack:sometimes\n\n\0",
            "unknown ack mode",
        ),
        (b"ACK\nid:99:99\n\n\0", "no subscription"),
        (
            b"COMMIT\ntransaction:never\n\n\0",
            "unknown transaction `never`",
        ),
        (b"MESSAGE\n\n\0", "a client may not send MESSAGE"),
    ] {
        let message = refused(&broker, frame, true).await;
        assert!(
            message.contains(expected),
            "expected `{expected}` in `{message}`"
        );
    }
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version() {
    let broker = broker();
    let mut client = RawStomp::open(stomp_addr(&broker)).await;
    client.raw(b"CONNECT\naccept-version:2.0\n\n\0").await;
    let error = client.next().await;
    assert_eq!(error.command, Command::Error);
    let message = error.get("message").unwrap_or_default();
    assert!(
        message.contains("unsupported STOMP version `2.0`"),
        "{message}"
    );
    // STOMP 1.2, protocol negotiation: the ERROR lists the versions the server speaks.
    assert_eq!(error.get("version"), Some("1.0,1.1,1.2"));
    good_clients_work(&broker).await;
}

/// A NUL before a command (a client that ends frames with NUL and newline, or sends a
/// stray one) is skipped, as ActiveMQ and RabbitMQ skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_before_a_command_is_skipped() {
    let broker = broker();
    let mut client = RawStomp::open(stomp_addr(&broker)).await;
    client
        .raw(b"\0CONNECT\naccept-version:1.2\n\n\0\0\0SUBSCRIBE\ndestination:/queue/nul\nid:1\nreceipt:r\n\n\0")
        .await;
    assert_eq!(client.next().await.command, Command::Connected);
    assert_eq!(client.next().await.get("receipt-id"), Some("r"));
    good_clients_work(&broker).await;
}

/// A 16 MiB body is accepted (the body limit; the frame may be larger by its headers), as
/// ActiveMQ and RabbitMQ accept it, and delivered whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixteen_mebibyte_body_is_accepted() {
    let broker = broker();
    let mut client = RawStomp::connected(stomp_addr(&broker)).await;
    client
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/large")
                .header("id", "0")
                .header("receipt", "sub"),
        )
        .await;
    assert_eq!(client.next().await.get("receipt-id"), Some("sub"));
    let body = bytes::Bytes::from(vec![7u8; 16 << 20]);
    client
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", "/queue/large")
                .header("content-length", body.len().to_string())
                .body(body.clone()),
        )
        .await;
    let message = client.next().await;
    assert_eq!(message.command, Command::Message);
    assert!(message.body == body, "the body arrives whole");
}

/// `*` and `>` are wildcards for topic subscriptions: a queue cannot be named with them,
/// and nothing can be sent to a wildcard. Nothing named `*` or `>` is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_are_refused_where_they_make_no_sense() {
    let broker = broker();
    for frame in [
        &b"SEND\ndestination:/queue/*\nreceipt:w\n\nx\0"[..],
        b"SEND\ndestination:/topic/>\nreceipt:w\n\nx\0",
        b"SEND\ndestination:/queue/orders.>\nreceipt:w\n\nx\0",
        b"SUBSCRIBE\ndestination:/queue/*\nid:1\nreceipt:w\n\n\0",
    ] {
        let mut client = RawStomp::connected(stomp_addr(&broker)).await;
        client.raw(frame).await;
        let error = client.next().await;
        assert_eq!(error.command, Command::Error, "{error:?}");
        assert_eq!(error.get("receipt-id"), Some("w"), "{error:?}");
        let message = error.get("message").unwrap_or_default();
        assert!(message.contains("wildcard"), "{message}");
    }
    let (connection, _session) = connect(&broker).await;
    let names: Vec<String> = connection
        .stat()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains('*') || n.contains('>')),
        "{names:?}"
    );
}

/// Every MESSAGE carries a `message-id` unique to its message (STOMP 1.2 requires one;
/// 1.0 and 1.1 clients acknowledge by it), so an ACK by message id settles the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_are_unique_and_acknowledge_the_right_message() {
    let broker = broker();
    let mut client = RawStomp::connected(stomp_addr(&broker)).await;
    for i in 0..3 {
        client
            .send(
                &StompFrame::new(Command::Send)
                    .header("destination", "/queue/ids")
                    .body(format!("m{i}")),
            )
            .await;
    }
    client
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/ids")
                .header("id", "s")
                .header("ack", "client-individual"),
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let message = client.next().await;
        let id = message.get("message-id").unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{message:?}");
        // Nothing in a STOMP-sent message's id needs escaping (`<connection>-<n>`).
        assert!(!id.contains([':', '\\', '\r', '\n']), "{id}");
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
    // A 1.1 client acknowledges the second message by its id, then closes.
    client
        .send(
            &StompFrame::new(Command::Ack)
                .header("message-id", ids[1].clone())
                .header("subscription", "s")
                .header("receipt", "acked"),
        )
        .await;
    assert_eq!(client.next().await.get("receipt-id"), Some("acked"));
    client
        .send(&StompFrame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    assert_eq!(client.next().await.get("receipt-id"), Some("bye"));
    // The other two come back; the acknowledged one does not.
    let mut again = RawStomp::connected(stomp_addr(&broker)).await;
    again
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/ids")
                .header("id", "t"),
        )
        .await;
    let bodies = [again.next().await.body, again.next().await.body];
    assert_eq!(bodies, [&b"m0"[..], &b"m2"[..]]);
}

/// An ERROR caused by a frame that asked for a receipt carries that `receipt-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_names_the_receipt_of_the_frame_that_caused_it() {
    let broker = broker();
    let mut client = RawStomp::connected(stomp_addr(&broker)).await;
    client
        .raw(b"SUBSCRIBE\ndestination:/nowhere/x\nid:1\nreceipt:sub-9\n\n\0")
        .await;
    let error = client.next().await;
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.get("receipt-id"), Some("sub-9"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_never_crash_the_listener() {
    let broker = broker();
    // A fixed-seed generator: the same bytes on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..50 {
        let bytes: Vec<u8> = (0..(64 + round * 97))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let mut client = RawStomp::open(stomp_addr(&broker)).await;
        client.raw(&bytes).await;
        drop(client);
    }
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_negotiated_heartbeat() {
    let broker = broker_with(|c| {
        c.limits.stomp_heartbeat_ms = 100;
        c.limits.stomp_heartbeat_grace_ms = 100;
    });
    let mut client = RawStomp::open(stomp_addr(&broker)).await;
    client
        .send(
            &StompFrame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "100,100"),
        )
        .await;
    let connected = client.next().await;
    assert_eq!(connected.get("heart-beat"), Some("100,100"));
    // The broker's heart-beats arrive (skipped by next()); our silence gets us dropped.
    let message = client.error().await;
    assert!(
        message.contains("no heart-beat from the client within 200 ms"),
        "{message}"
    );
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_connects_is_dropped() {
    let broker = broker_with(|c| c.limits.handshake_timeout_ms = 200);
    let message = refused(&broker, b"", false).await;
    assert!(
        message.contains("no CONNECT within the handshake timeout"),
        "{message}"
    );
    good_clients_work(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_a_receipt_is_answered_then_closed() {
    let broker = broker();
    let mut client = RawStomp::connected(stomp_addr(&broker)).await;
    client
        .send(&StompFrame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    assert_eq!(client.next().await.get("receipt-id"), Some("bye"));
    let rest = tokio::time::timeout(WAIT, client.reader.next())
        .await
        .unwrap();
    assert!(rest.is_none());
}

/// A SEND whose sequence number is below its own `actormq.confirmed-below` contradicts
/// itself: refused with an ERROR, never confirmed as a resend it cannot be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_below_its_own_confirmed_below_is_refused() {
    let broker = broker();
    let mut stomp = RawStomp::connected(stomp_addr(&broker)).await;
    stomp
        .send(
            &StompFrame::new(Command::Send)
                .header("destination", "/queue/contradiction")
                .header("actormq.producer", "p")
                .header("actormq.seq", "5")
                .header("actormq.confirmed-below", "10")
                .header("receipt", "r")
                .body("x"),
        )
        .await;
    let error = stomp.error().await;
    assert!(
        error.contains("send 5 of producer `stomp:p` is below its own confirmed-below 10"),
        "{error}"
    );
}
