//! Traffic scenarios from issue 3's acceptance list, each a VirtualService
//! (and DestinationRule) served by pilot to one Envoy gateway and checked
//! with real requests. They share one pilot + Envoy per xDS flavour and run
//! in sequence; `TRIREME_SCENARIO=<part of a name>` runs only some.

use std::{
    collections::{BTreeMap, BTreeSet},
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use integration_tests::{backend::Behaviour, envoy::XdsApi, eventually, http_client::HttpRequest};

use crate::mesh::{APP, FLAKY, GatewayMesh, MIRROR, NAMESPACE, POOL, cluster_name, outcome};

type Scenario = fn(&GatewayMesh);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("weighted_80_20", weighted_80_20),
    ("header_match", header_match),
    ("uri_prefix_rewrite", uri_prefix_rewrite),
    ("redirect_301", redirect_301),
    ("fault_abort", fault_abort),
    ("fault_delay", fault_delay),
    ("retries_hide_failures", retries_hide_failures),
    ("timeout_504", timeout_504),
    ("mirror", mirror),
    ("config_edit_and_removal", config_edit_and_removal),
    (
        "workload_entry_pushes_only_eds",
        workload_entry_pushes_only_eds,
    ),
    ("consistent_hash", consistent_hash),
    ("outlier_detection", outlier_detection),
    ("destination_rule_change", destination_rule_change),
    ("no_rejections", no_rejections),
];

/// Runs every scenario over `api` and fails listing those that failed.
pub fn run_all(api: XdsApi) {
    let only = std::env::var("TRIREME_SCENARIO").ok();
    let started = Instant::now();
    let mesh = GatewayMesh::start(api);
    eprintln!("[{api:?}] pilot + Envoy up in {:?}", started.elapsed());
    let mut failures = Vec::new();
    for (name, scenario) in SCENARIOS {
        if only.as_deref().is_some_and(|only| !name.contains(only)) {
            continue;
        }
        mesh.reset();
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| scenario(&mesh))) {
            Ok(()) => eprintln!("[{api:?}] {name}: ok in {:?}", started.elapsed()),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("[{api:?}] {name}: FAILED after {:?}", started.elapsed());
                failures.push(format!("{name}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed over {api:?} xDS:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A route to `host` (subset `subset` unless empty), as YAML under `http:`.
fn route_to(name: &str, host: &str, subset: &str) -> String {
    let subset = if subset.is_empty() {
        String::new()
    } else {
        format!("\n        subset: {subset}")
    };
    format!(
        "  - name: {name}
    route:
    - destination:
        host: {host}{subset}
"
    )
}

fn share(tally: &BTreeMap<String, usize>, key: &str) -> f64 {
    let total: usize = tally.values().sum();
    *tally.get(key).unwrap_or(&0) as f64 / total as f64
}

fn weighted_80_20(mesh: &GatewayMesh) {
    mesh.apply(
        &format!(
            "  - name: weighted
    route:
    - destination:
        host: {APP}
        subset: v1
      weight: 80
    - destination:
        host: {APP}
        subset: v2
      weight: 20
"
        ),
        &[],
    );
    let tally = mesh.tally(1000, &HttpRequest::get("/weighted"));
    let (v1, v2) = (share(&tally, "v1"), share(&tally, "v2"));
    assert!(
        (v1 + v2 - 1.0).abs() < f64::EPSILON,
        "every request should reach v1 or v2: {tally:?}"
    );
    assert!(
        (0.75..=0.85).contains(&v1),
        "v1 should get 80% ± 5: {tally:?}"
    );
    assert!(
        (0.15..=0.25).contains(&v2),
        "v2 should get 20% ± 5: {tally:?}"
    );
}

fn header_match(mesh: &GatewayMesh) {
    let everyone_else = route_to("everyone-else", APP, "v1");
    mesh.apply(
        &format!(
            "  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: {APP}
        subset: v2
{everyone_else}"
        ),
        &[],
    );
    let jason = mesh.tally(50, &HttpRequest::get("/").header("end-user", "jason"));
    assert_eq!(
        jason,
        BTreeMap::from([("v2".into(), 50)]),
        "jason goes to v2 only"
    );
    let alice = mesh.tally(20, &HttpRequest::get("/").header("end-user", "alice"));
    assert_eq!(
        alice,
        BTreeMap::from([("v1".into(), 20)]),
        "others go to v1"
    );
    let anonymous = mesh.tally(20, &HttpRequest::get("/"));
    assert_eq!(
        anonymous,
        BTreeMap::from([("v1".into(), 20)]),
        "others go to v1"
    );
}

fn uri_prefix_rewrite(mesh: &GatewayMesh) {
    mesh.apply(
        &format!(
            "  - name: rewrite
    match:
    - uri:
        prefix: /old/
    rewrite:
      uri: /new/
    route:
    - destination:
        host: {APP}
        subset: v1
"
        ),
        &[],
    );
    let response = mesh.get("/old/page?q=1");
    assert_eq!((response.status, response.body.as_str()), (200, "v1"));
    let paths: Vec<String> = mesh
        .backends
        .v1
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        ["/new/page?q=1"],
        "the backend sees the rewritten path"
    );
}

fn redirect_301(mesh: &GatewayMesh) {
    mesh.apply(
        "  - name: moved
    match:
    - uri:
        exact: /moved
    redirect:
      uri: /new-home
      authority: new.example.com
",
        &[],
    );
    let response = mesh.get("/moved");
    assert_eq!(response.status, 301, "{response:?}");
    assert_eq!(
        response.header("location"),
        Some("http://new.example.com/new-home"),
        "{response:?}"
    );
    let reached: usize = mesh.backends.all().iter().map(|b| b.request_count()).sum();
    assert_eq!(reached, 0, "a redirect never reaches a backend");
}

fn fault_abort(mesh: &GatewayMesh) {
    mesh.apply(
        &format!(
            "  - name: abort
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: 503
    route:
    - destination:
        host: {APP}
        subset: v1
"
        ),
        &[],
    );
    let tally = mesh.tally(20, &HttpRequest::get("/"));
    assert_eq!(tally, BTreeMap::from([("status 503".into(), 20)]));
    assert_eq!(
        mesh.backends.v1.request_count(),
        0,
        "aborted requests never reach v1"
    );
}

fn fault_delay(mesh: &GatewayMesh) {
    mesh.apply(
        &format!(
            "  - name: delay
    fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 1s
    route:
    - destination:
        host: {APP}
        subset: v1
"
        ),
        &[],
    );
    for _ in 0..3 {
        let response = mesh.get("/");
        assert_eq!((response.status, response.body.as_str()), (200, "v1"));
        // Envoy's timers have millisecond granularity and may fire a hair
        // early; allow 10 ms of that.
        assert!(
            response.elapsed >= Duration::from_millis(990)
                && response.elapsed < Duration::from_secs(3),
            "a fixed 1s delay took {:?}",
            response.elapsed
        );
    }
}

fn retries_hide_failures(mesh: &GatewayMesh) {
    // 500, not 503: Istio's default retry policy (which pilot should also
    // apply) already retries 503 twice, so only 500s prove the configured
    // policy is what hides the failures.
    mesh.backends
        .v1
        .set_behaviour(Behaviour::failing(1, 2).with_status(500));
    mesh.apply(
        &format!(
            "  - name: retried
    retries:
      attempts: 3
      retryOn: 5xx
    route:
    - destination:
        host: {APP}
        subset: v1
"
        ),
        &[],
    );
    let tally = mesh.tally(200, &HttpRequest::get("/"));
    assert!(
        share(&tally, "v1") >= 0.99,
        "retries should hide a 50% failure rate: {tally:?}"
    );
    let attempts = mesh.backends.v1.request_count();
    assert!(
        attempts >= 290,
        "v1 should see about two attempts per request, saw {attempts} for 200"
    );
}

fn timeout_504(mesh: &GatewayMesh) {
    mesh.backends
        .v1
        .set_behaviour(Behaviour::delayed(Duration::from_secs(2)));
    mesh.apply(
        &format!(
            "  - name: impatient
    timeout: 0.5s
    route:
    - destination:
        host: {APP}
        subset: v1
"
        ),
        &[],
    );
    for _ in 0..3 {
        let response = mesh.get("/");
        assert_eq!(response.status, 504, "{response:?}");
        assert!(
            response.elapsed >= Duration::from_millis(450)
                && response.elapsed < Duration::from_millis(1500),
            "a 0.5s timeout answered after {:?}",
            response.elapsed
        );
    }
}

fn mirror(mesh: &GatewayMesh) {
    mesh.apply(
        &format!(
            "  - name: mirrored
    route:
    - destination:
        host: {APP}
        subset: v1
    mirror:
      host: {MIRROR}
    mirrorPercentage:
      value: 100
"
        ),
        &[],
    );
    for i in 0..20 {
        let response = mesh.get(&format!("/mirrored/{i}"));
        assert_eq!((response.status, response.body.as_str()), (200, "v1"));
    }
    let copies = eventually("20 mirrored copies", Duration::from_secs(5), || {
        let copies = mesh.backends.mirror.requests();
        (copies.len() >= 20).then_some(copies)
    });
    let paths: BTreeSet<String> = copies.iter().map(|r| r.path.clone()).collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("/mirrored/{i}")).collect();
    assert_eq!(paths, expected, "each request is copied once to the mirror");
    assert!(
        copies
            .iter()
            .all(|r| r.header("host").is_some_and(|h| h.contains("-shadow"))),
        "Envoy marks mirrored copies with a -shadow authority: {:?}",
        copies[0].headers
    );
}

fn consistent_hash(mesh: &GatewayMesh) {
    // The DestinationRule hashing on x-user is part of the base config.
    mesh.apply(&route_to("pinned", POOL, ""), &[]);
    mesh.wait_for_cluster(&cluster_name("", POOL), "a hashing load balancer", |c| {
        matches!(c["lb_policy"].as_str(), Some("RING_HASH" | "MAGLEV"))
    });
    let mut used = BTreeSet::new();
    for user in 0..20 {
        let tally = mesh.tally(
            10,
            &HttpRequest::get("/").header("x-user", &format!("user-{user}")),
        );
        assert_eq!(
            tally.len(),
            1,
            "user-{user} should stick to one endpoint: {tally:?}"
        );
        let backend = tally.keys().next().unwrap().clone();
        assert!(backend.starts_with("pool-"), "user-{user}: {tally:?}");
        used.insert(backend);
    }
    assert_eq!(
        used.len(),
        2,
        "20 users should spread over both endpoints: {used:?}"
    );
}

fn outlier_detection(mesh: &GatewayMesh) {
    // The DestinationRule with outlier detection is part of the base config.
    // 500, which Istio's default retry policy does not retry, and the check
    // below that flaky-b is not even tried: a retry to flaky-a would hide
    // the failure without any ejection.
    mesh.backends
        .flaky_b
        .set_behaviour(Behaviour::always_failing().with_status(500));
    mesh.apply(&route_to("flaky", FLAKY, ""), &[]);
    let cluster = cluster_name("", FLAKY);
    mesh.wait_for_cluster(&cluster, "outlier detection", |c| {
        c["outlier_detection"].is_object()
    });
    // The balancer tries the failing endpoint within a few requests; one 5xx
    // ejects it.
    let mut warm_up = BTreeMap::new();
    for _ in 0..30 {
        if mesh.backends.flaky_b.request_count() > 0 {
            break;
        }
        *warm_up
            .entry(outcome(mesh.send(HttpRequest::get("/"))))
            .or_insert(0) += 1;
    }
    assert!(
        mesh.backends.flaky_b.request_count() > 0,
        "the failing endpoint should have been tried: {warm_up:?}"
    );
    let tried_before = mesh.backends.flaky_b.request_count();
    let tally = mesh.tally(40, &HttpRequest::get("/"));
    let tried_after = mesh.backends.flaky_b.request_count();
    let ejections = mesh.envoy.stat(&format!(
        "cluster.{cluster}.outlier_detection.ejections_enforced_total"
    ));
    assert_eq!(
        tally,
        BTreeMap::from([("flaky-a".into(), 40)]),
        "after ejection all traffic goes to the healthy endpoint (ejections: {ejections:?})"
    );
    assert_eq!(
        tried_after, tried_before,
        "the ejected endpoint is not tried at all"
    );
}

fn config_edit_and_removal(mesh: &GatewayMesh) {
    mesh.apply(&route_to("edited", APP, "v1"), &[]);
    assert_eq!(
        mesh.tally(10, &HttpRequest::get("/")),
        BTreeMap::from([("v1".into(), 10)])
    );

    let edited = mesh.rewrite(&route_to("edited", APP, "v2"));
    let to_v2 = eventually(
        "traffic to follow the edit to v2",
        Duration::from_secs(5),
        || (outcome(mesh.send(HttpRequest::get("/"))) == "v2").then(|| edited.elapsed()),
    );
    assert!(
        to_v2 <= Duration::from_secs(2),
        "the edit took {to_v2:?} to reach traffic"
    );
    assert_eq!(
        mesh.tally(10, &HttpRequest::get("/")),
        BTreeMap::from([("v2".into(), 10)])
    );

    let removed = mesh.remove_scenario();
    let reverted = eventually(
        "traffic to revert after removal",
        Duration::from_secs(5),
        || (outcome(mesh.send(HttpRequest::get("/"))) == "status 404").then(|| removed.elapsed()),
    );
    assert!(
        reverted <= Duration::from_secs(2),
        "the removal took {reverted:?} to reach traffic"
    );
    let before = mesh.backends.v2.request_count();
    assert_eq!(
        mesh.tally(10, &HttpRequest::get("/")),
        BTreeMap::from([("status 404".into(), 10)])
    );
    assert_eq!(
        mesh.backends.v2.request_count(),
        before,
        "no route is left to v2"
    );
}

fn workload_entry_pushes_only_eds(mesh: &GatewayMesh) {
    mesh.apply(&route_to("any-version", APP, ""), &[]);
    let tally = mesh.tally(20, &HttpRequest::get("/"));
    assert_eq!(tally.keys().collect::<Vec<_>>(), ["v1", "v2"], "{tally:?}");
    mesh.wait_until_quiet();
    let before = mesh.pushes();

    let v3 = integration_tests::istio_yaml::workload_entry(
        "app-v3",
        NAMESPACE,
        "app",
        "v3",
        mesh.backends.v3.port(),
    );
    mesh.write_extra("app-v3.yaml", &v3);
    eventually(
        "traffic to reach the new endpoint v3",
        Duration::from_secs(5),
        || (outcome(mesh.send(HttpRequest::get("/"))) == "v3").then_some(()),
    );
    mesh.wait_until_quiet();
    let after = mesh.pushes();
    assert!(
        after["eds"] > before["eds"],
        "an endpoint change pushes EDS: {before:?} -> {after:?}"
    );
    for kind in ["cds", "lds", "rds"] {
        assert_eq!(
            after[kind], before[kind],
            "a new WorkloadEntry should push only EDS, {kind} moved: {before:?} -> {after:?}"
        );
    }
}

/// A DestinationRule added while Envoy runs changes the cluster it already
/// has: the updated cluster must become active (it warms until pilot sends
/// its endpoints again) and keep serving.
fn destination_rule_change(mesh: &GatewayMesh) {
    mesh.apply(&route_to("mirror-host", MIRROR, ""), &[]);
    assert_eq!(
        mesh.tally(5, &HttpRequest::get("/")),
        BTreeMap::from([("mirror".into(), 5)])
    );
    let random = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mirror
  namespace: {NAMESPACE}
spec:
  host: {MIRROR}
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
"
    );
    mesh.write_extra("mirror-rule.yaml", &random);
    mesh.wait_for_cluster(&cluster_name("", MIRROR), "lb_policy RANDOM", |c| {
        c["lb_policy"] == "RANDOM"
    });
    assert_eq!(
        mesh.tally(5, &HttpRequest::get("/")),
        BTreeMap::from([("mirror".into(), 5)])
    );
    mesh.wait_until_quiet();
}

fn no_rejections(mesh: &GatewayMesh) {
    assert_eq!(
        mesh.envoy.rejections(),
        BTreeMap::new(),
        "Envoy rejected updates"
    );
    let metrics = mesh.pilot.metrics();
    assert!(
        metrics.has("pilot_total_xds_rejects"),
        "pilot exports no pilot_total_xds_rejects"
    );
    assert_eq!(metrics.value("pilot_total_xds_rejects", &[]), 0.0);
}
