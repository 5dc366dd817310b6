//! mesh-gen against a real nats-server: what it publishes is what galley
//! would have published, and what pilot reads.

use std::collections::BTreeMap;

use event_bus::{BucketConfig, Bus, StateMirror};
use integration_tests::NatsServer;
use mesh_config::store::{CONFIG_BUCKET, VERDICT_BUCKET, Verdict, key_of};
use mesh_config::{AnyResource, parse_documents};
use perf::mesh_gen::{ConfigBus, MeshShape};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn shape() -> MeshShape {
    MeshShape {
        services: 10,
        endpoints_per_service: 2,
        namespaces: 3,
        virtual_services: true,
        destination_rules: true,
        sidecar_scoping: true,
        gateway_hosts: 2,
    }
}

async fn bucket<T: serde::Serialize + DeserializeOwned + Send + 'static>(
    bus: &Bus,
    name: &str,
) -> BTreeMap<String, T> {
    let bucket = bus.kv_bucket::<T>(BucketConfig::new(name)).await.unwrap();
    let mut mirror = StateMirror::new();
    mirror.sync(&mut bucket.watch_state()).await.unwrap();
    mirror.into_entries()
}

/// A bucket value read as pilot reads it (strictly, as one document).
fn as_pilot_reads(key: &str, value: &Value) -> AnyResource {
    let mut parsed = parse_documents(key, &value.to_string());
    assert_eq!(parsed.len(), 1, "{key}");
    parsed.pop().unwrap().unwrap().resource
}

fn by_key(resources: Vec<AnyResource>) -> BTreeMap<String, AnyResource> {
    resources.into_iter().map(|r| (key_of(&r), r)).collect()
}

#[tokio::test]
async fn the_published_mesh_is_galleys_format_and_churn_moves_the_revision_on() {
    let nats = NatsServer::start();
    let bus = Bus::connect(nats.url(), "mesh-gen-test").await.unwrap();
    let shape = shape();
    let generated = by_key(shape.resources());

    let published = shape.publish(&bus).await.unwrap();
    assert_eq!(
        (published.resources, published.written),
        (generated.len(), generated.len())
    );
    let config: BTreeMap<String, Value> = bucket(&bus, CONFIG_BUCKET).await;
    let read: BTreeMap<String, AnyResource> = config
        .iter()
        .map(|(key, value)| (key.clone(), as_pilot_reads(key, value)))
        .collect();
    assert_eq!(read, generated);
    let verdicts: BTreeMap<String, Verdict> = bucket(&bus, VERDICT_BUCKET).await;
    assert_eq!(verdicts.len(), generated.len());
    assert!(
        verdicts
            .values()
            .all(|v| v.accepted && v.source.starts_with("mesh-gen:"))
    );

    // Publishing the same mesh again writes nothing.
    assert_eq!(shape.publish(&bus).await.unwrap().written, 0);

    let churn = shape.endpoint_churn(3);
    let revision = ConfigBus::open(&bus)
        .await
        .unwrap()
        .put(&churn)
        .await
        .unwrap();
    assert!(revision > published.revision);
    let config: BTreeMap<String, Value> = bucket(&bus, CONFIG_BUCKET).await;
    assert_eq!(as_pilot_reads("churn", &config[&key_of(&churn)]), churn);

    // A smaller mesh replaces the larger one: what it lacks is deleted.
    let smaller = MeshShape {
        services: 4,
        gateway_hosts: 0,
        ..shape
    };
    smaller.publish(&bus).await.unwrap();
    let config: BTreeMap<String, Value> = bucket(&bus, CONFIG_BUCKET).await;
    let keys: Vec<&String> = config.keys().collect();
    let expected = by_key(smaller.resources());
    assert_eq!(keys, expected.keys().collect::<Vec<_>>());
}
