//! Sockets, bounded both ways: the one [`writer`] per connection (broker and client alike)
//! and the one [`reader`] per client connection of the broker. Nothing here knows a
//! protocol or an actor: frames are bytes in and a `tokio_util` decoder's items out.

pub mod reader;
pub mod writer;
