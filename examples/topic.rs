//! Publish/subscribe: every subscriber of a topic receives every message.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example topic`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let prices = Destination::topic("examples.prices");

    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(session.consumer(prices.clone()).await?);
    }
    let publisher = session.producer(prices);
    for (symbol, price) in [("ACME", 101.5), ("INITECH", 42.0)] {
        publisher
            .send(Message::new(format!("{symbol} {price}")))
            .await?;
    }

    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        while let Some(message) = subscriber.receive(Duration::from_millis(300)).await? {
            println!("subscriber {n} got {}", message.body_text());
        }
    }
    drop((subscribers, publisher, session));
    connection.close().await
}
