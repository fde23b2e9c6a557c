//! STOMP 1.2: a second listener for any STOMP client (Python, Ruby, JavaScript, Go ...).
//!
//! `codec` is the pure frame codec ([`StompCodec`]). [`StompConnectionActor`] maps STOMP onto the same
//! sessions, consumers and destinations native clients use, so a message sent with STOMP to
//! `/queue/orders` reaches a native consumer of `queue:orders`, and back. `subscriptions`
//! holds a connection's subscriptions and turns deliveries into MESSAGE frames
//! ([`StompWire`]).

mod codec;
mod connection;
mod frame;
mod subscriptions;

pub use codec::{StompCodec, StompError, StompLimits, encode_into};
pub use connection::StompConnectionActor;
pub use frame::{Command, Inbound, StompFrame};
pub use subscriptions::{StompEvent, StompWire};
