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
use bytes::BytesMut;

use crate::destination::DestinationError;
use crate::message::{Destination, DestinationKind, Property};
use crate::net::writer::FrameSink;
use crate::protocol::WireDelivery;
use crate::protocol::stomp::{Command, StompFrame, encode_into};
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
        {
            let mut table = self.subscriptions.lock();
            let Some(subscription) = table.by_consumer(consumer) else {
                // Unsubscribed: nothing is written, so the consumer must not count these
                // as consumed; it stops and the destination takes them back.
                return Err(SessionError::Unsubscribed(consumer));
            };
            for delivery in &deliveries {
                let frame = message_frame(&subscription.id, consumer, delivery, subscription.ack);
                encode_into(&frame, &mut buf);
                if subscription.ack != AckKind::Auto {
                    subscription
                        .unacked
                        .push_back((delivery.tag, delivery.message.id.clone()));
                }
            }
        }
        Ok(self.sink.send(buf.freeze())?)
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

/// A broker destination in STOMP's spelling.
pub(super) fn stomp_name(destination: &Destination) -> String {
    let prefix = match destination.kind() {
        DestinationKind::Queue => "/queue/",
        DestinationKind::Topic => "/topic/",
        DestinationKind::TempQueue => "/temp-queue/",
        DestinationKind::TempTopic => "/temp-topic/",
        DestinationKind::Composite | DestinationKind::Group | DestinationKind::Durable => {
            return destination.to_string();
        }
    };
    format!("{prefix}{}", destination.name())
}

fn message_frame(
    subscription: &str,
    consumer: u32,
    delivery: &WireDelivery,
    ack: AckKind,
) -> StompFrame {
    let message = &delivery.message;
    let mut frame = StompFrame::new(Command::Message)
        .header("subscription", subscription)
        .header("message-id", message.id.clone());
    if let Some(destination) = &message.destination {
        frame = frame.header("destination", stomp_name(destination));
    }
    if ack != AckKind::Auto {
        frame = frame.header("ack", format!("{consumer}:{}", delivery.tag));
    }
    if delivery.redelivered {
        frame = frame.header("redelivered", "true");
    }
    if let Some(id) = &message.correlation_id {
        frame = frame.header("correlation-id", id.clone());
    }
    if let Some(reply_to) = &message.reply_to {
        frame = frame.header("reply-to", stomp_name(reply_to));
    }
    if message.expiration != 0 {
        frame = frame.header("expires", message.expiration.to_string());
    }
    frame = frame
        .header("priority", message.priority.to_string())
        .header("persistent", message.persistent.to_string())
        .header("timestamp", message.timestamp.to_string());
    for (name, value) in &message.headers {
        frame = frame.header(name.clone(), value.clone());
    }
    for (name, value) in &message.properties {
        let text = match value {
            Property::Bool(b) => b.to_string(),
            Property::Int(i) => i.to_string(),
            Property::Float(f) => f.to_string(),
            Property::Text(t) => t.clone(),
            Property::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        };
        frame = frame.header(name.clone(), text);
    }
    frame
        .header("content-length", message.body.len().to_string())
        .body(message.body.clone())
}
