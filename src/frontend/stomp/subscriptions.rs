//! A STOMP connection's subscriptions and how deliveries to them become `MESSAGE` frames.
//!
//! [`StompWire`] is the [`ClientWire`] of a STOMP connection's session: a consumer hands it
//! deliveries and it encodes them straight onto the connection's writer, so the consumer
//! paces itself to what the socket has taken (as a native consumer does). The
//! subscription table is shared with [`super::StompConnectionActor`], which adds and
//! removes subscriptions and settles `ACK`/`NACK` against the deliveries recorded here.
//! Both run on the connection's arbiter, so the lock is never contended.
//!
//! `ack:auto` deliveries are settled by the consumer once they have been written to the
//! socket ([`ClientWire::settles_on_write`]); until then they are in flight and go back to
//! their queue if the connection closes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::Recipient;
use bytes::{Bytes, BytesMut};

use crate::constants::SHARED_BODY_BYTES;
use crate::destination::DestinationError;
use crate::message::{Destination, DestinationKind, Property};
use crate::net::writer::FrameSink;
use crate::protocol::WireDelivery;
use crate::protocol::stomp::{Command, FrameWriter};
use crate::session::{ClientWire, SessionError};

/// A subscription's `ack` header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum AckKind {
    /// Settled by the broker once the MESSAGE is written.
    Auto,
    /// Cumulative, as STOMP defines it.
    Client,
    ClientIndividual,
}

impl AckKind {
    pub(super) fn parse(value: &str) -> Option<AckKind> {
        Some(match value {
            "auto" => AckKind::Auto,
            "client" => AckKind::Client,
            "client-individual" => AckKind::ClientIndividual,
            _ => return None,
        })
    }
}

pub(super) struct Subscription {
    pub id: String,
    pub ack: AckKind,
    /// Delivered and not yet acknowledged (`client` modes): (tag, message id), in order.
    pub unacked: VecDeque<(u64, String)>,
}

/// Subscriptions by the session's consumer number, and consumer numbers by STOMP id.
#[derive(Default)]
pub(super) struct Subscriptions {
    by_consumer: HashMap<u32, Subscription>,
    by_id: HashMap<String, u32>,
}

impl Subscriptions {
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn insert(&mut self, consumer: u32, id: String, ack: AckKind) {
        self.by_id.insert(id.clone(), consumer);
        self.by_consumer.insert(
            consumer,
            Subscription {
                id,
                ack,
                unacked: VecDeque::new(),
            },
        );
    }

    /// Removes the subscription `id`; returns its consumer number.
    pub fn remove(&mut self, id: &str) -> Option<u32> {
        let consumer = self.by_id.remove(id)?;
        self.by_consumer.remove(&consumer);
        Some(consumer)
    }

    pub fn by_consumer(&mut self, consumer: u32) -> Option<&mut Subscription> {
        self.by_consumer.get_mut(&consumer)
    }

    /// The subscription `id` and its consumer number.
    pub fn by_id(&mut self, id: &str) -> Option<(u32, &mut Subscription)> {
        let consumer = *self.by_id.get(id)?;
        Some((consumer, self.by_consumer.get_mut(&consumer)?))
    }

    /// The consumer that has `message_id` waiting for an acknowledgement, and its tag.
    pub fn find_unacked(&self, message_id: &str) -> Option<(u32, u64)> {
        self.by_consumer.iter().find_map(|(consumer, s)| {
            s.unacked
                .iter()
                .find(|(_, m)| m == message_id)
                .map(|(tag, _)| (*consumer, *tag))
        })
    }
}

/// The table the connection actor and its wire share.
#[derive(Clone, Default)]
pub(super) struct SharedSubscriptions(Arc<Mutex<Subscriptions>>);

impl SharedSubscriptions {
    pub fn lock(&self) -> MutexGuard<'_, Subscriptions> {
        // A panic while holding it cannot leave the table half-changed in a way that
        // matters more than losing the connection would.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the session and its consumers tell the STOMP connection.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub enum StompEvent {
    Receipt {
        receipt: u64,
        result: Result<(), DestinationError>,
    },
    Evicted {
        consumer: u32,
        reason: String,
    },
}

/// The STOMP connection's [`ClientWire`].
#[derive(Clone)]
pub struct StompWire {
    pub(super) sink: FrameSink,
    pub(super) subscriptions: SharedSubscriptions,
    pub(super) connection: Recipient<StompEvent>,
}

impl ClientWire for StompWire {
    fn sink(&self) -> &FrameSink {
        &self.sink
    }

    fn deliver(&self, consumer: u32, deliveries: Vec<WireDelivery>) -> Result<(), SessionError> {
        let mut buf = BytesMut::new();
        // Long bodies go by reference, between the buffer's pieces.
        let mut parts = Vec::new();
        {
            let mut table = self.subscriptions.lock();
            let Some(subscription) = table.by_consumer(consumer) else {
                // Unsubscribed: nothing is written, so the consumer must not count these
                // as consumed; it stops and the destination takes them back.
                return Err(SessionError::Unsubscribed(consumer));
            };
            for delivery in &deliveries {
                write_message(
                    &mut buf,
                    &mut parts,
                    &subscription.id,
                    consumer,
                    delivery,
                    subscription.ack,
                );
                if subscription.ack != AckKind::Auto {
                    subscription
                        .unacked
                        .push_back((delivery.tag, delivery.message.id.clone()));
                }
            }
        }
        parts.push(buf.freeze());
        Ok(self.sink.send_parts(parts)?)
    }

    fn settles_on_write(&self, consumer: u32) -> bool {
        self.subscriptions
            .lock()
            .by_consumer(consumer)
            .is_some_and(|s| s.ack == AckKind::Auto)
    }

    fn receipt(&self, receipt: u64, result: Result<(), DestinationError>) {
        self.connection
            .do_send(StompEvent::Receipt { receipt, result });
    }

    fn evicted(&self, consumer: u32, reason: String) {
        self.connection
            .do_send(StompEvent::Evicted { consumer, reason });
    }

    fn send_failed(&self, _reason: String) {
        // Every STOMP send carries an internal receipt: its failure arrives as one.
    }
}

/// A broker destination in STOMP's spelling, in two parts to write one after the other
/// (`/queue/` and `orders`), so that naming it in every MESSAGE formats nothing.
pub(super) fn stomp_name(destination: &Destination) -> (&'static str, &str) {
    let prefix = match destination.kind() {
        DestinationKind::Queue => "/queue/",
        DestinationKind::Topic => "/topic/",
        DestinationKind::TempQueue => "/temp-queue/",
        DestinationKind::TempTopic => "/temp-topic/",
        DestinationKind::Composite | DestinationKind::Group | DestinationKind::Durable => {
            return ("", destination.as_str());
        }
    };
    (prefix, destination.name())
}

/// Writes the MESSAGE frame of `delivery` for the subscription `subscription` (the
/// client's consumer `consumer`) into `dst`.
fn write_message(
    dst: &mut BytesMut,
    parts: &mut Vec<Bytes>,
    subscription: &str,
    consumer: u32,
    delivery: &WireDelivery,
    ack: AckKind,
) {
    let message = &delivery.message;
    let by_reference = message.body.len() >= SHARED_BODY_BYTES;
    let inline_body = if by_reference { 0 } else { message.body.len() };
    let mut frame = FrameWriter::start(dst, Command::Message, 512 + inline_body);
    frame
        .protocol_header("subscription", subscription)
        .protocol_header("message-id", &message.id);
    if let Some(destination) = &message.destination {
        let (prefix, name) = stomp_name(destination);
        frame.protocol_header_prefixed("destination", prefix, name);
    }
    if ack != AckKind::Auto {
        frame.protocol_header_u64_pair("ack", consumer.into(), delivery.tag);
    }
    if delivery.redelivered {
        frame.protocol_header("redelivered", "true");
    }
    if let Some(id) = &message.correlation_id {
        frame.protocol_header("correlation-id", id);
    }
    if let Some(reply_to) = &message.reply_to {
        let (prefix, name) = stomp_name(reply_to);
        frame.protocol_header_prefixed("reply-to", prefix, name);
    }
    if message.expiration != 0 {
        frame.protocol_header_u64("expires", message.expiration);
    }
    frame
        .protocol_header_u64("priority", message.priority.into())
        .protocol_header(
            "persistent",
            if message.persistent { "true" } else { "false" },
        )
        .protocol_header_u64("timestamp", message.timestamp);
    for (name, value) in &message.headers {
        frame.header(name, value);
    }
    for (name, value) in &message.properties {
        match value {
            Property::Bool(b) => frame.header_fmt(name, format_args!("{b}")),
            Property::Int(i) => frame.header_fmt(name, format_args!("{i}")),
            Property::Float(f) => frame.header_fmt(name, format_args!("{f}")),
            Property::Text(t) => frame.header(name, t),
            Property::Bytes(b) => frame.header(name, &String::from_utf8_lossy(b)),
        };
    }
    frame.protocol_header_u64("content-length", message.body.len() as u64);
    if by_reference {
        frame.body_by_reference(&message.body, parts);
    } else {
        frame.body(&message.body);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;
    use crate::protocol::stomp::{Inbound, StompCodec, StompFrame, StompLimits, encode_into};
    use tokio_util::codec::Decoder;

    #[test]
    fn a_message_frame_is_written_as_its_stomp_frame_would_encode() {
        let message = Message::new("body")
            .with_header("colon:ed", "line\nbreak")
            .with_property("n", Property::Int(-3))
            .with_property("f", Property::Float(1.5))
            .with_property("ok", Property::Bool(true))
            .with_correlation_id("corr")
            .with_reply_to(Destination::queue("replies"))
            .with_priority(7);
        let mut message = message;
        message.id = "p:1".into();
        message.destination = Some(Destination::queue("orders"));
        message.expiration = 99;
        message.timestamp = 42;
        let delivery = WireDelivery {
            consumer: 3,
            tag: 8,
            redelivered: true,
            delivery_count: 2,
            message: Arc::new(message.clone()),
        };
        let expected = StompFrame::new(Command::Message)
            .header("subscription", "sub-1")
            .header("message-id", "p:1")
            .header("destination", "/queue/orders")
            .header("ack", "3:8")
            .header("redelivered", "true")
            .header("correlation-id", "corr")
            .header("reply-to", "/queue/replies")
            .header("expires", "99")
            .header("priority", "7")
            .header("persistent", "true")
            .header("timestamp", "42")
            .header("colon:ed", "line\nbreak")
            .header("f", "1.5")
            .header("n", "-3")
            .header("ok", "true")
            .header("content-length", "4")
            .body("body");
        let mut want = BytesMut::new();
        encode_into(&expected, &mut want);
        let mut got = BytesMut::new();
        let mut parts = Vec::new();
        write_message(&mut got, &mut parts, "sub-1", 3, &delivery, AckKind::Client);
        assert!(parts.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn a_long_body_is_spliced_in_by_reference_between_the_frames_around_it() {
        let short = Arc::new(Message::new("short"));
        let long = Arc::new(Message::new(vec![b'L'; SHARED_BODY_BYTES]));
        let sent = [&short, &long, &short, &long];
        let mut buf = BytesMut::new();
        let mut parts = Vec::new();
        for message in sent {
            let delivery = WireDelivery {
                consumer: 3,
                tag: 8,
                redelivered: false,
                delivery_count: 1,
                message: message.clone(),
            };
            write_message(&mut buf, &mut parts, "s", 3, &delivery, AckKind::Auto);
        }
        parts.push(buf.freeze());
        let by_reference = parts
            .iter()
            .filter(|part| part.as_ptr() == long.body.as_ptr())
            .count();
        assert_eq!(by_reference, 2);
        let mut stream = BytesMut::from(&parts.concat()[..]);
        let mut codec = StompCodec::new(StompLimits {
            max_frame_bytes: 1 << 20,
            max_headers: 100,
            max_header_bytes: 1024,
            max_body_bytes: 1 << 20,
        });
        for message in sent {
            let Some(Inbound::Frame(frame)) = codec.decode(&mut stream).unwrap() else {
                panic!("not a whole frame");
            };
            assert_eq!(frame.command, Command::Message);
            assert_eq!(frame.body, message.body);
        }
        assert!(stream.is_empty());
    }
}
