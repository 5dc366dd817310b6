use event_bus::Topic;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::support::{NatsServer, SOON, connected_bus, within};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ConfigSignal {
    Changed { revision: u64 },
    Resync,
}

#[tokio::test]
async fn published_notifications_reach_subscribers_and_bad_ones_are_reported() {
    let server = NatsServer::running().await;
    let publisher_bus = connected_bus(&server, "signal-publisher").await;
    let subscriber_bus = connected_bus(&server, "signal-subscriber").await;
    let subject = "trireme.test.config";
    let publisher: Topic<ConfigSignal> = publisher_bus.topic(subject);
    let topic: Topic<ConfigSignal> = subscriber_bus.topic(subject);

    // Returns once the server has the subscription, so the other client's
    // messages cannot overtake it.
    let mut subscription = topic.subscribe().await.unwrap();

    publisher
        .publish(&ConfigSignal::Changed { revision: 7 })
        .await
        .unwrap();
    publisher_bus
        .client()
        .publish(subject, "{not json".into())
        .await
        .unwrap();
    publisher.publish(&ConfigSignal::Resync).await.unwrap();

    let mut next = async || {
        within(SOON, "a notification", subscription.next())
            .await
            .expect("subscription ended")
    };
    assert_eq!(next().await.unwrap(), ConfigSignal::Changed { revision: 7 });
    let invalid = next().await.unwrap_err();
    assert_eq!(invalid.subject, subject);
    assert!(invalid.to_string().contains("ConfigSignal"), "{invalid}");
    assert_eq!(next().await.unwrap(), ConfigSignal::Resync);
}

#[tokio::test]
async fn wildcard_subscriptions_receive_every_matching_subject() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "signal-wildcard").await;
    let all: Topic<u32> = bus.topic("trireme.test.proxies.>");
    let mut subscription = all.subscribe().await.unwrap();

    for (proxy, value) in [("a", 1), ("b", 2)] {
        bus.topic::<u32>(format!("trireme.test.proxies.{proxy}"))
            .publish(&value)
            .await
            .unwrap();
    }
    let received: Vec<u32> = within(
        SOON,
        "two notifications",
        subscription.by_ref().take(2).collect::<Vec<_>>(),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(received, [1, 2]);
}
