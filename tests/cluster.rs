//! Three real broker processes as one cluster, on free ports: destinations homed on one
//! broker and used through the others, a broker killed and restarted, a broker of another
//! cluster refused, garbage on the cluster's ports.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use actormq::client::{ClientError, Connection};
use actormq::cluster::{BRIDGE_VERSION, Envelope, EnvelopeCodec, Hello, Refused};
use actormq::protocol::stomp::{Command, StompFrame};
use actormq::protocol::{MemberStat, MemberState};
use actormq::{AckMode, Destination, Message, Property};
use common::process::BrokerProcess;
use common::raw_stomp::RawStomp;
use common::{assert_nothing_more, data_dir, eventually, seq_of, stat_of};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(20);
/// The down bound the defaults promise (probe 500 ms, suspicion 2 s).
const DOWN_BOUND: Duration = Duration::from_secs(5);

/// Starts broker `name` of cluster `cluster` (brokers node1..node3; `cl.>` lives on
/// node1), joining through `seeds`.
fn start_node(dir: &Path, name: &str, cluster: &str, seeds: &[String]) -> BrokerProcess {
    start_node_with(dir, name, cluster, seeds, "")
}

/// [`start_node`] with more settings (`extra`, TOML) and the settings file named after
/// the folder, so that two brokers can share a data folder.
fn start_node_with(
    dir: &Path,
    name: &str,
    cluster: &str,
    seeds: &[String],
    extra: &str,
) -> BrokerProcess {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let settings = format!(
        r#"
[broker]
name = "{name}"

[cluster]
enabled = true
name = "{cluster}"
bridge_listen = "127.0.0.1:0"
gossip_listen = "127.0.0.1:0"
seeds = [{seeds}]
brokers = ["node1", "node2", "node3"]

[[cluster.placement]]
pattern = "cl.>"
home = "node1"

{extra}
"#,
        seeds = seeds.join(", ")
    );
    std::fs::create_dir_all(dir).expect("the node's folder");
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("{name}-{n}.toml"));
    std::fs::write(&file, settings).expect("the node's settings");
    let file = file.to_string_lossy().to_string();
    BrokerProcess::start(dir, &["--config", &file])
}

fn gossip(node: &BrokerProcess) -> String {
    node.logged_addr("gossip on ").expect("a gossip address")
}

fn bridge(node: &BrokerProcess) -> String {
    node.logged_addr("bridge on ").expect("a bridge address")
}

/// node1, then node2 and node3 joining through it; returns once each sees all three up.
async fn three_nodes(test: &str) -> (std::path::PathBuf, Vec<BrokerProcess>) {
    let dir = data_dir(test);
    let node1 = start_node(&dir.join("node1"), "node1", "itest", &[]);
    let seed = vec![gossip(&node1)];
    let node2 = start_node(&dir.join("node2"), "node2", "itest", &seed);
    let node3 = start_node(&dir.join("node3"), "node3", "itest", &seed);
    let nodes = vec![node1, node2, node3];
    for node in &nodes {
        let connection = Connection::connect(&node.url).await.expect("connects");
        wait_for_members(&connection, &["node1", "node2", "node3"], MemberState::Up).await;
    }
    (dir, nodes)
}

async fn members(connection: &Connection) -> Vec<MemberStat> {
    connection.members().await.expect("members answer")
}

async fn wait_for_members(connection: &Connection, names: &[&str], state: MemberState) {
    eventually(WAIT, &format!("{names:?} {state:?}"), || async {
        let seen = members(connection).await;
        names
            .iter()
            .all(|name| seen.iter().any(|m| m.name == *name && m.state == state))
            .then_some(())
    })
    .await;
}

fn numbered(range: std::ops::Range<i64>) -> Vec<Message> {
    range
        .map(|n| Message::new(format!("m{n}")).with_property("seq", Property::Int(n)))
        .collect()
}

/// Receives until `count` distinct messages came, then checks nothing else comes.
async fn receive_exactly(consumer: &mut actormq::client::Consumer, count: usize) -> HashSet<i64> {
    let mut seen = HashSet::new();
    while seen.len() < count {
        let message = consumer
            .receive(WAIT)
            .await
            .expect("receives")
            .unwrap_or_else(|| panic!("only {} of {count} arrived", seen.len()));
        assert!(
            seen.insert(seq_of(&message)),
            "duplicate {}",
            seq_of(&message)
        );
    }
    assert_nothing_more(consumer).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_topics_work_through_every_broker_and_garbage_leaves_the_cluster_up() {
    let (_dir, nodes) = three_nodes("cluster-flow").await;
    let c1 = Connection::connect(&nodes[0].url).await.unwrap();
    let c2 = Connection::connect(&nodes[1].url).await.unwrap();
    let c3 = Connection::connect(&nodes[2].url).await.unwrap();
    let queue = Destination::queue("cl.orders");

    // Cluster metadata: every broker knows the home and where its clients connect.
    let home = c3.locate(&queue).await.unwrap().expect("a home");
    assert_eq!(home.name, "node1");
    assert_eq!(format!("tcp://{}", home.client_addr), nodes[0].url);
    let direct = Connection::connect_to_home(&nodes[2].url, &queue)
        .await
        .unwrap();
    assert_eq!(direct.broker_name(), "node1");
    direct.close().await.unwrap();

    // A queue homed on node1, a consumer on node3, a producer on node2: 10,000 exactly once.
    let s3 = c3.session(AckMode::Auto).unwrap();
    let mut consumer = s3.consumer(queue.clone()).await.unwrap();
    let s2 = c2.session(AckMode::Auto).unwrap();
    let producer = s2.producer(queue.clone());
    for chunk in (0..10_000).step_by(500) {
        producer
            .send_batch(numbered(chunk..chunk + 500))
            .await
            .unwrap();
    }
    let seen = receive_exactly(&mut consumer, 10_000).await;
    assert_eq!(seen, (0..10_000).collect());
    eventually(WAIT, "the home queue to drain", || async {
        let stat = stat_of(&c1, "queue", "cl.orders").await?;
        (stat.depth == 0 && stat.dequeued == 10_000).then_some(())
    })
    .await;
    let through_node2 = stat_of(&c2, "queue", "cl.orders").await.expect("a row");
    assert_eq!(through_node2.home.as_deref(), Some("node1"));
    assert_eq!(
        through_node2.enqueued, 10_000,
        "node2 shows the home's counters"
    );

    // A topic with subscribers on every broker (two on node3): each gets every message,
    // and the home sees one subscription per broker.
    let topic = Destination::topic("cl.prices");
    let mut subscribers = Vec::new();
    for connection in [&c1, &c2, &c3, &c3] {
        let session = connection.session(AckMode::Auto).unwrap();
        subscribers.push((session.consumer(topic.clone()).await.unwrap(), session));
    }
    let at_home = stat_of(&c1, "topic", "cl.prices").await.expect("a row");
    assert_eq!(
        at_home.consumers, 3,
        "node1's subscriber and one feed each for node2, node3"
    );
    let publisher = s2.producer(topic.clone());
    publisher
        .send_batch(
            numbered(0..2_000)
                .into_iter()
                .map(|m| m.with_persistent(false))
                .collect(),
        )
        .await
        .unwrap();
    for (subscriber, _) in &mut subscribers {
        let seen = receive_exactly(subscriber, 2_000).await;
        assert_eq!(seen.len(), 2_000);
    }

    // Request/reply across three brokers: the service queue lives on node1, its responder
    // is on node3, the requestor's temporary reply queue on node2.
    let service = Destination::queue("cl.upper");
    let responder_session = c3.session(AckMode::Auto).unwrap();
    let _serving = responder_session
        .responder()
        .serve(service.clone(), |m| async move {
            Message::new(m.body_text().to_uppercase())
        })
        .await
        .unwrap();
    let requestor = s2.requestor().await.unwrap();
    for i in 0..200 {
        let reply = requestor
            .request(service.clone(), Message::new(format!("hello {i}")), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.body_text(), format!("HELLO {i}"));
    }

    // Garbage on node1's bridge: a bad handshake, and a good one followed by garbage.
    let mut garbage = tokio::net::TcpStream::connect(bridge(&nodes[0]))
        .await
        .unwrap();
    garbage
        .write_all(b"\x00\x00\x00\x08not rmp!")
        .await
        .unwrap();
    assert_closed(&mut garbage).await;
    let mut intruder = tokio::net::TcpStream::connect(bridge(&nodes[0]))
        .await
        .unwrap();
    intruder
        .write_all(&hello_bytes("itest", "intruder"))
        .await
        .unwrap();
    intruder
        .write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
        .await
        .unwrap();
    assert_closed(&mut intruder).await;
    // ... and on its gossip port.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"\xff\xfe garbage", gossip(&nodes[0]))
        .await
        .unwrap();

    // The cluster carries on: still three members, and the queue still works end to end.
    wait_for_members(&c2, &["node1", "node2", "node3"], MemberState::Up).await;
    producer.send_batch(numbered(10_000..10_100)).await.unwrap();
    let seen = receive_exactly(&mut consumer, 100).await;
    assert_eq!(seen, (10_000..10_100).collect());
}

/// A bridge handshake's first envelope, as broker `node` of cluster `cluster` sends it.
fn hello_bytes(cluster: &str, node: &str) -> bytes::Bytes {
    let hello = Hello {
        cluster: cluster.into(),
        node: node.into(),
        generation: 1,
        version: BRIDGE_VERSION,
    };
    let envelope = Envelope::new("bridge", 0, 0, &hello).expect("a hello encodes");
    envelope.encode(1 << 20).expect("a hello fits")
}

/// Reads until the broker closes the socket (or fails the test after `WAIT`).
async fn assert_closed(socket: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the broker kept a garbage link open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_home_is_noticed_and_after_its_restart_its_persistent_messages_arrive() {
    let (dir, mut nodes) = three_nodes("cluster-kill").await;
    let queue = Destination::queue("cl.kept");
    let c2 = Connection::connect(&nodes[1].url).await.unwrap();

    // A frozen broker is marked down within the bound, and rejoins when it wakes.
    let c3 = Connection::connect(&nodes[2].url).await.unwrap();
    nodes[2].signal("STOP");
    let frozen = Instant::now();
    wait_for_members(&c2, &["node3"], MemberState::Down).await;
    let noticed = frozen.elapsed();
    nodes[2].signal("CONT");
    assert!(
        noticed <= DOWN_BOUND,
        "frozen node3 marked down after {noticed:?}"
    );
    wait_for_members(&c2, &["node3"], MemberState::Up).await;
    wait_for_members(&c3, &["node1", "node2", "node3"], MemberState::Up).await;

    let s2 = c2.session(AckMode::Auto).unwrap();
    let producer = s2.producer(queue.clone());
    // Persistent: each batch is confirmed once node1's journal has it.
    for chunk in (0..1_000).step_by(250) {
        producer
            .send_batch(numbered(chunk..chunk + 250))
            .await
            .unwrap();
    }
    let before = members(&c2)
        .await
        .into_iter()
        .find(|m| m.name == "node1")
        .expect("node1");

    // A consumer on node3 of a queue homed on node1, kept through node1's death.
    let waiting = Destination::queue("cl.waiting");
    let waiting_session = c3.session(AckMode::Auto).unwrap();
    let mut waiting_consumer = waiting_session.consumer(waiting.clone()).await.unwrap();
    // A subscriber on node3 of a topic homed on node1, kept through node1's death.
    let news = Destination::topic("cl.news");
    let news_session = c3.session(AckMode::Auto).unwrap();
    let mut news_subscriber = news_session.consumer(news.clone()).await.unwrap();

    let node1 = nodes.remove(0);
    let killed = Instant::now();
    node1.kill();
    for connection in [&c2, &c3] {
        wait_for_members(connection, &["node1"], MemberState::Down).await;
    }
    let noticed = killed.elapsed();
    assert!(
        noticed <= DOWN_BOUND,
        "node1 was marked down after {noticed:?}, beyond {DOWN_BOUND:?}"
    );

    // `stat` through node2 does not pass node1's queue off as empty: its counters are unknown.
    let stat = std::process::Command::new(common::process::BIN)
        .args(["stat", "--url", &nodes[0].url])
        .output()
        .expect("actormq stat runs");
    let table = String::from_utf8_lossy(&stat.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(" cl.kept "))
        .unwrap_or_else(|| panic!("a row for cl.kept in {table}"));
    assert!(
        row.contains("node1 (down: counters unknown)") && row.contains('?'),
        "{table}"
    );

    // While node1 is down, its destinations are unavailable, and say where they live.
    let refused = producer.send_batch(numbered(1_000..1_001)).await;
    match refused {
        Err(ClientError::DestinationUnavailable { home, message }) => {
            assert_eq!(home.as_deref(), Some("node1"), "{message}");
        }
        other => panic!("expected DestinationUnavailable, got {other:?}"),
    }

    // Over STOMP too: an ERROR naming the home.
    let stomp_addr = nodes[0]
        .logged_addr("STOMP listening on ")
        .expect("a STOMP address")
        .parse()
        .expect("host:port");
    let mut stomp = RawStomp::connected(stomp_addr).await;
    let send = StompFrame::new(Command::Send)
        .header("destination", "/queue/cl.kept")
        .header("persistent", "true")
        .header("receipt", "r1")
        .body("while node1 is down");
    stomp.send(&send).await;
    let error = stomp.error().await;
    assert!(error.contains("home broker node1"), "{error}");

    // node1 comes back (same data, a new generation) through the survivors.
    let seeds = vec![gossip(&nodes[0]), gossip(&nodes[1])];
    let _node1 = start_node(&dir.join("node1"), "node1", "itest", &seeds);
    let after = eventually(WAIT, "node1 to rejoin", || async {
        members(&c2)
            .await
            .into_iter()
            .find(|m| m.name == "node1" && m.state == MemberState::Up)
    })
    .await;
    assert_ne!(
        after.generation, before.generation,
        "a restart is a new generation"
    );

    let s3 = c3.session(AckMode::Auto).unwrap();
    let mut consumer = s3.consumer(queue.clone()).await.unwrap();
    let seen = receive_exactly(&mut consumer, 1_000).await;
    assert_eq!(seen, (0..1_000).collect(), "every confirmed message, once");
    // Sends work again.
    producer.send_batch(numbered(2_000..2_010)).await.unwrap();
    assert_eq!(receive_exactly(&mut consumer, 10).await.len(), 10);
    // The queue's consumer on node3 was subscribed again: it gets what is sent now.
    s2.producer(waiting.clone())
        .send_batch(numbered(0..100))
        .await
        .unwrap();
    let seen = receive_exactly(&mut waiting_consumer, 100).await;
    assert_eq!(seen, (0..100).collect());
    // The topic's subscriber on node3 hears node1 again once node3 has subscribed anew.
    let news_publisher = s2.producer(news.clone());
    let deadline = Instant::now() + WAIT;
    loop {
        // A failed send (node3 not yet linked to node1 again) is simply tried again.
        let _ = news_publisher
            .send(Message::new("news").with_persistent(false))
            .await;
        let heard = news_subscriber
            .receive(Duration::from_millis(200))
            .await
            .expect("the subscriber stays open");
        if heard.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the topic feed did not resume");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_of_another_cluster_is_refused() {
    let dir = data_dir("cluster-refused");
    let mut node1 = start_node(&dir.join("node1"), "node1", "itest", &[]);
    let mut stranger = start_node(&dir.join("node2"), "node2", "other", &[gossip(&node1)]);
    assert!(
        node1.wait_for_log("refused broker `node2`", WAIT).is_some(),
        "node1 logs the refusal"
    );
    assert!(
        stranger
            .wait_for_log("refused broker `node1`", WAIT)
            .is_some(),
        "the stranger logs the refusal"
    );
    let c1 = Connection::connect(&node1.url).await.unwrap();
    let seen = members(&c1).await;
    assert_eq!(seen.len(), 1, "node1 alone: {seen:?}");

    // On the bridge: a Hello naming another cluster gets a Refused naming both.
    let socket = tokio::net::TcpStream::connect(bridge(&node1))
        .await
        .unwrap();
    let (read, mut write) = socket.into_split();
    write
        .write_all(&hello_bytes("other", "node3"))
        .await
        .unwrap();
    let mut replies = FramedRead::new(read, EnvelopeCodec::new(1 << 20));
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .expect("a reply")
        .expect("an envelope")
        .expect("well formed");
    let refused: Refused = reply.open().expect("a refusal");
    assert!(refused.reason.contains("`other`"), "{}", refused.reason);
    assert!(
        node1
            .wait_for_log("belongs to cluster `other`", WAIT)
            .is_some(),
        "node1 logs the refused link"
    );
}

/// The gossip address a master/slave member logs once it is the master.
fn gossip_once_master(node: &mut BrokerProcess) -> String {
    let line = node
        .wait_for_log("gossip on ", WAIT)
        .expect("the master joins the cluster");
    line.split("gossip on ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .expect("an address")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_slave_pair_as_one_member_fails_over_and_the_cluster_reaches_the_new_master() {
    let dir = data_dir("cluster-pair");
    let pair = "[ha]\nmode = \"shared-file\"";
    let shared = dir.join("node1");
    let mut node1a = start_node_with(&shared, "node1", "itest", &[], pair);
    let seed = vec![gossip_once_master(&mut node1a)];
    let node2 = start_node(&dir.join("node2"), "node2", "itest", &seed);
    let node3 = start_node(&dir.join("node3"), "node3", "itest", &seed);
    let seeds = vec![gossip(&node2), gossip(&node3)];
    let mut node1b = start_node_with(&shared, "node1", "itest", &seeds, pair);
    node1b
        .wait_for_log("standby: waiting for the lock", WAIT)
        .expect("node1's second broker stands by");
    let c2 = Connection::connect(&node2.url).await.unwrap();
    let c3 = Connection::connect(&node3.url).await.unwrap();
    for connection in [&c2, &c3] {
        wait_for_members(connection, &["node1", "node2", "node3"], MemberState::Up).await;
    }
    let before = members(&c2)
        .await
        .into_iter()
        .find(|m| m.name == "node1")
        .expect("node1");

    // A queue homed on node1: produced to on node2, consumed on node3.
    let queue = Destination::queue("cl.pair");
    let s2 = c2.session(AckMode::Auto).unwrap();
    let producer = s2.producer(queue.clone());
    let s3 = c3.session(AckMode::Auto).unwrap();
    let mut consumer = s3.consumer(queue.clone()).await.unwrap();
    for chunk in (0..500).step_by(250) {
        producer
            .send_batch(numbered(chunk..chunk + 250))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        let m = consumer
            .receive(WAIT)
            .await
            .unwrap()
            .expect("node3 receives");
        seen.insert(seq_of(&m));
    }

    let killed = Instant::now();
    node1a.kill();
    node1b
        .wait_for_log("master: epoch 2, took over from node1", WAIT)
        .expect("node1's standby takes over");
    // Sends through node2 reach the new master without restarting anyone.
    let deadline = Instant::now() + WAIT;
    while producer.send_batch(numbered(500..600)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "node2 never reached the new node1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let available = killed.elapsed();
    eprintln!(
        "node1's queue available again through node2 {available:?} after its master was killed"
    );
    assert!(available < DOWN_BOUND, "{available:?}");
    let after = members(&c2)
        .await
        .into_iter()
        .find(|m| m.name == "node1")
        .expect("node1");
    assert_ne!(after.generation, before.generation, "a new generation");
    assert_ne!(
        after.client_addr, before.client_addr,
        "at the new master's address"
    );

    // node3's consumer was subscribed again: every confirmed message arrives. The ones
    // delivered before the kill whose acknowledgements the dead master had not written may
    // come again (marked redelivered); every other comes once.
    let mut after_kill = HashSet::new();
    while !(0..600).all(|n| seen.contains(&n) || after_kill.contains(&n)) {
        let m = consumer
            .receive(WAIT)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} of 600 arrived", seen.len() + after_kill.len()));
        let n = seq_of(&m);
        assert!(
            after_kill.insert(n) || !seen.contains(&n),
            "message {n} delivered twice after the takeover"
        );
    }
}
