//! What every handle of a connection shares — the socket's writer, the channel to the
//! connection's driver task and the commands it takes, and each session's state — so that
//! `Connection`, `Session`, `Producer` and `Consumer` need not know one another.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::ClientError;
use crate::message::AckMode;
use crate::net::writer::{FrameSink, WriterError};
use crate::protocol::{
    DestinationStat, Frame, MasterStat, MemberStat, StoreStat, TransactedSend, WireDelivery,
    encode_frame,
};

/// What `stat` returns: every destination, the journal (if any), the cluster's members
/// (empty on a lone broker).
#[derive(Clone, Debug, PartialEq)]
pub struct StatReply {
    pub destinations: Vec<DestinationStat>,
    pub store: Option<StoreStat>,
    pub members: Vec<MemberStat>,
    /// Master/slave: this broker is its pair's master (epoch, since when).
    pub master: Option<MasterStat>,
}

/// Deliveries and pending acknowledgements of one consumer, as the driver sees them.
pub(super) struct ConsumerRoute {
    pub session: u32,
    /// A `Deliver` frame's deliveries for this consumer, in one send.
    pub deliveries: mpsc::UnboundedSender<Vec<WireDelivery>>,
    pub acks: Arc<Mutex<Vec<u64>>>,
}

pub(super) enum Command {
    /// Route the `Receipt` with this id to `reply`.
    Expect {
        receipt: u64,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    ExpectStat {
        request: u64,
        reply: oneshot::Sender<StatReply>,
    },
    ExpectLocated {
        request: u64,
        reply: oneshot::Sender<Option<MemberStat>>,
    },
    AddConsumer {
        consumer: u32,
        route: ConsumerRoute,
    },
    /// Flush the consumer's acknowledgements, then unsubscribe it.
    RemoveConsumer {
        consumer: u32,
    },
    CloseSession {
        session: u32,
    },
    /// Flush every acknowledgement, say goodbye, and wait for the broker to close.
    Close {
        done: oneshot::Sender<()>,
    },
}

/// What every handle of a connection shares.
pub(super) struct Shared {
    pub commands: mpsc::UnboundedSender<Command>,
    pub sink: FrameSink,
    pub max_frame_bytes: usize,
    pub client_id: String,
    /// The broker's name for this connection; prefixes temporary destinations.
    pub connection_id: String,
    pub next_id: AtomicU32,
    pub next_request: AtomicU64,
    /// Why the connection ended, once it has.
    pub failure: Arc<Mutex<Option<ClientError>>>,
}

impl Shared {
    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Why the connection is unusable.
    pub fn failure(&self) -> ClientError {
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| ClientError::ConnectionClosed("the connection is closed".into()))
    }

    pub fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands.send(command).map_err(|_| self.failure())
    }

    pub fn write(&self, frame: &Frame) -> Result<(), ClientError> {
        let bytes = encode_frame(frame, self.max_frame_bytes)?;
        self.sink.send(bytes).map_err(|e| match e {
            WriterError::SlowConsumer { pending, limit } => ClientError::ConnectionClosed(format!(
                "the broker did not take what this client sent fast enough: {pending} bytes \
                 were waiting to be written (limit {limit}); wait for confirmations before \
                 sending more"
            )),
            WriterError::Closed => self.failure(),
        })
    }

    /// Registers for the receipt, then writes the frame; resolves with the receipt.
    pub fn request(
        &self,
        receipt: u64,
        frame: &Frame,
    ) -> Result<oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Expect { receipt, reply })?;
        self.write(frame)?;
        Ok(rx)
    }
}

/// A session's identity on its connection; closes the session when the last handle goes.
pub(super) struct SessionInner {
    pub id: u32,
    pub ack_mode: AckMode,
    pub shared: Arc<Shared>,
    /// Numbers the session's messages: ids are `<client id>:<session>:<n>`.
    pub sequence: AtomicU64,
    /// Client and Individual modes: what the application has taken and not acknowledged,
    /// in the order it took it: (consumer, tag, message id).
    pub unacked: Mutex<Vec<(u32, u64, String)>>,
    /// Transacted: sends held until `commit`.
    pub pending_sends: Mutex<Vec<TransactedSend>>,
}

impl SessionInner {
    pub fn new(id: u32, ack_mode: AckMode, shared: Arc<Shared>) -> SessionInner {
        SessionInner {
            id,
            ack_mode,
            shared,
            sequence: AtomicU64::new(1),
            unacked: Mutex::new(Vec::new()),
            pending_sends: Mutex::new(Vec::new()),
        }
    }
}

impl SessionInner {
    /// Everything taken and not acknowledged, as `(consumer, tag)` pairs; forgets it.
    pub fn take_unacked(&self) -> Vec<(u32, u64)> {
        self.unacked
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
            .into_iter()
            .map(|(consumer, tag, _)| (consumer, tag))
            .collect()
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // Through the driver, so it follows the acks and unsubscribes of this session's
        // consumers, which the driver writes.
        let _ = self
            .shared
            .command(Command::CloseSession { session: self.id });
    }
}
