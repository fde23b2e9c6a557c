//! Streams: a consumer as a `futures::Stream`. Credit gives back-pressure: a slow stream
//! holds at most its prefetch; the rest waits in the broker.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example stream`.
//! Set ACTORMQ_URL to use another broker.

use std::time::Duration;

use actormq::client::{AckMode, ClientError, Connection, ConsumerOptions, Destination, Message};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let connection = Connection::connect(&url).await?;
    let session = connection.session(AckMode::Auto)?;
    let queue = Destination::queue("examples.stream");

    let stream = session
        .consumer_with(queue.clone(), ConsumerOptions::prefetch(20))
        .await?
        .into_stream();
    let producer = session.producer(queue.clone());
    let batch = (0..500)
        .map(|i| Message::new(format!("tick {i}")))
        .collect();
    producer.send_batch(batch).await?;

    // Nobody reads yet: the broker keeps all but the prefetch. Poll until the prefetch is
    // out (at most 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let stat = connection
            .stat()
            .await?
            .into_iter()
            .find(|s| s.name == "examples.stream");
        if let Some(s) = stat.filter(|s| s.in_flight == 20 || std::time::Instant::now() > deadline)
        {
            println!(
                "while the stream is idle: {} in flight to it, {} in the queue",
                s.in_flight, s.depth
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let slow_then_fast = stream
        .take(500)
        .enumerate()
        .then(|(i, message)| async move {
            if i < 5 {
                tokio::time::sleep(Duration::from_millis(50)).await; // a slow start
            }
            message
        });
    let received: Vec<_> = slow_then_fast.collect().await;
    let ok = received.iter().filter(|m| m.is_ok()).count();
    println!("the stream yielded {ok} messages");
    drop((producer, session));
    connection.close().await?;
    if ok == 500 {
        Ok(())
    } else {
        Err(ClientError::Timeout("500 messages".into()))
    }
}
