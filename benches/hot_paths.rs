//! Criterion micro-benchmarks of the broker's hot paths, each alone:
//!
//! - `frame`: encoding and decoding one native `Send` frame of 100 × 256 B messages (the
//!   codec every message crosses twice), and encoding one `Deliver` of a 1 MiB body (the
//!   buffer sized from the body, so the body is copied once; and spliced, as the broker
//!   writes it: the body by reference); and reading that frame in 64 KiB pieces as the
//!   client does, into a growing buffer with the body copied out, or into one allocation
//!   reserved from the length with the body left there;
//! - `stomp`: MESSAGE frames written as the broker writes them, 100 × 256 B and one of
//!   1 MiB (its body copied, or by reference); 100 SENDs decoded as the broker reads them,
//!   and 100 MESSAGEs as a consumer reads them;
//! - `queue_dispatch`: a `QueueActor` taking 1,000 non-persistent messages in batches of
//!   100 and dispatching them to one consumer that settles each batch (no sockets);
//! - `journal_append`: appending batches of 100 persistent 256 B `Enqueue` records to the
//!   journal and awaiting the writer thread's confirmation (fsync off, so the figure is
//!   the journal's own cost, not the disk's).
//!
//! Run with `cargo bench --bench hot_paths`; end-to-end throughput is `actormq bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler};
use actormq::config::RedeliveryPolicy;
use actormq::destination::{
    ConsumerControl, ConsumerId, Control, Dispatch, Enqueue, MemoryBudget, QueueActor,
    QueueSettings, Subscribe,
};
use actormq::protocol::stomp::{self, Command, FrameWriter, StompFrame};
use actormq::protocol::{Frame, FrameCodec, encode_frame, encode_frame_spliced};
use actormq::store::record::Record;
use actormq::store::{FsyncMode, Journal, JournalSettings, SharedStore};
use actormq::{Destination, Limits, Message};
use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::codec::Decoder;

/// The binary's allocator (`main.rs`), so that an allocation here costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 100;
const BODY: usize = 256;
const MAX_FRAME: usize = 64 * 1024 * 1024;

fn messages(count: usize) -> Vec<Message> {
    (0..count)
        .map(|i| {
            let mut m = Message::new(vec![b'x'; BODY]).with_persistent(false);
            m.id = format!("bench:{i}");
            m
        })
        .collect()
}

/// One `Deliver` of one 1 MiB body.
fn deliver_1mib() -> Frame {
    Frame::Deliver {
        deliveries: vec![actormq::protocol::WireDelivery {
            consumer: 1,
            tag: 1,
            redelivered: false,
            delivery_count: 1,
            message: Arc::new(Message::new(vec![b'x'; 1 << 20])),
        }],
    }
}

/// `encode_<name>` and `decode_<name>`: `frame` encoded, and its bytes decoded.
fn encode_and_decode(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, frame: &Frame) {
    let encoded = encode_frame(frame, MAX_FRAME).expect("a frame within the limit");
    group.bench_function(format!("encode_{name}"), |b| {
        b.iter(|| encode_frame(frame, MAX_FRAME).expect("a frame within the limit"))
    });
    group.bench_function(format!("decode_{name}"), |b| {
        let mut codec = FrameCodec::new(MAX_FRAME);
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            codec
                .decode(&mut buf)
                .expect("a valid frame")
                .expect("a whole frame")
        })
    });
}

fn frame(c: &mut Criterion) {
    let send = Frame::Send {
        session: 1,
        destination: Destination::queue("bench"),
        receipt: None,
        messages: messages(BATCH),
        origin: None,
    };
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(BATCH as u64));
    encode_and_decode(&mut group, "send_100x256B", &send);
    let deliver = Frame::Deliver {
        deliveries: messages(BATCH)
            .into_iter()
            .enumerate()
            .map(|(i, mut message)| {
                // Delivered messages name where the broker received them.
                message.destination = Some(Destination::queue("bench"));
                actormq::protocol::WireDelivery {
                    consumer: 1,
                    tag: i as u64,
                    redelivered: false,
                    delivery_count: 1,
                    message: Arc::new(message),
                }
            })
            .collect(),
    };
    encode_and_decode(&mut group, "deliver_100x256B", &deliver);
    group.finish();

    let large = deliver_1mib();
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("encode_deliver_1MiB", |b| {
        b.iter(|| encode_frame(&large, MAX_FRAME).expect("a frame within the limit"))
    });
    group.bench_function("encode_deliver_1MiB_spliced", |b| {
        b.iter(|| encode_frame_spliced(&large, MAX_FRAME).expect("a frame within the limit"))
    });
    group.finish();
}

/// 100 MESSAGE frames of `body` as the broker writes them (`FrameWriter`, no `StompFrame`
/// in between); their ids have a `:` (escaped), as a natively sent message's do.
fn write_messages(body: &[u8]) -> BytesMut {
    let mut dst = BytesMut::new();
    for i in 0..BATCH {
        let mut frame = FrameWriter::start(&mut dst, Command::Message, 512 + BODY);
        frame
            .protocol_header("subscription", "sub-0")
            .protocol_header("message-id", "ID:bench-1:1:1")
            .protocol_header("destination", "/queue/bench")
            .protocol_header_u64("priority", 4)
            .protocol_header("persistent", "false")
            .protocol_header_u64("timestamp", 1_700_000_000_000 + i as u64)
            .protocol_header_u64("content-length", BODY as u64);
        frame.body(body);
    }
    dst
}

/// Registers `name`: decoding the STOMP frames in `input`, all of them, each iteration.
fn decode_stomp(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, input: BytesMut) {
    group.bench_function(name, |b| {
        let mut codec = stomp::StompCodec::new(stomp::StompLimits {
            max_frame_bytes: MAX_FRAME,
            max_headers: 1000,
            max_header_bytes: 1 << 20,
            max_body_bytes: MAX_FRAME,
        });
        b.iter(|| {
            let mut src = input.clone();
            let mut frames = Vec::with_capacity(BATCH);
            while let Some(frame) = codec.decode(&mut src).expect("valid frames") {
                frames.push(frame);
            }
            frames
        })
    });
}

/// A batch of 100 STOMP MESSAGE frames of 256 B, written as the broker writes them
/// (`FrameWriter`, no `StompFrame` in between), and the same built as `StompFrame`s.
fn stomp_message(c: &mut Criterion) {
    let body = vec![b'x'; BODY];
    let mut group = c.benchmark_group("stomp");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("write_message_100x256B", |b| {
        b.iter(|| write_messages(&body))
    });
    group.bench_function("encode_message_frames_100x256B", |b| {
        b.iter(|| {
            let mut dst = BytesMut::new();
            for i in 0..BATCH {
                let frame = StompFrame::new(Command::Message)
                    .header("subscription", "sub-0")
                    .header("message-id", "ID:bench-1:1:1")
                    .header("destination", "/queue/bench")
                    .header("priority", 4.to_string())
                    .header("persistent", "false")
                    .header("timestamp", (1_700_000_000_000u64 + i as u64).to_string())
                    .header("content-length", BODY.to_string())
                    .body(body.clone());
                stomp::encode_into(&frame, &mut dst);
            }
            dst
        })
    });
    // SEND frames as a STOMP producer writes them (the bench's: a destination and a
    // length), decoded as the broker reads them.
    let mut sends = BytesMut::new();
    for _ in 0..BATCH {
        let frame = StompFrame::new(Command::Send)
            .header("destination", "/queue/bench")
            .header("content-length", BODY.to_string())
            .body(body.clone());
        stomp::encode_into(&frame, &mut sends);
    }
    decode_stomp(&mut group, "decode_send_100x256B", sends);
    // MESSAGE frames as the broker writes them, decoded as a STOMP consumer reads them.
    decode_stomp(&mut group, "decode_message_100x256B", write_messages(&body));
    group.finish();

    let large = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let mut group = c.benchmark_group("stomp");
    group.throughput(Throughput::Bytes(1 << 20));
    let headers = |frame: &mut FrameWriter<'_>| {
        frame
            .header("subscription", "sub-0")
            .header("message-id", "ID:bench-1:1:1")
            .header_fmt("content-length", format_args!("{}", 1 << 20));
    };
    group.bench_function("write_message_1MiB_copied", |b| {
        b.iter(|| {
            let mut dst = BytesMut::new();
            let mut frame = FrameWriter::start(&mut dst, Command::Message, 512 + large.len());
            headers(&mut frame);
            frame.body(&large);
            dst
        })
    });
    group.bench_function("write_message_1MiB_by_reference", |b| {
        b.iter(|| {
            let mut dst = BytesMut::new();
            let mut parts = Vec::new();
            let mut frame = FrameWriter::start(&mut dst, Command::Message, 512);
            headers(&mut frame);
            frame.body_by_reference(&large, &mut parts);
            (dst, parts)
        })
    });
    group.finish();
}

/// A 1 MiB `Deliver` frame arriving in 64 KiB reads, decoded as the client decodes it:
/// into a buffer that grows as bytes come and a body copied out (as it was), and into
/// one allocation reserved once the length is read with the body left there.
fn frame_read(c: &mut Criterion) {
    let large = deliver_1mib();
    let encoded = encode_frame(&large, MAX_FRAME).expect("a frame within the limit");
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(1 << 20));
    let read = |codec: &mut FrameCodec| {
        let mut buf = BytesMut::new();
        for chunk in encoded.chunks(64 << 10) {
            if buf.capacity() - buf.len() < chunk.len() {
                // Room for the next piece, as a reader makes before each read.
                buf.reserve(chunk.len());
            }
            buf.extend_from_slice(chunk);
            if let Some(frame) = codec.decode(&mut buf).expect("a valid frame") {
                return frame;
            }
        }
        panic!("the frame did not decode");
    };
    group.bench_function("read_deliver_1MiB_growing_copied", |b| {
        let mut codec = FrameCodec::new(MAX_FRAME);
        b.iter(|| read(&mut codec))
    });
    group.bench_function("read_deliver_1MiB_reserved_shared", |b| {
        let mut codec = FrameCodec::new(MAX_FRAME)
            .reserving_whole_frames()
            .sharing_bodies();
        b.iter(|| read(&mut codec))
    });
    group.finish();
}

/// A consumer that settles every batch at once and reports when it has seen `expect`.
struct SettlingConsumer {
    queue: Option<Addr<QueueActor>>,
    seen: usize,
    expect: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Actor for SettlingConsumer {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for SettlingConsumer {
    type Result = ();

    fn handle(&mut self, dispatch: Dispatch, _: &mut Context<Self>) {
        let Dispatch::Deliver(deliveries) = dispatch else {
            return;
        };
        self.seen += deliveries.len();
        if let Some(queue) = &self.queue {
            queue.do_send(Control::Consumer(
                ConsumerId(1),
                ConsumerControl::Settle(deliveries.iter().map(|d| d.tag).collect()),
            ));
        }
        if self.seen >= self.expect
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

/// A journal without fsync in a fresh temporary folder (removed by the caller).
fn scratch_journal(name: &str) -> (Journal, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("actormq-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (journal, _) = Journal::open(JournalSettings {
        dir: dir.clone(),
        fsync: FsyncMode::Never,
        segment_bytes: 64 * 1024 * 1024,
        preallocate: true,
    })
    .expect("a journal in the temporary folder");
    (journal, dir)
}

fn queue_dispatch(c: &mut Criterion) {
    const PER_ROUND: usize = 1_000;
    let system = actix::System::new();
    let limits = Limits::default();
    let (journal, dir) = scratch_journal("queue");
    let journal: SharedStore = Arc::new(journal);
    // In memory; persistent on a journal (no fsync) delivered once written; the same
    // delivered while written (concurrent store and dispatch).
    let cases = [
        ("enqueue_dispatch_settle_1000", None, false),
        ("stored_then_dispatched_1000", Some(journal.clone()), false),
        ("stored_while_dispatched_1000", Some(journal), true),
    ];
    let mut group = c.benchmark_group("queue_dispatch");
    group.throughput(Throughput::Elements(PER_ROUND as u64));
    for (name, store, concurrent) in cases {
        let persistent = store.is_some();
        let batches: Vec<Vec<Arc<Message>>> = (0..PER_ROUND / BATCH)
            .map(|_| {
                let batch = messages(BATCH).into_iter();
                batch
                    .map(|m| Arc::new(m.with_persistent(persistent)))
                    .collect()
            })
            .collect();
        let queue = system.block_on(async {
            let queue = QueueActor::new(
                Destination::queue("bench"),
                QueueSettings {
                    max_per_dispatch: limits.max_deliveries_per_frame,
                    prefetch_bytes: limits.prefetch_bytes,
                    store,
                    policy: RedeliveryPolicy::default(),
                    registry: None,
                    memory: MemoryBudget::new(&limits),
                    send_timeout: Duration::from_secs(10),
                    fail_when_full: false,
                    concurrent_store_and_dispatch: concurrent,
                },
                Vec::new(),
            )
            .start();
            // Let it start here: an actor first polled only when the runtime is gone
            // (its case filtered out) panics as its `started` sets a timer.
            tokio::task::yield_now().await;
            queue
        });
        group.bench_function(name, |b| {
            b.iter_custom(|rounds| {
                system.block_on(async {
                    let start = Instant::now();
                    for _ in 0..rounds {
                        let (done, finished) = tokio::sync::oneshot::channel();
                        let consumer = SettlingConsumer {
                            queue: Some(queue.clone()),
                            seen: 0,
                            expect: PER_ROUND,
                            done: Some(done),
                        }
                        .start();
                        queue
                            .send(Subscribe {
                                consumer: ConsumerId(1),
                                prefetch: 1_000,
                                sink: consumer.recipient(),
                            })
                            .await
                            .expect("the queue is running")
                            .expect("subscribed");
                        for batch in &batches {
                            queue
                                .send(Enqueue {
                                    messages: batch.clone(),
                                    stored: Vec::new(),
                                    mark: None,
                                })
                                .await
                                .expect("the queue is running")
                                .expect("accepted");
                        }
                        finished.await.expect("every message dispatched");
                        queue.do_send(Control::unsubscribe(ConsumerId(1)));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn journal_append(c: &mut Criterion) {
    let (journal, dir) = scratch_journal("journal");
    let batch: Vec<Arc<Message>> = messages(BATCH)
        .into_iter()
        .map(|m| Arc::new(m.with_persistent(true)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");

    let mut group = c.benchmark_group("journal_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("enqueue_100x256B_no_fsync", |b| {
        b.iter(|| {
            let records = batch
                .iter()
                .map(|message| Record::Enqueue {
                    queue: "bench".to_string(),
                    id: journal.next_id(),
                    message: message.clone(),
                })
                .collect();
            runtime.block_on(journal.append(records)).expect("appended")
        })
    });
    group.finish();
    journal.close();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    frame,
    frame_read,
    stomp_message,
    queue_dispatch,
    journal_append
);
criterion_main!(benches);
