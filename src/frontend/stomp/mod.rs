//! The STOMP front-end: a second listener for any STOMP client (Python, Ruby, JavaScript,
//! Go ...). Frames and their codec are in `protocol::stomp`.
//!
//! [`StompConnectionActor`] maps STOMP onto the same
//! sessions, consumers and destinations native clients use, so a message sent with STOMP to
//! `/queue/orders` reaches a native consumer of `queue:orders`, and back. `subscriptions`
//! holds a connection's subscriptions and turns deliveries into MESSAGE frames
//! ([`StompWire`]).

mod connection;
mod frames;
mod receipts;
mod subscriptions;

pub use connection::StompConnectionActor;
pub use subscriptions::{StompEvent, StompWire};

/// What a standby writes to a STOMP client before closing: an ERROR frame with the reason.
pub fn standby_refusal(reason: &str) -> bytes::Bytes {
    frames::error_bytes(&frames::Failure::new(reason))
}
