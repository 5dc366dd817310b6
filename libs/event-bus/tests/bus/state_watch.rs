use std::{collections::BTreeMap, time::Duration};

use event_bus::{BucketConfig, StateEvent, StateMirror};
use futures::StreamExt;
use serde_json::json;

use crate::support::{
    NatsServer, Route, SOON, assert_quiet, connected_bus, delete, next_event, next_events, put,
    route, within,
};

#[tokio::test]
async fn current_state_then_synced_then_changes_in_order() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-order").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("order"))
        .await
        .unwrap();

    let _a1 = bucket.put("a", &route("a", 1)).await.unwrap();
    let b1 = bucket.put("b", &route("b", 1)).await.unwrap();
    let a2 = bucket.put("a", &route("a", 2)).await.unwrap();
    let c1 = bucket.put("c", &route("c", 1)).await.unwrap();
    bucket.delete("c").await.unwrap();
    let last = bucket.status().await.unwrap().last_revision;

    let mut watch = bucket.watch_state();
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            put("b", route("b", 1), b1),
            put("a", route("a", 2), a2),
            StateEvent::Synced { revision: last },
        ],
        "current values only, in revision order; the deleted key left out"
    );
    assert!(c1 < last);

    let d1 = bucket.put("d", &route("d", 1)).await.unwrap();
    let a3 = bucket.put("a", &route("a", 3)).await.unwrap();
    bucket.delete("b").await.unwrap();
    let b_deleted = bucket.status().await.unwrap().last_revision;
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            put("d", route("d", 1), d1),
            put("a", route("a", 3), a3),
            delete("b", b_deleted),
        ]
    );
    assert_quiet(&mut watch, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn synced_arrives_for_an_empty_bucket() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-empty").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("empty"))
        .await
        .unwrap();

    let mut watch = bucket.watch_state();
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Synced { revision: 0 }
    );
    let a1 = bucket.put("a", &route("a", 1)).await.unwrap();
    assert_eq!(next_event(&mut watch).await, put("a", route("a", 1), a1));
}

#[tokio::test]
async fn synced_arrives_when_every_key_was_deleted() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-all-deleted").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("all-deleted").with_history(3))
        .await
        .unwrap();
    bucket.put("a", &route("a", 1)).await.unwrap();
    bucket.put("a", &route("a", 2)).await.unwrap();
    bucket.delete("a").await.unwrap();
    let last = bucket.status().await.unwrap().last_revision;

    let mut watch = bucket.watch_state();
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Synced { revision: last }
    );
    // Deleting again a key the watcher never saw is not news.
    bucket.delete("a").await.unwrap();
    assert_quiet(&mut watch, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscriber_that_was_away_sees_exactly_the_current_state() {
    let server = NatsServer::running().await;
    let writer_bus = connected_bus(&server, "writer").await;
    let reader_bus = connected_bus(&server, "reader").await;
    let config = BucketConfig::new("away").with_history(10);
    let writer = writer_bus.kv_bucket::<Route>(config.clone()).await.unwrap();
    let reader = reader_bus.kv_bucket::<Route>(config).await.unwrap();

    for key in ["keep", "overwrite", "delete", "delete-then-put"] {
        writer.put(key, &route(key, 1)).await.unwrap();
    }
    let mut first_visit = StateMirror::new();
    within(
        SOON,
        "the first sync",
        first_visit.sync(&mut reader.watch_state()),
    )
    .await
    .unwrap();
    assert_eq!(first_visit.len(), 4);

    // While the reader is away.
    writer
        .put("overwrite", &route("overwrite", 2))
        .await
        .unwrap();
    writer
        .put("overwrite", &route("overwrite", 3))
        .await
        .unwrap();
    writer.delete("delete").await.unwrap();
    writer.delete("delete-then-put").await.unwrap();
    writer
        .put("delete-then-put", &route("delete-then-put", 2))
        .await
        .unwrap();
    writer.put("new", &route("new", 1)).await.unwrap();
    writer
        .put("transient", &route("transient", 1))
        .await
        .unwrap();
    writer.delete("transient").await.unwrap();

    let mut watch = reader.watch_state();
    let mut events = Vec::new();
    loop {
        let event = next_event(&mut watch).await;
        let synced = matches!(event, StateEvent::Synced { .. });
        events.push(event);
        if synced {
            break;
        }
    }
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            StateEvent::Put { revision, .. } => Some(*revision),
            _ => None,
        })
        .collect();
    assert!(revisions.is_sorted(), "revision order: {revisions:?}");
    assert!(
        events
            .iter()
            .all(|event| !matches!(event, StateEvent::Delete { .. })),
        "a fresh reader gets no deletes: {events:?}"
    );

    let mut mirror = StateMirror::new();
    for event in events {
        mirror.apply(event);
    }
    let expected = BTreeMap::from(
        [
            ("keep", 1),
            ("overwrite", 3),
            ("delete-then-put", 2),
            ("new", 1),
        ]
        .map(|(key, weight)| (key.to_owned(), route(key, weight))),
    );
    assert_eq!(mirror.entries(), &expected);
    assert_eq!(
        mirror.revision(),
        writer.status().await.unwrap().last_revision
    );
}

#[tokio::test]
async fn a_value_that_does_not_decode_is_reported_and_the_watch_goes_on() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-invalid").await;
    let raw = bus
        .kv_bucket::<serde_json::Value>(BucketConfig::new("mixed-watch"))
        .await
        .unwrap();
    let typed = bus
        .kv_bucket::<Route>(BucketConfig::new("mixed-watch"))
        .await
        .unwrap();

    let good = typed.put("good", &route("good", 1)).await.unwrap();
    let bad = raw.put("bad", &json!("not a route")).await.unwrap();

    let mut watch = typed.watch_state();
    assert_eq!(
        next_event(&mut watch).await,
        put("good", route("good", 1), good)
    );
    let invalid = within(SOON, "the invalid entry", watch.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((invalid.key.as_str(), invalid.revision), ("bad", bad));
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Synced { revision: bad }
    );

    // Live: another bad value, then the stream goes on.
    let bad_again = raw.put("bad", &json!({"weight": "heavy"})).await.unwrap();
    let invalid = within(SOON, "the live invalid entry", watch.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((invalid.key.as_str(), invalid.revision), ("bad", bad_again));
    // The key still counts as present, so its deletion is news.
    raw.delete("bad").await.unwrap();
    let fixed = typed.put("good", &route("good", 2)).await.unwrap();
    assert_eq!(
        next_events(&mut watch, 2).await,
        [
            delete("bad", fixed - 1),
            put("good", route("good", 2), fixed)
        ]
    );
}

#[tokio::test]
async fn an_expired_value_is_seen_as_deleted() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-ttl").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("ttl").with_max_age(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(
        bucket.status().await.unwrap().max_age,
        Some(Duration::from_secs(1))
    );

    let mut watch = bucket.watch_state();
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Synced { revision: 0 }
    );
    let revision = bucket.put("proxy-1", &route("pilot-0", 1)).await.unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        put("proxy-1", route("pilot-0", 1), revision)
    );
    let expired = next_event(&mut watch).await;
    assert!(
        matches!(&expired, StateEvent::Delete { key, revision: deleted } if key == "proxy-1" && *deleted > revision),
        "{expired:?}"
    );
    assert_eq!(bucket.get("proxy-1").await.unwrap(), None);
}

#[tokio::test]
async fn a_recreated_bucket_is_reloaded_as_a_difference() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "watch-recreate").await;
    let config = BucketConfig::new("recreated");
    let bucket = bus.kv_bucket::<Route>(config.clone()).await.unwrap();
    let a1 = bucket.put("a", &route("a", 1)).await.unwrap();
    let b1 = bucket.put("b", &route("b", 1)).await.unwrap();

    let mut watch = bucket.watch_state();
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            put("a", route("a", 1), a1),
            put("b", route("b", 1), b1),
            StateEvent::Synced { revision: b1 },
        ]
    );

    // The bucket is deleted and created again (as after a server that lost
    // its storage); its revisions start over.
    event_bus::async_nats::jetstream::new(bus.client().clone())
        .delete_key_value("recreated")
        .await
        .unwrap();
    let bucket = bus.kv_bucket::<Route>(config).await.unwrap();
    let b2 = bucket.put("b", &route("b", 2)).await.unwrap();
    let c1 = bucket.put("c", &route("c", 1)).await.unwrap();
    assert_eq!((b2, c1), (1, 2));

    // Deleting the stream took the consumer with it; the watch notices by
    // its missing heartbeats (after 10 s), then reloads.
    let first = within(Duration::from_secs(30), "the reload", watch.next())
        .await
        .expect("state watch ended")
        .expect("valid entry");
    let mut events = vec![first];
    events.extend(next_events(&mut watch, 2).await);
    assert_eq!(
        events,
        [
            delete("a", c1),
            put("b", route("b", 2), b2),
            put("c", route("c", 1), c1),
        ]
    );
    let c2 = bucket.put("c", &route("c", 2)).await.unwrap();
    assert_eq!(next_event(&mut watch).await, put("c", route("c", 2), c2));
}
