//! STOMP frames: a command, headers in order (the first of a repeated header wins), a body.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;

/// Every STOMP 1.2 command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// CONNECT, STOMP and CONNECTED headers are not escaped (STOMP 1.2).
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

/// A header's name: STOMP's own names are `&'static` (decoding one allocates nothing),
/// any other is owned.
pub type HeaderName = Cow<'static, str>;

/// `name` as a [`HeaderName`]: one of STOMP's own without allocating.
pub fn header_name(name: &str) -> HeaderName {
    known_name(name).unwrap_or_else(|| Cow::Owned(name.to_string()))
}

/// `name` if it is one of STOMP's own header names (1.2's and the extensions brokers
/// commonly read), borrowed. Looked up among those of its length only: one or two
/// comparisons for the common ones.
pub fn known_name(name: &str) -> Option<HeaderName> {
    let same_length: &[&'static str] = match name.len() {
        2 => &["id"],
        3 => &["ack"],
        4 => &["host"],
        5 => &["login"],
        6 => &["server"],
        7 => &["receipt", "expires", "message", "session", "version"],
        8 => &["priority", "reply-to", "selector", "passcode"],
        9 => &["timestamp"],
        10 => &["persistent", "receipt-id", "message-id", "heart-beat"],
        11 => &["destination", "transaction", "redelivered"],
        12 => &["subscription", "content-type"],
        14 => &[
            "content-length",
            "correlation-id",
            "accept-version",
            "prefetch-count",
        ],
        _ => return None,
    };
    same_length
        .iter()
        .find(|known| **known == name)
        .map(|known| Cow::Borrowed(*known))
}

/// One STOMP frame: a command, headers in order, a body.
///
/// Every header value lives in one `String` (`text`), each header holding where its value
/// is: a decoded frame copies its header section once and points into it (a value with
/// escapes to undo is appended, undone), instead of allocating a `String` per header.
#[derive(Clone)]
pub struct StompFrame {
    pub command: Command,
    /// The values' text (for a decoded frame, its whole header section).
    text: String,
    /// Each header's name and where its value is in `text`.
    headers: Vec<(HeaderName, Range<usize>)>,
    pub body: Bytes,
}

impl StompFrame {
    pub fn new(command: Command) -> StompFrame {
        StompFrame::with_text(command, String::new(), 0)
    }

    /// A frame whose header values are found in `text` (the decoder's).
    pub(super) fn with_text(command: Command, text: String, headers: usize) -> StompFrame {
        StompFrame {
            command,
            text,
            headers: Vec::with_capacity(headers),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> StompFrame {
        let value = self.append_text(value.as_ref());
        self.push_header(header_name(name.as_ref()), value);
        self
    }

    /// A header whose value is `text[value]` (the decoder's).
    pub(super) fn push_header(&mut self, name: HeaderName, value: Range<usize>) {
        self.headers.push((name, value));
    }

    /// The values' text (the decoder reads the header lines from it).
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// Appends a value to the text (one whose escapes the decoder undid), answering where
    /// it is.
    pub(super) fn append_text(&mut self, value: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(value);
        start..self.text.len()
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> StompFrame {
        self.body = body.into();
        self
    }

    /// The headers in order, repeated ones included.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_ref(), self.value(value)))
    }

    #[cfg(test)]
    pub(super) fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(name, _)| name)
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, value)| self.value(value))
    }

    fn value(&self, value: &Range<usize>) -> &str {
        self.text.get(value.clone()).unwrap_or_default()
    }
}

/// Equal when the commands, the headers in order and the bodies are (however the values'
/// text is laid out).
impl PartialEq for StompFrame {
    fn eq(&self, other: &StompFrame) -> bool {
        self.command == other.command
            && self.body == other.body
            && self.headers.len() == other.headers.len()
            && self.headers().eq(other.headers())
    }
}

impl Eq for StompFrame {}

impl fmt::Debug for StompFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StompFrame")
            .field("command", &self.command)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body", &self.body)
            .finish()
    }
}

/// What the decoder yields: a frame, or a heart-beat (an end-of-line between frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    Frame(StompFrame),
    Heartbeat,
}
