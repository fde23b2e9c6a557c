//! Failover clients against real master/slave pairs (broker processes): a `failover:` URL
//! reconnects by itself when the master is killed, resends what was not confirmed, and the
//! new master keeps each send once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use actormq::client::{AckMode, ClientError, Connection, ConnectionEvent};
use actormq::{Destination, Message, Property};
use common::postgres::Postgres;
use common::process::BrokerProcess;
use common::{data_dir, drain_exactly_once, seq_of};
use futures::StreamExt;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// A pair: the master (`a`, serving) and the standby (`b`, waiting).
fn pair(start: impl Fn(&str) -> BrokerProcess) -> (BrokerProcess, BrokerProcess) {
    let mut a = start("a");
    a.wait_for_log("master: epoch 1", WAIT)
        .expect("the first broker becomes the master");
    let mut b = start("b");
    b.wait_for_log("standby: waiting for the", WAIT)
        .expect("the second broker waits");
    (a, b)
}

/// The failover URL of a pair, master first, retrying quickly.
fn failover_url(a: &BrokerProcess, b: &BrokerProcess) -> String {
    format!(
        "failover:({},{})?initialReconnectDelay=10&maxReconnectDelay=200",
        a.url, b.url
    )
}

fn numbered(range: std::ops::Range<i64>) -> Vec<Message> {
    range
        .map(|n| Message::new(vec![1u8; 64]).with_property("seq", Property::Int(n)))
        .collect()
}

/// Sends `count` persistent messages numbered from 0, in batches of 100 with `window`
/// batches in flight, over a failover connection; reports each confirmed batch (its first
/// number, when) and fails the test on any error: a failover producer never sees one.
fn produce(
    connection: Connection,
    queue: Destination,
    count: i64,
    window: usize,
) -> mpsc::UnboundedReceiver<(i64, SystemTime)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let producer = connection.session(AckMode::Auto).unwrap().producer(queue);
        let mut in_flight = std::collections::VecDeque::new();
        for start in (0..count).step_by(100) {
            let confirmation = producer
                .begin_send(numbered(start..start + 100))
                .expect("a failover producer can always send");
            in_flight.push_back((start, confirmation));
            while in_flight.len() >= window || (start + 100 >= count && !in_flight.is_empty()) {
                let (start, confirmation) = in_flight.pop_front().unwrap();
                confirmation.await.expect("confirmed, across the failover");
                let _ = tx.send((start, SystemTime::now()));
            }
        }
        connection.close().await.unwrap();
    });
    rx
}

/// When the connection reports `Reconnected`, and to where.
fn reconnected(connection: &Connection) -> tokio::task::JoinHandle<(SystemTime, String)> {
    let mut events = Box::pin(connection.events());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let ConnectionEvent::Reconnected { url } = event {
                return (SystemTime::now(), url);
            }
        }
        panic!("the connection ended without reconnecting");
    })
}

/// Kills the master of a pair while a failover producer sends 50,000 persistent messages;
/// checks each arrives exactly once at a failover consumer. Returns the time from the kill
/// to the first confirmation the new master gave.
async fn producer_survives_a_killed_master(
    a: BrokerProcess,
    mut b: BrokerProcess,
    name: &str,
) -> Duration {
    let url = failover_url(&a, &b);
    let queue = Destination::queue(name);
    let connection = Connection::connect(&url).await.unwrap();
    assert_eq!(connection.broker_name(), "a");
    let switched = reconnected(&connection);
    let mut confirmations = produce(connection, queue.clone(), 50_000, 8);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 20_000 {
        let (start, _) = confirmations.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    let killed = SystemTime::now();
    a.kill();
    b.wait_for_log("master: epoch 2, took over from a", WAIT)
        .expect("the standby takes over");
    let (back, to) = switched.await.unwrap();
    assert_eq!(to, b.url.trim_start_matches("tcp://"));
    let mut first_after = None;
    while let Some((start, at)) = confirmations.recv().await {
        confirmed.extend(start..start + 100);
        if at >= back && first_after.is_none() {
            first_after = Some(at);
        }
    }
    assert_eq!(confirmed.len(), 50_000, "every send is confirmed");
    let resumed = first_after
        .expect("the new master confirmed sends")
        .duration_since(killed)
        .unwrap_or_default();
    let received = drain_exactly_once(&url, queue, &confirmed).await;
    assert_eq!(received, 50_000, "nothing kept twice");
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_producer_loses_nothing_and_duplicates_nothing_on_a_shared_file_pair() {
    let dir = data_dir("failover-file");
    let (a, b) = pair(|name| BrokerProcess::file_pair_member(&dir, name));
    let resumed = producer_survives_a_killed_master(a, b, "fo.file").await;
    eprintln!("shared file: first send confirmed by the new master {resumed:?} after SIGKILL");
    assert!(resumed < Duration::from_secs(6), "{resumed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_producer_loses_nothing_and_duplicates_nothing_on_a_postgres_pair() {
    let pg = Postgres::start("failover");
    let (a, b) = pair(|name| BrokerProcess::pg_pair_member(&pg.url(), name));
    let resumed = producer_survives_a_killed_master(a, b, "fo.pg").await;
    eprintln!("PostgreSQL: first send confirmed by the new master {resumed:?} after SIGKILL");
    assert!(resumed < Duration::from_secs(7), "{resumed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_when_the_master_dies_is_resolved_not_thrown() {
    let dir = data_dir("failover-commit");
    let (a, mut b) = pair(|name| BrokerProcess::file_pair_member(&dir, name));
    let url = failover_url(&a, &b);
    let queue = Destination::queue("fo.tx");
    let connection = Connection::connect(&url).await.unwrap();
    // Transactions of 10 messages, one after another; each commit says when it starts
    // and, once it returns Ok, when it ended.
    let (started_tx, mut started) = mpsc::unbounded_channel::<Instant>();
    let producing = {
        let queue = queue.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            let session = connection.session(AckMode::Transacted).unwrap();
            let producer = session.producer(queue);
            let mut done = Vec::new();
            for first in (0..4_000i64).step_by(10) {
                for m in numbered(first..first + 10) {
                    producer.send(m).await.unwrap();
                }
                let start = Instant::now();
                let _ = started_tx.send(start);
                session
                    .commit()
                    .await
                    .expect("a commit is resolved, not thrown");
                done.push((first, start, Instant::now()));
            }
            done
        })
    };
    // The kill lands right after the 100th commit was written.
    for _ in 0..100 {
        started.recv().await.expect("commits");
    }
    a.kill();
    let killed = Instant::now();
    b.wait_for_log("master: epoch 2", WAIT)
        .expect("the standby took over");
    let done = producing.await.unwrap();
    let spanning = done
        .iter()
        .filter(|(_, start, end)| *start <= killed && *end > killed)
        .count();
    assert_eq!(spanning, 1, "one commit was in flight when the master died");
    let committed: HashSet<i64> = done
        .iter()
        .flat_map(|(first, _, _)| *first..*first + 10)
        .collect();
    connection.close().await.unwrap();
    let received = drain_exactly_once(&url, queue, &committed).await;
    assert_eq!(received, 4_000, "every transaction kept exactly once");
}

#[tokio::test]
async fn bad_failover_urls_fail_at_once_naming_the_problem() {
    for (url, says) in [
        ("failover:(", "no `)` closes the list"),
        (
            "failover:(tcp://127.0.0.1:1)?nonsense=1",
            "unknown option `nonsense`",
        ),
        (
            "failover:(tcp://127.0.0.1:1)?maxReconnectAttempts=many",
            "`many` is not a whole number",
        ),
        ("failover:(http://127.0.0.1:1)", "unknown scheme `http://`"),
    ] {
        let started = Instant::now();
        match Connection::connect(url).await {
            Err(ClientError::InvalidUrl(reason)) => {
                assert!(reason.contains(says), "{url}: {reason}")
            }
            other => panic!("{url}: expected InvalidUrl, got {:?}", other.map(|_| ())),
        }
        // At once: no reconnect rounds (a generous bound on a shared machine).
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Nobody listening and two rounds allowed: the connection gives up, naming the list.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("failover:(tcp://127.0.0.1:{port})?startupMaxReconnectAttempts=1");
    match Connection::connect(&url).await {
        Err(ClientError::Connect { addr, .. }) => assert_eq!(addr, format!("127.0.0.1:{port}")),
        other => panic!("expected a connect error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ack_consumer_killed_over_mid_batch_gets_back_only_what_it_had_not_acknowledged() {
    let dir = data_dir("failover-client-ack");
    let (a, b) = pair(|name| BrokerProcess::file_pair_member(&dir, name));
    client_ack_consumer_killed_over(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ack_consumer_killed_over_on_a_postgres_pair_gets_the_same() {
    let pg = Postgres::start("failover-client-ack");
    let (a, b) = pair(|name| BrokerProcess::pg_pair_member(&pg.url(), name));
    client_ack_consumer_killed_over(a, b).await;
}

/// 1,000 persistent messages; a Client-ack consumer over a failover URL takes 300,
/// acknowledges (stored) the first 250, and the master is killed: the 50 come again marked
/// redelivered with their count, the 250 never come back, and everything else comes once.
async fn client_ack_consumer_killed_over(a: BrokerProcess, mut b: BrokerProcess) {
    let url = failover_url(&a, &b);
    let queue = Destination::queue("fo.client-ack");
    let producer = Connection::connect(&a.url).await.unwrap();
    let session = producer.session(AckMode::Auto).unwrap();
    let sender = session.producer(queue.clone());
    for first in (0..1_000).step_by(100) {
        sender
            .send_batch(numbered(first..first + 100))
            .await
            .unwrap();
    }
    drop(sender);
    drop(session);
    producer.close().await.unwrap();

    let connection = Connection::connect(&url).await.unwrap();
    let session = connection.session(AckMode::Client).unwrap();
    let mut consumer = session
        .consumer_with(
            queue.clone(),
            actormq::client::ConsumerOptions::prefetch(400),
        )
        .await
        .unwrap();
    let next = async |consumer: &mut actormq::client::Consumer| {
        tokio::time::timeout(WAIT, consumer.next_delivery())
            .await
            .expect("a delivery in time")
            .expect("the consumer carries on across the failover")
    };
    // 250 taken and acknowledged (stored), 50 more taken and not: mid-batch.
    let mut acknowledged = HashSet::new();
    let mut last = None;
    for _ in 0..250 {
        let delivery = next(&mut consumer).await;
        assert!(!delivery.redelivered);
        acknowledged.insert(seq_of(&delivery.message));
        last = Some(delivery.message);
    }
    session
        .acknowledge_stored(last.as_ref().unwrap())
        .await
        .unwrap();
    let mut unacknowledged = HashSet::new();
    for _ in 0..50 {
        unacknowledged.insert(seq_of(&next(&mut consumer).await.message));
    }
    a.kill();
    b.wait_for_log("master: epoch 2", WAIT)
        .expect("the standby took over");

    // Everything not acknowledged comes (again); the 50 taken before the kill marked
    // redelivered, delivery count 2; nothing acknowledged comes back.
    let mut seen = HashSet::new();
    while seen.len() < 750 {
        let delivery = next(&mut consumer).await;
        let seq = seq_of(&delivery.message);
        assert!(
            !acknowledged.contains(&seq),
            "message {seq} was acknowledged and came back"
        );
        if unacknowledged.contains(&seq) {
            assert!(delivery.redelivered, "message {seq} is marked redelivered");
            assert!(delivery.delivery_count >= 2, "{delivery:?}");
        }
        assert!(
            seen.insert(seq),
            "message {seq} came twice after the failover"
        );
        if seen.len() % 100 == 0 || seen.len() == 750 {
            session.acknowledge_stored(&delivery.message).await.unwrap();
        }
    }
    assert!(unacknowledged.is_subset(&seen));
    let stat = connection.stat().await.unwrap();
    let depth = stat
        .iter()
        .find(|d| d.name == "fo.client-ack")
        .map(|d| d.depth);
    assert_eq!(depth, Some(0), "{stat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_through_a_failover_loses_nothing_and_duplicates_nothing() {
    let dir = data_dir("failover-bench");
    let (a, mut b) = pair(|name| BrokerProcess::file_pair_member(&dir, name));
    let url = failover_url(&a, &b);
    let bench = std::process::Command::new(common::process::BIN)
        .args([
            "bench",
            "queue",
            "--url",
            &url,
            "--persistent",
            "--count",
            "200000",
            "--idle-timeout",
            "30",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the bench runs");
    // Kill the master once the run is well under way.
    let watch = Connection::connect(&a.url).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let enqueued: u64 = watch
            .stat()
            .await
            .unwrap()
            .iter()
            .filter(|d| d.name.starts_with("bench.queue"))
            .map(|d| d.enqueued)
            .sum();
        if enqueued >= 50_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the bench never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    b.wait_for_log("master: epoch 2", WAIT)
        .expect("the standby took over");
    let output = tokio::task::spawn_blocking(move || bench.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("bench through a failover: {stdout}");
    assert!(stdout.contains("\"lost\":0,"), "{stdout}");
    assert!(stdout.contains("\"duplicates\":0,"), "{stdout}");
    assert!(stdout.contains("\"longest_pause_ms\":"), "{stdout}");
}

/// Every body waiting on `queue` at `url` (until none comes for a second), consumed.
async fn bodies_in(url: &str, queue: &str) -> Vec<String> {
    let connection = Connection::connect(url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session.consumer(Destination::queue(queue)).await.unwrap();
    let mut bodies = Vec::new();
    while let Some(m) = consumer.receive(Duration::from_secs(1)).await.unwrap() {
        bodies.push(m.body_text().to_string());
    }
    drop(consumer);
    drop(session);
    connection.close().await.unwrap();
    bodies
}

/// A persistent STOMP SEND to `queue` with extra headers, and its RECEIPT.
async fn stomp_send(
    stomp: &mut common::raw_stomp::RawStomp,
    queue: &str,
    body: &str,
    headers: &[(&str, &str)],
) {
    use actormq::protocol::stomp::{Command, StompFrame};
    let mut frame = StompFrame::new(Command::Send)
        .header("destination", format!("/queue/{queue}"))
        .header("persistent", "true")
        .header("receipt", body);
    for (name, value) in headers {
        frame = frame.header(*name, *value);
    }
    stomp.send(&frame.body(body.to_string())).await;
    let receipt = stomp.next().await;
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    assert_eq!(receipt.get("receipt-id"), Some(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_producer_may_resend_after_a_crash_and_each_send_is_kept_once() {
    use common::raw_stomp::RawStomp;
    let dir = data_dir("failover-stomp");
    let broker = BrokerProcess::start(&dir, &[]);
    let mut stomp = RawStomp::connected(broker.stomp_addr()).await;
    let by_id = [("actormq.dedup-id", "order-1")];
    let by_seq = [("actormq.producer", "p1"), ("actormq.seq", "7")];
    stomp_send(&mut stomp, "fo.stomp", "one", &by_id).await;
    stomp_send(&mut stomp, "fo.stomp", "two", &by_seq).await;
    // Sent again on the same connection: confirmed, not kept again.
    stomp_send(&mut stomp, "fo.stomp", "one", &by_id).await;
    broker.kill();

    // After a crash the broker still knows them: a reconnecting producer resends both.
    let broker = BrokerProcess::start(&dir, &[]);
    let mut stomp = RawStomp::connected(broker.stomp_addr()).await;
    stomp_send(&mut stomp, "fo.stomp", "one", &by_id).await;
    stomp_send(&mut stomp, "fo.stomp", "two", &by_seq).await;
    stomp_send(
        &mut stomp,
        "fo.stomp",
        "three",
        &[("actormq.producer", "p1"), ("actormq.seq", "8")],
    )
    .await;

    let mut bodies = bodies_in(&broker.url, "fo.stomp").await;
    bodies.sort();
    assert_eq!(bodies, ["one", "three", "two"]);
    broker.kill();

    // Consumed, and the segments that held them deleted at the next start: what the
    // broker knows of its producers was written forward, so a late resend is still known.
    let broker = BrokerProcess::start(&dir, &[]);
    let journal = dir.join("journal");
    let segments = || {
        std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    assert_eq!(segments(), 1, "the old segments are gone");
    let mut stomp = RawStomp::connected(broker.stomp_addr()).await;
    stomp_send(&mut stomp, "fo.stomp", "one", &by_id).await;
    let connection = Connection::connect(&broker.url).await.unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    let mut consumer = session
        .consumer(Destination::queue("fo.stomp"))
        .await
        .unwrap();
    assert!(
        consumer
            .receive(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_connection_that_finds_no_broker_times_sends_out_and_gives_up() {
    let dir = data_dir("failover-give-up");
    let broker = BrokerProcess::start(&dir, &[]);
    let url = format!(
        "failover:({})?initialReconnectDelay=100&useExponentialBackOff=false&maxReconnectAttempts=10&timeout=300",
        broker.url
    );
    let connection = Connection::connect(&url).await.unwrap();
    let mut events = Box::pin(connection.events());
    let producer = connection
        .session(AckMode::Auto)
        .unwrap()
        .producer(Destination::queue("fo.nobody"));
    producer.send(Message::new("before")).await.unwrap();
    broker.kill();
    match events.next().await {
        Some(ConnectionEvent::Disconnected { url, .. }) => assert!(broker_addr_in(&url)),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // A send while disconnected waits for `timeout`, then fails saying why.
    let started = Instant::now();
    match producer.send(Message::new("during")).await {
        Err(ClientError::Timeout(what)) => {
            assert!(what.contains("failover timeout 300 ms"), "{what}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // After maxReconnectAttempts rounds it gives up: an event, and every call fails.
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(ConnectionEvent::GaveUp { reason })) => {
            assert!(reason.contains("in 11 attempts"), "{reason}")
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(matches!(
        producer.send(Message::new("after")).await,
        Err(ClientError::GaveUp(_))
    ));
}

fn broker_addr_in(url: &str) -> bool {
    url.starts_with("127.0.0.1:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_takes_failover_urls() {
    let dir = data_dir("failover-cli");
    let (a, b) = pair(|name| BrokerProcess::file_pair_member(&dir, name));
    let url = failover_url(&a, &b);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::process::BIN)
            .args(args)
            .output()
            .expect("actormq runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&[
        "send",
        "--url",
        &url,
        "--to",
        "queue:fo.cli",
        "--count",
        "10",
    ]);
    let stat = run(&["stat", "--url", &url]);
    assert!(stat.contains("fo.cli"), "{stat}");
    run(&[
        "receive",
        "--url",
        &url,
        "--from",
        "queue:fo.cli",
        "--count",
        "10",
        "--quiet",
    ]);
    let out = std::process::Command::new(common::process::BIN)
        .args(["stat", "--url", "failover:(tcp://127.0.0.1:1)?bogus=1"])
        .output()
        .expect("actormq runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown option `bogus`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_times_out_on_time_whatever_the_back_off() {
    let dir = data_dir("failover-timeout");
    let broker = BrokerProcess::start(&dir, &[]);
    let url = format!(
        "failover:({})?initialReconnectDelay=5000&useExponentialBackOff=false&timeout=300",
        broker.url
    );
    let connection = Connection::connect(&url).await.unwrap();
    let producer = connection
        .session(AckMode::Auto)
        .unwrap()
        .producer(Destination::queue("fo.slow-back-off"));
    producer.send(Message::new("before")).await.unwrap();
    let mut events = Box::pin(connection.events());
    broker.kill();
    assert!(matches!(
        events.next().await,
        Some(ConnectionEvent::Disconnected { .. })
    ));
    let started = Instant::now();
    let result = producer.send(Message::new("during")).await;
    assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // A later send has a timeout of its own: it waits for it too, then fails.
    let started = Instant::now();
    let result = producer.send(Message::new("later")).await;
    assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_ack_with_a_receipt_is_stored_before_the_receipt() {
    use actormq::protocol::stomp::{Command, StompFrame};
    use common::raw_stomp::RawStomp;
    let dir = data_dir("failover-stomp-ack");
    let broker = BrokerProcess::start(&dir, &[]);
    let mut stomp = RawStomp::connected(broker.stomp_addr()).await;
    for body in ["acked", "kept"] {
        stomp_send(&mut stomp, "fo.stomp-ack", body, &[]).await;
    }
    stomp
        .send(
            &StompFrame::new(Command::Subscribe)
                .header("destination", "/queue/fo.stomp-ack")
                .header("id", "s")
                .header("ack", "client-individual")
                .header("activemq.prefetchSize", "1"),
        )
        .await;
    let message = stomp.next().await;
    assert_eq!(message.command, Command::Message, "{message:?}");
    assert_eq!(&message.body[..], b"acked");
    let ack = message.get("ack").expect("an ack id").to_string();
    stomp
        .send(
            &StompFrame::new(Command::Ack)
                .header("id", ack)
                .header("receipt", "ack-1"),
        )
        .await;
    loop {
        let frame = stomp.next().await;
        if frame.command == Command::Receipt {
            assert_eq!(frame.get("receipt-id"), Some("ack-1"));
            break;
        }
    }
    // Killed right after the RECEIPT: the acknowledged message does not come back.
    broker.kill();
    let broker = BrokerProcess::start(&dir, &[]);
    assert_eq!(bodies_in(&broker.url, "fo.stomp-ack").await, ["kept"]);
}
