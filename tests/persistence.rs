//! Persistent messages survive restarts and crashes: the journal, recovery, and segment
//! clean-up, against real brokers (the library, and the binary killed with SIGKILL).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use actormq::client::{AckMode, Connection, ConsumerOptions};
use actormq::config::StoreKind;
use actormq::{BrokerThread, Destination, Message, Property};
use common::process::BrokerProcess;
use common::{connect, data_dir, seq_of, stat_of};

const WAIT: Duration = Duration::from_secs(20);

fn journal_broker(dir: &Path) -> BrokerThread {
    common::broker_with(|c| {
        c.store.kind = StoreKind::Journal;
        c.broker.data_dir = dir.to_path_buf();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_survive_a_restart_and_acked_ones_do_not_come_back() {
    let dir = data_dir("restart");
    let queue = Destination::queue("orders");
    {
        let broker = journal_broker(&dir);
        let (_c, session) = connect(&broker).await;
        let producer = session.producer(queue.clone());
        let batch = (0..1000)
            .map(|n| Message::new(format!("p{n}")).with_property("seq", Property::Int(n)))
            .collect();
        producer.send_batch(batch).await.unwrap();
        let transient = (0..10)
            .map(|n| Message::new(format!("t{n}")).with_persistent(false))
            .collect();
        producer.send_batch(transient).await.unwrap();
    }
    {
        let broker = journal_broker(&dir);
        let (connection, session) = connect(&broker).await;
        let stat = stat_of(&connection, "queue", "orders")
            .await
            .expect("the queue is recovered");
        assert_eq!(stat.depth, 1000, "persistent messages only");
        let mut consumer = session.consumer(queue.clone()).await.unwrap();
        for n in 0..1000 {
            let m = consumer
                .receive(WAIT)
                .await
                .unwrap()
                .expect("a recovered message");
            assert_eq!(seq_of(&m), n, "in order");
        }
        common::assert_nothing_more(&mut consumer).await;
        drop(consumer);
        drop(session);
        connection.close().await.unwrap();
    }
    let broker = journal_broker(&dir);
    let (connection, _s) = connect(&broker).await;
    let stat = stat_of(&connection, "queue", "orders").await;
    assert!(
        stat.as_ref().is_none_or(|s| s.depth == 0),
        "acked messages stay acked: {stat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_deleted_once_everything_in_them_is_acknowledged() {
    let dir = data_dir("segments");
    let broker = common::broker_with(|c| {
        c.store.kind = StoreKind::Journal;
        c.store.segment_bytes = 64 * 1024;
        c.broker.data_dir = dir.clone();
    });
    let segments = || {
        std::fs::read_dir(dir.join("journal"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count()
    };
    let (_c, session) = connect(&broker).await;
    let queue = Destination::queue("rolling");
    let producer = session.producer(queue.clone());
    for _ in 0..20 {
        let batch = (0..50).map(|_| Message::new(vec![7u8; 1024])).collect();
        producer.send_batch(batch).await.unwrap();
    }
    assert!(
        segments() > 5,
        "1 MiB of messages fills many 64 KiB segments"
    );
    let mut consumer = session.consumer(queue).await.unwrap();
    for _ in 0..1000 {
        consumer.receive(WAIT).await.unwrap().expect("a message");
    }
    drop(consumer); // acknowledges
    // A send makes the journal thread look at its segments again.
    common::eventually(WAIT, "acknowledged segments to be deleted", || {
        let producer = session.producer(Destination::queue("nudge"));
        async move {
            producer
                .send(Message::new("x").with_persistent(false))
                .await
                .unwrap();
            producer.send(Message::new("y")).await.unwrap();
            (segments() <= 2).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_send_delivers_every_confirmed_message_after_restart() {
    let dir = data_dir("sigkill");
    let queue = Destination::queue("crash");
    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();

    // 100,000 persistent messages in batches of 100, 8 batches in flight; the broker is
    // killed once 30,000 are confirmed.
    let mut confirmations = common::produce_numbered(connection, queue.clone(), 100_000);
    let mut confirmed = Vec::new();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.push((start, start + 100));
        if confirmed.len() * 100 >= 30_000 {
            break;
        }
    }
    broker.kill();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.push((start, start + 100));
    }
    let confirmed: HashSet<i64> = confirmed.into_iter().flat_map(|(a, b)| a..b).collect();
    assert!(confirmed.len() >= 30_000);

    let broker = BrokerProcess::start(&dir, &[]);
    common::drain_exactly_once(&broker.url, queue, &confirmed).await;
    broker.kill();

    // Everything was acknowledged: nothing comes back after another restart.
    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();
    let stat = stat_of(&connection, "queue", "crash").await;
    assert!(
        stat.as_ref().is_none_or(|s| s.depth == 0),
        "acknowledged messages came back: {stat:?}"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_and_a_corrupt_record_are_skipped_and_named() {
    let dir = data_dir("corrupt");
    let queue = Destination::queue("damaged");
    {
        let broker = journal_broker(&dir);
        let (_c, session) = connect(&broker).await;
        let producer = session.producer(queue.clone());
        for n in 0..100 {
            producer
                .send(Message::new(format!("m{n}")).with_property("seq", Property::Int(n)))
                .await
                .unwrap();
        }
    }
    // The segment holding the messages: flip a byte in the middle, cut the last record.
    let journal = dir.join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "log") && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    segments.sort();
    let segment = segments.last().expect("a segment with records").clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    // A segment started on a spare ends in zeros: damage its records, not those.
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    bytes.truncate(end);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&segment, &bytes).unwrap();

    let broker = BrokerProcess::start(&dir, &[]);
    let warnings: Vec<&String> = broker
        .startup
        .iter()
        .filter(|line| line.contains("skipped a torn or corrupt journal record"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per damaged record: {warnings:?}"
    );
    let name = segment.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        warnings
            .iter()
            .all(|w| w.contains(&name) && w.contains("offset=")),
        "{warnings:?}"
    );

    let connection = Connection::connect(&broker.url).await.unwrap();
    let store = connection.stat_with_store().await.unwrap().store;
    assert_eq!(
        store.map(|s| s.skipped),
        Some(2),
        "stat counts the skipped records"
    );
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session.consumer(queue).await.unwrap();
    let mut received = Vec::new();
    while let Some(m) = consumer.receive(Duration::from_secs(1)).await.unwrap() {
        received.push(seq_of(&m));
    }
    assert_eq!(
        received.len(),
        98,
        "everything but the two damaged records: {received:?}"
    );
    assert!(!received.contains(&99), "the torn last record is gone");
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
}

/// Once a spare is ready the journal moves to it, so confirmed sends overwrite zeros in a
/// file of fixed size; killed there, the broker finds every confirmed message, reads the
/// zeros after them as the segment's end (no record skipped), and delivers each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_on_a_preallocated_segment_loses_nothing_and_skips_nothing() {
    let dir = data_dir("preallocated");
    let queue = Destination::queue("zeros");
    let broker = BrokerProcess::start(&dir, &[]);
    let journal = dir.join("journal");
    let preallocated = || {
        std::fs::read_dir(&journal).ok().is_some_and(|entries| {
            entries.flatten().any(|e| {
                e.path().extension().is_some_and(|x| x == "log")
                    && e.metadata().is_ok_and(|m| m.len() >= 1 << 20)
            })
        })
    };
    let connection = Connection::connect(&broker.url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let producer = session.producer(queue.clone());
    // One confirmed send at a time, as a JMS producer's persistent sends are, until the
    // journal writes into a preallocated segment, then 200 more.
    let deadline = std::time::Instant::now() + WAIT;
    let mut sent = 0i64;
    let mut after = None;
    while after.is_none_or(|first| sent < first + 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment was preallocated"
        );
        producer
            .send(Message::new(format!("m{sent}")).with_property("seq", Property::Int(sent)))
            .await
            .unwrap();
        sent += 1;
        if after.is_none() && preallocated() {
            after = Some(sent);
        }
    }
    broker.kill();

    let broker = BrokerProcess::start(&dir, &[]);
    assert!(
        !broker
            .startup
            .iter()
            .any(|line| line.contains("skipped a torn or corrupt journal record")),
        "{:?}",
        broker.startup
    );
    let confirmed: HashSet<i64> = (0..sent).collect();
    common::drain_exactly_once(&broker.url, queue, &confirmed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_all_or_nothing_across_sigkill() {
    let dir = data_dir("tx-sigkill");
    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();
    let transaction = |name: &str, session: &actormq::client::Session| {
        let producer = session.producer(Destination::queue("tx"));
        for n in 0..1000 {
            producer
                .send_oneway(Message::new(format!("{name}{n}")).with_header("tx", name))
                .unwrap();
        }
    };
    // A: committed and confirmed before the kill.
    let a = connection.session(AckMode::Transacted).unwrap();
    transaction("A", &a);
    a.commit().await.unwrap();
    // B: sent, never committed.
    let b = connection.session(AckMode::Transacted).unwrap();
    transaction("B", &b);
    // C: committed as the broker dies.
    let c = connection.session(AckMode::Transacted).unwrap();
    transaction("C", &c);
    let committing = tokio::spawn(async move { c.commit().await });
    broker.kill();
    let _ = committing.await;

    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session.consumer(Destination::queue("tx")).await.unwrap();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    while let Some(m) = consumer.receive(Duration::from_secs(1)).await.unwrap() {
        *counts.entry(m.headers["tx"].clone()).or_default() += 1;
    }
    assert_eq!(
        counts.get("A"),
        Some(&1000),
        "the committed transaction survives whole: {counts:?}"
    );
    assert_eq!(
        counts.get("B"),
        None,
        "the uncommitted transaction left nothing: {counts:?}"
    );
    assert!(
        matches!(counts.get("C"), None | Some(&1000)),
        "the transaction committed during the kill is all or nothing: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_disconnect_receipt_means_every_persistent_send_before_it_is_stored() {
    use actormq::protocol::stomp::{Command, StompFrame, encode_into};
    use common::raw_stomp::RawStomp;

    let dir = data_dir("stomp-disconnect");
    let broker = BrokerProcess::start(&dir, &[]);
    let stomp_addr = broker
        .logged_addr("STOMP listening on ")
        .expect("a STOMP address")
        .parse()
        .expect("host:port");
    let mut stomp = RawStomp::connected(stomp_addr).await;
    // 2,000 persistent SENDs without receipts and a DISCONNECT asking for one, in one write.
    let mut bytes = bytes::BytesMut::new();
    for i in 0..2_000 {
        let send = StompFrame::new(Command::Send)
            .header("destination", "/queue/before-disconnect")
            .header("persistent", "true")
            .body(format!("{i}"));
        encode_into(&send, &mut bytes);
    }
    encode_into(
        &StompFrame::new(Command::Disconnect).header("receipt", "bye"),
        &mut bytes,
    );
    stomp.raw(&bytes).await;
    let receipt = stomp.next().await;
    assert_eq!(receipt.get("receipt-id"), Some("bye"), "{receipt:?}");
    // The broker dies the moment the client has its receipt: nothing may be missing.
    broker.kill();

    let broker = BrokerProcess::start(&dir, &[]);
    let connection = Connection::connect(&broker.url).await.unwrap();
    let stat = stat_of(&connection, "queue", "before-disconnect")
        .await
        .expect("the queue is recovered");
    assert_eq!(stat.depth, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_while_its_consumer_keeps_up_loses_no_confirmed_message() {
    // With a consumer waiting, persistent messages are delivered while they are written
    // and confirmed once durable or acknowledged: a confirmed message must then have
    // reached the consumer before the kill, or come back after the restart.
    let dir = data_dir("sigkill-concurrent");
    let queue = Destination::queue("kept-up");
    let broker = BrokerProcess::start(&dir, &[]);
    let consuming = Connection::connect(&broker.url).await.unwrap();
    let session = consuming.session(AckMode::Auto).unwrap();
    let mut consumer = session
        .consumer_with(queue.clone(), ConsumerOptions::prefetch(1000))
        .await
        .unwrap();
    let received = tokio::spawn(async move {
        let mut received = HashSet::new();
        while let Ok(Some(m)) = consumer.receive(WAIT).await {
            received.insert(seq_of(&m));
        }
        received
    });

    let connection = Connection::connect(&broker.url).await.unwrap();
    let mut confirmations = common::produce_numbered(connection, queue.clone(), 100_000);
    let mut confirmed = Vec::new();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.push(start);
        if confirmed.len() * 100 >= 30_000 {
            break;
        }
    }
    broker.kill();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.push(start);
    }
    let received = received.await.unwrap();
    let confirmed: HashSet<i64> = confirmed.into_iter().flat_map(|s| s..s + 100).collect();
    assert!(
        !received.is_empty(),
        "the consumer received nothing before the kill"
    );

    let broker = BrokerProcess::start(&dir, &[]);
    let not_received: HashSet<i64> = confirmed.difference(&received).copied().collect();
    common::drain_exactly_once(&broker.url, queue, &not_received).await;
    drop(session);
    drop(broker);
}
