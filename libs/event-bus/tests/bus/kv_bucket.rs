use event_bus::{BucketConfig, KvError};
use serde_json::json;

use crate::support::{NatsServer, Route, connected_bus, route};

#[tokio::test]
async fn put_get_delete_with_increasing_revisions() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "kv-basic").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("routes"))
        .await
        .expect("create bucket");

    assert_eq!(bucket.get("a").await.unwrap(), None);

    let first = bucket.put("a", &route("a.local", 1)).await.unwrap();
    let second = bucket.put("b", &route("b.local", 2)).await.unwrap();
    assert!(second > first, "{second} > {first}");
    assert_eq!(
        bucket.get("a").await.unwrap(),
        Some((route("a.local", 1), first))
    );

    let third = bucket.put("a", &route("a.local", 3)).await.unwrap();
    assert!(third > second, "{third} > {second}");
    assert_eq!(
        bucket.get("a").await.unwrap(),
        Some((route("a.local", 3), third))
    );

    bucket.delete("a").await.unwrap();
    assert_eq!(bucket.get("a").await.unwrap(), None);
    assert_eq!(
        bucket.get("b").await.unwrap(),
        Some((route("b.local", 2), second))
    );

    let status = bucket.status().await.unwrap();
    assert_eq!(status.bucket, "routes");
    assert_eq!(
        status.last_revision,
        third + 1,
        "the delete is a revision too"
    );
}

#[tokio::test]
async fn compare_and_set_and_create() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "kv-cas").await;
    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("cas"))
        .await
        .unwrap();

    let created = bucket.create("leader", &route("pilot-0", 0)).await.unwrap();
    let error = bucket
        .create("leader", &route("pilot-1", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, KvError::AlreadyExists { key, .. } if key == "leader"),
        "{error:?}"
    );

    let updated = bucket
        .update("leader", &route("pilot-0", 1), created)
        .await
        .unwrap();
    assert!(updated > created);
    let error = bucket
        .update("leader", &route("pilot-1", 1), created)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, KvError::RevisionMismatch { key, expected, .. } if key == "leader" && *expected == created),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("key \"leader\" in bucket \"cas\" is no longer at revision {created}")
    );

    // A deleted key can be created again.
    bucket.delete("leader").await.unwrap();
    bucket.create("leader", &route("pilot-1", 2)).await.unwrap();
    assert_eq!(
        bucket.get("leader").await.unwrap().map(|(value, _)| value),
        Some(route("pilot-1", 2))
    );
}

#[tokio::test]
async fn opening_an_existing_bucket_keeps_it_and_its_values() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "kv-reopen").await;
    let config = BucketConfig::new("shared").with_history(5);
    let first = bus.kv_bucket::<Route>(config.clone()).await.unwrap();
    let revision = first.put("a", &route("a", 1)).await.unwrap();

    // Same configuration: idempotent.
    let again = bus.kv_bucket::<Route>(config).await.unwrap();
    assert_eq!(
        again.get("a").await.unwrap(),
        Some((route("a", 1), revision))
    );

    // Another configuration: the existing bucket is used as it is.
    let other = bus
        .kv_bucket::<Route>(BucketConfig::new("shared").with_history(1))
        .await
        .unwrap();
    assert_eq!(other.status().await.unwrap().history, 5);
    assert_eq!(
        other.get("a").await.unwrap(),
        Some((route("a", 1), revision))
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_shape_is_an_error_naming_the_key() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "kv-invalid").await;
    let raw = bus
        .kv_bucket::<serde_json::Value>(BucketConfig::new("mixed"))
        .await
        .unwrap();
    let revision = raw.put("odd", &json!({"host": 7})).await.unwrap();

    let typed = bus
        .kv_bucket::<Route>(BucketConfig::new("mixed"))
        .await
        .unwrap();
    let KvError::InvalidEntry(invalid) = typed.get("odd").await.unwrap_err() else {
        panic!("expected an invalid entry");
    };
    assert_eq!(invalid.key, "odd");
    assert_eq!(invalid.bucket, "mixed");
    assert_eq!(invalid.revision, revision);
    assert!(invalid.to_string().contains("Route"), "{invalid}");
}

#[tokio::test]
async fn invalid_bucket_names_and_keys_are_reported() {
    let server = NatsServer::running().await;
    let bus = connected_bus(&server, "kv-names").await;
    let error = bus
        .kv_bucket::<Route>(BucketConfig::new("no spaces"))
        .await
        .unwrap_err();
    assert!(matches!(error, KvError::Open { .. }), "{error:?}");

    let bucket = bus
        .kv_bucket::<Route>(BucketConfig::new("names"))
        .await
        .unwrap();
    let error = bucket.put("bad key", &route("x", 1)).await.unwrap_err();
    assert!(
        matches!(&error, KvError::Write { key, .. } if key == "bad key"),
        "{error:?}"
    );
}
