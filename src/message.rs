//! The message model shared by the client, the wire and the broker: [`Message`], its
//! typed [`Property`] values, the [`Destination`] names it travels to, and [`AckMode`].
//!
//! A body is `bytes::Bytes` from the socket to every consumer, and destination names are
//! `Arc<str>`: fanning a message out clones pointers, never payloads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Errors from parsing message-model values (destination names).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("destination `{0}` must look like `queue:NAME` or `topic:NAME`")]
    BadDestination(String),
    #[error("destination name must not be empty")]
    EmptyDestinationName,
}

/// Whether a destination is a queue (each message to one consumer) or a topic (each
/// message to every current subscriber).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DestinationKind {
    Queue,
    Topic,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
        }
    }
}

/// A queue or topic name. Written `queue:orders` / `topic:prices` on the command line
/// and on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Destination {
    kind: DestinationKind,
    name: Arc<str>,
}

impl Destination {
    pub fn queue(name: impl AsRef<str>) -> Destination {
        Destination {
            kind: DestinationKind::Queue,
            name: Arc::from(name.as_ref()),
        }
    }

    pub fn topic(name: impl AsRef<str>) -> Destination {
        Destination {
            kind: DestinationKind::Topic,
            name: Arc::from(name.as_ref()),
        }
    }

    pub fn kind(&self) -> DestinationKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_queue(&self) -> bool {
        self.kind == DestinationKind::Queue
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

impl FromStr for Destination {
    type Err = MessageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| MessageError::BadDestination(s.to_string()))?;
        if name.is_empty() {
            return Err(MessageError::EmptyDestinationName);
        }
        match kind {
            "queue" => Ok(Destination::queue(name)),
            "topic" => Ok(Destination::topic(name)),
            _ => Err(MessageError::BadDestination(s.to_string())),
        }
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
