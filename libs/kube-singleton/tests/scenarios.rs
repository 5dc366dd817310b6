//! tower-test scenarios: replicas with real electors and jobs against an
//! in-memory API server, under tokio's paused clock (no real sleeping).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube_singleton::*;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

const INJECTOR: &str = "istio-sidecar-injector";
const VALIDATOR: &str = "istio-validator-istio-system";
const INJECTOR_ENTRY: &str = "sidecar-injector.istio.io";
const VALIDATOR_ENTRY: &str = "rev.validation.istio.io";

struct Replica {
    leader: LeaderHandle,
    bundle: watch::Sender<String>,
    namespaces: mpsc::UnboundedSender<NamespaceEvent>,
    shutdown: Option<oneshot::Sender<()>>,
    elector: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn namespace(&self, event: NamespaceEvent) {
        self.namespaces.unbounded_send(event).unwrap();
    }
}

fn ns(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn ok_probe() -> Arc<dyn WebhookProbe> {
    Arc::new(|| async { Ok(()) })
}

/// Seeds the two webhook configurations, both fail-open without a caBundle.
fn seed_webhooks(api: &FakeApi) {
    api.seed(
        &mutating_path(INJECTOR),
        webhook_config(
            "MutatingWebhookConfiguration",
            INJECTOR,
            &[(INJECTOR_ENTRY, "Fail")],
        ),
    );
    api.seed(
        &validating_path(VALIDATOR),
        webhook_config(
            "ValidatingWebhookConfiguration",
            VALIDATOR,
            &[(VALIDATOR_ENTRY, "Ignore")],
        ),
    );
}

/// One replica: an elector on one Lease, the webhook job and the ConfigMap job.
fn start_replica(api: &FakeApi, name: &str, probe: Arc<dyn WebhookProbe>) -> Replica {
    let client = api.client(name);
    let config = ElectionConfig::new(NS, VALIDATION_CONTROLLER, name);
    let clock = Arc::new(TokioClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let elector = LeaderElector::with_clock(client.clone(), config, clock).unwrap();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (leader, elector) = elector.spawn(async move {
        let _ = shutdown_rx.await;
    });
    let (bundle_tx, bundle_rx) = watch::channel(String::new());
    tokio::spawn(
        WebhookPatcher {
            client: client.clone(),
            leader: leader.clone(),
            bundle: bundle_rx.clone(),
            mutating: vec![INJECTOR.into()],
            validating: vec![VALIDATOR.into()],
            probe: Some(probe),
            retry: Duration::from_secs(10),
            resync: Duration::from_secs(600),
        }
        .run(),
    );
    let (ns_tx, ns_rx) = mpsc::unbounded();
    tokio::spawn(
        RootCertPublisher {
            client,
            leader: leader.clone(),
            bundle: bundle_rx,
            retry: Duration::from_secs(10),
            resync: Duration::from_secs(600),
        }
        .run(ns_rx),
    );
    Replica {
        leader,
        bundle: bundle_tx,
        namespaces: ns_tx,
        shutdown: Some(shutdown_tx),
        elector,
    }
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

fn b64(s: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap()
}

fn ca_bundle_of(api: &FakeApi, path: &str) -> Vec<Value> {
    api.object(path).unwrap()["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["clientConfig"]["caBundle"].clone())
        .collect()
}

fn root_cert_of(api: &FakeApi, namespace: &str) -> Option<String> {
    api.object(&configmap_path(namespace))
        .and_then(|cm| cm["data"]["root-cert.pem"].as_str().map(str::to_string))
}

/// (method, path) of every write in `calls`.
fn writes(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect()
}

fn lease_holder(api: &FakeApi) -> Value {
    api.object(&lease_path(VALIDATION_CONTROLLER)).unwrap()["spec"]["holderIdentity"].clone()
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_patches() {
    let api = FakeApi::new();
    seed_webhooks(&api);

    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    a.namespace(NamespaceEvent::Relisted(vec![ns("default"), ns("app")]));
    settle(1).await;
    assert!(a.leader.is_leader());

    // pod-b reads no lease (pod-a's create races its read), so it creates one
    // and gets 409; from then on it sees pod-a's live, renewed lease.
    api.fail_next("pod-b", "GET", &lease_path(VALIDATION_CONTROLLER), 404);
    let b = start_replica(&api, "pod-b", ok_probe());
    b.bundle.send_replace("ROOT-1".into());
    b.namespace(NamespaceEvent::Relisted(vec![ns("default"), ns("app")]));
    settle(120).await;
    b.bundle.send_replace("ROOT-2".into());
    b.namespace(NamespaceEvent::Applied(Box::new(ns("late"))));
    settle(120).await;

    assert!(a.leader.is_leader());
    assert!(!b.leader.is_leader());
    assert_eq!(lease_holder(&api), json!("pod-a"));

    let b_calls: Vec<Call> = api
        .calls()
        .into_iter()
        .filter(|c| c.replica == "pod-b")
        .collect();
    let first: Vec<(&str, &str, u16)> = b_calls
        .iter()
        .take(3)
        .map(|c| (c.method.as_str(), c.path.as_str(), c.status))
        .collect();
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    let lease = lease_path(VALIDATION_CONTROLLER);
    assert_eq!(
        first,
        vec![
            ("GET", lease.as_str(), 404),
            ("POST", leases.as_str(), 409),
            ("GET", lease.as_str(), 200),
        ]
    );
    // The follower touched nothing but the Lease: no webhook or ConfigMap
    // call at all, let alone a PATCH/PUT/POST.
    assert!(b_calls.len() > 20, "pod-b kept polling the lease");
    assert!(b_calls.iter().all(Call::is_lease), "{b_calls:#?}");
    assert!(
        b_calls.iter().skip(2).all(|c| c.method == "GET"),
        "pod-b wrote to the lease after losing the race"
    );

    // The leader did the work: both caBundles, the flip, the ConfigMaps.
    let a_jobs: Vec<Call> = api
        .job_calls()
        .into_iter()
        .filter(|c| c.replica == "pod-a")
        .collect();
    // Sorted, as the two jobs interleave (order within the webhook job is
    // checked in webhook_flips_to_fail_only_after_a_successful_probe).
    let mut a_writes = writes(&a_jobs);
    a_writes.sort();
    assert_eq!(
        a_writes,
        vec![
            ("PATCH".into(), mutating_path(INJECTOR)),
            ("PATCH".into(), validating_path(VALIDATOR)),
            ("PATCH".into(), validating_path(VALIDATOR)),
            ("POST".into(), configmaps_path("app")),
            ("POST".into(), configmaps_path("default")),
        ]
    );
    assert_eq!(
        ca_bundle_of(&api, &mutating_path(INJECTOR)),
        vec![b64("ROOT-1")]
    );
    assert_eq!(root_cert_of(&api, "app").as_deref(), Some("ROOT-1"));
    assert_eq!(root_cert_of(&api, "late"), None);
}

#[tokio::test(start_paused = true)]
async fn failed_renewal_stops_the_patching() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    a.namespace(NamespaceEvent::Relisted(vec![ns("default")]));
    settle(30).await;
    assert!(a.leader.is_leader());
    assert_eq!(root_cert_of(&api, "default").as_deref(), Some("ROOT-1"));

    // The API server stops answering pod-a's lease requests: it must stop
    // leading once the renew deadline (15 s) has passed, before the lease
    // (30 s) could expire for others.
    api.lease_outage("pod-a");
    let mut leading = a.leader.subscribe();
    leading.wait_for(|l| !*l).await.unwrap();
    let stepped_down = tokio::time::Instant::now();
    let last_renewal = api
        .calls()
        .iter()
        .rev()
        .find(|c| c.is_lease() && c.method == "PUT" && c.status == 200)
        .map(|c| c.at)
        .unwrap();
    let took = stepped_down - last_renewal;
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(30),
        "stepped down {took:?} after the last renewal"
    );

    api.clear_calls();
    a.bundle.send_replace("ROOT-2".into());
    a.namespace(NamespaceEvent::Applied(Box::new(ns("new"))));
    settle(120).await;
    assert!(!a.leader.is_leader());
    assert!(api.job_calls().is_empty(), "{:#?}", api.job_calls());
    assert_eq!(
        ca_bundle_of(&api, &validating_path(VALIDATOR)),
        vec![b64("ROOT-1")]
    );
    assert_eq!(root_cert_of(&api, "default").as_deref(), Some("ROOT-1"));
    assert_eq!(root_cert_of(&api, "new"), None);
}

#[tokio::test(start_paused = true)]
async fn another_holder_stops_leading_until_its_lease_expires() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    a.namespace(NamespaceEvent::Relisted(vec![ns("default")]));
    settle(2).await;
    assert!(a.leader.is_leader());

    // Another replica takes the lease (and then dies without renewing it).
    api.edit(&lease_path(VALIDATION_CONTROLLER), |lease| {
        lease["spec"]["holderIdentity"] = json!("pod-z");
        lease["spec"]["renewTime"] = json!("2027-01-15T08:00:00.000000Z");
    });
    settle(6).await;
    assert!(
        !a.leader.is_leader(),
        "pod-a saw pod-z's lease at its next renewal"
    );

    api.clear_calls();
    a.bundle.send_replace("ROOT-2".into());
    settle(10).await;
    assert!(api.job_calls().is_empty(), "{:#?}", api.job_calls());

    // pod-z's record stays unchanged for a whole lease duration: pod-a takes
    // the lease over (one more transition) and catches up with ROOT-2.
    settle(30).await;
    assert!(a.leader.is_leader());
    let lease = api.object(&lease_path(VALIDATION_CONTROLLER)).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], json!("pod-a"));
    assert_eq!(lease["spec"]["leaseTransitions"], json!(1));
    assert_eq!(
        ca_bundle_of(&api, &mutating_path(INJECTOR)),
        vec![b64("ROOT-2")]
    );
    assert_eq!(root_cert_of(&api, "default").as_deref(), Some("ROOT-2"));
}

#[tokio::test(start_paused = true)]
async fn webhook_flips_to_fail_only_after_a_successful_probe() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    let answers = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let probe: Arc<dyn WebhookProbe> = {
        let (answers, probes) = (answers.clone(), probes.clone());
        Arc::new(move || {
            let (answers, probes) = (answers.clone(), probes.clone());
            async move {
                probes.fetch_add(1, Ordering::SeqCst);
                if answers.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("connection refused".to_string())
                }
            }
        })
    };
    let a = start_replica(&api, "pod-a", probe);
    a.bundle.send_replace("ROOT-1".into());
    settle(25).await;

    // Probe failing: the caBundle went in once, the policy stayed Ignore.
    assert!(probes.load(Ordering::SeqCst) >= 2);
    let validating = validating_path(VALIDATOR);
    let patches: Vec<Call> = api
        .job_calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path == validating)
        .collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let rv = patches[0].body.as_ref().unwrap()["metadata"]["resourceVersion"].clone();
    assert!(rv.is_string(), "patch is conditional on the version read");
    assert_eq!(
        patches[0].body.as_ref().unwrap()["webhooks"],
        json!([{"name": VALIDATOR_ENTRY, "clientConfig": {"caBundle": b64("ROOT-1")}}])
    );
    let object = api.object(&validating).unwrap();
    assert_eq!(object["webhooks"][0]["failurePolicy"], json!("Ignore"));

    // The webhook starts answering: exactly one more patch, to Fail, after
    // the caBundle patch.
    answers.store(true, Ordering::SeqCst);
    settle(15).await;
    let patches: Vec<Call> = api
        .job_calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path == validating)
        .collect();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert_eq!(
        patches[1].body.as_ref().unwrap()["webhooks"],
        json!([{"name": VALIDATOR_ENTRY, "failurePolicy": "Fail"}])
    );
    let object = api.object(&validating).unwrap();
    assert_eq!(object["webhooks"][0]["failurePolicy"], json!("Fail"));
    assert_eq!(
        object["webhooks"][0]["clientConfig"]["caBundle"],
        b64("ROOT-1")
    );
    // Other fields of the entry survived the patches.
    assert_eq!(object["webhooks"][0]["sideEffects"], json!("None"));

    // Once closed: no more probes or patches, even across resyncs.
    let probed = probes.load(Ordering::SeqCst);
    api.clear_calls();
    settle(1300).await;
    assert_eq!(probes.load(Ordering::SeqCst), probed);
    assert!(writes(&api.job_calls()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn bundle_change_repatches_ca_bundle_without_reprobing_closed_webhook() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    settle(5).await;
    api.clear_calls();

    a.bundle.send_replace("ROOT-2".into());
    settle(5).await;
    assert_eq!(
        writes(&api.job_calls()),
        vec![
            ("PATCH".into(), mutating_path(INJECTOR)),
            ("PATCH".into(), validating_path(VALIDATOR)),
        ]
    );
    assert_eq!(
        ca_bundle_of(&api, &validating_path(VALIDATOR)),
        vec![b64("ROOT-2")]
    );

    // The same bundle again: reads only.
    api.clear_calls();
    a.bundle.send_replace("ROOT-2".into());
    settle(5).await;
    assert!(!api.job_calls().is_empty());
    assert!(writes(&api.job_calls()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn root_cert_configmap_in_every_namespace() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    // `app` already holds the current bundle: it must not be rewritten.
    api.seed(
        &configmap_path("app"),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio-ca-root-cert", "namespace": "app"},
            "data": {"root-cert.pem": "ROOT-1"},
        }),
    );
    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    a.namespace(NamespaceEvent::Relisted(vec![
        ns("default"),
        ns("app"),
        ns("kube-system"),
    ]));
    settle(5).await;
    let cm_writes = |api: &FakeApi| -> Vec<Call> {
        api.job_calls()
            .into_iter()
            .filter(|c| c.is_write() && c.path.contains("/configmaps"))
            .collect()
    };
    let created = cm_writes(&api);
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0].method, "POST");
    assert_eq!(created[0].path, configmaps_path("default"));
    let body = created[0].body.as_ref().unwrap();
    assert_eq!(body["metadata"]["name"], json!("istio-ca-root-cert"));
    assert_eq!(body["metadata"]["labels"]["istio.io/config"], json!("true"));
    assert_eq!(body["data"], json!({"root-cert.pem": "ROOT-1"}));
    assert!(api.object(&configmap_path("kube-system")).is_none());
    assert!(
        api.job_calls()
            .iter()
            .all(|c| !c.path.contains("kube-system")),
        "ignored namespaces are not even read"
    );

    // A new namespace gets it as it appears.
    api.clear_calls();
    a.namespace(NamespaceEvent::Applied(Box::new(ns("shop"))));
    settle(1).await;
    assert_eq!(
        writes(&cm_writes(&api)),
        vec![("POST".into(), configmaps_path("shop"))]
    );
    assert_eq!(root_cert_of(&api, "shop").as_deref(), Some("ROOT-1"));

    // A bundle change updates every namespace with a conditional merge patch.
    api.clear_calls();
    a.bundle.send_replace("ROOT-1\nROOT-2".into());
    settle(1).await;
    let updated = cm_writes(&api);
    assert_eq!(
        writes(&updated),
        vec![
            ("PATCH".into(), configmap_path("app")),
            ("PATCH".into(), configmap_path("default")),
            ("PATCH".into(), configmap_path("shop")),
        ]
    );
    for call in &updated {
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let body = call.body.as_ref().unwrap();
        assert_eq!(body["data"], json!({"root-cert.pem": "ROOT-1\nROOT-2"}));
        assert!(body["metadata"]["resourceVersion"].is_string());
    }
    for namespace in ["app", "default", "shop"] {
        assert_eq!(
            root_cert_of(&api, namespace).as_deref(),
            Some("ROOT-1\nROOT-2")
        );
    }

    // Equal bundle, a namespace update, a resync: reads, never a rewrite.
    api.clear_calls();
    a.bundle.send_replace("ROOT-1\nROOT-2".into());
    a.namespace(NamespaceEvent::Applied(Box::new(ns("app"))));
    settle(700).await;
    assert!(!api.job_calls().is_empty());
    assert!(cm_writes(&api).is_empty(), "{:#?}", cm_writes(&api));

    // Someone edits one ConfigMap: the next resync repairs that one only.
    api.edit(&configmap_path("shop"), |cm| {
        cm["data"]["root-cert.pem"] = json!("tampered");
    });
    api.clear_calls();
    settle(600).await;
    assert_eq!(
        writes(&cm_writes(&api)),
        vec![("PATCH".into(), configmap_path("shop"))]
    );
    // A deleted namespace is forgotten.
    a.namespace(NamespaceEvent::Deleted("shop".into()));
    api.clear_calls();
    settle(600).await;
    assert!(api.job_calls().iter().all(|c| !c.path.contains("/shop/")));
}

#[tokio::test(start_paused = true)]
async fn configmap_write_failure_is_retried() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    api.fail_next("pod-a", "POST", &configmaps_path("default"), 500);
    let a = start_replica(&api, "pod-a", ok_probe());
    a.bundle.send_replace("ROOT-1".into());
    a.namespace(NamespaceEvent::Relisted(vec![ns("default")]));
    settle(1).await;
    assert_eq!(root_cert_of(&api, "default"), None);
    settle(10).await;
    assert_eq!(root_cert_of(&api, "default").as_deref(), Some("ROOT-1"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_for_a_fast_handover() {
    let api = FakeApi::new();
    seed_webhooks(&api);
    let mut a = start_replica(&api, "pod-a", ok_probe());
    settle(1).await;
    let b = start_replica(&api, "pod-b", ok_probe());
    settle(10).await;
    assert!(a.leader.is_leader() && !b.leader.is_leader());

    a.shutdown.take().unwrap().send(()).unwrap();
    (&mut a.elector).await.unwrap();
    assert!(!a.leader.is_leader());
    assert_eq!(lease_holder(&api), Value::Null);

    // pod-b takes over at its next attempt, well before a 30 s expiry.
    settle(6).await;
    assert!(b.leader.is_leader());
    assert_eq!(lease_holder(&api), json!("pod-b"));
}
