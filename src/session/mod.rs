//! Sessions and consumers, the same for every protocol: a [`SessionActor`] turns a client's
//! sends into enqueues and its subscriptions into [`ConsumerActor`]s, which pace
//! deliveries to the client's socket. How they reach the client is a [`ClientWire`], which
//! each front-end (`frontend::native`, `frontend::stomp`) implements. Below the front-ends,
//! above the destinations.

mod actor;
mod consumer;
pub mod resends;
mod wire;

use actix::Message as ActixMessage;

pub use actor::{SessionActor, SessionCommand};
pub use consumer::ConsumerActor;
pub use resends::Resends;
pub use wire::ClientWire;

use crate::net::writer::WriterError;
use crate::protocol::ProtocolError;

/// Why a session or consumer could not write to its client.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Encode(#[from] ProtocolError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// The client ended this consumer's subscription: nothing more is written for it.
    #[error("consumer {0} is unsubscribed")]
    Unsubscribed(u32),
}

/// Asks an actor to stop (sessions, consumers).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct Shutdown;
