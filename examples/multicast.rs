//! Multicast: one send to several destinations at once. A composite destination
//! (`queue:orders,topic:audit`) is delivered as a unit; a named group configured on the
//! broker (`[[groups]]`, see the README) gives each member a copy.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example multicast`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;

    let mut orders = session
        .consumer(Destination::queue("examples.orders"))
        .await?;
    let mut audit = session
        .consumer(Destination::topic("examples.audit"))
        .await?;
    let both: Destination = "queue:examples.orders,topic:examples.audit"
        .parse()
        .map_err(|e| ClientError::Refused(format!("{e}")))?;
    session
        .producer(both.clone())
        .send(Message::new("order 7"))
        .await?;
    println!("sent `order 7` once to {both}");

    for (name, consumer) in [("orders queue", &mut orders), ("audit topic", &mut audit)] {
        match consumer.receive(Duration::from_secs(2)).await? {
            Some(m) => println!("{name} got `{}`", m.body_text()),
            None => return Err(ClientError::Timeout(format!("the copy for the {name}"))),
        }
    }

    // A configured group, if the broker has one called `examples`.
    match session
        .producer(Destination::group("examples"))
        .send(Message::new("to the group"))
        .await
    {
        Ok(()) => println!("sent to group:examples"),
        Err(e) => println!("group:examples is not configured on this broker ({e})"),
    }
    drop((orders, audit, session));
    connection.close().await
}
