//! [`ConnectionActor`]: one client socket. It owns the read half (decoded by
//! [`FrameCodec`]), the handshake, and the connection's sessions; everything it and its
//! sessions and consumers write goes through the connection's bounded [`FrameSink`].
//!
//! Bad input — bytes that do not decode, an oversize length, an unknown frame, a wrong
//! protocol version, a frame before the handshake, a frame not finished in time — gets an
//! `Error` frame naming the reason, then the connection closes. Nothing here can take down
//! another connection. Sends (and commits) read and not yet accepted count against the
//! connection's [`SendWindow`]; while it is full the socket is not read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use actix::prelude::*;
use tokio::net::TcpStream;

use super::wire::NativeWire;
use super::write_frame;
use crate::config::Limits;
use crate::destination::{
    CollectStats, ConnectionId, CreateTemporary, DeleteDurable, DestinationError,
    DestinationRegistry, DropTemporaries, Locate, footprint,
};
use crate::frontend::{Services, WriterStopped, slow_consumer_reason, start_writer, writer_limits};
use crate::message::{Destination, Message};
use crate::net::reader::{FrameReader, ReadError, SendWindow};
use crate::net::writer::{CloseReason, FrameSink};
use crate::protocol::{
    ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, ProtocolError, encode_frame,
};
use crate::session::{ClientWire, Resends, SessionActor, SessionCommand, Shutdown};

enum State {
    AwaitingHello,
    Open { client_id: String },
}

pub struct ConnectionActor {
    id: ConnectionId,
    peer: SocketAddr,
    broker_name: String,
    limits: Limits,
    sink: FrameSink,
    /// The same writer, as sessions and consumers use it.
    wire: NativeWire,
    registry: Addr<DestinationRegistry>,
    resends: Arc<Resends>,
    state: State,
    sessions: HashMap<u32, Addr<SessionActor<NativeWire>>>,
    /// Sends read and not yet accepted.
    window: Arc<SendWindow>,
}

impl ConnectionActor {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        services: Services,
        ctx: &mut Context<Self>,
    ) -> ConnectionActor {
        let Services {
            registry,
            config,
            budget,
            resends,
        } = services;
        let limits = config.limits;
        let (read, write) = stream.into_split();
        let last_words = Frame::Error {
            code: ErrorCode::SlowConsumer,
            message: slow_consumer_reason(&limits),
        };
        let last_words = encode_frame(&last_words, limits.max_frame_bytes as usize).ok();
        let sink = start_writer(
            write,
            writer_limits(&limits, last_words),
            ctx.address().recipient(),
        );
        let window = SendWindow::new(limits.max_inflight_send_bytes);
        ctx.add_stream(FrameReader::new(
            read,
            FrameCodec::new(limits.max_frame_bytes as usize).sharing_bodies(),
            window.clone(),
            budget,
            Duration::from_millis(limits.frame_read_timeout_ms),
        ));
        ctx.run_later(
            Duration::from_millis(limits.handshake_timeout_ms),
            |act, ctx| {
                if matches!(act.state, State::AwaitingHello) {
                    act.fail(
                        ErrorCode::HandshakeTimeout,
                        "no Hello within the handshake timeout".into(),
                        ctx,
                    );
                }
            },
        );
        tracing::debug!(%peer, "connection accepted");
        ConnectionActor {
            id: ConnectionId::next(),
            peer,
            broker_name: config.broker.name,
            wire: NativeWire::new(sink.clone(), limits.clone()),
            limits,
            sink,
            registry,
            resends,
            state: State::AwaitingHello,
            sessions: HashMap::new(),
            window,
        }
    }

    /// Refuses a message whose body is over the limit (the frame may hold it, with room
    /// for headers, but no message is larger than `max_body_bytes`).
    fn check_bodies<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a Message>,
    ) -> Result<usize, String> {
        let mut bytes = 0;
        for message in messages {
            if message.body.len() > self.limits.max_body_bytes {
                return Err(format!(
                    "a message body of {} bytes exceeds the limit of {}",
                    message.body.len(),
                    self.limits.max_body_bytes
                ));
            }
            bytes += footprint(message);
        }
        Ok(bytes)
    }

    /// Tells the client why, closes the connection, and stops.
    fn fail(&mut self, code: ErrorCode, message: String, ctx: &mut Context<Self>) {
        tracing::warn!(peer = %self.peer, ?code, "closing connection: {message}");
        let frame = Frame::Error { code, message };
        self.sink
            .close(encode_frame(&frame, self.limits.max_frame_bytes as usize).ok());
        ctx.stop();
    }

    fn send(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        if let Err(e) = write_frame(&self.sink, frame, &self.limits) {
            tracing::debug!(peer = %self.peer, "cannot write {}: {e}", frame.name());
            ctx.stop();
        }
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        if let State::AwaitingHello = self.state {
            return self.on_hello(frame, ctx);
        }
        let Some(frame) = self.on_connection_frame(frame, ctx) else {
            return;
        };
        match self.session_command(frame) {
            Ok((session, command)) => self.pass_to_session(session, command, ctx),
            Err((code, reason)) => self.fail(code, reason, ctx),
        }
    }

    /// Handles a frame for the connection itself (sessions, stat, temporaries, goodbye);
    /// hands back any other.
    fn on_connection_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) -> Option<Frame> {
        match frame {
            Frame::OpenSession { session, ack_mode } => {
                if self.sessions.contains_key(&session) {
                    let reason = format!("session {session} is already open");
                    self.fail(ErrorCode::ProtocolViolation, reason, ctx);
                    return None;
                }
                let addr = SessionActor::new(
                    session,
                    self.id,
                    ack_mode,
                    self.wire.clone(),
                    self.registry.clone(),
                    self.limits.clone(),
                    self.resends.clone(),
                )
                .start();
                self.sessions.insert(session, addr);
            }
            Frame::CloseSession { session } => {
                if let Some(addr) = self.sessions.remove(&session) {
                    addr.do_send(Shutdown);
                }
            }
            Frame::StatRequest { request } => {
                let stats = self.registry.send(CollectStats);
                ctx.spawn(stats.into_actor(self).map(move |result, act, ctx| {
                    let stats = result.unwrap_or_default();
                    let reply = Frame::StatReply {
                        request,
                        destinations: stats.destinations,
                        store: stats.store,
                        members: stats.members,
                        master: stats.master,
                    };
                    act.send(&reply, ctx);
                }));
            }
            Frame::Locate {
                request,
                destination,
            } => {
                let located = self.registry.send(Locate(destination));
                ctx.spawn(located.into_actor(self).map(move |result, act, ctx| {
                    let home = result.ok().flatten();
                    act.send(&Frame::Located { request, home }, ctx);
                }));
            }
            Frame::Resolve {
                request,
                producer,
                seq,
            } => {
                let resends = self.resends.clone();
                let kept = async move { resends.was_kept(&producer, seq).await };
                ctx.spawn(kept.into_actor(self).map(move |kept, act, ctx| {
                    act.send(&Frame::Resolved { request, kept }, ctx);
                }));
            }
            Frame::CreateTemporary {
                destination,
                receipt,
            } => {
                let created = self.registry.send(CreateTemporary {
                    destination: destination.clone(),
                    owner: self.id,
                });
                self.receipt_when(created, &destination, receipt, ctx);
            }
            Frame::DeleteDurable {
                destination,
                receipt,
            } => {
                let deleted = self.registry.send(DeleteDurable(destination.clone()));
                self.receipt_when(deleted, &destination, receipt, ctx);
            }
            Frame::Disconnect => {
                tracing::debug!(peer = %self.peer, "client disconnected");
                self.sink.close(None);
                ctx.stop();
            }
            other => return Some(other),
        }
        None
    }

    /// Answers `receipt` with what the registry says about `destination`.
    fn receipt_when(
        &mut self,
        answer: impl Future<Output = Result<Result<(), DestinationError>, MailboxError>> + 'static,
        destination: &Destination,
        receipt: u64,
        ctx: &mut Context<Self>,
    ) {
        let unavailable = DestinationError::Unavailable(destination.to_string());
        ctx.spawn(answer.into_actor(self).map(move |result, act, _ctx| {
            act.wire
                .receipt(receipt, result.unwrap_or(Err(unavailable)));
        }));
    }

    /// A frame for one of the connection's sessions, as the command it is.
    fn session_command(&self, frame: Frame) -> Result<(u32, SessionCommand), (ErrorCode, String)> {
        let refused = |reason| (ErrorCode::Refused, reason);
        Ok(match frame {
            Frame::Send {
                session,
                destination,
                receipt,
                messages,
                origin,
            } => {
                if let Some(origin) = &origin {
                    origin.check().map_err(refused)?;
                }
                let bytes = self.check_bodies(&messages).map_err(refused)?;
                let permit = self.window.take(bytes);
                let send = SessionCommand::Send {
                    destination,
                    receipt,
                    messages,
                    permit,
                    origin,
                };
                (session, send)
            }
            Frame::Subscribe {
                session,
                consumer,
                destination,
                prefetch,
                receipt,
            } => (
                session,
                SessionCommand::Subscribe {
                    consumer,
                    destination,
                    prefetch,
                    receipt,
                },
            ),
            Frame::Unsubscribe { session, consumer } => {
                (session, SessionCommand::Unsubscribe { consumer })
            }
            Frame::Ack {
                session,
                acks,
                receipt,
            } => (session, SessionCommand::Ack { acks, receipt }),
            Frame::Release { session, releases } => (session, SessionCommand::Release { releases }),
            Frame::Commit {
                session,
                receipt,
                sends,
                acks,
                origin,
            } => {
                if let Some(origin) = &origin {
                    origin.check().map_err(refused)?;
                }
                let messages = sends.iter().flat_map(|s| &s.messages);
                let bytes = self.check_bodies(messages).map_err(refused)?;
                let permit = self.window.take(bytes);
                let commit = SessionCommand::Commit {
                    receipt,
                    sends,
                    acks,
                    permit,
                    origin,
                };
                (session, commit)
            }
            Frame::Pull {
                session,
                consumer,
                count,
            } => (session, SessionCommand::Pull { consumer, count }),
            other => {
                let reason = format!("a client may not send {} here", other.name());
                return Err((ErrorCode::ProtocolViolation, reason));
            }
        })
    }

    fn pass_to_session(&mut self, session: u32, command: SessionCommand, ctx: &mut Context<Self>) {
        match self.sessions.get(&session) {
            Some(addr) => addr.do_send(command),
            // Acks and pulls may race the close of their session: nothing is left to do.
            None if matches!(
                command,
                SessionCommand::Ack { .. }
                    | SessionCommand::Pull { .. }
                    | SessionCommand::Unsubscribe { .. }
            ) =>
            {
                tracing::debug!(peer = %self.peer, session, "command for a closed session ignored");
            }
            None => self.fail(
                ErrorCode::ProtocolViolation,
                format!("session {session} is not open"),
                ctx,
            ),
        }
    }

    fn on_hello(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Hello { version, client_id } if version == PROTOCOL_VERSION => {
                tracing::debug!(peer = %self.peer, %client_id, "handshake complete");
                self.state = State::Open { client_id };
                let welcome = Frame::Welcome {
                    version: PROTOCOL_VERSION,
                    broker: self.broker_name.clone(),
                    connection_id: format!("{}.{}", self.broker_name, self.id.0),
                    max_frame_bytes: self.limits.max_frame_bytes,
                };
                self.send(&welcome, ctx);
            }
            Frame::Hello { version, .. } => self.fail(
                ErrorCode::UnsupportedVersion,
                format!("unsupported protocol version {version}; this broker speaks version {PROTOCOL_VERSION}"),
                ctx,
            ),
            other => self.fail(
                ErrorCode::ProtocolViolation,
                format!("expected Hello first, got {}", other.name()),
                ctx,
            ),
        }
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, session) in self.sessions.drain() {
            session.do_send(Shutdown);
        }
        self.registry.do_send(DropTemporaries(self.id));
        // Anything still queued is written; then the socket closes.
        self.sink.close(None);
        let client = match &self.state {
            State::Open { client_id } => client_id.as_str(),
            State::AwaitingHello => "-",
        };
        tracing::debug!(peer = %self.peer, client, "connection closed");
    }
}

impl StreamHandler<Result<Frame, ReadError<ProtocolError>>> for ConnectionActor {
    fn handle(&mut self, item: Result<Frame, ReadError<ProtocolError>>, ctx: &mut Context<Self>) {
        match item {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(ReadError::Decode(ProtocolError::Io(e))) => {
                tracing::debug!(peer = %self.peer, "read failed: {e}");
                ctx.stop();
            }
            Err(e) => self.fail(ErrorCode::MalformedFrame, e.to_string(), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<WriterStopped> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, WriterStopped(reason): WriterStopped, ctx: &mut Context<Self>) {
        match reason {
            CloseReason::Finished => {}
            CloseReason::Io(_) => {
                tracing::debug!(peer = %self.peer, "closing connection: {reason}")
            }
            _ => tracing::warn!(peer = %self.peer, "closing connection: {reason}"),
        }
        ctx.stop();
    }
}
