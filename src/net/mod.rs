//! Sockets, bounded both ways: the one [`writer`] per connection (broker and client alike)
//! and the one [`reader`] per client connection of the broker. Nothing here knows a
//! protocol or an actor: frames are bytes in and a `tokio_util` decoder's items out.

pub mod reader;
pub mod writer;

use std::time::Duration;

/// Pause after a failed accept (for example when the process is out of file descriptors),
/// so that an accept loop does not spin. Used by the client listeners and the cluster
/// bridge alike.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
