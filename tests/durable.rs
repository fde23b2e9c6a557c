//! Durable topic subscriptions: kept while the subscriber is away, across restarts, and
//! gone when unsubscribed.

mod common;

use std::path::Path;
use std::time::Duration;

use actormq::client::{AckMode, ConnectOptions, Connection, Session};
use actormq::config::StoreKind;
use actormq::{BrokerThread, Destination, Message};
use common::data_dir;

fn journal_broker(dir: &Path) -> BrokerThread {
    common::broker_with(|c| {
        c.store.kind = StoreKind::Journal;
        c.broker.data_dir = dir.to_path_buf();
    })
}

async fn as_client(broker: &BrokerThread, client_id: &str) -> (Connection, Session) {
    let options = ConnectOptions {
        client_id: client_id.into(),
        ..ConnectOptions::default()
    };
    let connection = Connection::connect_with(&broker.url(), options)
        .await
        .unwrap();
    let session = connection.session(AckMode::Auto).unwrap();
    (connection, session)
}

async fn publish(broker: &BrokerThread, bodies: impl Iterator<Item = (String, bool)>) {
    let (_c, session) = common::connect(broker).await;
    let producer = session.producer(Destination::topic("news"));
    for (body, persistent) in bodies {
        producer
            .send(Message::new(body).with_persistent(persistent))
            .await
            .unwrap();
    }
}

async fn receive_all(session: &Session) -> Vec<String> {
    let mut consumer = session.durable_consumer("news", "daily").await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = consumer.receive(Duration::from_millis(300)).await.unwrap() {
        got.push(m.body_text().to_string());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_gets_what_was_published_while_it_was_away_even_across_a_restart() {
    let dir = data_dir("durable");
    {
        let broker = journal_broker(&dir);
        let (connection, session) = as_client(&broker, "reader").await;
        drop(session.durable_consumer("news", "daily").await.unwrap());
        drop(session);
        connection.close().await.unwrap();
        // Away: 3 persistent and 1 non-persistent message.
        publish(
            &broker,
            (0..3)
                .map(|i| (format!("p{i}"), true))
                .chain([("np".to_string(), false)]),
        )
        .await;
        // Back, without a restart: all four.
        let (connection, session) = as_client(&broker, "reader").await;
        assert_eq!(receive_all(&session).await, ["p0", "p1", "p2", "np"]);
        drop(session);
        connection.close().await.unwrap();
        // Away again while the broker restarts.
        publish(
            &broker,
            [("q0".to_string(), true), ("gone".to_string(), false)].into_iter(),
        )
        .await;
    }
    let broker = journal_broker(&dir);
    let (_c, session) = as_client(&broker, "reader").await;
    assert_eq!(
        receive_all(&session).await,
        ["q0"],
        "persistent messages survive the restart; non-persistent ones do not"
    );
    // Another client's subscription of the same name is another subscription.
    let (_c2, other) = as_client(&broker, "someone-else").await;
    assert!(receive_all(&other).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_deletes_the_subscription_and_what_it_kept() {
    let dir = data_dir("durable-unsubscribe");
    let broker = journal_broker(&dir);
    let (connection, session) = as_client(&broker, "reader").await;
    drop(session.durable_consumer("news", "daily").await.unwrap());
    publish(&broker, (0..5).map(|i| (format!("kept{i}"), true))).await;
    session.unsubscribe_durable("news", "daily").await.unwrap();
    let again = session.unsubscribe_durable("news", "daily").await;
    assert!(again.is_err(), "there is nothing left to unsubscribe");
    publish(&broker, [("unheard".to_string(), true)].into_iter()).await;
    // A new subscription of the same name starts empty.
    assert!(receive_all(&session).await.is_empty());
    drop(session);
    connection.close().await.unwrap();
    drop(broker);

    // After a restart nothing of the deleted subscription comes back either.
    let broker = journal_broker(&dir);
    let (connection, _s) = common::connect(&broker).await;
    let stats = connection.stat().await.unwrap();
    let kept: u64 = stats
        .iter()
        .filter(|s| s.name.contains("daily"))
        .map(|s| s.depth)
        .sum();
    assert_eq!(kept, 0, "{stats:?}");
}
