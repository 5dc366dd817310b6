use std::time::{Duration, Instant};

use event_bus::{BucketConfig, ConnectionState, StateEvent, StateMirror};

use crate::support::{
    NatsServer, Route, SOON, assert_quiet, connected_bus, delete, next_events, put, put_when_ready,
    retry_when_ready, route, wait_for_state,
};

#[tokio::test]
async fn a_watch_survives_a_server_restart_without_gaps_or_duplicates() {
    let mut server = NatsServer::running().await;
    let writer_bus = connected_bus(&server, "restart-writer").await;
    let reader_bus = connected_bus(&server, "restart-reader").await;
    let config = BucketConfig::new("restart");
    let writer = writer_bus.kv_bucket::<Route>(config.clone()).await.unwrap();
    let reader = reader_bus.kv_bucket::<Route>(config).await.unwrap();

    let a1 = writer.put("a", &route("a", 1)).await.unwrap();
    let b1 = writer.put("b", &route("b", 1)).await.unwrap();
    let mut watch = reader.watch_state();
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            put("a", route("a", 1), a1),
            put("b", route("b", 1), b1),
            StateEvent::Synced { revision: b1 },
        ]
    );
    let c1 = writer.put("c", &route("c", 1)).await.unwrap();
    assert_eq!(
        next_events(&mut watch, 1).await,
        [put("c", route("c", 1), c1)]
    );

    let outage = Instant::now();
    server.kill();
    wait_for_state(&reader_bus, ConnectionState::Disconnected, SOON).await;
    assert!(!reader_bus.is_connected());

    server.start().await;
    wait_for_state(&reader_bus, ConnectionState::Connected, SOON).await;
    wait_for_state(&writer_bus, ConnectionState::Connected, SOON).await;
    eprintln!("reconnected {:?} after the kill", outage.elapsed());

    let d1 = put_when_ready(&writer, "d", &route("d", 1)).await;
    let a2 = put_when_ready(&writer, "a", &route("a", 2)).await;
    retry_when_ready(|| writer.delete("b")).await;
    let b_deleted = writer.status().await.unwrap().last_revision;
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            put("d", route("d", 1), d1),
            put("a", route("a", 2), a2),
            delete("b", b_deleted),
        ],
        "only what changed after the restart, once"
    );
    // The resumed watch keeps following.
    let e1 = writer.put("e", &route("e", 1)).await.unwrap();
    assert_eq!(
        next_events(&mut watch, 1).await,
        [put("e", route("e", 1), e1)]
    );
    assert_quiet(&mut watch, Duration::from_millis(500)).await;

    // And a fresh reader agrees with what the old one followed.
    let mut fresh = StateMirror::new();
    fresh.sync(&mut reader.watch_state()).await.unwrap();
    let mut expected = StateMirror::new();
    for (key, value, revision) in [
        ("c", route("c", 1), c1),
        ("d", route("d", 1), d1),
        ("a", route("a", 2), a2),
        ("e", route("e", 1), e1),
    ] {
        expected.apply(put(key, value, revision));
    }
    assert_eq!(fresh.entries(), expected.entries());
}

#[tokio::test]
async fn a_watch_started_while_the_server_is_down_loads_once_it_is_back() {
    let mut server = NatsServer::running().await;
    let bus = connected_bus(&server, "late-reader").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("late"))
        .await
        .unwrap();
    let a1 = bucket.put("a", &route("a", 1)).await.unwrap();

    server.kill();
    wait_for_state(&bus, ConnectionState::Disconnected, SOON).await;
    let mut watch = bucket.watch_state();
    assert_quiet(&mut watch, Duration::from_millis(300)).await;

    server.start().await;
    assert_eq!(
        next_events(&mut watch, 2).await,
        [
            put("a", route("a", 1), a1),
            StateEvent::Synced { revision: a1 }
        ]
    );
}

#[tokio::test]
async fn an_expiring_bucket_is_reloaded_after_a_restart_and_only_changes_are_handed_out() {
    let mut server = NatsServer::running().await;
    let bus = connected_bus(&server, "ttl-reader").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("ttl-restart").with_max_age(Duration::from_secs(4)))
        .await
        .unwrap();
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

    server.kill();
    wait_for_state(&bus, ConnectionState::Disconnected, SOON).await;
    server.start().await;
    wait_for_state(&bus, ConnectionState::Connected, SOON).await;

    // The watch reloads this bucket rather than resuming, and hands out only
    // what differs: the new value of "b", not "a" again.
    let b2 = put_when_ready(&bucket, "b", &route("b", 2)).await;
    assert_eq!(
        next_events(&mut watch, 1).await,
        [put("b", route("b", 2), b2)]
    );
    assert_quiet(&mut watch, Duration::from_millis(300)).await;

    // Expiry still reaches the watch.
    let expired = next_events(&mut watch, 1).await;
    assert!(
        matches!(&expired[..], [StateEvent::Delete { key, .. }] if key == "a"),
        "{expired:?}"
    );
}
