//! Connections and client styles: many at once, clean close, streams, actor consumers.

mod common;

use std::time::Duration;

use actix::{Actor, Context, Handler};
use actormq::client::{AckMode, ClientError, Connection, Delivery};
use actormq::{Destination, Message};
use common::{broker, connect, eventually, stat_of};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_connections_each_get_their_own_reply() {
    let broker = broker();
    let url = broker.url();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let connection = Connection::connect(&url).await.unwrap();
                let session = connection.session(AckMode::Auto).unwrap();
                let queue = Destination::queue(format!("private-{i}"));
                let mut consumer = session.consumer(queue.clone()).await.unwrap();
                let producer = session.producer(queue);
                for n in 0..10 {
                    producer
                        .send(Message::new(format!("{i}/{n}")))
                        .await
                        .unwrap();
                }
                for n in 0..10 {
                    let m = consumer.receive(WAIT).await.unwrap().expect("a message");
                    assert_eq!(m.body_text(), format!("{i}/{n}"));
                }
                drop(consumer);
                drop(producer);
                drop(session);
                connection.close().await.unwrap();
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let (connection, _session) = connect(&broker).await;
    let stats = connection.stat().await.unwrap();
    let private: Vec<_> = stats
        .iter()
        .filter(|s| s.name.starts_with("private-"))
        .collect();
    assert_eq!(private.len(), 100);
    assert!(
        private
            .iter()
            .all(|s| s.enqueued == 10 && s.dequeued == 10 && s.depth == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_closes_its_sessions_and_consumers() {
    let broker = broker();
    let (observer, _s) = connect(&broker).await;
    let (connection, session) = connect(&broker).await;
    let queue = Destination::queue("closing");
    let _consumer = session.consumer(queue.clone()).await.unwrap();
    let _other = connection
        .session(AckMode::DupsOk)
        .unwrap()
        .consumer(queue.clone())
        .await
        .unwrap();
    assert_eq!(
        stat_of(&observer, "queue", "closing")
            .await
            .unwrap()
            .consumers,
        2
    );
    connection.close().await.unwrap();
    eventually(WAIT, "the consumers to go", || async {
        stat_of(&observer, "queue", "closing")
            .await
            .filter(|s| s.consumers == 0)
    })
    .await;
    // The closed connection's handles report it.
    let err = session.producer(queue).send(Message::new("late")).await;
    assert!(
        matches!(err, Err(ClientError::ConnectionClosed(_))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_as_a_stream() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let topic = Destination::topic("ticks");
    let stream = session.consumer(topic.clone()).await.unwrap().into_stream();
    let producer = session.producer(topic);
    for i in 0..20 {
        producer.send(Message::new(format!("{i}"))).await.unwrap();
    }
    let got: Vec<String> = stream
        .take(20)
        .map(|m| m.unwrap().body_text().to_string())
        .collect()
        .await;
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_is_a_clear_error() {
    let err = Connection::connect("tcp://127.0.0.1:1").await.err();
    assert!(matches!(err, Some(ClientError::Connect { .. })), "{err:?}");
    let err = Connection::connect("http://example").await.err();
    assert!(matches!(err, Some(ClientError::InvalidUrl(_))), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_at_another_protocols_port_says_so() {
    // actormq's own STOMP port.
    let broker = broker();
    let stomp = broker.stomp_addr().expect("STOMP is on");
    let err = Connection::connect(&format!("tcp://{stomp}")).await.err();
    match err {
        Some(ClientError::Handshake(reason)) => assert!(
            reason.contains("does not speak actormq's native protocol")
                && reason.contains("a STOMP port"),
            "{reason}"
        ),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    // An HTTP server.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = http.accept().await.unwrap();
        let _ = socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let err = Connection::connect(&format!("tcp://{addr}")).await.err();
    match err {
        Some(ClientError::Handshake(reason)) => {
            assert!(reason.contains("an HTTP server"), "{reason}")
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

/// An actor that counts what it handles and reports each body.
struct Collector {
    seen: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Collector {
    type Result = ();

    fn handle(&mut self, delivery: Delivery, _ctx: &mut Context<Self>) {
        let _ = self.seen.send((
            delivery.message.body_text().to_string(),
            delivery.redelivered,
        ));
    }
}

#[actix_rt::test]
async fn an_actix_actor_consumes_deliveries() {
    let broker = broker();
    let (_connection, session) = connect(&broker).await;
    let queue = Destination::queue("to-actor");
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let collector = Collector { seen: tx }.start();
    let forwarding = session
        .consumer(queue.clone())
        .await
        .unwrap()
        .forward_to(collector.recipient());
    let producer = session.producer(queue);
    for i in 0..50 {
        producer.send(Message::new(format!("{i}"))).await.unwrap();
    }
    for i in 0..50 {
        let (body, redelivered) = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("the actor handles every delivery")
            .unwrap();
        assert_eq!(body, i.to_string());
        assert!(!redelivered);
    }
    forwarding.abort();
}
