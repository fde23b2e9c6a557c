//! Master/slave on PostgreSQL (`ha.mode = "database"`, `store.kind = "postgres"`): real
//! broker processes and a private PostgreSQL server; the master killed, frozen, or cut off
//! from the database by a proxy that turns into a black hole.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use actormq::Destination;
use actormq::client::Connection;
use common::postgres::Postgres;
use common::process::BrokerProcess;
use common::proxy::Proxy;
use common::{data_dir, drain_exactly_once, produce_numbered};

const WAIT: Duration = Duration::from_secs(30);
/// The default lease (ha.lease_ms).
const LEASE: Duration = Duration::from_secs(5);

/// A connection of the test's own to the database.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test reaches PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Stored messages written by the master of `epoch` (ids carry it in their top bits).
async fn written_in(client: &tokio_postgres::Client, epoch: i64) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM actormq_messages WHERE id >> 40 = $1",
            &[&epoch],
        )
        .await
        .expect("a count")
        .get(0)
}

/// Confirmed batches of `confirmations` so far, into `confirmed`; returns the time of the
/// last one.
fn take_confirmed(
    confirmations: &mut tokio::sync::mpsc::UnboundedReceiver<(i64, SystemTime)>,
    confirmed: &mut HashSet<i64>,
) -> Option<SystemTime> {
    let mut last = None;
    while let Ok((start, at)) = confirmations.try_recv() {
        confirmed.extend(start..start + 100);
        last = Some(at);
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slave_takes_over_from_a_killed_master_within_the_lease() {
    let pg = Postgres::start("sigkill");
    let queue = Destination::queue("ha.pg.orders");
    let mut a = BrokerProcess::pg_pair_member(&pg.url(), "a");
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = BrokerProcess::pg_pair_member(&pg.url(), "b");
    let waiting = b
        .wait_for_log("standby: waiting for the lease", WAIT)
        .expect("a standby");
    assert!(waiting.contains("held by a"), "{waiting}");

    let connection = Connection::connect(&a.url).await.unwrap();
    let mut confirmations = produce_numbered(connection, queue.clone(), 10_000_000);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 20_000 {
        let (start, _) = confirmations.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    let killed = Instant::now();
    a.kill();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.extend(start..start + 100);
    }
    b.wait_for_log("master: epoch 2, took over from a", WAIT)
        .expect("the standby takes over");
    common::served(&b.url).await.close().await.unwrap();
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL (PostgreSQL lease): {takeover:?}");
    assert!(
        takeover < LEASE + Duration::from_secs(1),
        "takeover took {takeover:?}"
    );
    let received = drain_exactly_once(&b.url, queue, &confirmed).await;
    eprintln!(
        "{} confirmed, {received} delivered once by the new master",
        confirmed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_fenced_and_writes_nothing_once_thawed() {
    let pg = Postgres::start("sigstop");
    let queue = Destination::queue("ha.pg.frozen");
    let mut a = BrokerProcess::pg_pair_member(&pg.url(), "a");
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = BrokerProcess::pg_pair_member(&pg.url(), "b");
    b.wait_for_log("standby: waiting for the lease", WAIT)
        .expect("a standby");

    let connection = Connection::connect(&a.url).await.unwrap();
    let mut confirmations = produce_numbered(connection, queue.clone(), 10_000_000);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 5_000 {
        let (start, _) = confirmations.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    a.signal("STOP");
    let frozen = Instant::now();
    b.wait_for_log("master: epoch 2, took over from a", WAIT)
        .expect("the standby takes over from a frozen master");
    common::served(&b.url).await.close().await.unwrap();
    let takeover = frozen.elapsed();
    eprintln!("takeover after SIGSTOP (PostgreSQL lease): {takeover:?}");
    assert!(
        takeover < LEASE + Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
    take_confirmed(&mut confirmations, &mut confirmed);

    let db = sql(&pg.url()).await;
    let before = written_in(&db, 1).await;
    let thawed = SystemTime::now();
    a.signal("CONT");
    a.wait_for_log("demoting:", WAIT)
        .expect("the thawed master demotes");
    // Its producer is told: the connection closes. A write it had committed before it
    // froze may still be confirmed as it thaws (the new master has it: it was committed
    // under the old lease); nothing it tried to write after is.
    let mut late = 0;
    while let Some((start, at)) = confirmations.recv().await {
        confirmed.extend(start..start + 100);
        late += usize::from(at >= thawed);
    }
    eprintln!("{late} batches committed before the freeze were confirmed after the thaw");
    assert_eq!(
        written_in(&db, 1).await,
        before,
        "the fenced master wrote to the database after it was thawed"
    );
    a.wait_for_log("standby: waiting for the lease", WAIT)
        .expect("and waits as a standby");
    drain_exactly_once(&b.url, queue, &confirmed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_cut_off_from_the_database_stops_confirming_before_its_lease_ends() {
    let pg = Postgres::start("cut");
    let proxy = Proxy::start(format!("127.0.0.1:{}", pg.port).parse().unwrap()).await;
    let queue = Destination::queue("ha.pg.cut");
    let mut a = BrokerProcess::pg_pair_member(&pg.url_via(proxy.port), "a");
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = BrokerProcess::pg_pair_member(&pg.url(), "b");
    b.wait_for_log("standby: waiting for the lease", WAIT)
        .expect("a standby");

    let connection = Connection::connect(&a.url).await.unwrap();
    let mut from_a = produce_numbered(connection, queue.clone(), 10_000_000);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 5_000 {
        let (start, _) = from_a.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    let cut = SystemTime::now();
    proxy.cut();
    a.wait_for_log("demoting:", LEASE + Duration::from_secs(1))
        .expect("the master cut off demotes within its lease");
    let mut last_from_a = cut;
    while let Some((start, at)) = from_a.recv().await {
        confirmed.extend(start..start + 100);
        last_from_a = last_from_a.max(at);
    }
    let stopped_after = last_from_a.duration_since(cut).unwrap_or_default();
    eprintln!("the cut-off master's last confirmation came {stopped_after:?} after the cut");
    assert!(
        stopped_after < LEASE,
        "it confirmed {stopped_after:?} after the cut"
    );

    b.wait_for_log("master: epoch 2, took over from a", WAIT)
        .expect("the standby takes over");
    let connection = common::served(&b.url).await;
    let mut from_b = produce_numbered(connection, Destination::queue("ha.pg.after"), 1_000);
    let (_, first_from_b) = from_b.recv().await.expect("the new master confirms");
    assert!(
        first_from_b > last_from_a,
        "two masters confirmed at once: b at {first_from_b:?}, a until {last_from_a:?}"
    );
    // The lease's history agrees: epoch 2 began after a's last confirmation.
    let db = sql(&pg.url()).await;
    let epochs = db
        .query(
            "SELECT epoch, holder, (extract(epoch FROM started_at) * 1000)::bigint
             FROM actormq_epochs ORDER BY epoch",
            &[],
        )
        .await
        .unwrap();
    let history: Vec<(i64, String, i64)> = epochs
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        history
            .iter()
            .map(|(e, h, _)| (*e, h.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "a"), (2, "b")]
    );
    let last_a_ms = last_from_a
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        history[1].2 > last_a_ms,
        "epoch 2 began at {} ms, before a's last confirmation at {last_a_ms} ms",
        history[1].2
    );
    drain_exactly_once(&b.url, queue, &confirmed).await;
}

/// Runs `actormq` with `args` and `env` until it exits (within 30 s): its status and
/// everything it wrote.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(common::process::BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("actormq runs");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("its status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("actormq {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// The settings of a lone broker on the PostgreSQL store at `url`.
fn pg_env(url: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("ACTORMQ__HA__MODE", "database"),
        ("ACTORMQ__STORE__KIND", "postgres"),
        ("ACTORMQ__STORE__URL", url),
        ("ACTORMQ__BROKER__LISTEN", "127.0.0.1:0"),
        ("ACTORMQ__STOMP__ENABLED", "false"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_problems_are_named() {
    let pg = Postgres::start("errors");
    let (status, text) = run_to_exit(&["db", "init", "--url", &pg.url()], &[]);
    assert!(status.success(), "{text}");
    assert!(text.contains("schema version 2 is ready"), "{text}");

    // A database of schema version 1 (before duplicate detection) is brought up to 2.
    let db = sql(&pg.url()).await;
    db.batch_execute(
        "DROP TABLE actormq_sends; ALTER TABLE actormq_messages DROP COLUMN deliveries;
         UPDATE actormq_schema SET version = 1",
    )
    .await
    .unwrap();
    let (status, text) = run_to_exit(&["db", "init", "--url", &pg.url()], &[]);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("brought actormq schema version 1 up to 2"),
        "{text}"
    );
    db.execute("SELECT count(*) FROM actormq_sends", &[])
        .await
        .expect("the new table exists");

    // Unreachable: the standby says so and keeps trying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = pg.url_via(closed.local_addr().unwrap().port());
    drop(closed);
    let mut waiting = BrokerProcess::pg_pair_member(&nowhere, "a");
    let said = waiting
        .wait_for_log("standby: cannot look at the lease", WAIT)
        .expect("the broker says it cannot reach the database");
    assert!(
        said.contains("cannot reach PostgreSQL at actormq@127.0.0.1:"),
        "{said}"
    );
    match Connection::connect(&waiting.url).await {
        Err(e) => assert!(e.to_string().contains("cannot reach PostgreSQL"), "{e}"),
        Ok(_) => panic!("a broker without its database must not serve"),
    }
    drop(waiting);

    // Refused credentials (no such role) and another schema version stop the broker.
    let stranger = format!("postgres://nobody@127.0.0.1:{}/postgres", pg.port);
    let (status, text) = run_to_exit(&["broker"], &pg_env(&stranger));
    assert!(!status.success());
    assert!(
        text.contains("refused the credentials") && text.contains("nobody"),
        "{text}"
    );

    db.execute("UPDATE actormq_schema SET version = 99", &[])
        .await
        .unwrap();
    let url = pg.url();
    let (status, text) = run_to_exit(&["broker"], &pg_env(&url));
    assert!(!status.success());
    assert!(
        text.contains("holds actormq schema version 99; this build uses version 2"),
        "{text}"
    );
    let (status, text) = run_to_exit(&["db", "init", "--url", &url], &[]);
    assert!(
        !status.success() && text.contains("schema version 99"),
        "{text}"
    );
}

#[test]
fn the_master_pg_and_slave_pg_profiles_make_a_pair() {
    let pg = Postgres::start("profiles");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let url = pg.url();
    let env = [("ACTORMQ__STORE__URL", url.as_str())];
    let start = |profile: &str| {
        BrokerProcess::start_with_env(
            &data_dir(profile),
            &["--config-dir", config, "--profile", profile],
            &env,
        )
    };
    let mut a = start("master-pg");
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = start("slave-pg");
    let waiting = b
        .wait_for_log("standby: waiting for the lease", WAIT)
        .expect("a standby");
    assert!(waiting.contains("held by ha-pg-a"), "{waiting}");
    // A clean stop gives the lease up: the standby takes over within a poll.
    a.signal("TERM");
    let stopped = Instant::now();
    b.wait_for_log("master: epoch 2, took over from ha-pg-a", WAIT)
        .expect("the standby takes over");
    let took = stopped.elapsed();
    eprintln!("takeover after SIGTERM (PostgreSQL lease): {took:?}");
    assert!(took < LEASE, "a clean stop gives the lease up: {took:?}");
}
