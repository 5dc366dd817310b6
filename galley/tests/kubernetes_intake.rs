//! The Kubernetes intake in process: synthetic watch events of every Istio
//! kind go through [`KubernetesIntake`] and the same reconcile the
//! [`Publisher`](galley::intake::Publisher) applies before writing the
//! buckets, so what the bus would hold is compared directly, with the
//! directory source's output among others.

use std::collections::BTreeMap;

use galley::intake::directory;
use galley::intake::kube_watch::api_resource;
use galley::intake::kubernetes::{KubernetesIntake, WatchEvent};
use galley::intake::reconcile::{Desired, Published, ScannedDocument, reconcile};
use mesh_config::Kind;
use serde_json::{Value, json};

const NOW: &str = "2026-12-06T10:00:00Z";

/// What the buckets hold, as the Publisher keeps them: each publish
/// reconciles against what the last one left.
#[derive(Default)]
struct Bus {
    config: BTreeMap<String, Published>,
    last: Desired,
}

impl Bus {
    fn publish(&mut self, documents: &[ScannedDocument]) -> &Desired {
        self.last = reconcile(&self.config, documents, NOW);
        self.config = self.last.config.clone();
        &self.last
    }

    fn resources(&self) -> BTreeMap<String, Value> {
        self.config
            .iter()
            .map(|(key, published)| (key.clone(), published.resource.clone()))
            .collect()
    }

    fn accepted(&self, key: &str) -> bool {
        self.last.verdicts[key].accepted
    }
}

/// An intake whose every kind has been listed, empty.
fn synced_intake() -> KubernetesIntake {
    let mut intake = KubernetesIntake::new(Kind::ALL.iter().copied());
    for &kind in Kind::ALL {
        intake.apply(kind, WatchEvent::Init);
        intake.apply(kind, WatchEvent::InitDone);
    }
    assert!(intake.synced());
    intake
}

fn virtual_service(name: &str, weight: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"hosts": ["catalog"], "http": [{"route": [
            {"destination": {"host": "catalog", "subset": "v1"}, "weight": weight}
        ]}]}
    })
}

fn destination_rule(name: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "shop", "labels": {"team": "catalog"}},
        "spec": {"host": "catalog", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
    })
}

fn authorization_policy(name: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["shop"]}}]}]}
    })
}

fn telemetry(name: &str) -> Value {
    json!({
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]}
    })
}

/// The manifest as the API server sends it back: with its bookkeeping and
/// a status.
fn from_server(manifest: &Value, resource_version: u64) -> Value {
    let mut object = manifest.clone();
    let metadata = &mut object["metadata"];
    metadata["resourceVersion"] = json!(resource_version.to_string());
    metadata["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply"}]);
    object["status"] = json!({"observedGeneration": 1});
    object
}

fn kind_of(object: &Value) -> Kind {
    Kind::resolve(
        object["apiVersion"].as_str().unwrap(),
        object["kind"].as_str().unwrap(),
    )
    .unwrap()
}

#[test]
fn every_kind_is_watched_under_a_served_version() {
    for &kind in Kind::ALL {
        let resource = api_resource(kind);
        assert!(kind.info().versions.contains(&resource.version.as_str()));
        assert_eq!(
            Kind::resolve(&resource.api_version, &resource.kind),
            Ok(kind)
        );
    }
    assert_eq!(
        api_resource(Kind::VirtualService).api_version,
        "networking.istio.io/v1"
    );
    assert_eq!(
        api_resource(Kind::AuthorizationPolicy).api_version,
        "security.istio.io/v1"
    );
    assert_eq!(
        api_resource(Kind::Telemetry).api_version,
        "telemetry.istio.io/v1"
    );
    assert_eq!(
        api_resource(Kind::EnvoyFilter).api_version,
        "networking.istio.io/v1alpha3"
    );
}

#[test]
fn the_bus_gets_what_the_config_dir_would_give() {
    let manifests = [
        virtual_service("catalog", 100),
        destination_rule("catalog"),
        authorization_policy("shop-only"),
        telemetry("mesh-default"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (n, manifest) in manifests.iter().enumerate() {
        let path = dir.path().join(format!("{n}.json"));
        std::fs::write(path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    }
    let mut from_dir = Bus::default();
    from_dir.publish(&directory::scan(dir.path()).unwrap());

    let mut intake = KubernetesIntake::new(Kind::ALL.iter().copied());
    for &kind in Kind::ALL {
        intake.apply(kind, WatchEvent::Init);
    }
    for (n, manifest) in manifests.iter().enumerate() {
        let object = from_server(manifest, n as u64 + 10);
        intake.apply(kind_of(manifest), WatchEvent::InitApply(object));
    }
    let mut from_kubernetes = Bus::default();
    for &kind in Kind::ALL {
        intake.apply(kind, WatchEvent::InitDone);
    }
    assert!(intake.synced());
    from_kubernetes.publish(&intake.documents());

    assert_eq!(from_kubernetes.resources().len(), 4);
    assert_eq!(from_kubernetes.resources(), from_dir.resources());
    for (key, verdict) in &from_kubernetes.last.verdicts {
        assert!(verdict.accepted, "{key}: {verdict:?}");
        assert_eq!(verdict.source, format!("k8s:{key}"));
    }
}

#[test]
fn publishing_waits_until_every_kind_is_listed() {
    let mut intake = KubernetesIntake::new(Kind::ALL.iter().copied());
    intake.apply(Kind::VirtualService, WatchEvent::Init);
    intake.apply(
        Kind::VirtualService,
        WatchEvent::InitApply(virtual_service("a", 100)),
    );
    assert!(intake.apply(Kind::VirtualService, WatchEvent::InitDone));
    assert!(!intake.synced());
    assert!(intake.unlisted().contains(&Kind::Telemetry));
    assert!(!intake.unlisted().contains(&Kind::VirtualService));
    for &kind in Kind::ALL {
        if kind != Kind::VirtualService {
            intake.apply(kind, WatchEvent::Init);
            intake.apply(kind, WatchEvent::InitDone);
        }
    }
    assert!(intake.synced());
    assert_eq!(intake.documents().len(), 1);
}

#[test]
fn add_update_and_delete_reach_the_bus() {
    let mut intake = synced_intake();
    let mut bus = Bus::default();
    let key = "VirtualService/shop/a";

    assert!(intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(from_server(&virtual_service("a", 100), 1))
    ));
    bus.publish(&intake.documents());
    assert_eq!(
        bus.resources()[key]["spec"]["http"][0]["route"][0]["weight"],
        100
    );

    assert!(intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(from_server(&virtual_service("a", 90), 2))
    ));
    bus.publish(&intake.documents());
    assert_eq!(
        bus.resources()[key]["spec"]["http"][0]["route"][0]["weight"],
        90
    );
    assert!(bus.accepted(key));

    assert!(intake.apply(
        Kind::VirtualService,
        WatchEvent::Delete(from_server(&virtual_service("a", 90), 3))
    ));
    bus.publish(&intake.documents());
    assert!(bus.resources().is_empty());
    assert!(bus.last.verdicts.is_empty());
}

#[test]
fn a_relist_removes_what_is_missing() {
    let mut intake = synced_intake();
    let mut bus = Bus::default();
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("a", 100)),
    );
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("b", 100)),
    );
    intake.apply(
        Kind::DestinationRule,
        WatchEvent::Apply(destination_rule("catalog")),
    );
    bus.publish(&intake.documents());
    assert_eq!(bus.resources().len(), 3);

    // The VirtualService watch lost its place: `a` was deleted meanwhile.
    assert!(!intake.apply(Kind::VirtualService, WatchEvent::Init));
    assert!(!intake.apply(
        Kind::VirtualService,
        WatchEvent::InitApply(virtual_service("b", 100))
    ));
    assert_eq!(
        intake.documents().len(),
        3,
        "unchanged until the relist is done"
    );
    assert!(intake.apply(Kind::VirtualService, WatchEvent::InitDone));
    bus.publish(&intake.documents());
    let keys: Vec<String> = bus.resources().into_keys().collect();
    assert_eq!(
        keys,
        ["DestinationRule/shop/catalog", "VirtualService/shop/b"]
    );
}

#[test]
fn an_invalid_edit_is_rejected_and_the_last_good_version_keeps_serving() {
    let mut intake = synced_intake();
    let mut bus = Bus::default();
    let key = "VirtualService/shop/a";
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("a", 100)),
    );
    bus.publish(&intake.documents());

    // An edit the webhook would have denied (it was fail-open, or off).
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("a", -1)),
    );
    bus.publish(&intake.documents());
    assert_eq!(
        bus.resources()[key]["spec"]["http"][0]["route"][0]["weight"],
        100
    );
    assert!(!bus.accepted(key));
    assert!(
        bus.last.verdicts[key].errors[0].contains("weight"),
        "{:?}",
        bus.last.verdicts[key]
    );

    // A field galley does not know: rejected the same way.
    let mut unknown = virtual_service("a", 50);
    unknown["spec"]["notAField"] = json!(true);
    intake.apply(Kind::VirtualService, WatchEvent::Apply(unknown));
    bus.publish(&intake.documents());
    assert_eq!(
        bus.resources()[key]["spec"]["http"][0]["route"][0]["weight"],
        100
    );
    assert!(!bus.accepted(key));

    // A new resource that is invalid is never published.
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("new", -5)),
    );
    bus.publish(&intake.documents());
    assert!(!bus.resources().contains_key("VirtualService/shop/new"));

    // Fixed: published again.
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("a", 80)),
    );
    bus.publish(&intake.documents());
    assert_eq!(
        bus.resources()[key]["spec"]["http"][0]["route"][0]["weight"],
        80
    );
    assert!(bus.accepted(key));
}

#[test]
fn a_status_change_alone_publishes_nothing_new() {
    let mut intake = synced_intake();
    let mut bus = Bus::default();
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(from_server(&virtual_service("a", 100), 1)),
    );
    bus.publish(&intake.documents());
    let before = bus.resources();

    let mut written = from_server(&virtual_service("a", 100), 2);
    written["status"] =
        json!({"validationMessages": [{"type": {"code": "IST0106"}, "level": "ERROR"}]});
    intake.apply(Kind::VirtualService, WatchEvent::Apply(written));
    bus.publish(&intake.documents());
    assert_eq!(bus.resources(), before);
    assert!(before["VirtualService/shop/a"].get("status").is_none());
    assert!(
        before["VirtualService/shop/a"]["metadata"]
            .get("resourceVersion")
            .is_none()
    );
}
