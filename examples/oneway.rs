//! One-way sends: `send_oneway` returns as soon as the message is written, with no
//! confirmation awaited.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example oneway`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let events = Destination::queue("examples.events");
    let mut consumer = session.consumer(events.clone()).await?;

    let producer = session.producer(events);
    for i in 0..1000 {
        producer.send_oneway(Message::new(format!("event {i}")))?;
    }
    println!("wrote 1000 events without waiting for confirmations");

    let mut received = 0;
    while consumer.receive(Duration::from_secs(2)).await?.is_some() {
        received += 1;
        if received == 1000 {
            break;
        }
    }
    println!("received {received} events");
    drop((consumer, producer, session));
    connection.close().await?;
    if received == 1000 {
        Ok(())
    } else {
        Err(ClientError::Timeout(format!(
            "1000 events (got {received})"
        )))
    }
}
