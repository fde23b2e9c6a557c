//! Futures: `request_future` sends at once and returns a future of the reply; the caller
//! does other work and awaits the replies later. Thousands may be in flight on one
//! connection, over one temporary reply queue.
//!
//! Start a broker (`cargo run --release -- broker`), then `cargo run --example future`.
//! Set ACTORMQ_URL to use another broker.

use std::time::{Duration, Instant};

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let service = Destination::queue("examples.square");

    let server = Connection::connect(&url).await?;
    let serving = server
        .session(AckMode::Auto)?
        .responder()
        .serve(service.clone(), |request| async move {
            let n: u64 = request.body_text().parse().unwrap_or(0);
            Message::new((n * n).to_string())
        })
        .await?;

    let client = Connection::connect(&url).await?;
    let requestor = client.session(AckMode::Auto)?.requestor().await?;
    let started = Instant::now();
    let futures: Vec<_> = (0..2000u64)
        .map(|n| {
            requestor.request_future(
                service.clone(),
                Message::new(n.to_string()),
                Duration::from_secs(10),
            )
        })
        .collect();
    println!(
        "{} requests in flight; doing other work meanwhile",
        requestor.in_flight()
    );

    let mut sum = 0u64;
    for reply in futures::future::join_all(futures).await {
        sum += reply?.body_text().parse::<u64>().unwrap_or(0);
    }
    println!(
        "2000 replies in {:.2?}; sum of squares below 2000 = {sum}",
        started.elapsed()
    );
    assert_eq!(sum, (0..2000u64).map(|n| n * n).sum::<u64>());
    serving.abort();
    client.close().await?;
    server.close().await
}
