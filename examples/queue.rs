//! A producer and two competing consumers on one queue.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example queue`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let orders = Destination::queue("examples.orders");

    let mut first = session.consumer(orders.clone()).await?;
    let mut second = session.consumer(orders.clone()).await?;
    let producer = session.producer(orders);
    for i in 0..10 {
        producer.send(Message::new(format!("order {i}"))).await?;
    }
    println!("sent 10 orders");

    let mut received = 0;
    for (name, consumer) in [("first", &mut first), ("second", &mut second)] {
        while let Some(message) = consumer.receive(Duration::from_millis(300)).await? {
            println!("{name} consumer got {}", message.body_text());
            received += 1;
        }
    }
    println!("{received} orders received, each by exactly one consumer");
    drop((first, second, producer, session));
    connection.close().await
}
