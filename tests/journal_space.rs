//! The journal and its disk: deleted segments give their space back at once, an
//! acknowledgement that cannot be written for want of space is written later (never lost),
//! and one old message cannot keep the journal from shrinking. Real broker processes, some
//! on a small tmpfs of their own ([`common::small_disk`]).

mod common;

use std::path::Path;
use std::time::Duration;

use actormq::client::{AckMode, Connection};
use actormq::{Destination, Message, Property};

use common::eventually;
use common::process::BrokerProcess;
use common::small_disk::SmallDisk;

const WAIT: Duration = Duration::from_secs(30);

async fn open(url: &str) -> (Connection, actormq::client::Session) {
    let connection = Connection::connect(url).await.expect("the client connects");
    let session = connection.session(AckMode::Auto).expect("a session");
    (connection, session)
}

async fn store_of(connection: &Connection) -> actormq::client::StoreStat {
    connection
        .stat_with_store()
        .await
        .expect("stat answers")
        .store
        .expect("a journal")
}

async fn depth_of(connection: &Connection, queue: &str) -> u64 {
    common::stat_of(connection, "queue", queue)
        .await
        .map(|s| s.depth)
        .unwrap_or(0)
}

/// Receives `count` messages (acknowledging them) and checks their `seq` are `from..`.
async fn consume(session: &actormq::client::Session, queue: &str, count: i64, from: i64) {
    let mut consumer = session
        .consumer(Destination::queue(queue))
        .await
        .expect("a consumer");
    for expected in from..from + count {
        let message = consumer
            .receive(WAIT)
            .await
            .expect("the consumer is open")
            .unwrap_or_else(|| panic!("message {expected} of {queue} arrives"));
        assert_eq!(common::seq_of(&message), expected);
    }
}

fn numbered(seq: i64, size: usize) -> Message {
    Message::new(vec![b'x'; size]).with_property("seq", Property::Int(seq))
}

/// Segment files the process still has open though they were deleted.
fn deleted_but_open(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|target| target.contains(".log") && target.ends_with("(deleted)"))
                .collect()
        })
        .unwrap_or_default()
}

fn journal_env(segment: &str, queue_memory: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ACTORMQ__STORE__SEGMENT_BYTES", segment.to_string()),
        (
            "ACTORMQ__LIMITS__MAX_QUEUE_MEMORY_BYTES",
            queue_memory.to_string(),
        ),
    ]
}

fn start(dir: &Path, env: &[(&'static str, String)]) -> BrokerProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    BrokerProcess::start_with_env(dir, &[], &env)
}

/// Paged messages are read back from segments that are then deleted: the broker keeps
/// none of them open, so their space is free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_segments_are_not_kept_open() {
    let dir = common::data_dir("deleted-open");
    let broker = start(&dir, &journal_env("1048576", "1048576"));
    let (connection, session) = open(&broker.url).await;
    let producer = session.producer(Destination::queue("paged"));
    for batch in 0..40 {
        let messages = (0..50)
            .map(|i| numbered(batch * 50 + i, 10 * 1024))
            .collect();
        producer.send_batch(messages).await.expect("stored");
    }
    assert!(store_of(&connection).await.paged > 0, "messages are paged");
    consume(&session, "paged", 2000, 0).await;
    eventually(WAIT, "the journal to shrink", || async {
        (store_of(&connection).await.segments <= 2).then_some(())
    })
    .await;
    let open = deleted_but_open(broker.pid());
    assert!(open.is_empty(), "deleted segments still open: {open:?}");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The disk fills; acknowledgements made meanwhile cannot be written. `stat` says so, the
/// journal writes them once there is room, and after a crash the acknowledged messages do
/// not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_on_a_full_disk_are_written_once_there_is_room() {
    let disk = SmallDisk::new(8 << 20);
    disk.ballast(2 << 20);
    let env = journal_env("524288", "67108864");
    let broker = start(&disk.path, &env);
    let (connection, session) = open(&broker.url).await;
    let producer = session.producer(Destination::queue("full"));
    let mut kept = 0;
    loop {
        let messages = (0..10).map(|i| numbered(kept + i, 4096)).collect();
        match producer.send_batch(messages).await {
            Ok(()) => kept += 10,
            Err(e) => {
                assert!(e.to_string().contains("could not be stored"), "{e}");
                break;
            }
        }
        assert!(kept < 10_000, "the disk never filled");
    }
    assert!(kept >= 200, "only {kept} fitted");
    // Not even an acknowledgement's few bytes fit now.
    disk.fill();
    consume(&session, "full", 200, 0).await;
    let waiting = eventually(
        WAIT,
        "stat to show the unwritten acknowledgements",
        || async {
            let unwritten = store_of(&connection).await.unwritten;
            (unwritten >= 200).then_some(unwritten)
        },
    )
    .await;
    assert_eq!(waiting, 200);
    assert_eq!(depth_of(&connection, "full").await, kept as u64 - 200);

    disk.free_ballast();
    eventually(WAIT, "the acknowledgements to be written", || async {
        (store_of(&connection).await.unwritten == 0).then_some(())
    })
    .await;
    connection.close().await.ok();
    broker.kill();

    let broker = start(&disk.path, &env);
    let (connection, session) = open(&broker.url).await;
    assert_eq!(depth_of(&connection, "full").await, kept as u64 - 200);
    consume(&session, "full", 10, 200).await;
}

/// Five messages to `stuck` that stay, then 600 through `flow` (about 6 MiB), consumed.
async fn stuck_then_flow(session: &actormq::client::Session) {
    let stuck = session.producer(Destination::queue("stuck"));
    for seq in 0..5 {
        stuck.send(numbered(seq, 10 * 1024)).await.expect("stored");
    }
    let flow = session.producer(Destination::queue("flow"));
    let drain = tokio::spawn({
        let session = session.clone();
        async move { consume(&session, "flow", 600, 0).await }
    });
    for seq in 0..600 {
        flow.send(numbered(seq, 10 * 1024)).await.expect("stored");
    }
    drain.await.expect("the flow is consumed");
}

/// One message that nobody consumes, then a lot of traffic that is consumed: the journal
/// compacts the old segments (the message is written forward), so it stays a few segments
/// long, and `stat` names the queue that holds the oldest one. After a crash the message is
/// there once; paged messages moved by compaction are read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_message_does_not_pin_the_journal() {
    let dir = common::data_dir("compaction");
    // Small queues: most of the stuck queue's messages are paged (on disk only).
    let env = journal_env("262144", "16384");
    let broker = start(&dir, &env);
    let (connection, session) = open(&broker.url).await;
    stuck_then_flow(&session).await;
    // About 6 MiB went through 256 KiB segments.
    eventually(
        WAIT,
        "the journal to compact, the stuck queue holding it",
        || async {
            let store = store_of(&connection).await;
            (store.segments <= 3 && store.oldest_holder == Some(("stuck".to_string(), 5)))
                .then_some(())
        },
    )
    .await;
    connection.close().await.ok();
    broker.kill();

    let broker = start(&dir, &env);
    let (connection, session) = open(&broker.url).await;
    assert_eq!(depth_of(&connection, "stuck").await, 5);
    consume(&session, "stuck", 5, 0).await;
    common::assert_nothing_more(
        &mut session
            .consumer(Destination::queue("stuck"))
            .await
            .expect("a consumer"),
    )
    .await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compaction while the broker runs: paged messages whose records were written forward are
/// read back from the copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_messages_moved_by_compaction_are_read_back() {
    let dir = common::data_dir("compaction-paged");
    let broker = start(&dir, &journal_env("262144", "16384"));
    let (connection, session) = open(&broker.url).await;
    stuck_then_flow(&session).await;
    eventually(WAIT, "the journal to compact", || async {
        (store_of(&connection).await.segments <= 3).then_some(())
    })
    .await;
    consume(&session, "stuck", 5, 0).await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
