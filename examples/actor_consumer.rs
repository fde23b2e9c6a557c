//! An actix actor as a consumer: each delivery is a message the actor handles.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example actor_consumer`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actix::{Actor, Context, Handler};
use actormq::client::{AckMode, ClientError, Connection, Delivery, Destination, Message};

/// Counts orders and prints each one.
struct OrderHandler {
    handled: usize,
    done: Option<tokio::sync::oneshot::Sender<usize>>,
    expected: usize,
}

impl Actor for OrderHandler {
    type Context = Context<Self>;
}

impl Handler<Delivery> for OrderHandler {
    type Result = ();

    fn handle(&mut self, delivery: Delivery, _ctx: &mut Context<Self>) {
        self.handled += 1;
        println!("actor handled {}", delivery.message.body_text());
        if self.handled == self.expected
            && let Some(done) = self.done.take()
        {
            let _ = done.send(self.handled);
        }
    }
}

#[actix_rt::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let queue = Destination::queue("examples.actor");

    let (done, finished) = tokio::sync::oneshot::channel();
    let handler = OrderHandler {
        handled: 0,
        done: Some(done),
        expected: 5,
    }
    .start();
    let forwarding = session
        .consumer(queue.clone())
        .await?
        .forward_to(handler.recipient());

    let producer = session.producer(queue);
    for i in 0..5 {
        producer.send(Message::new(format!("order {i}"))).await?;
    }
    match tokio::time::timeout(Duration::from_secs(10), finished).await {
        Ok(Ok(count)) => println!("the actor handled {count} orders"),
        _ => return Err(ClientError::Timeout("the actor to handle 5 orders".into())),
    }
    forwarding.abort();
    drop((producer, session));
    connection.close().await
}
