//! The bridge's wire format as a pure codec: [`Envelope`]s, each a `u32` big-endian length
//! and one MessagePack envelope (the native protocol's framing, `take_framed` and
//! `put_framed`), and the typed messages they carry. No sockets here.
//!
//! An envelope keeps its routing header (`tag`, `to`, the target's `generation`, a
//! `request` id) apart from its `payload`, so a broker routes without decoding the payload
//! and a payload it cannot decode costs that message, not the link's framing. Every
//! remotable message names itself with a stable string tag ([`Remotable::TAG`]), never a
//! Rust type name. Payloads use named MessagePack fields: brokers of different builds meet
//! here, and a changed field is caught by [`BRIDGE_VERSION`] in the handshake.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::destination::{ConsumerControl, Delivery, DestinationError};
use crate::message::Message;
use crate::protocol::{ProtocolError, put_framed, take_framed};
use crate::stats::DestinationStat;

/// The bridge protocol version; a peer with another one is refused at the handshake.
pub const BRIDGE_VERSION: u32 = 3;

/// Why bytes could not become an envelope, or a payload a message.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("malformed `{tag}` payload: {reason}")]
    Payload { tag: String, reason: String },
    #[error("could not encode: {0}")]
    Encode(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// One message between brokers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// What the payload is ([`Remotable::TAG`]).
    pub tag: String,
    /// The actor it is for: `queue:orders`, `consumer/42`, `bridge`.
    pub to: String,
    /// The target broker's generation; a broker drops envelopes meant for an earlier run.
    pub generation: u64,
    /// Matches a reply to its request (0: none expected).
    pub request: u64,
    pub payload: Bytes,
}

impl Envelope {
    /// An envelope carrying `message`.
    pub fn new<M: Remotable>(
        to: impl Into<String>,
        generation: u64,
        request: u64,
        message: &M,
    ) -> Result<Envelope, EnvelopeError> {
        let payload =
            rmp_serde::to_vec_named(message).map_err(|e| EnvelopeError::Encode(e.to_string()))?;
        Ok(Envelope {
            tag: M::TAG.to_string(),
            to: to.into(),
            generation,
            request,
            payload: payload.into(),
        })
    }

    /// The payload as `M`, if the tag says it is one.
    pub fn open<M: Remotable>(&self) -> Result<M, EnvelopeError> {
        let malformed = |reason: String| EnvelopeError::Payload {
            tag: self.tag.clone(),
            reason,
        };
        if self.tag != M::TAG {
            return Err(malformed(format!("expected `{}`", M::TAG)));
        }
        rmp_serde::from_slice(&self.payload).map_err(|e| malformed(e.to_string()))
    }

    /// The envelope with its length prefix, ready for a link's writer.
    pub fn encode(&self, max_bytes: usize) -> Result<Bytes, EnvelopeError> {
        let mut buf = BytesMut::new();
        EnvelopeCodec::new(max_bytes).encode(self, &mut buf)?;
        Ok(buf.freeze())
    }
}

/// A message that crosses the bridge, with its stable tag.
pub trait Remotable: Serialize + DeserializeOwned {
    const TAG: &'static str;
}

/// First envelope each way on a new link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub node: String,
    pub generation: u64,
    pub version: u32,
}

impl Remotable for Hello {
    const TAG: &'static str = "bridge.hello";
}

/// The handshake was refused, and why; the link closes after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
}

impl Remotable for Refused {
    const TAG: &'static str = "bridge.refused";
}

/// Keeps a quiet link alive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat;

impl Remotable for Heartbeat {
    const TAG: &'static str = "bridge.heartbeat";
}

/// Put messages on the destination `to` (answered with a [`Reply`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteEnqueue {
    pub messages: Vec<Arc<Message>>,
}

impl Remotable for RemoteEnqueue {
    const TAG: &'static str = "destination.enqueue";
}

/// Deliver from the destination `to` to the consumer `consumer` on the sending broker,
/// `prefetch` deliveries ahead of settlements (answered with a [`Reply`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteSubscribe {
    pub consumer: u64,
    pub prefetch: u32,
}

impl Remotable for RemoteSubscribe {
    const TAG: &'static str = "destination.subscribe";
}

/// What the consumer `consumer` on the sending broker says about its deliveries (no
/// reply): the same [`ConsumerControl`] a local consumer sends its destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteControl {
    pub consumer: u64,
    pub control: ConsumerControl,
}

impl Remotable for RemoteControl {
    const TAG: &'static str = "destination.control";
}

/// Ask the destination `to` for its counters (answered with a [`Reply`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteStat;

impl Remotable for RemoteStat {
    const TAG: &'static str = "destination.stat";
}

/// The answer to the request with the envelope's `request` id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply(pub Result<ReplyBody, DestinationError>);

/// What a request answers with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplyBody {
    Done,
    Stat(DestinationStat),
}

impl Remotable for Reply {
    const TAG: &'static str = "reply";
}

/// Deliveries for the consumer `consumer` on the receiving broker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteDeliver {
    pub consumer: u64,
    pub deliveries: Vec<Delivery>,
}

impl Remotable for RemoteDeliver {
    const TAG: &'static str = "consumer.deliver";
}

/// The home destination dropped the consumer `consumer`, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteEvicted {
    pub consumer: u64,
    pub reason: String,
}

impl Remotable for RemoteEvicted {
    const TAG: &'static str = "consumer.evicted";
}

/// What a link's reader routes: an envelope's payload, typed. The string tag is matched
/// here and only here; everything after is a match on this enum.
#[derive(Debug)]
pub enum Routed {
    Heartbeat,
    Reply(Reply),
    Deliver(RemoteDeliver),
    Evicted(RemoteEvicted),
    Enqueue(RemoteEnqueue),
    Subscribe(RemoteSubscribe),
    Control(RemoteControl),
    Stat,
}

impl Routed {
    /// The envelope's payload; `None` for a tag this build does not route (logged).
    pub fn open(envelope: &Envelope) -> Result<Option<Routed>, EnvelopeError> {
        Ok(Some(match envelope.tag.as_str() {
            Heartbeat::TAG => Routed::Heartbeat,
            Reply::TAG => Routed::Reply(envelope.open()?),
            RemoteDeliver::TAG => Routed::Deliver(envelope.open()?),
            RemoteEvicted::TAG => Routed::Evicted(envelope.open()?),
            RemoteEnqueue::TAG => Routed::Enqueue(envelope.open()?),
            RemoteSubscribe::TAG => Routed::Subscribe(envelope.open()?),
            RemoteControl::TAG => Routed::Control(envelope.open()?),
            RemoteStat::TAG => {
                let RemoteStat = envelope.open()?;
                Routed::Stat
            }
            _ => return Ok(None),
        }))
    }
}

/// Length-prefixed envelopes, refusing any longer than `max_bytes`.
#[derive(Clone, Debug)]
pub struct EnvelopeCodec {
    max_bytes: usize,
}

impl EnvelopeCodec {
    pub fn new(max_bytes: usize) -> EnvelopeCodec {
        EnvelopeCodec { max_bytes }
    }
}

impl Decoder for EnvelopeCodec {
    type Item = Envelope;
    type Error = EnvelopeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, EnvelopeError> {
        let Some(body) = take_framed(src, self.max_bytes)? else {
            return Ok(None);
        };
        rmp_serde::from_slice(&body)
            .map(Some)
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

impl Encoder<&Envelope> for EnvelopeCodec {
    type Error = EnvelopeError;

    fn encode(&mut self, envelope: &Envelope, dst: &mut BytesMut) -> Result<(), EnvelopeError> {
        Ok(put_framed(envelope, dst, self.max_bytes)?)
    }
}

/// The native protocol's framing errors, as the bridge names them.
impl From<ProtocolError> for EnvelopeError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::FrameTooLarge { len, max } => EnvelopeError::TooLarge { len, max },
            ProtocolError::Malformed(reason) => EnvelopeError::Malformed(reason),
            ProtocolError::Encode(reason) => EnvelopeError::Encode(reason),
            ProtocolError::Io(e) => EnvelopeError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let sent = Envelope::new(
            "queue:orders",
            7,
            3,
            &RemoteEnqueue {
                messages: vec![Arc::new(Message::new("hi"))],
            },
        )
        .expect("encodes");
        let mut buf = BytesMut::from(&sent.encode(1 << 20).expect("fits")[..]);
        let mut codec = EnvelopeCodec::new(1 << 20);
        let got = codec.decode(&mut buf).expect("valid").expect("whole");
        assert_eq!(got, sent);
        let opened: RemoteEnqueue = got.open().expect("an enqueue");
        assert_eq!(&opened.messages[0].body[..], b"hi");
        assert!(got.open::<RemoteStat>().is_err());

        let mut garbage = BytesMut::from(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(codec.decode(&mut garbage).is_err());
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut huge),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }
}
