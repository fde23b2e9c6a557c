//! The async Rust client: [`Connection`] → [`Session`] → [`Producer`] / [`Consumer`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), actormq::client::ClientError> {
//! use std::time::Duration;
//! use actormq::client::{AckMode, Connection, Destination, Message};
//!
//! let connection = Connection::connect("tcp://127.0.0.1:7670").await?;
//! let session = connection.session(AckMode::Auto)?;
//! let producer = session.producer(Destination::queue("orders"));
//! producer.send(Message::new("hello")).await?;
//! let mut consumer = session.consumer(Destination::queue("orders")).await?;
//! let message = consumer.receive(Duration::from_secs(1)).await?;
//! assert_eq!(message.unwrap().body_text(), "hello");
//! connection.close().await?;
//! # Ok(()) }
//! ```
//!
//! Messaging patterns sit on top: [`Requestor`] (request/response, as a blocking call or
//! as a future, over one temporary reply queue), [`Responder`] (serve a queue with an async
//! closure or an actix actor), callbacks ([`Producer::send_with_callback`],
//! [`Session::callback_endpoint`]), one-way sends ([`Producer::send_oneway`]), wildcard
//! topics (`topic:prices.*`, `topic:prices.>`), composite destinations
//! (`queue:orders,topic:audit`) and configured groups (`group:NAME`).
//!
//! One task per connection (the driver) reads frames and routes them: receipts to the
//! calls awaiting them, deliveries to their consumer's buffer. Writes go through the
//! connection's bounded writer. Consumers acknowledge lazily: in `Auto` mode a message
//! taken by the application is acknowledged in a batch once half the prefetch has been
//! taken or the consumer's buffer runs dry, and at the latest when the consumer or the
//! connection closes. A message handed to an actor (`forward_to`) or a responder's handler
//! counts as taken only once the actor or handler has finished with it, so one that dies
//! mid-message leaves it to be redelivered.

mod connection;
mod consumer;
mod request;
mod session;
mod shared;
mod url;

pub use connection::{ConnectOptions, Connection};
pub use consumer::{Consumer, ConsumerOptions, Delivery, TaskHandle};
pub use request::{CallbackEndpoint, Reply, Request, Requestor, Responder};
pub use session::{Producer, SendConfirmation, Session};
pub use shared::{ConnectionEvent, StatReply};
pub use url::{BrokerUrl, FailoverOptions};

pub use crate::message::{AckMode, Destination, DestinationKind, Message, Property};
pub use crate::protocol::{DestinationStat, ErrorCode, StoreStat};

/// Everything that can go wrong for a client. Cloneable, so one failure can be reported
/// to every call waiting on the connection.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ClientError {
    #[error("invalid broker url {0}")]
    InvalidUrl(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("the broker closed the connection ({code:?}): {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("the broker refused the request: {0}")]
    Refused(String),
    #[error("{0}")]
    DestinationGone(String),
    /// The destination cannot be reached now; in a cluster, `home` is the broker it lives
    /// on (down, or not linked to the broker this client is connected to).
    #[error("{message}")]
    DestinationUnavailable {
        message: String,
        home: Option<String>,
    },
    #[error("connection closed: {0}")]
    ConnectionClosed(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A failover connection found no broker within `maxReconnectAttempts`.
    #[error("failover gave up: {0}")]
    GaveUp(String),
    /// Acknowledgements that a lost connection kept from being stored: the messages come
    /// again, marked redelivered.
    #[error("not acknowledged: {0}")]
    NotAcknowledged(String),
    /// A transaction whose outcome a lost connection made unknown was not committed.
    #[error("transaction rolled back: {0}")]
    TransactionRolledBack(String),
}

impl From<crate::protocol::ProtocolError> for ClientError {
    fn from(e: crate::protocol::ProtocolError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<crate::protocol::Refusal> for ClientError {
    fn from(refusal: crate::protocol::Refusal) -> Self {
        match refusal.code {
            ErrorCode::DestinationGone => ClientError::DestinationGone(refusal.message),
            ErrorCode::DestinationUnavailable => ClientError::DestinationUnavailable {
                message: refusal.message,
                home: refusal.home,
            },
            _ => ClientError::Refused(refusal.message),
        }
    }
}

impl From<crate::net::writer::WriterError> for ClientError {
    fn from(e: crate::net::writer::WriterError) -> Self {
        ClientError::ConnectionClosed(e.to_string())
    }
}
