//! The message model shared by the client, the wire and the broker: [`Message`], its
//! typed [`Property`] values, the [`Destination`] names it travels to, and [`AckMode`].
//!
//! A body is `bytes::Bytes` from the socket to every consumer (a long one decoded from a
//! native frame shares the frame's buffer: [`body`]), and destination names are
//! `Arc<str>`: fanning a message out clones pointers, never payloads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod body;
pub mod decimal;

/// Errors from parsing message-model values (destination names).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error(
        "destination `{0}` must look like `queue:NAME`, `topic:NAME`, `temp-queue:NAME`, `temp-topic:NAME`, `group:NAME`, or a comma-separated list of queues and topics"
    )]
    BadDestination(String),
    #[error("destination name must not be empty")]
    EmptyDestinationName,
}

/// What a destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DestinationKind {
    /// Each message to exactly one consumer.
    Queue,
    /// Each message to every current subscriber. A name with `*` (one level) or `>` (all
    /// levels below) segments is a wildcard subscription: `prices.*`, `prices.>`.
    Topic,
    /// A queue that lives as long as the connection that created it; only that connection
    /// may consume from it.
    TempQueue,
    /// A topic that lives as long as the connection that created it.
    TempTopic,
    /// Several queues and topics sent to as one unit: `queue:orders,topic:audit`.
    Composite,
    /// A named group of destinations configured on the broker; each member gets a copy.
    Group,
    /// A durable subscription to a topic: `<client id>/<subscription>@<topic>`. Messages
    /// published while its subscriber is away are kept for it.
    Durable,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
            DestinationKind::TempQueue => "temp-queue",
            DestinationKind::TempTopic => "temp-topic",
            DestinationKind::Composite => "composite",
            DestinationKind::Group => "group",
            DestinationKind::Durable => "durable",
        }
    }

    fn parse(kind: &str) -> Option<DestinationKind> {
        Some(match kind {
            "queue" => DestinationKind::Queue,
            "topic" => DestinationKind::Topic,
            "temp-queue" => DestinationKind::TempQueue,
            "temp-topic" => DestinationKind::TempTopic,
            "group" => DestinationKind::Group,
            "durable" => DestinationKind::Durable,
            _ => return None,
        })
    }
}

/// A destination. Written `queue:orders`, `topic:prices.>`, `temp-queue:ID`,
/// `group:billing` or `queue:orders,topic:audit` on the command line and on the wire.
///
/// It keeps its written form, so that writing it (into every delivered message) copies
/// nothing and formats nothing, and reading it allocates once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    kind: DestinationKind,
    /// The written form: `queue:orders`; for a composite, the whole list.
    text: Arc<str>,
    /// Where the name starts in `text` (after `kind:`, at most 11; 0 for a composite).
    name_at: u8,
}

impl Destination {
    pub fn queue(name: impl AsRef<str>) -> Destination {
        Destination::with_kind(DestinationKind::Queue, name.as_ref())
    }

    pub fn topic(name: impl AsRef<str>) -> Destination {
        Destination::with_kind(DestinationKind::Topic, name.as_ref())
    }

    pub fn kind(&self) -> DestinationKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.text[usize::from(self.name_at)..]
    }

    /// The written form, as `Display` writes it: `queue:orders`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A named group configured on the broker (`[[groups]]`).
    pub fn group(name: impl AsRef<str>) -> Destination {
        Destination::with_kind(DestinationKind::Group, name.as_ref())
    }

    /// Several queues and topics as one destination. Fails if a part is itself composite,
    /// a group, or the list is empty.
    pub fn composite(parts: &[Destination]) -> Result<Destination, MessageError> {
        let name = parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        name.parse()
    }

    /// The durable subscription `subscription` of client `client_id` to topic `topic`.
    pub fn durable(topic: &str, client_id: &str, subscription: &str) -> Destination {
        Destination::with_kind(
            DestinationKind::Durable,
            &format!("{client_id}/{subscription}@{topic}"),
        )
    }

    /// The topic a durable subscription follows.
    pub fn durable_topic(&self) -> Option<Destination> {
        if self.kind != DestinationKind::Durable {
            return None;
        }
        let (_, topic) = self.name().split_once('@')?;
        (!topic.is_empty()).then(|| Destination::topic(topic))
    }

    pub(crate) fn with_kind(kind: DestinationKind, name: &str) -> Destination {
        if kind == DestinationKind::Composite {
            return Destination {
                kind,
                text: Arc::from(name),
                name_at: 0,
            };
        }
        let prefix = kind.as_str();
        let mut text = String::with_capacity(prefix.len() + 1 + name.len());
        text.push_str(prefix);
        text.push(':');
        text.push_str(name);
        Destination {
            kind,
            text: Arc::from(text),
            name_at: prefix.len() as u8 + 1,
        }
    }

    /// Each message to one consumer (queues and temporary queues).
    pub fn is_queue(&self) -> bool {
        matches!(
            self.kind,
            DestinationKind::Queue | DestinationKind::TempQueue
        )
    }

    /// Each message to every subscriber (topics and temporary topics).
    pub fn is_topic(&self) -> bool {
        matches!(
            self.kind,
            DestinationKind::Topic | DestinationKind::TempTopic
        )
    }

    pub fn is_temporary(&self) -> bool {
        matches!(
            self.kind,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        )
    }

    /// A topic name with a `*` or `>` segment.
    pub fn is_wildcard(&self) -> bool {
        self.kind == DestinationKind::Topic && self.name().split('.').any(|s| s == "*" || s == ">")
    }

    /// The parts of a composite destination; a single destination is its own only part.
    pub fn parts(&self) -> Vec<Destination> {
        if self.kind != DestinationKind::Composite {
            return vec![self.clone()];
        }
        self.text
            .split(',')
            .filter_map(|part| parse_single(part).ok())
            .collect()
    }

    /// Whether this wildcard topic matches the topic `name`: `*` matches one segment, `>`
    /// one or more trailing segments (as NATS does; `prices.>` does not match `prices`).
    pub fn matches(&self, name: &str) -> bool {
        self.kind == DestinationKind::Topic && wildcard_matches(self.name(), name)
    }
}

/// Whether `name` matches `pattern`, segments split on `.`: `*` matches one segment, `>`
/// one or more trailing segments (NATS semantics, as ActiveMQ's wildcards).
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut segments = name.split('.');
    loop {
        match (pattern.next(), segments.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `kind:name`, not a list.
fn parse_single(s: &str) -> Result<Destination, MessageError> {
    let (kind, name) = s
        .split_once(':')
        .ok_or_else(|| MessageError::BadDestination(s.to_string()))?;
    if name.is_empty() {
        return Err(MessageError::EmptyDestinationName);
    }
    let kind =
        DestinationKind::parse(kind).ok_or_else(|| MessageError::BadDestination(s.to_string()))?;
    Ok(Destination {
        kind,
        text: Arc::from(s),
        name_at: (kind.as_str().len() + 1) as u8,
    })
}

impl FromStr for Destination {
    type Err = MessageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains(',') {
            return parse_single(s);
        }
        let mut parts = Vec::new();
        for part in s.split(',') {
            let part = parse_single(part.trim())?;
            if !(part.is_queue() || part.is_topic()) || part.is_wildcard() {
                return Err(MessageError::BadDestination(s.to_string()));
            }
            parts.push(part.to_string());
        }
        Ok(Destination::with_kind(
            DestinationKind::Composite,
            &parts.join(","),
        ))
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Destination {
    type Error = MessageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Written as its text form (`queue:orders`), without formatting it again.
impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Read from its text form, parsed straight from the input (one allocation).
impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Destination;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a destination such as queue:orders")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Destination, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A typed message property, as JMS has typed properties.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Property {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Bytes),
}

/// How a session acknowledges what it receives (JMS acknowledgement modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckMode {
    /// The client library acknowledges each message once the application has taken it.
    Auto,
    /// Acknowledging one message acknowledges every earlier delivery of the session.
    Client,
    /// Each message is acknowledged on its own.
    Individual,
    /// Like `Auto`, acknowledged lazily in batches; duplicates are tolerated after a crash.
    DupsOk,
    /// Sends and acknowledgements are held until `commit`; `rollback` drops the sends and
    /// gives the received messages back for redelivery.
    Transacted,
}

/// Highest message priority (JMS: 0–9, default 4).
pub const MAX_PRIORITY: u8 = 9;
/// JMS default priority.
pub const DEFAULT_PRIORITY: u8 = 4;

/// One message: a body, string headers, typed properties and the JMS-style fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Assigned by the producer (`<client id>:<sequence>`) unless set by the caller.
    pub id: String,
    /// Where the broker received it; set by the broker on enqueue.
    pub destination: Option<Destination>,
    #[serde(deserialize_with = "body::deserialize")]
    pub body: Bytes,
    pub headers: BTreeMap<String, String>,
    pub properties: BTreeMap<String, Property>,
    /// Milliseconds since the Unix epoch, set by the producer.
    pub timestamp: u64,
    pub correlation_id: Option<String>,
    pub reply_to: Option<Destination>,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// Milliseconds since the Unix epoch after which the message is never delivered; 0 = never.
    pub expiration: u64,
    /// Persistent (the JMS default) or not.
    pub persistent: bool,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            id: String::new(),
            destination: None,
            body: Bytes::new(),
            headers: BTreeMap::new(),
            properties: BTreeMap::new(),
            timestamp: 0,
            correlation_id: None,
            reply_to: None,
            priority: DEFAULT_PRIORITY,
            expiration: 0,
            persistent: true,
        }
    }
}

impl Message {
    /// A message with this body and every other field at its default.
    pub fn new(body: impl Into<Bytes>) -> Message {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    pub fn with_property(mut self, key: impl Into<String>, value: Property) -> Self {
        self.properties.insert(key.into(), value);
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn with_reply_to(mut self, to: Destination) -> Self {
        self.reply_to = Some(to);
        self
    }

    /// Priority, clamped to 0–9.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority.min(MAX_PRIORITY);
        self
    }

    /// Expires `ttl` from now.
    pub fn with_time_to_live(mut self, ttl: Duration) -> Self {
        self.expiration = now_millis().saturating_add(ttl.as_millis() as u64);
        self
    }

    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Whether the message has expired at `now` (milliseconds since the epoch).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expiration != 0 && now >= self.expiration
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_parses_and_prints() {
        let d: Destination = "queue:orders".parse().unwrap();
        assert_eq!(d, Destination::queue("orders"));
        assert_eq!(d.to_string(), "queue:orders");
        assert_eq!(
            "topic:a.b".parse::<Destination>().unwrap(),
            Destination::topic("a.b")
        );
        assert!(matches!(
            "orders".parse::<Destination>(),
            Err(MessageError::BadDestination(_))
        ));
        assert_eq!(
            "queue:".parse::<Destination>(),
            Err(MessageError::EmptyDestinationName)
        );
        let t: Destination = "temp-queue:c1.1".parse().unwrap();
        assert!(t.is_temporary() && t.is_queue());
        assert_eq!(t.to_string(), "temp-queue:c1.1");
        assert_eq!((d.name(), t.name()), ("orders", "c1.1"));
        assert!(Destination::queue("a") < Destination::queue("b"));
        assert!(Destination::queue("z") < Destination::topic("a"));
    }

    #[test]
    fn a_destination_is_written_and_read_as_its_text() {
        let t: Destination = "temp-queue:c1.1".parse().unwrap();
        let bytes = rmp_serde::to_vec(&t).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<String>(&bytes).unwrap(),
            "temp-queue:c1.1"
        );
        assert_eq!(rmp_serde::from_slice::<Destination>(&bytes).unwrap(), t);
        let c: Destination = "queue:a,topic:b".parse().unwrap();
        let bytes = rmp_serde::to_vec(&c).unwrap();
        assert_eq!(rmp_serde::from_slice::<Destination>(&bytes).unwrap(), c);
        let bad = rmp_serde::to_vec("orders").unwrap();
        assert!(rmp_serde::from_slice::<Destination>(&bad).is_err());
    }

    #[test]
    fn composites_list_their_parts() {
        let c: Destination = "queue:orders, topic:audit".parse().unwrap();
        assert_eq!(c.kind(), DestinationKind::Composite);
        assert_eq!(c.to_string(), "queue:orders,topic:audit");
        assert_eq!(
            c.parts(),
            vec![Destination::queue("orders"), Destination::topic("audit")]
        );
        assert!("queue:a,group:g".parse::<Destination>().is_err());
        assert!("queue:a,topic:x.*".parse::<Destination>().is_err());
        assert_eq!(
            Destination::composite(&[Destination::queue("a"), Destination::topic("b")])
                .unwrap()
                .parts()
                .len(),
            2
        );
    }

    #[test]
    fn wildcards() {
        let one = Destination::topic("prices.*");
        let all = Destination::topic("prices.>");
        assert!(one.is_wildcard() && all.is_wildcard());
        assert!(!Destination::topic("prices.eu").is_wildcard());
        assert!(one.matches("prices.eu"));
        assert!(!one.matches("prices.eu.acme"));
        assert!(!one.matches("prices"));
        assert!(all.matches("prices.eu"));
        assert!(all.matches("prices.eu.acme"));
        assert!(!all.matches("prices"));
        assert!(!all.matches("stocks.eu"));
        assert!(Destination::topic("a.*.c").matches("a.b.c"));
        assert!(!Destination::topic("a.*.c").matches("a.b.d"));
    }

    #[test]
    fn expiry() {
        let m = Message::new("x");
        assert!(!m.is_expired_at(u64::MAX));
        let m = Message {
            expiration: 10,
            ..Message::default()
        };
        assert!(m.is_expired_at(10));
        assert!(!m.is_expired_at(9));
    }
}
