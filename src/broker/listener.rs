//! A listener: accepts sockets and starts one connection actor for each (native
//! [`ConnectionActor`] or STOMP), on the next arbiter in turn.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Actor;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::constants::ACCEPT_BACKOFF;
use crate::frontend::Services;
use crate::frontend::native::ConnectionActor;
use crate::frontend::stomp::StompConnectionActor;
use crate::runtime::ArbiterPool;

/// Starts the connection actor for one accepted socket; runs on the arbiter that will own it.
pub(super) type StartConnection = fn(TcpStream, SocketAddr, Services);

/// The native protocol's connection actor.
pub(super) fn native(stream: TcpStream, peer: SocketAddr, services: Services) {
    ConnectionActor::create(move |ctx| ConnectionActor::new(stream, peer, services, ctx));
}

/// The STOMP listener's connection actor.
pub(super) fn stomp(stream: TcpStream, peer: SocketAddr, services: Services) {
    StompConnectionActor::create(move |ctx| StompConnectionActor::new(stream, peer, services, ctx));
}

/// Runs the accept loop as a task of the current arbiter; abort the handle to stop it.
pub(super) fn spawn(
    socket: Arc<TcpListener>,
    arbiters: ArbiterPool,
    services: Services,
    start: StartConnection,
) -> JoinHandle<()> {
    actix::spawn(async move {
        loop {
            let (stream, peer) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
            }
            // The socket moves to the arbiter that will own it and is registered with that
            // arbiter's runtime there.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, "cannot hand over connection: {e}");
                    continue;
                }
            };
            let services = services.clone();
            arbiters
                .next()
                .spawn_fn(move || match TcpStream::from_std(stream) {
                    Ok(stream) => start(stream, peer, services),
                    Err(e) => tracing::warn!(%peer, "cannot adopt connection: {e}"),
                });
        }
    })
}
