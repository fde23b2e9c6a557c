//! The broker's front-ends, one per protocol: each owns client sockets (a bounded reader
//! and writer from `net`), speaks its protocol (`protocol`), and maps it onto the sessions
//! and consumers of `session`. [`native`] speaks actormq's own protocol, [`stomp`] STOMP
//! 1.0–1.2; neither knows the other.

pub mod native;
pub mod stomp;

use std::sync::Arc;

use actix::{Addr, Message as ActixMessage};
use bytes::Bytes;

use crate::config::{Config, Limits};
use crate::destination::DestinationRegistry;
use crate::net::reader::ReadBudget;
use crate::net::writer::{CloseReason, FrameSink, WriterLimits};
use crate::session::Resends;

/// What every connection of a broker is given: where destinations are, the settings, the
/// budget of frames still arriving (shared by every listener), and the memory of
/// producers' sends.
#[derive(Clone)]
pub struct Services {
    pub registry: Addr<DestinationRegistry>,
    pub config: Config,
    pub budget: Arc<ReadBudget>,
    pub resends: Arc<Resends>,
}

/// A connection's writer stopped, and why.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct WriterStopped(pub CloseReason);

/// The writer settings from `limits`; `last_words` is written to a slow consumer.
pub(crate) fn writer_limits(limits: &Limits, last_words: Option<Bytes>) -> WriterLimits {
    WriterLimits {
        max_pending_bytes: limits.max_pending_write_bytes,
        batch_bytes: limits.write_batch_bytes,
        write_timeout: std::time::Duration::from_millis(limits.write_timeout_ms),
        slow_consumer_frame: last_words,
    }
}

/// What a slow consumer is told before it is disconnected.
pub(crate) fn slow_consumer_reason(limits: &Limits) -> String {
    format!(
        "slow consumer: more than {} bytes were waiting to be written to this connection",
        limits.max_pending_write_bytes
    )
}

/// Starts a connection's writer on the current arbiter; `owner` hears when it stops.
pub(crate) fn start_writer(
    socket: tokio::net::tcp::OwnedWriteHalf,
    limits: WriterLimits,
    owner: actix::Recipient<WriterStopped>,
) -> FrameSink {
    let (sink, run) = crate::net::writer::writer(socket, limits);
    actix::spawn(async move {
        owner.do_send(WriterStopped(run.await));
    });
    sink
}
