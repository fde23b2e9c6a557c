//! [`PostgresStore`]: persistent queue messages in PostgreSQL, so that a standby on another
//! machine can take over without a shared file system (`ha.mode = "database"`).
//!
//! One thread of its own runs a small tokio runtime with two connections: the writer and
//! the reader (paging in). The writer does what the journal's does, in SQL:
//!
//! - **Group commit.** Every append waiting when it wakes goes into one transaction: the
//!   enqueued messages as one `INSERT … SELECT FROM UNNEST(…)`, the removals as one
//!   `DELETE … WHERE id = ANY(…)`. Each append is answered once the transaction commits.
//! - **The fence, in the database.** Each transaction first takes
//!   `SELECT … FROM actormq_lease WHERE epoch = $mine AND expires_at > now() FOR SHARE`:
//!   if another broker has taken the lease (or it lapsed), nothing is written; while this
//!   transaction runs, the lease row cannot change hands (the taker's `UPDATE` waits for
//!   the commit), so whatever a new master recovers includes it. The broker-side
//!   [`Fence`] (the lease's local deadline) is asked before and after, so a write that
//!   commits after the deadline is not confirmed: its producer gets an error and may send
//!   again (at least once, never lost).
//! - **A write that does not finish** within `ha.lease_ms` is abandoned and its appends get
//!   an error; the connection is opened again for the next group. Removals that failed
//!   are kept and written with the next group, as the journal does.
//! - **A frozen master** (SIGSTOP, a long pause) could sit inside a transaction holding the
//!   lease row `FOR SHARE`, and no standby could take the lease. The writer's session sets
//!   `idle_in_transaction_session_timeout` to half the lease, so the database ends such a
//!   transaction (and its lock) by itself.
//!
//! Messages are stored as journal records (`store::format`, versioned), so the database
//! holds the same format the journal does. Ids are unique across masters: a master of
//! epoch E numbers from `E << 40` (or past the highest id stored).

pub mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::StoreError;
use super::fence::Fence;
use super::format;
use super::producers::ProducerWindows;
use super::record::{Record, SendMark};
use super::segments::{DURABLES_FILE, Location, Recovered, RecoveredMessage};
use crate::constants::{PRODUCER_IDLE, PRODUCER_SWEEP_EVERY};
use crate::message::Message;
use crate::stats::StoreStat;
pub use schema::PgError;

/// The PostgreSQL store's settings.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    pub url: String,
    /// A write that takes longer than this is abandoned (the lease's length).
    pub write_timeout: Duration,
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

type Done = Option<oneshot::Sender<Result<Vec<Location>, StoreError>>>;

enum Op {
    Append { records: Vec<Record>, done: Done },
    WriteFile { name: String, contents: Vec<u8> },
    Close { done: std_mpsc::Sender<()> },
}

struct Read {
    ids: Vec<u64>,
    done: oneshot::Sender<Result<Vec<Arc<Message>>, StoreError>>,
}

/// A handle on the PostgreSQL store; its thread ends when the store is closed.
pub struct PostgresStore {
    ops: mpsc::UnboundedSender<Op>,
    reads: mpsc::UnboundedSender<Read>,
    next_id: AtomicU64,
}

/// Where a message of this store is: only its id counts.
const NOWHERE: Location = Location {
    segment: 0,
    offset: 0,
};

/// Most appends in one transaction.
const MAX_GROUP: usize = 4096;

impl PostgresStore {
    /// Connects, creates or checks the schema, recovers every queue's messages, and starts
    /// the store's thread, which writes only while `fence` allows.
    pub fn open(
        settings: PostgresSettings,
        fence: Arc<dyn Fence>,
    ) -> Result<(PostgresStore, Recovered), StoreError> {
        let (ops, op_rx) = mpsc::unbounded_channel();
        let (reads, read_rx) = mpsc::unbounded_channel();
        let (opened_tx, opened) = std_mpsc::channel();
        let epoch = fence.epoch();
        std::thread::Builder::new()
            .name("actormq-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = opened_tx.send(Err(StoreError::Database(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let started = async {
                        let mut writer = writer_session(&settings).await?;
                        schema::init(&mut writer, &settings.url).await?;
                        let reader = schema::connect(&settings.url).await?;
                        let recovered = recover(&writer).await?;
                        Ok::<_, PgError>((writer, reader, recovered))
                    };
                    let (writer, reader, recovered) = match started.await {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = opened_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = opened_tx.send(Ok(recovered));
                    tokio::spawn(serve_reads(reader, read_rx));
                    Writer {
                        client: Some(writer),
                        settings,
                        fence,
                        retry: Vec::new(),
                        swept_at: std::time::Instant::now(),
                    }
                    .run(op_rx)
                    .await;
                });
            })
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let (recovered, max_id) = opened.recv().map_err(|_| StoreError::Closed)??;
        Ok((
            PostgresStore {
                ops,
                reads,
                next_id: AtomicU64::new((max_id + 1).max(epoch << 40)),
            },
            recovered,
        ))
    }
}

/// The writer's connection: a transaction left idle (its broker frozen) is ended by the
/// database after half the lease, releasing the lease row.
async fn writer_session(settings: &PostgresSettings) -> Result<Client, PgError> {
    let client = schema::connect(&settings.url).await?;
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            (settings.write_timeout / 2).as_millis().max(1)
        ))
        .await?;
    Ok(client)
}

/// Every stored message's id, queue and priority (not its body: queues page it in), the
/// durable subscriptions, and the highest id.
async fn recover(client: &Client) -> Result<(Recovered, u64), PgError> {
    let mut recovered = Recovered::default();
    let mut max_id = 0u64;
    let rows = client
        .query(
            "SELECT id, queue, priority, deliveries FROM actormq_messages ORDER BY id",
            &[],
        )
        .await?;
    let mut queues: BTreeMap<String, Vec<RecoveredMessage>> = BTreeMap::new();
    for row in &rows {
        let id = row.get::<_, i64>(0) as u64;
        max_id = max_id.max(id);
        queues
            .entry(row.get(1))
            .or_default()
            .push(RecoveredMessage {
                id,
                at: NOWHERE,
                priority: row.get::<_, i16>(2) as u8,
                deliveries: row.get::<_, i32>(3) as u32,
            });
    }
    recovered.queues = queues;
    let mut windows = ProducerWindows::default();
    for row in client
        .query("SELECT producer, seq, at_ms FROM actormq_sends", &[])
        .await?
    {
        windows.note(&SendMark {
            producer: row.get(0),
            seq: row.get::<_, i64>(1) as u64,
            confirmed_below: 0,
            at_ms: row.get::<_, i64>(2) as u64,
        });
    }
    windows.forget_idle(crate::message::now_millis());
    recovered.sends = windows.marks();
    if let Some(row) = client
        .query_opt(
            "SELECT contents FROM actormq_files WHERE name = $1",
            &[&DURABLES_FILE],
        )
        .await?
    {
        let contents: Vec<u8> = row.get(0);
        recovered.durables = String::from_utf8_lossy(&contents)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
    }
    tracing::info!(messages = rows.len(), "PostgreSQL store recovered");
    Ok((recovered, max_id))
}

/// Reads messages back by id, in the order asked.
async fn serve_reads(client: Client, mut reads: mpsc::UnboundedReceiver<Read>) {
    while let Some(read) = reads.recv().await {
        let ids: Vec<i64> = read.ids.iter().map(|&id| id as i64).collect();
        let result = async {
            let rows = client
                .query(
                    "SELECT id, record FROM actormq_messages WHERE id = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(PgError::from)?;
            let mut found = std::collections::HashMap::with_capacity(rows.len());
            for row in rows {
                let id = row.get::<_, i64>(0) as u64;
                let bytes: &[u8] = row.get(1);
                match format::decode_payload(bytes) {
                    Ok(Record::Enqueue { message, .. }) => {
                        found.insert(id, message);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(StoreError::Database(format!("message {id}: {e}"))),
                }
            }
            read.ids
                .iter()
                .map(|id| {
                    found
                        .remove(id)
                        .ok_or_else(|| StoreError::Database(format!("message {id} is not stored")))
                })
                .collect()
        }
        .await;
        let _ = read.done.send(result);
    }
}

struct Writer {
    /// `None` after a write that did not finish: connect again before the next.
    client: Option<Client>,
    settings: PostgresSettings,
    fence: Arc<dyn Fence>,
    /// Removals a failed write left over, oldest first.
    retry: Vec<Record>,
    /// When the rows of idle producers were last deleted.
    swept_at: std::time::Instant,
}

/// What one transaction writes.
#[derive(Default)]
struct Group {
    ids: Vec<i64>,
    queues: Vec<String>,
    priorities: Vec<i16>,
    records: Vec<Vec<u8>>,
    removes: Vec<i64>,
    files: Vec<(String, Vec<u8>)>,
    /// Producers' stored sends: producer, seq, when.
    sent_by: Vec<String>,
    sent_seqs: Vec<i64>,
    sent_at: Vec<i64>,
    /// Per producer, the lowest seq it may still send again (rows below it go).
    confirmed: BTreeMap<String, i64>,
    /// Forget producers idle since before this (ms since the Unix epoch), now and then.
    forget_before: Option<i64>,
    /// Messages' delivery counts: id, count.
    delivered_ids: Vec<i64>,
    delivered_counts: Vec<i32>,
}

impl Group {
    fn add(&mut self, record: &Record) -> Result<(), StoreError> {
        match record {
            Record::Enqueue { queue, id, message } => {
                let payload = format::encode_payload(record)
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                self.ids.push(*id as i64);
                self.queues.push(queue.clone());
                self.priorities.push(i16::from(message.priority));
                self.records.push(payload);
            }
            Record::Remove { id, .. } => self.removes.push(*id as i64),
            Record::Transaction { records } => {
                for record in records {
                    self.add(record)?;
                }
            }
            Record::Delivered { counts, .. } => {
                for (id, count) in counts {
                    self.delivered_ids.push(*id as i64);
                    self.delivered_counts.push(*count as i32);
                }
            }
            Record::Sent(mark) => {
                self.sent_by.push(mark.producer.clone());
                self.sent_seqs.push(mark.seq as i64);
                self.sent_at.push(mark.at_ms as i64);
                let below = self.confirmed.entry(mark.producer.clone()).or_default();
                *below = (*below).max(mark.confirmed_below as i64);
            }
        }
        Ok(())
    }
}

impl Writer {
    async fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>) {
        while let Some(first) = ops.recv().await {
            let mut appends: Vec<(Vec<Record>, Done)> = Vec::new();
            if !self.retry.is_empty() {
                appends.push((std::mem::take(&mut self.retry), None));
            }
            let mut files = Vec::new();
            let mut closing = None;
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Append { records, done } => appends.push((records, done)),
                    Op::WriteFile { name, contents } => files.push((name, contents)),
                    Op::Close { done } => closing = Some(done),
                }
                if appends.len() < MAX_GROUP && closing.is_none() {
                    next = ops.try_recv().ok();
                }
            }
            if !appends.is_empty() || !files.is_empty() {
                self.commit(appends, files).await;
            }
            if let Some(done) = closing {
                let _ = done.send(());
                return;
            }
        }
    }

    /// Writes one group in one transaction and answers each append.
    async fn commit(&mut self, appends: Vec<(Vec<Record>, Done)>, files: Vec<(String, Vec<u8>)>) {
        let mut group = Group {
            files,
            ..Group::default()
        };
        if self.swept_at.elapsed() >= PRODUCER_SWEEP_EVERY {
            self.swept_at = std::time::Instant::now();
            let cutoff =
                crate::message::now_millis().saturating_sub(PRODUCER_IDLE.as_millis() as u64);
            group.forget_before = Some(cutoff as i64);
        }
        let mut encoded = Ok(());
        for (records, _) in &appends {
            for record in records {
                encoded = encoded.and_then(|()| group.add(record));
            }
        }
        let written = match encoded {
            Ok(()) => {
                match tokio::time::timeout(self.settings.write_timeout, self.write(&group)).await {
                    Ok(written) => written,
                    Err(_) => {
                        // The connection's state is unknown: open another next time.
                        self.client = None;
                        Err(StoreError::Database(format!(
                            "PostgreSQL did not finish a write in {} ms",
                            self.settings.write_timeout.as_millis()
                        )))
                    }
                }
            }
            Err(e) => Err(e),
        };
        let written = written.and_then(|()| self.fence.check().map_err(StoreError::Fenced));
        let fenced = matches!(written, Err(StoreError::Fenced(_)));
        if let Err(e) = &written {
            tracing::warn!("PostgreSQL store write failed: {e}");
        }
        for (records, done) in appends {
            let locations = vec![NOWHERE; records.len()];
            match (done, &written) {
                (Some(done), Ok(())) => {
                    let _ = done.send(Ok(locations));
                }
                (Some(done), Err(e)) => {
                    let _ = done.send(Err(e.clone()));
                }
                (None, Err(_)) if !fenced => self.retry.extend(records),
                (None, _) => {}
            }
        }
    }

    async fn write(&mut self, group: &Group) -> Result<(), StoreError> {
        self.fence.check().map_err(StoreError::Fenced)?;
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(writer_session(&self.settings).await?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Closed);
        };
        self.fence.writing(true);
        let result = write_group(client, self.fence.epoch(), group).await;
        self.fence.writing(false);
        result
    }
}

async fn write_group(client: &mut Client, epoch: u64, group: &Group) -> Result<(), StoreError> {
    let pg = |e: tokio_postgres::Error| StoreError::from(PgError::from(e));
    let tx = client.transaction().await.map_err(pg)?;
    let holds = tx
        .query_opt(
            "SELECT 1 FROM actormq_lease WHERE id = 1 AND epoch = $1 AND expires_at > now() FOR SHARE",
            &[&(epoch as i64)],
        )
        .await
        .map_err(pg)?;
    if holds.is_none() {
        return Err(StoreError::Fenced(format!(
            "the database's lease is no longer held in epoch {epoch}"
        )));
    }
    if !group.ids.is_empty() {
        tx.execute(
            "INSERT INTO actormq_messages (id, queue, priority, record)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::smallint[], $4::bytea[])",
            &[&group.ids, &group.queues, &group.priorities, &group.records],
        )
        .await
        .map_err(pg)?;
    }
    if !group.sent_by.is_empty() {
        tx.execute(
            "INSERT INTO actormq_sends (producer, seq, at_ms)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])
             ON CONFLICT DO NOTHING",
            &[&group.sent_by, &group.sent_seqs, &group.sent_at],
        )
        .await
        .map_err(pg)?;
        let (producers, below): (Vec<&String>, Vec<i64>) = group.confirmed.iter().unzip();
        tx.execute(
            "DELETE FROM actormq_sends s USING UNNEST($1::text[], $2::bigint[]) AS c(producer, below)
             WHERE s.producer = c.producer AND s.seq < c.below",
            &[&producers, &below],
        )
        .await
        .map_err(pg)?;
    }
    if let Some(cutoff) = group.forget_before {
        tx.execute("DELETE FROM actormq_sends WHERE at_ms < $1", &[&cutoff])
            .await
            .map_err(pg)?;
    }
    if !group.delivered_ids.is_empty() {
        tx.execute(
            "UPDATE actormq_messages m SET deliveries = d.count
             FROM UNNEST($1::bigint[], $2::integer[]) AS d(id, count) WHERE m.id = d.id",
            &[&group.delivered_ids, &group.delivered_counts],
        )
        .await
        .map_err(pg)?;
    }
    if !group.removes.is_empty() {
        tx.execute(
            "DELETE FROM actormq_messages WHERE id = ANY($1)",
            &[&group.removes],
        )
        .await
        .map_err(pg)?;
    }
    for (name, contents) in &group.files {
        tx.execute(
            "INSERT INTO actormq_files (name, contents) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET contents = EXCLUDED.contents",
            &[name, contents],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

impl super::Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn durable(&self) -> bool {
        true
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn append(
        &self,
        records: Vec<Record>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Location>, StoreError>> {
        let (done, rx) = oneshot::channel();
        let sent = self.ops.send(Op::Append {
            records,
            done: Some(done),
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn append_lazy(&self, records: Vec<Record>) {
        let _ = self.ops.send(Op::Append {
            records,
            done: None,
        });
    }

    fn read(
        &self,
        wanted: Vec<(u64, Location)>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Arc<Message>>, StoreError>> {
        let (done, rx) = oneshot::channel();
        let sent = self.reads.send(Read {
            ids: wanted.into_iter().map(|(id, _)| id).collect(),
            done,
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn write_file(&self, name: &str, contents: Vec<u8>) {
        let _ = self.ops.send(Op::WriteFile {
            name: name.to_string(),
            contents,
        });
    }

    fn usage(&self) -> Option<StoreStat> {
        Some(StoreStat {
            kind: "postgres".into(),
            ..StoreStat::default()
        })
    }

    fn close(&self) {
        let (done, closed) = std_mpsc::channel();
        if self.ops.send(Op::Close { done }).is_ok() {
            let _ = closed.recv_timeout(crate::constants::JOURNAL_CLOSE_TIMEOUT);
        }
    }
}
