//! How a message body comes out of a decoded buffer: copied, or — for a body of at least
//! [`SHARED_BODY_BYTES`] decoded inside [`sharing_bodies`] — as a slice of that buffer,
//! sharing its allocation (a 1 MiB body is then never copied between the socket and the
//! consumers). Short bodies are always copied, so that a small message kept long does not
//! pin a large buffer.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{self, SeqAccess, Visitor};

use crate::constants::SHARED_BODY_BYTES;

thread_local! {
    /// The buffer being decoded on this thread inside [`sharing_bodies`].
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` (which reads from `source`) so that long bodies it decodes share
/// `source`'s allocation instead of being copied out of it.
pub fn sharing_bodies<T>(source: &Bytes, decode: impl FnOnce() -> T) -> T {
    struct Reset(Option<Bytes>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|s| s.borrow_mut().replace(source.clone()));
    let _reset = Reset(previous);
    decode()
}

/// `bytes`, shared with the buffer being decoded if it lies in it and is long enough.
pub(crate) fn share_or_copy(bytes: &[u8]) -> Bytes {
    if bytes.len() >= SHARED_BODY_BYTES {
        let shared = SOURCE.with(|s| {
            let source = s.borrow();
            let source = source.as_ref()?;
            let (start, end) = (
                source.as_ptr() as usize,
                source.as_ptr() as usize + source.len(),
            );
            let at = bytes.as_ptr() as usize;
            (at >= start && at + bytes.len() <= end).then(|| source.slice_ref(bytes))
        });
        if let Some(shared) = shared {
            return shared;
        }
    }
    Bytes::copy_from_slice(bytes)
}

/// Deserializes a body as `bytes`' own serde support does (bytes, a string, or a sequence
/// of bytes), borrowing from the buffer being decoded where it can.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_byte_buf(BodyVisitor)
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message body (bytes)")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share_or_copy(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn decoded(body_len: usize, sharing: bool) -> (Bytes, Message) {
        let message = Message::new(vec![5u8; body_len]);
        let source = Bytes::from(rmp_serde::to_vec(&message).unwrap());
        let decode = || rmp_serde::from_slice::<Message>(&source).unwrap();
        let back = if sharing {
            sharing_bodies(&source, decode)
        } else {
            decode()
        };
        assert_eq!(back, message);
        (source, back)
    }

    fn within(body: &Bytes, source: &Bytes) -> bool {
        let (start, end) = (
            source.as_ptr() as usize,
            source.as_ptr() as usize + source.len(),
        );
        (start..end).contains(&(body.as_ptr() as usize))
    }

    #[test]
    fn a_long_body_decoded_while_sharing_is_a_slice_of_its_buffer() {
        let (source, message) = decoded(SHARED_BODY_BYTES, true);
        assert!(within(&message.body, &source));
    }

    #[test]
    fn short_bodies_and_bodies_decoded_without_sharing_are_copies() {
        for (len, sharing) in [(SHARED_BODY_BYTES - 1, true), (SHARED_BODY_BYTES, false)] {
            let (source, message) = decoded(len, sharing);
            assert!(
                !within(&message.body, &source),
                "{len} bytes, sharing {sharing}"
            );
        }
    }

    #[test]
    fn the_buffer_is_forgotten_after_decoding() {
        let source = Bytes::from(vec![1u8; 16]);
        sharing_bodies(&source, || ());
        assert!(SOURCE.with(|s| s.borrow().is_none()));
    }
}
