//! Messaging patterns through the public client API, against a real broker.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use actormq::client::{AckMode, ClientError, Connection, ConsumerOptions, Reply, Request};
use actormq::config::GroupSettings;
use actormq::{Destination, Message};
use common::{broker, broker_with, connect, eventually, stat_of};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn upper(message: Message) -> Message {
    Message::new(message.body_text().to_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_round_trips_leave_no_temporary_destination_behind() {
    let broker = broker();
    let (_server, server_session) = connect(&broker).await;
    let service = Destination::queue("service.upper");
    let _serving = server_session
        .responder()
        .serve(service.clone(), |m| async move { upper(m) })
        .await
        .unwrap();

    let (client, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    for i in 0..10_000 {
        let reply = requestor
            .request(service.clone(), Message::new(format!("hello {i}")), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.body_text(), format!("HELLO {i}"));
    }
    assert_eq!(requestor.in_flight(), 0);
    let (observer, _s) = connect(&broker).await;
    let temporaries = |stats: Vec<actormq::client::DestinationStat>| {
        stats
            .into_iter()
            .filter(|s| s.kind.as_str().starts_with("temp-"))
            .count()
    };
    assert_eq!(temporaries(observer.stat().await.unwrap()), 1);

    drop(requestor);
    drop(session);
    client.close().await.unwrap();
    eventually(WAIT, "the temporary reply queue to vanish", || async {
        (temporaries(observer.stat().await.unwrap()) == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_queue_is_its_connections_alone_and_gone_with_it() {
    let broker = broker();
    let (owner, owner_session) = connect(&broker).await;
    let temp = owner_session.temp_queue().await.unwrap();
    assert!(temp.is_temporary());

    // Anyone may send to it; only the owner may consume.
    let (_other, other_session) = connect(&broker).await;
    other_session
        .producer(temp.clone())
        .send(Message::new("for the owner"))
        .await
        .unwrap();
    let refused = other_session.consumer(temp.clone()).await.err();
    assert!(
        matches!(refused, Some(ClientError::Refused(ref m)) if m.contains("only the connection")),
        "{refused:?}"
    );
    let mut mine = owner_session.consumer(temp.clone()).await.unwrap();
    assert_eq!(
        mine.receive(WAIT).await.unwrap().unwrap().body_text(),
        "for the owner"
    );

    drop(mine);
    drop(owner_session);
    owner.close().await.unwrap();
    let err = eventually(
        WAIT,
        "sends to the closed connection's queue to fail",
        || {
            let producer = other_session.producer(temp.clone());
            async move { producer.send(Message::new("too late")).await.err() }
        },
    )
    .await;
    assert!(
        matches!(err, ClientError::DestinationGone(ref m) if m.contains(&temp.to_string())),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_times_out() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    let started = std::time::Instant::now();
    let result = requestor
        .request(
            Destination::queue("nobody"),
            Message::new("?"),
            Duration::from_millis(300),
        )
        .await;
    assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(requestor.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_responder_dies_mid_request_is_answered_by_another() {
    let broker = broker();
    let service = Destination::queue("service.fragile");
    let (dying, dying_session) = connect(&broker).await;
    let (taken_tx, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let _stuck = dying_session
        .responder()
        .serve(service.clone(), move |_m| {
            let _ = taken_tx.send(());
            // Never answers: this responder dies holding the request.
            futures::future::pending::<Message>()
        })
        .await
        .unwrap();

    let (_c, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    let reply = requestor.request_future(service.clone(), Message::new("ping"), WAIT);
    tokio::time::timeout(WAIT, taken.recv())
        .await
        .expect("the first responder takes it");

    let (_healthy, healthy_session) = connect(&broker).await;
    let _serving = healthy_session
        .responder()
        .serve(service, |m| async move { upper(m) })
        .await
        .unwrap();
    dying.close().await.unwrap();
    assert_eq!(reply.await.unwrap().body_text(), "PING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_futures_on_one_connection() {
    let broker = broker();
    let service = Destination::queue("service.many");
    let (_s, server_session) = connect(&broker).await;
    let _serving = server_session
        .responder()
        .serve(service.clone(), |m| async move { upper(m) })
        .await
        .unwrap();
    let (_c, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    let futures: Vec<_> = (0..1000)
        .map(|i| requestor.request_future(service.clone(), Message::new(format!("f{i}")), WAIT))
        .collect();
    assert!(requestor.in_flight() > 0);
    let replies = futures::future::join_all(futures).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap().body_text(), format!("F{i}"));
    }
    assert_eq!(requestor.in_flight(), 0);
}

/// Answers requests by reversing their body.
struct Reverser;

impl Actor for Reverser {
    type Context = Context<Self>;
}

impl Handler<Request> for Reverser {
    type Result = Message;

    fn handle(&mut self, request: Request, _ctx: &mut Context<Self>) -> Message {
        Message::new(
            request
                .message
                .body_text()
                .chars()
                .rev()
                .collect::<String>(),
        )
    }
}

/// Reports every reply it handles.
struct Inbox(tokio::sync::mpsc::UnboundedSender<Message>);

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<Reply> for Inbox {
    type Result = ();

    fn handle(&mut self, reply: Reply, _ctx: &mut Context<Self>) {
        let _ = self.0.send(reply.message);
    }
}

#[actix_rt::test]
async fn an_actor_serves_requests() {
    let broker = broker();
    let service = Destination::queue("service.reverse");
    let (_s, server_session) = connect(&broker).await;
    let _serving = server_session
        .responder()
        .serve_actor(service.clone(), Reverser.start().recipient())
        .await
        .unwrap();
    let (_c, session) = connect(&broker).await;
    let requestor = session.requestor().await.unwrap();
    let reply = requestor
        .request(service, Message::new("actors"), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.body_text(), "srotca");
}

#[actix_rt::test]
async fn a_callback_reaches_an_actor_after_the_request_call_returned() {
    let broker = broker();
    let service = Destination::queue("service.slow");
    // B answers after a delay, long after A's send has returned.
    let (_b, b_session) = connect(&broker).await;
    let _serving = b_session
        .responder()
        .serve(service.clone(), |m| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            upper(m)
        })
        .await
        .unwrap();

    let (_a, a_session) = connect(&broker).await;
    let (tx, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let endpoint = a_session
        .callback_endpoint(Inbox(tx).start().recipient())
        .await
        .unwrap();
    let producer = a_session.producer(service.clone());
    let correlation = producer
        .send_with_callback(Message::new("call me back"), endpoint.destination())
        .await
        .unwrap();
    assert!(inbox.try_recv().is_err(), "the answer comes later");
    let answer = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.body_text(), "CALL ME BACK");
    assert_eq!(answer.correlation_id, Some(correlation));

    // A plain queue works as a callback endpoint too.
    let callbacks = Destination::queue("callbacks.a");
    let mut consumer = a_session.consumer(callbacks.clone()).await.unwrap();
    let correlation = producer
        .send_with_callback(Message::new("queue me"), &callbacks)
        .await
        .unwrap();
    let answer = consumer.receive(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (answer.body_text().to_string(), answer.correlation_id),
        ("QUEUE ME".into(), Some(correlation))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_sends_return_without_confirmation_and_arrive() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    let queue = Destination::queue("oneway");
    let mut consumer = session.consumer(queue.clone()).await.unwrap();
    let producer = session.producer(queue);
    for i in 0..100 {
        producer.send_oneway(Message::new(format!("{i}"))).unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            consumer.receive(WAIT).await.unwrap().unwrap().body_text(),
            i.to_string()
        );
    }
}

/// Every message until none arrives for 300 ms; each names the topic it was published to.
async fn drain(consumer: &mut actormq::client::Consumer) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(m) = consumer.receive(Duration::from_millis(300)).await.unwrap() {
        assert_eq!(m.destination, Some(Destination::topic(m.body_text())));
        got.push(m.body_text().to_string());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscriptions_match_one_level_or_all_below() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    // A topic that exists before the wildcard subscriptions, and ones created after.
    session
        .producer(Destination::topic("prices.us"))
        .send(Message::new("early"))
        .await
        .unwrap();
    let mut one_level = session
        .consumer(Destination::topic("prices.*"))
        .await
        .unwrap();
    let mut all_below = session
        .consumer(Destination::topic("prices.>"))
        .await
        .unwrap();
    for name in [
        "prices.us",
        "prices.eu",
        "prices.eu.acme",
        "stocks.eu",
        "prices",
    ] {
        session
            .producer(Destination::topic(name))
            .send(Message::new(name))
            .await
            .unwrap();
    }
    assert_eq!(drain(&mut one_level).await, ["prices.us", "prices.eu"]);
    assert_eq!(
        drain(&mut all_below).await,
        ["prices.us", "prices.eu", "prices.eu.acme"]
    );

    let refused = session
        .producer(Destination::topic("prices.*"))
        .send(Message::new("x"))
        .await;
    assert!(
        matches!(refused, Err(ClientError::Refused(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_destination_delivers_to_every_part_as_a_unit() {
    let broker = broker();
    let (_c, session) = connect(&broker).await;
    let mut orders = session
        .consumer(Destination::queue("orders"))
        .await
        .unwrap();
    let mut audit = session.consumer(Destination::topic("audit")).await.unwrap();
    let both: Destination = "queue:orders,topic:audit".parse().unwrap();
    session
        .producer(both)
        .send(Message::new("order 1"))
        .await
        .unwrap();
    let o = orders.receive(WAIT).await.unwrap().unwrap();
    let a = audit.receive(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (o.body_text(), a.body_text()),
        ("order 1".into(), "order 1".into())
    );
    assert_eq!(o.destination, Some(Destination::queue("orders")));
    assert_eq!(a.destination, Some(Destination::topic("audit")));

    // A unit with a part that is gone is refused whole: nothing reaches the other parts.
    let (gone_owner, gone_session) = connect(&broker).await;
    let gone = gone_session.temp_queue().await.unwrap();
    drop(gone_session);
    gone_owner.close().await.unwrap();
    let with_gone = Destination::composite(&[Destination::queue("orders"), gone.clone()]).unwrap();
    let refused = session
        .producer(with_gone)
        .send(Message::new("order 2"))
        .await;
    assert!(
        matches!(refused, Err(ClientError::DestinationGone(_))),
        "{refused:?}"
    );
    let stat = stat_of(&_c, "queue", "orders").await.unwrap();
    assert_eq!(stat.enqueued, 1, "the queue part got nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_group_gives_each_member_a_copy() {
    let broker = broker_with(|c| {
        c.groups.push(GroupSettings {
            name: "billing".into(),
            members: vec![
                "queue:invoices".into(),
                "queue:ledger".into(),
                "topic:audit".into(),
            ],
        })
    });
    let (_c, session) = connect(&broker).await;
    let mut invoices = session
        .consumer(Destination::queue("invoices"))
        .await
        .unwrap();
    let mut ledger = session
        .consumer(Destination::queue("ledger"))
        .await
        .unwrap();
    let mut audit = session.consumer(Destination::topic("audit")).await.unwrap();
    session
        .producer(Destination::group("billing"))
        .send(Message::new("invoice 7"))
        .await
        .unwrap();
    for consumer in [&mut invoices, &mut ledger, &mut audit] {
        assert_eq!(
            consumer.receive(WAIT).await.unwrap().unwrap().body_text(),
            "invoice 7"
        );
    }
    let unknown = session
        .producer(Destination::group("nope"))
        .send(Message::new("x"))
        .await;
    assert!(
        matches!(unknown, Err(ClientError::Refused(ref m)) if m.contains("nope")),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_slows_dispatch_instead_of_buffering() {
    let broker = broker();
    let (connection, session) = connect(&broker).await;
    let queue = Destination::queue("stream");
    let mut stream = Box::pin(
        session
            .consumer_with(queue.clone(), ConsumerOptions::prefetch(10))
            .await
            .unwrap()
            .into_stream(),
    );
    let producer = session.producer(queue.clone());
    for chunk in 0..10 {
        let batch = (0..100)
            .map(|i| Message::new(format!("{}", chunk * 100 + i)))
            .collect();
        producer.send_batch(batch).await.unwrap();
    }
    // Unread, the stream holds at most its prefetch; the rest waits in the broker.
    let stat = eventually(WAIT, "the prefetch to fill", || async {
        stat_of(&connection, "queue", "stream")
            .await
            .filter(|s| s.in_flight == 10)
    })
    .await;
    assert_eq!(stat.depth, 1000);
    let mut seen = HashSet::new();
    for expected in 0..1000 {
        let m = stream.next().await.unwrap().unwrap();
        assert_eq!(m.body_text(), expected.to_string());
        seen.insert(expected);
        if expected % 100 == 0 {
            let s = stat_of(&connection, "queue", "stream").await.unwrap();
            assert!(s.in_flight <= 10, "in flight {} > prefetch", s.in_flight);
        }
    }
    assert_eq!(seen.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_sessions_stay_the_default_for_patterns() {
    // Requestors and responders work from a DupsOk session too.
    let broker = broker();
    let connection = Connection::connect(&broker.url()).await.unwrap();
    let session = connection.session(AckMode::DupsOk).unwrap();
    let service = Destination::queue("service.dupsok");
    let _serving = session
        .responder()
        .serve(service.clone(), |m| async move { upper(m) })
        .await
        .unwrap();
    let requestor = session.requestor().await.unwrap();
    let reply = requestor
        .request(service, Message::new("ok"), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.body_text(), "OK");
}
