//! Publish/subscribe with hierarchical names and wildcards: `prices.*` matches one level,
//! `prices.>` every level below.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example pubsub`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Consumer, Destination, Message};

async fn show(name: &str, consumer: &mut Consumer) -> Result<(), ClientError> {
    while let Some(message) = consumer.receive(Duration::from_millis(300)).await? {
        let topic = message
            .destination
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        println!("{name:>12} got `{}` from {topic}", message.body_text());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;

    let mut one_level = session
        .consumer(Destination::topic("examples.prices.*"))
        .await?;
    let mut every_level = session
        .consumer(Destination::topic("examples.prices.>"))
        .await?;
    let mut exact = session
        .consumer(Destination::topic("examples.prices.eu"))
        .await?;

    for (topic, body) in [
        ("examples.prices.eu", "EUR 1.08"),
        ("examples.prices.us", "USD 1.00"),
        ("examples.prices.eu.acme", "ACME 101.5"),
    ] {
        session
            .producer(Destination::topic(topic))
            .send(Message::new(body))
            .await?;
    }

    show("prices.*", &mut one_level).await?;
    show("prices.>", &mut every_level).await?;
    show("prices.eu", &mut exact).await?;
    drop((one_level, every_level, exact, session));
    connection.close().await
}
