//! The frames both sides exchange. Frames batch: one `Send` carries many messages, one
//! `Deliver` many deliveries, one `Ack` many acknowledgements.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::constants::MESSAGE_OVERHEAD;
use crate::message::{AckMode, Destination, Message};
use crate::stats::{DestinationStat, MasterStat, MemberStat, StoreStat};

/// The protocol version this build speaks. A `Hello` with another version is refused.
pub const PROTOCOL_VERSION: u32 = 5;

/// Why the broker refused something, so a client can tell errors apart without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The bytes did not decode, or a frame was longer than the limit.
    MalformedFrame,
    /// A well-formed frame that is not allowed now (before the handshake, unknown session...).
    ProtocolViolation,
    /// The client's protocol version is not this broker's.
    UnsupportedVersion,
    /// The handshake did not arrive in time.
    HandshakeTimeout,
    /// The connection could not keep up with what was sent to it.
    SlowConsumer,
    /// The broker could not do what was asked (the message says why).
    Refused,
    /// The destination no longer exists (a temporary destination whose connection closed).
    DestinationGone,
    /// The destination exists but cannot be reached now.
    DestinationUnavailable,
    /// This broker is a standby: another broker of its master/slave pair serves (the
    /// message names it). Try the next address.
    Standby,
}

/// Why a request that carried a receipt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// With `DestinationUnavailable` in a cluster: the broker the destination lives on.
    pub home: Option<String>,
}

/// A message on its way to a consumer. `tag` identifies the delivery for acknowledgement;
/// it is unique within the destination. The message is shared (`Arc`) inside the broker so
/// that a topic's fan-out clones a pointer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireDelivery {
    pub consumer: u32,
    pub tag: u64,
    pub redelivered: bool,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    #[serde(deserialize_with = "shared_message")]
    pub message: Arc<Message>,
}

/// Reads a message straight into its `Arc` (serde's own `Arc<T>` reads into a `Box` and
/// then copies it into a new allocation).
fn shared_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<Message>, D::Error> {
    Message::deserialize(d).map(Arc::new)
}

/// Who made a send or commit and where it is in that producer's sequence (failover
/// clients): the broker keeps one such send once, however often it arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOrigin {
    /// Unique per producer instance, the same across its connections.
    pub producer: String,
    /// 1, 2, 3, … for each send or commit of the producer.
    pub seq: u64,
    /// Every send numbered below this has been confirmed to the producer (the broker may
    /// forget them).
    pub confirmed_below: u64,
}

impl SendOrigin {
    /// A send numbered below what its own producer says was confirmed contradicts itself:
    /// taken as a resend it would be confirmed without being stored.
    pub fn check(&self) -> Result<(), String> {
        if self.seq < self.confirmed_below {
            return Err(format!(
                "send {} of producer `{}` is below its own confirmed-below {}",
                self.seq, self.producer, self.confirmed_below
            ));
        }
        Ok(())
    }
}

/// The messages a transaction sends to one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransactedSend {
    pub destination: Destination,
    pub messages: Vec<Message>,
}

/// What a frame costs to encode beyond its messages (ids, names, framing), as a guess.
const FRAME_ALLOWANCE: usize = 128;

/// Every frame of the native protocol. Ids (`session`, `consumer`, `receipt`, `request`)
/// are chosen by the client and are unique within its connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Client → broker, first frame.
    Hello {
        version: u32,
        client_id: String,
    },
    /// Broker → client, answer to `Hello`.
    Welcome {
        version: u32,
        broker: String,
        /// Unique on this broker; a prefix for the names of the connection's temporary
        /// destinations.
        connection_id: String,
        max_frame_bytes: u32,
    },
    OpenSession {
        session: u32,
        ack_mode: AckMode,
    },
    CloseSession {
        session: u32,
    },
    /// Start a consumer; `prefetch` is its credit (0 = pull with `Pull`). The broker sends
    /// `Receipt { receipt }` once the subscription is active.
    Subscribe {
        session: u32,
        consumer: u32,
        destination: Destination,
        prefetch: u32,
        receipt: u64,
    },
    Unsubscribe {
        session: u32,
        consumer: u32,
    },
    /// Messages for one destination. With a receipt, the broker confirms with `Receipt`
    /// once every message is enqueued. With an origin, a send the broker already kept is
    /// confirmed without being kept again.
    Send {
        session: u32,
        destination: Destination,
        receipt: Option<u64>,
        messages: Vec<Message>,
        origin: Option<SendOrigin>,
    },
    /// Creates a temporary queue or topic owned by this connection (the client picks a
    /// name starting with its `connection_id`).
    CreateTemporary {
        destination: Destination,
        receipt: u64,
    },
    /// Confirms the frame that carried this receipt; `error` says why it failed.
    Receipt {
        receipt: u64,
        error: Option<Refusal>,
    },
    Deliver {
        deliveries: Vec<WireDelivery>,
    },
    /// Acknowledges deliveries: `(consumer, tag)` pairs of one session. With a receipt,
    /// the broker answers once the acknowledgements are stored (after a crash or a
    /// takeover those messages do not come back).
    Ack {
        session: u32,
        acks: Vec<(u32, u64)>,
        receipt: Option<u64>,
    },
    /// Gives deliveries back to be redelivered (a NACK, or a rolled-back transaction):
    /// `(consumer, tag)` pairs of one session.
    Release {
        session: u32,
        releases: Vec<(u32, u64)>,
    },
    /// Commits a transaction: every send and acknowledgement at once. The sends' persistent
    /// messages are stored as one journal record, so after a crash all or none exist.
    /// Answered with `Receipt` once done.
    Commit {
        session: u32,
        receipt: u64,
        sends: Vec<TransactedSend>,
        acks: Vec<(u32, u64)>,
        origin: Option<SendOrigin>,
    },
    /// Client → broker: was the send or commit `seq` of `producer` kept? (A failover
    /// client asks about a commit whose confirmation it never got.)
    Resolve {
        request: u64,
        producer: String,
        seq: u64,
    },
    /// Broker → client: the answer to `Resolve`.
    Resolved {
        request: u64,
        kept: bool,
    },
    /// Deletes a durable subscription and the messages kept for it.
    DeleteDurable {
        destination: Destination,
        receipt: u64,
    },
    /// Grants `count` more deliveries to a consumer with prefetch 0.
    Pull {
        session: u32,
        consumer: u32,
        count: u32,
    },
    StatRequest {
        request: u64,
    },
    StatReply {
        request: u64,
        destinations: Vec<DestinationStat>,
        /// The journal, if the broker has one.
        store: Option<StoreStat>,
        /// The cluster's members (empty on a lone broker).
        members: Vec<MemberStat>,
        /// Master/slave: this broker is the master since then, in this epoch.
        master: Option<MasterStat>,
    },
    /// Client → broker: where does `destination` live? (Cluster metadata.)
    Locate {
        request: u64,
        destination: Destination,
    },
    /// Broker → client: its home broker (`None` on a lone broker: this one).
    Located {
        request: u64,
        home: Option<MemberStat>,
    },
    /// Broker → client: the connection is being closed for this reason.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Client → broker: close cleanly; unacknowledged deliveries are redelivered.
    Disconnect,
}

impl Frame {
    /// Bytes worth setting aside before encoding the frame: its bodies plus an allowance
    /// per message for the rest. Large bodies are then copied into the buffer once, not
    /// again each time it would grow; a wrong guess only costs a regrowth.
    pub fn encoded_size_hint(&self) -> usize {
        FRAME_ALLOWANCE
            + self
                .messages()
                .map(|m| m.body.len() + MESSAGE_OVERHEAD)
                .sum::<usize>()
    }

    /// The messages the frame carries (`Send`, `Deliver`, `Commit`), in the order they
    /// are encoded.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        let sent: &[Message] = match self {
            Frame::Send { messages, .. } => messages,
            _ => &[],
        };
        let delivered: &[WireDelivery] = match self {
            Frame::Deliver { deliveries } => deliveries,
            _ => &[],
        };
        let committed: &[TransactedSend] = match self {
            Frame::Commit { sends, .. } => sends,
            _ => &[],
        };
        sent.iter()
            .chain(delivered.iter().map(|d| &*d.message))
            .chain(committed.iter().flat_map(|s| &s.messages))
    }

    /// The frame's name, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::OpenSession { .. } => "OpenSession",
            Frame::CloseSession { .. } => "CloseSession",
            Frame::Subscribe { .. } => "Subscribe",
            Frame::Unsubscribe { .. } => "Unsubscribe",
            Frame::Send { .. } => "Send",
            Frame::CreateTemporary { .. } => "CreateTemporary",
            Frame::Receipt { .. } => "Receipt",
            Frame::Deliver { .. } => "Deliver",
            Frame::Ack { .. } => "Ack",
            Frame::Pull { .. } => "Pull",
            Frame::Release { .. } => "Release",
            Frame::Commit { .. } => "Commit",
            Frame::DeleteDurable { .. } => "DeleteDurable",
            Frame::StatRequest { .. } => "StatRequest",
            Frame::StatReply { .. } => "StatReply",
            Frame::Locate { .. } => "Locate",
            Frame::Resolve { .. } => "Resolve",
            Frame::Resolved { .. } => "Resolved",
            Frame::Located { .. } => "Located",
            Frame::Error { .. } => "Error",
            Frame::Disconnect => "Disconnect",
        }
    }
}
