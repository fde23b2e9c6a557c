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
