//! Callbacks: component A sends a request naming a callback endpoint — here an actix actor
//! A registered as an endpoint — and returns at once; B answers when it is done, and A's
//! actor handles the answer later.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example callback`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actix::{Actor, Context, Handler};
use actormq::client::{AckMode, ClientError, Connection, Destination, Message, Reply};

/// A's actor: handles answers whenever they arrive.
struct Ledger {
    done: Option<tokio::sync::oneshot::Sender<String>>,
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Reply> for Ledger {
    type Result = ();

    fn handle(&mut self, reply: Reply, _ctx: &mut Context<Self>) {
        println!(
            "A's actor got the answer `{}` for request {:?}",
            reply.message.body_text(),
            reply.message.correlation_id
        );
        if let Some(done) = self.done.take() {
            let _ = done.send(reply.message.body_text().to_string());
        }
    }
}

#[actix_rt::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let service = Destination::queue("examples.credit-check");

    // B: takes its time.
    let b = Connection::connect(&url).await?;
    let serving = b
        .session(AckMode::Auto)?
        .responder()
        .serve(service.clone(), |request| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Message::new(format!("approved: {}", request.body_text()))
        })
        .await?;

    // A: registers its actor as the callback endpoint and sends.
    let a = Connection::connect(&url).await?;
    let session = a.session(AckMode::Auto)?;
    let (done, answered) = tokio::sync::oneshot::channel();
    let endpoint = session
        .callback_endpoint(Ledger { done: Some(done) }.start().recipient())
        .await?;
    let correlation = session
        .producer(service)
        .send_with_callback(Message::new("order 42"), endpoint.destination())
        .await?;
    println!("A sent request {correlation} and carries on");

    match tokio::time::timeout(Duration::from_secs(10), answered).await {
        Ok(Ok(answer)) => println!("done: {answer}"),
        _ => return Err(ClientError::Timeout("the callback".into())),
    }
    serving.abort();
    endpoint.close();
    a.close().await?;
    b.close().await
}
