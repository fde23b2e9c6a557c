//! Master/slave on a shared data dir (`ha.mode = "shared-file"`): real broker processes on
//! one folder, the master killed with SIGKILL or its lock file pulled from under it.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use actormq::Destination;
use actormq::client::{ClientError, Connection};
use actormq::protocol::ErrorCode;
use common::data_dir;
use common::process::BrokerProcess;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slave_takes_over_from_a_killed_master_with_every_confirmed_message_once() {
    let dir = data_dir("ha-file-sigkill");
    let queue = Destination::queue("ha.orders");
    let mut a = BrokerProcess::file_pair_member(&dir, "a");
    a.wait_for_log("master: epoch 1", WAIT)
        .expect("the first broker becomes the master");
    let mut b = BrokerProcess::file_pair_member(&dir, "b");
    let waiting = b
        .wait_for_log("standby: waiting for the lock", WAIT)
        .expect("the second broker waits");
    assert!(
        waiting.contains(&format!("held by a (pid {}", a.pid())),
        "{waiting}"
    );

    // The standby refuses clients, naming the master.
    match Connection::connect(&b.url).await {
        Err(ClientError::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::Standby);
            assert!(message.contains("held by a"), "{message}");
        }
        other => panic!("a standby must refuse, got {:?}", other.map(|_| ())),
    }

    // 50,000 confirmed by the master, then it is killed with sends in flight.
    let connection = Connection::connect(&a.url).await.unwrap();
    let mut confirmations = common::produce_numbered(connection, queue.clone(), 10_000_000);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 50_000 {
        let (start, _) = confirmations.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    let killed = Instant::now();
    a.kill();
    while let Some((start, _)) = confirmations.recv().await {
        confirmed.extend(start..start + 100);
    }

    let took_over = b
        .wait_for_log("master: epoch 2, took over from a after", WAIT)
        .expect("the standby takes over");
    let connection = common::served(&b.url).await;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL (file lock): {takeover:?} ({took_over})");
    assert!(
        takeover < Duration::from_millis(500) + Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    let stat = connection.stat_with_store().await.unwrap();
    let master = stat.master.expect("stat shows the master");
    assert_eq!((master.epoch, master.previous.as_deref()), (2, Some("a")));
    connection.close().await.unwrap();

    let received = common::drain_exactly_once(&b.url, queue, &confirmed).await;
    eprintln!(
        "{} confirmed, {received} delivered once by the new master",
        confirmed.len()
    );

    // The old master, back, is a standby.
    let mut a = BrokerProcess::file_pair_member(&dir, "a");
    let waiting = a
        .wait_for_log("standby: waiting for the lock", WAIT)
        .expect("the old master waits");
    assert!(waiting.contains("held by b"), "{waiting}");
    assert!(Connection::connect(&a.url).await.is_err());
    drop(b);
    a.wait_for_log("master: epoch 3, took over from b", WAIT)
        .expect("and takes over when the other goes");
}

/// Pulls the lock file from under a master (deleted, or replaced by another file): it
/// demotes within keep-alive + 1 s, and every send it confirmed is delivered by the broker
/// that takes over.
async fn lock_file_lost(name: &str, pull: impl FnOnce(&Path)) {
    let dir = data_dir(name);
    let queue = Destination::queue("ha.pulled");
    let mut a = BrokerProcess::file_pair_member(&dir, "a");
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = BrokerProcess::file_pair_member(&dir, "b");
    b.wait_for_log("standby: waiting for the lock", WAIT)
        .expect("a standby");

    let connection = Connection::connect(&a.url).await.unwrap();
    let mut confirmations = common::produce_numbered(connection, queue.clone(), 10_000_000);
    let mut confirmed = HashSet::new();
    while confirmed.len() < 10_000 {
        let (start, _) = confirmations.recv().await.expect("the master confirms");
        confirmed.extend(start..start + 100);
    }
    let pulled = std::time::SystemTime::now();
    pull(&dir.join("master.lock"));
    let demoted = a
        .wait_for_log("demoting:", Duration::from_secs(2))
        .expect("the master demotes within keep-alive + 1 s");
    let demoted_after = pulled.elapsed().unwrap_or_default();
    eprintln!("demoted after {demoted_after:?}: {demoted}");
    let mut late = 0;
    while let Some((start, at)) = confirmations.recv().await {
        confirmed.extend(start..start + 100);
        if at > pulled + Duration::from_secs(2) {
            late += 1;
        }
    }
    assert_eq!(late, 0, "confirmations came after the master demoted");

    b.wait_for_log("master: epoch 2", WAIT)
        .expect("the standby takes over");
    common::served(&b.url).await.close().await.unwrap();
    common::drain_exactly_once(&b.url, queue, &confirmed).await;
    a.wait_for_log("standby: waiting for the lock", WAIT)
        .expect("the demoted master waits as a standby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_lock_file_is_deleted_demotes() {
    lock_file_lost("ha-file-deleted", |lock| {
        std::fs::remove_file(lock).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_lock_file_is_replaced_demotes() {
    lock_file_lost("ha-file-replaced", |lock| {
        let other = lock.with_extension("other");
        std::fs::write(&other, "").unwrap();
        std::fs::rename(&other, lock).unwrap();
    })
    .await;
}

/// The repository's profiles.
fn config_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/config").to_string()
}

#[test]
fn the_master_and_slave_profiles_make_a_pair_and_stat_shows_the_role() {
    let dir = data_dir("ha-profiles");
    let config = config_dir();
    let mut a = BrokerProcess::start(&dir, &["--config-dir", &config, "--profile", "master"]);
    a.wait_for_log("master: epoch 1", WAIT).expect("a master");
    let mut b = BrokerProcess::start(&dir, &["--config-dir", &config, "--profile", "slave"]);
    let waiting = b
        .wait_for_log("standby: waiting for the lock", WAIT)
        .expect("a standby");
    assert!(waiting.contains("held by ha-a"), "{waiting}");

    let stat = |url: &str| {
        let out = std::process::Command::new(common::process::BIN)
            .args(["stat", "--url", url])
            .output()
            .expect("stat runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = stat(&a.url);
    assert!(ok, "{text}");
    assert!(
        text.contains("role: master, epoch 1, since ")
            && text.contains(&format!(
                "holding the shared-file lock on {}",
                dir.display()
            )),
        "{text}"
    );
    let (ok, text) = stat(&b.url);
    assert!(!ok);
    assert!(
        text.contains("broker ha-b is a standby: waiting for the lock")
            && text.contains("held by ha-a"),
        "{text}"
    );
}
