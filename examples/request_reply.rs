//! Request/response: a responder serves a queue; a requestor sends requests and waits for
//! each reply. Prints round trips per second and latency percentiles.
//!
//! Start a broker (`cargo run --release -- broker`), then
//! `cargo run --release --example request_reply [ROUND_TRIPS]` (default 10,000).
//! Set ACTORMQ_URL to use another broker.

use std::time::{Duration, Instant};

use actormq::client::{AckMode, ClientError, Connection, Destination, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ACTORMQ_URL").unwrap_or_else(|_| "tcp://127.0.0.1:7670".into());
    let round_trips: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let service = Destination::queue("examples.upper");

    let server = Connection::connect(&url).await?;
    let serving = server
        .session(AckMode::Auto)?
        .responder()
        .serve(service.clone(), |request| async move {
            Message::new(request.body_text().to_uppercase())
        })
        .await?;

    let client = Connection::connect(&url).await?;
    let requestor = client.session(AckMode::Auto)?.requestor().await?;
    let reply = requestor
        .request(
            service.clone(),
            Message::new("hello"),
            Duration::from_secs(5),
        )
        .await?;
    println!("request `hello` got reply `{}`", reply.body_text());

    let mut latencies = Vec::with_capacity(round_trips);
    let started = Instant::now();
    for i in 0..round_trips {
        let sent = Instant::now();
        requestor
            .request(
                service.clone(),
                Message::new(format!("r{i}")),
                Duration::from_secs(5),
            )
            .await?;
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{round_trips} round trips in {elapsed:.2?}: {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
        round_trips as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1]
    );
    serving.abort();
    client.close().await?;
    server.close().await
}
