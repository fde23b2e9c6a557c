use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let orders = Destination::queue("readme.orders");
    session
        .producer(orders.clone())
        .send(Message::new("hello"))
        .await?;

    let mut consumer = session.consumer(orders).await?;
    if let Some(message) = consumer.receive(Duration::from_secs(1)).await? {
        println!("{}", message.body_text());
    }
    drop(consumer);
    connection.close().await
}
