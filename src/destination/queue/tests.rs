//! Concurrent store and dispatch, against a store whose writes finish only when the test
//! says so: what is delivered before it is durable, and when the producer is answered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{QueueActor, QueueSettings};
use crate::config::{Limits, RedeliveryPolicy};
use crate::destination::memory::MemoryBudget;
use crate::destination::{
    ConsumerControl, ConsumerId, Control, Delivery, DestinationError, Dispatch, Enqueue, Subscribe,
};
use crate::message::{Destination, Message};
use crate::stats::StoreStat;
use crate::store::record::{Record, SendMark};
use crate::store::{Location, SharedStore, Store, StoreError};

type Held = oneshot::Sender<Result<Vec<Location>, StoreError>>;

/// A durable store whose appends wait until [`GatedStore::finish`].
#[derive(Default)]
struct GatedStore {
    next_id: AtomicU64,
    held: Mutex<Vec<Held>>,
    finished: Arc<AtomicBool>,
}

impl GatedStore {
    fn held(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Finishes every held append, well or badly.
    fn finish(&self, ok: bool) {
        self.finished.store(true, Ordering::SeqCst);
        let held: Vec<Held> = self.held.lock().map(|mut h| h.drain(..).collect()).unwrap();
        for done in held {
            let _ = done.send(if ok {
                Ok(Vec::new())
            } else {
                Err(StoreError::Closed)
            });
        }
    }
}

impl Store for GatedStore {
    fn kind(&self) -> &'static str {
        "gated"
    }
    fn durable(&self) -> bool {
        true
    }
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }
    fn append(
        &self,
        _records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<Location>, StoreError>> {
        let (done, written) = oneshot::channel();
        self.held.lock().unwrap().push(done);
        Box::pin(async move { written.await.unwrap_or(Err(StoreError::Closed)) })
    }
    fn append_lazy(&self, _records: Vec<Record>) {}
    fn read(
        &self,
        _: Vec<(u64, Location)>,
    ) -> BoxFuture<'static, Result<Vec<Arc<Message>>, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn write_file(&self, _name: &str, _contents: Vec<u8>) {}
    fn usage(&self) -> Option<StoreStat> {
        None
    }
    fn close(&self) {}
}

/// A consumer's sink: passes each batch on with whether the store had finished by then.
struct Probe {
    finished: Arc<AtomicBool>,
    out: mpsc::UnboundedSender<(Vec<Delivery>, bool)>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Dispatch, _ctx: &mut Context<Self>) {
        if let Dispatch::Deliver(batch) = msg {
            let _ = self.out.send((batch, self.finished.load(Ordering::SeqCst)));
        }
    }
}

const CONSUMER: ConsumerId = ConsumerId(1);
const DEADLINE: Duration = Duration::from_secs(5);

/// A queue on a gated store with one consumer (prefetch 10) subscribed.
async fn queue(
    concurrent: bool,
) -> (
    Arc<GatedStore>,
    Addr<QueueActor>,
    mpsc::UnboundedReceiver<(Vec<Delivery>, bool)>,
) {
    let store = Arc::new(GatedStore::default());
    let limits = Limits::default();
    let settings = QueueSettings {
        max_per_dispatch: 100,
        prefetch_bytes: limits.prefetch_bytes,
        store: Some(store.clone() as SharedStore),
        policy: RedeliveryPolicy::default(),
        registry: None,
        memory: MemoryBudget::new(&limits),
        send_timeout: Duration::from_secs(5),
        fail_when_full: false,
        concurrent_store_and_dispatch: concurrent,
    };
    let queue = QueueActor::new(Destination::queue("orders"), settings, Vec::new()).start();
    let (out, deliveries) = mpsc::unbounded_channel();
    let probe = Probe {
        finished: store.finished.clone(),
        out,
    }
    .start();
    let subscribe = Subscribe {
        consumer: CONSUMER,
        prefetch: 10,
        sink: probe.recipient(),
    };
    queue.send(subscribe).await.unwrap().unwrap();
    (store, queue, deliveries)
}

/// Sends one persistent message; the answer comes on the returned task.
fn send(
    queue: &Addr<QueueActor>,
    mark: Option<SendMark>,
) -> tokio::task::JoinHandle<Result<(), DestinationError>> {
    let enqueue = Enqueue {
        messages: vec![Arc::new(Message::new("order 1").with_persistent(true))],
        stored: Vec::new(),
        mark,
    };
    let answer = queue.send(enqueue);
    actix_rt::spawn(async move {
        answer
            .await
            .unwrap_or(Err(DestinationError::Gone("queue".into())))
    })
}

async fn next(
    deliveries: &mut mpsc::UnboundedReceiver<(Vec<Delivery>, bool)>,
) -> (Vec<Delivery>, bool) {
    tokio::time::timeout(DEADLINE, deliveries.recv())
        .await
        .expect("no delivery within the deadline")
        .expect("the probe is gone")
}

async fn held_within_deadline(store: &GatedStore, count: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while store.held() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never reached the store"
        );
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn a_waiting_consumer_gets_a_persistent_message_while_it_is_written_and_its_ack_confirms_it()
{
    let (store, queue, mut deliveries) = queue(true).await;
    let answer = send(&queue, None);
    let (batch, written) = next(&mut deliveries).await;
    assert!(!written, "delivered only after the write finished");
    assert_eq!(batch.len(), 1);
    assert!(
        !answer.is_finished(),
        "confirmed before it was either written or acknowledged"
    );

    queue.do_send(Control::Consumer(
        CONSUMER,
        ConsumerControl::Settle(vec![batch[0].tag]),
    ));
    let confirmed = tokio::time::timeout(DEADLINE, answer)
        .await
        .expect("the acknowledgement did not confirm the send");
    assert!(matches!(confirmed, Ok(Ok(()))), "{confirmed:?}");
    assert_eq!(store.held(), 1, "the write should still be under way");
    store.finish(true);
}

#[actix_rt::test]
async fn a_send_delivered_while_written_is_confirmed_by_the_write_or_refused_with_it() {
    for ok in [true, false] {
        let (store, queue, mut deliveries) = queue(true).await;
        let answer = send(&queue, None);
        let (_, written) = next(&mut deliveries).await;
        assert!(!written);
        store.finish(ok);
        let answer = tokio::time::timeout(DEADLINE, answer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.is_ok(), ok, "{answer:?}");
    }
}

#[actix_rt::test]
async fn a_marked_send_or_a_queue_without_concurrent_dispatch_delivers_only_what_is_written() {
    let mark = SendMark {
        producer: "failover-producer".into(),
        seq: 1,
        confirmed_below: 1,
        at_ms: 0,
    };
    for (concurrent, mark) in [(true, Some(mark)), (false, None)] {
        let (store, queue, mut deliveries) = queue(concurrent).await;
        let answer = send(&queue, mark);
        held_within_deadline(&store, 1).await;
        store.finish(true);
        let (batch, written) = next(&mut deliveries).await;
        assert!(
            written,
            "delivered before it was written (concurrent: {concurrent})"
        );
        assert_eq!(batch.len(), 1);
        let answer = tokio::time::timeout(DEADLINE, answer)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_ok(), "{answer:?}");
    }
}
