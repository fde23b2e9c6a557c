//! [`ClientWire`]: how a session and its consumers speak to their client. The session and
//! consumer actors are the same for every protocol; only this differs. Each front-end
//! implements it: the native one encodes frames straight onto the connection's writer; the
//! STOMP one encodes MESSAGE frames onto its writer too, and hands receipts to its
//! connection actor, which owns the receipt names that STOMP frames carry.

use super::SessionError;
use crate::destination::DestinationError;
use crate::net::writer::FrameSink;
use crate::protocol::WireDelivery;

/// What sessions and consumers need from their client connection.
pub trait ClientWire: Clone + Unpin + 'static {
    /// The connection's writer; consumers pace themselves to it.
    fn sink(&self) -> &FrameSink;
    /// Writes deliveries for the client's consumer number `consumer`.
    fn deliver(&self, consumer: u32, deliveries: Vec<WireDelivery>) -> Result<(), SessionError>;
    /// Whether `consumer`'s deliveries count as consumed once written to the socket (STOMP
    /// `ack:auto`), rather than when the client acknowledges them.
    fn settles_on_write(&self, _consumer: u32) -> bool {
        false
    }
    /// Answers the request that carried `receipt`.
    fn receipt(&self, receipt: u64, result: Result<(), DestinationError>);
    /// A destination dropped `consumer` as a slow consumer: tell the client, then close.
    fn evicted(&self, consumer: u32, reason: String);
    /// A send without a receipt failed: tell the client why, then close (nothing accepted
    /// is dropped without a word).
    fn send_failed(&self, reason: String);
}
