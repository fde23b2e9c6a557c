//! Golden fixtures: journals written by earlier versions of actormq, and native frames
//! pinned as bytes. The current code must recover exactly what each journal holds and
//! encode and decode each frame byte for byte, so a change that cannot read old data or
//! talk to old clients fails here instead of losing messages on an upgrade.
//!
//! - `tests/fixtures/journal-v0`: written by the code of 2026-12-02 before the journal had
//!   a format of its own (record format version 0).
//! - `tests/fixtures/journal-v1`: written in record format version 1 (regenerate with
//!   `cargo test --test golden -- --ignored write_the_v1_fixture`, only when adding a
//!   version: the old fixture must stay as it was).
//! - `tests/fixtures/journal-v1-epoch`: record format version 1 in segments that start
//!   with a segment header (epoch 1), as written since master/slave landed
//!   (`write_the_epoch_fixture`).
//! - `tests/fixtures/journal-v2`: record format version 2, whose transaction also holds a
//!   producer's mark (`Record::Sent`, for duplicate detection) (`write_the_v2_fixture`).
//!
//! Each holds: three messages on `orders` (every field set on the first), a committed
//! transaction putting two on `billing` and removing the second `orders` message, one
//! message on a durable subscription's queue, the list of durable subscriptions, and a
//! torn record at the end of the last segment.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actormq::protocol::{Frame, FrameCodec, PROTOCOL_VERSION, WireDelivery, encode_frame};
use actormq::store::record::{Record, SendMark};
use actormq::store::{
    DURABLES_FILE, FsyncMode, Journal, JournalSettings, Recovered, StoreError, Unfenced,
};
use actormq::{AckMode, Destination, Message, Property};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

const DURABLE: &str = "durable:client-1/daily@news";

/// The messages every fixture holds, by queue and journal id.
fn expected() -> Vec<(&'static str, u64, Message)> {
    let mut first = Message::new(&b"first\0order"[..])
        .with_header("region", "eu:west")
        .with_property("count", Property::Int(-3))
        .with_property("ratio", Property::Float(0.25))
        .with_property("flag", Property::Bool(true))
        .with_property("note", Property::Text("n".into()))
        .with_property("raw", Property::Bytes(Bytes::from_static(b"\x00\xff")))
        .with_correlation_id("corr-1")
        .with_reply_to(Destination::queue("answers"))
        .with_priority(7);
    first.id = "client-1:1:1".into();
    first.destination = Some(Destination::queue("orders"));
    first.timestamp = 1_796_000_000_000;
    first.expiration = 1_896_000_000_000;
    let plain = |id: &str, queue: &str, body: &str| {
        let mut m = Message::new(body.to_string());
        m.id = id.into();
        m.destination = Some(Destination::queue(queue));
        m.timestamp = 1_796_000_000_001;
        m
    };
    let mut durable = plain("client-1:1:6", "x", "news item");
    durable.destination = Some(Destination::topic("news"));
    vec![
        ("orders", 1, first),
        ("orders", 2, plain("client-1:1:2", "orders", "second")),
        ("orders", 3, plain("client-1:1:3", "orders", "third")),
        ("billing", 4, plain("client-1:1:4", "billing", "invoice")),
        ("billing", 5, plain("client-1:1:5", "billing", "ledger")),
        (&DURABLE[8..], 6, durable),
    ]
}

/// What a fixture should hold after recovery: every expected message but `orders` #2.
fn survivors() -> Vec<(&'static str, u64, Message)> {
    expected()
        .into_iter()
        .filter(|(queue, id, _)| !(*queue == "orders" && *id == 2))
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a copy");
    for entry in std::fs::read_dir(from).expect("the fixture") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("a copied file");
    }
}

/// The producer's mark the version-2 fixture's transaction holds.
fn mark() -> SendMark {
    SendMark {
        producer: "0123456789abcdef:1".into(),
        seq: 4,
        confirmed_below: 3,
        // Recent enough not to be forgotten as idle for years.
        at_ms: 4_000_000_000_000,
    }
}

/// Opens a copy of the fixture `name` and checks it holds exactly [`survivors`] (and the
/// producers' marks `marks`).
async fn recovers_exactly(name: &str, marks: Vec<SendMark>) {
    let dir = common::data_dir(name).join("journal");
    copy_dir(&fixture(name).join("journal"), &dir);
    let (journal, recovered) = Journal::open(JournalSettings {
        dir: dir.clone(),
        fsync: FsyncMode::Batch,
        segment_bytes: 64 << 20,
        preallocate: true,
    })
    .expect("the journal opens");
    let Recovered {
        queues,
        skipped,
        durables,
        sends,
    } = recovered;
    assert_eq!(durables, vec![DURABLE.to_string()]);
    assert_eq!(sends, marks);
    assert_eq!(skipped.len(), 1, "the torn tail, and only it: {skipped:?}");
    let mut found = Vec::new();
    for (queue, messages) in &queues {
        let wanted = messages.iter().map(|m| (m.id, m.at)).collect();
        let read = journal.read(wanted).await.expect("the messages read back");
        for (m, message) in messages.iter().zip(read) {
            found.push((queue.clone(), m.id, message.priority == m.priority, message));
        }
    }
    let want: Vec<(String, u64, bool, Arc<Message>)> = survivors()
        .into_iter()
        .map(|(q, id, m)| (q.to_string(), id, true, Arc::new(m)))
        .collect();
    found.sort_by_key(|(q, id, _, _)| (q.clone(), *id));
    let mut want = want;
    want.sort_by_key(|(q, id, _, _)| (q.clone(), *id));
    assert_eq!(found, want);
    journal.close();
}

#[tokio::test]
async fn a_version_0_journal_recovers_exactly() {
    recovers_exactly("journal-v0", Vec::new()).await;
}

#[tokio::test]
async fn a_version_1_journal_recovers_exactly() {
    recovers_exactly("journal-v1", Vec::new()).await;
}

#[tokio::test]
async fn a_version_2_journal_recovers_exactly_with_its_producer_marks() {
    recovers_exactly("journal-v2", vec![mark()]).await;
}

#[tokio::test]
async fn a_journal_with_segment_headers_recovers_exactly_and_knows_its_epoch() {
    recovers_exactly("journal-v1-epoch", Vec::new()).await;
    let dir = fixture("journal-v1-epoch").join("journal");
    assert_eq!(Journal::newest_epoch(&dir).unwrap(), 1);
    // A broker of an older epoch may not open it: another has taken over since.
    let copy = common::data_dir("epoch-fenced").join("journal");
    copy_dir(&dir, &copy);
    let refused = Journal::open_fenced(
        JournalSettings {
            dir: copy,
            fsync: FsyncMode::Batch,
            segment_bytes: 64 << 20,
            preallocate: true,
        },
        Arc::new(Unfenced(0)),
    );
    match refused {
        Err(StoreError::Fenced(reason)) => assert!(reason.contains("epoch 1"), "{reason}"),
        other => panic!(
            "an older epoch must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// Writes the segment-header fixture with the current code (run by hand).
#[tokio::test]
#[ignore = "writes tests/fixtures/journal-v1-epoch; run only when the segment header changes"]
async fn write_the_epoch_fixture() {
    let dir = fixture("journal-v1-epoch").join("journal");
    let _ = std::fs::remove_dir_all(&dir);
    write_fixture(&dir, None).await;
}

/// Writes the version-2 fixture with the current code (run by hand, see the module doc).
#[tokio::test]
#[ignore = "writes tests/fixtures/journal-v2; run only when adding a format version"]
async fn write_the_v2_fixture() {
    let dir = fixture("journal-v2").join("journal");
    let _ = std::fs::remove_dir_all(&dir);
    write_fixture(&dir, Some(mark())).await;
}

/// Writes the version-1 fixture with the current code (run by hand, see the module doc).
#[tokio::test]
#[ignore = "writes tests/fixtures/journal-v1; run only when adding a format version"]
async fn write_the_v1_fixture() {
    let dir = fixture("journal-v1").join("journal");
    let _ = std::fs::remove_dir_all(&dir);
    write_fixture(&dir, None).await;
}

/// The fixture's contents, through the journal's own API; `mark` goes in the transaction.
async fn write_fixture(dir: &Path, mark: Option<SendMark>) {
    let (journal, _) = Journal::open(JournalSettings {
        dir: dir.to_path_buf(),
        fsync: FsyncMode::Batch,
        segment_bytes: 64 << 20,
        // The fixtures are small files of records, with no spare beside them.
        preallocate: false,
    })
    .expect("a new journal");
    let records: Vec<Record> = expected()
        .into_iter()
        .map(|(queue, id, message)| Record::Enqueue {
            queue: queue.to_string(),
            id,
            message: Arc::new(message),
        })
        .collect();
    let mut records = records.into_iter();
    let orders: Vec<Record> = records.by_ref().take(3).collect();
    let billing: Vec<Record> = records.by_ref().take(2).collect();
    journal.append(orders).await.unwrap();
    let mut transaction = billing;
    transaction.push(Record::Remove {
        queue: "orders".into(),
        id: 2,
    });
    transaction.extend(mark.map(Record::Sent));
    journal
        .append(vec![Record::Transaction {
            records: transaction,
        }])
        .await
        .unwrap();
    journal.append(records.collect()).await.unwrap();
    journal.write_file(DURABLES_FILE, format!("{DURABLE}\n").into_bytes());
    journal.close();
    // A torn record: the magic and a length, and less than that length.
    let mut last: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    last.sort();
    let last = last.pop().expect("a segment");
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(b"AMQJ\x00\x00\x01\x00torn");
    std::fs::write(&last, bytes).unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
    // Segments the journal opened and left empty are not part of the fixture.
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Native frames and their bytes, pinned: encode gives exactly these bytes, and these bytes
/// decode to exactly these frames. A change of a frame's fields is a new protocol version.
#[test]
fn native_frames_are_byte_for_byte_stable() {
    let mut message = Message::new(&b"hi"[..])
        .with_header("h", "v")
        .with_property("n", Property::Int(1))
        .with_priority(5);
    message.id = "c:1:1".into();
    message.timestamp = 1_796_000_000_000;
    let frames = [
        (
            Frame::Hello {
                version: PROTOCOL_VERSION,
                client_id: "c".into(),
            },
            "0000000b 81 a5 48656c6c6f 92 05 a1 63",
        ),
        (
            Frame::OpenSession {
                session: 1,
                ack_mode: AckMode::Individual,
            },
            "0000001a 81 ab 4f70656e53657373696f6e 92 01 aa 496e646976696475616c",
        ),
        (
            Frame::Send {
                session: 1,
                destination: Destination::queue("q"),
                receipt: Some(7),
                messages: vec![message.clone()],
                origin: None,
            },
            "0000003b 81 a4 53656e64 95 01 a7 71756575653a71 07 91 9b a5 633a313a31 c0 c4 02 6869 81 a1 68 a1 76 81 a1 6e 81 a3 496e74 01 cf 000001a229f12800 c0 c0 05 00 c3 c0",
        ),
        (
            Frame::Deliver {
                deliveries: vec![WireDelivery {
                    consumer: 2,
                    tag: 3,
                    redelivered: true,
                    delivery_count: 2,
                    message: Arc::new(message),
                }],
            },
            "00000038 81 a7 44656c69766572 91 91 95 02 03 c3 02 9b a5 633a313a31 c0 c4 02 6869 81 a1 68 a1 76 81 a1 6e 81 a3 496e74 01 cf 000001a229f12800 c0 c0 05 00 c3",
        ),
        (
            Frame::Ack {
                session: 1,
                acks: vec![(2, 3)],
                receipt: None,
            },
            "0000000c 81 a3 41636b 93 01 91 92 02 03 c0",
        ),
    ];
    for (frame, pinned) in frames {
        let bytes = encode_frame(&frame, 1 << 20).expect("encodes");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let pinned: String = pinned.split_whitespace().collect();
        assert_eq!(hex, pinned, "{frame:?}");
        let mut src = BytesMut::from(&bytes[..]);
        let decoded = FrameCodec::new(1 << 20).decode(&mut src).expect("decodes");
        assert_eq!(decoded, Some(frame));
    }
}
