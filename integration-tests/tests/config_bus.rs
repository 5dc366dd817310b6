//! Config through galley and the bus: galley watches a directory, judges
//! every resource and publishes the valid ones to a real nats-server; two
//! pilot replicas read the same bucket; a real Envoy gateway is connected to
//! one of them (both are in its xDS cluster, as behind a Service).

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::backend::Backend;
use integration_tests::config_dir::ConfigDir;
use integration_tests::envoy::{Envoy, ProxyIdentity, XdsApi};
use integration_tests::galley::Galley;
use integration_tests::http_client::HttpRequest;
use integration_tests::istio_yaml::{documents, gateway, service_entry, workload_entry};
use integration_tests::pilot::Pilot;
use integration_tests::{NatsServer, binary, eventually, free_port};
use serde_json::Value;

const NAMESPACE: &str = "shop";
const HOST: &str = "catalog.shop.svc.cluster.local";
const ROUTES: &str = "routes.yaml";

/// [`routes`] with a first route matching a regex RE2 refuses: invalid.
fn routes_with_a_bad_regex() -> String {
    routes(0, 100).replace(
        "  http:\n  - route:",
        "  http:\n  - match: [{ uri: { regex: \"([a-z\" } }]\n    route:",
    )
}

/// Subsets v1/v2 and a gateway VirtualService sending `v1_weight`% to v1.
fn routes(v1_weight: u32, v2_weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: catalog, namespace: {NAMESPACE} }}
spec:
  host: {HOST}
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: catalog, namespace: {NAMESPACE} }}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route:
    - {{ destination: {{ host: {HOST}, subset: v1 }}, weight: {v1_weight} }}
    - {{ destination: {{ host: {HOST}, subset: v2 }}, weight: {v2_weight} }}
"
    )
}

struct BusMesh {
    envoy: Envoy,
    pilots: [Option<Pilot>; 2],
    _galley: Galley,
    nats: NatsServer,
    config: ConfigDir,
    gateway_port: u16,
    _backends: [Backend; 2],
}

impl BusMesh {
    fn start() -> BusMesh {
        let backends = [Backend::start("v1"), Backend::start("v2")];
        let gateway_port = free_port();
        let config = ConfigDir::new();
        config.write(
            "services.yaml",
            &documents(&[
                service_entry("catalog", NAMESPACE, HOST, 80, "catalog"),
                workload_entry("catalog-v1", NAMESPACE, "catalog", "v1", backends[0].port()),
                workload_entry("catalog-v2", NAMESPACE, "catalog", "v2", backends[1].port()),
                gateway("gw", NAMESPACE, gateway_port),
            ]),
        );
        config.write(ROUTES, &routes(100, 0));
        let nats = NatsServer::start();
        let galley = Galley::start(config.path(), &nats.url());
        let pilots = [0, 1].map(|_| Some(Pilot::start_from_bus(&nats.url())));
        let ports: Vec<u16> = pilots
            .iter()
            .map(|pilot| pilot.as_ref().unwrap().xds_addr.port())
            .collect();
        let envoy = Envoy::start_with_control_planes(
            ProxyIdentity::ingress_gateway("gateway-1"),
            XdsApi::Delta,
            &ports,
        );
        let mesh = BusMesh {
            envoy,
            pilots,
            _galley: galley,
            nats,
            config,
            gateway_port,
            _backends: backends,
        };
        mesh.wait_for_all("v1", Duration::from_secs(30));
        mesh
    }

    /// One request through the gateway: the body names the backend.
    fn call(&self) -> Option<String> {
        HttpRequest::get("/")
            .header("host", "shop.example.com")
            .timeout(Duration::from_secs(5))
            .send(([127, 0, 0, 1], self.gateway_port).into())
            .ok()
            .filter(|response| response.status == 200)
            .map(|response| response.body)
    }

    /// Waits until 10 requests in a row all reach `backend`; returns how long it took.
    fn wait_for_all(&self, backend: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        eventually(&format!("all traffic on {backend}"), limit, || {
            (0..10)
                .all(|_| self.call().is_some_and(|body| body.contains(backend)))
                .then_some(())
        });
        started.elapsed()
    }

    /// Pushes both replicas have made, summed over xDS types.
    fn pushes(&self) -> f64 {
        self.pilots
            .iter()
            .flatten()
            .map(|pilot| pilot.metrics().value("pilot_xds_pushes", &[]))
            .sum()
    }

    /// The replica the Envoy is connected to.
    fn serving_replica(&self) -> usize {
        let node = self.envoy.node_id();
        eventually(
            "a replica with the Envoy in sync",
            Duration::from_secs(20),
            || (0..2).find(|&i| self.pilots[i].as_ref().is_some_and(|p| p.in_sync(&node))),
        )
    }
}

/// `trireme analyze` against the bus: (succeeded, output).
fn analyze(nats_url: &str) -> (bool, String) {
    let output = Command::new(binary("trireme"))
        .args(["analyze", "--nats-url", nats_url])
        .output()
        .expect("running trireme analyze");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn edits_flow_through_galley_and_an_invalid_one_is_refused_while_the_last_good_config_serves() {
    let mesh = BusMesh::start();

    mesh.config.write(ROUTES, &routes(0, 100));
    let took = mesh.wait_for_all("v2", Duration::from_secs(10));
    eprintln!("file edit -> traffic moved in {took:?} (galley polls every 500 ms)");

    // A regex Envoy would refuse is refused here: traffic stays on v2, and
    // the verdict says which field and why.
    let pushes_before = mesh.pushes();
    mesh.config.write(ROUTES, &routes_with_a_bad_regex());
    let nats_url = mesh.nats.url();
    let (clean, report) = eventually(
        "the rejection in trireme analyze",
        Duration::from_secs(10),
        || {
            let (clean, report) = analyze(&nats_url);
            report
                .contains("VirtualService shop/catalog")
                .then_some((clean, report))
        },
    );
    eprintln!("trireme analyze:\n{report}");
    assert!(!clean, "analyze must fail while a resource is rejected");
    assert!(report.contains("spec.http[0].match[0].uri"), "{report}");
    for _ in 0..20 {
        assert!(
            mesh.call().is_some_and(|body| body.contains("v2")),
            "the last accepted config keeps serving"
        );
    }
    assert_eq!(
        mesh.pushes(),
        pushes_before,
        "a rejected edit pushes nothing to proxies"
    );

    // Fixed again: accepted, applied, and analyze is clean.
    mesh.config.write(ROUTES, &routes(100, 0));
    mesh.wait_for_all("v1", Duration::from_secs(10));
    eventually(
        "analyze to come back clean",
        Duration::from_secs(10),
        || analyze(&nats_url).0.then_some(()),
    );
}

#[test]
fn a_nats_outage_disturbs_no_traffic_and_a_change_made_meanwhile_applies_after() {
    let mut mesh = BusMesh::start();
    mesh.nats.stop();
    let outage = Instant::now();
    let mut changed = false;
    let (mut requests, mut failed) = (0, 0);
    while outage.elapsed() < Duration::from_secs(30) {
        requests += 1;
        if mesh.call().is_none_or(|body| !body.contains("v1")) {
            failed += 1;
        }
        if !changed && outage.elapsed() > Duration::from_secs(5) {
            // Made while the bus is away: galley keeps retrying.
            mesh.config.write(ROUTES, &routes(0, 100));
            changed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let disconnected = mesh.pilots[0]
        .as_ref()
        .unwrap()
        .metrics()
        .value("pilot_bus_connected", &[]);
    eprintln!("NATS away 30 s: {requests} requests, {failed} failed or changed");
    assert_eq!(failed, 0, "out of {requests}");
    assert_eq!(disconnected, 0.0, "pilot reports the bus as disconnected");

    mesh.nats.start_again();
    let took = mesh.wait_for_all("v2", Duration::from_secs(60));
    eprintln!("the change made during the outage applied {took:?} after NATS returned");
}

/// Envoy's dynamic config without what differs between control planes by
/// nature (versions and timestamps).
fn served_config(envoy: &Envoy) -> Value {
    let mut dump = envoy.config_dump(None);
    strip_versions(&mut dump);
    dump["configs"]
        .as_array()
        .map(|configs| {
            configs
                .iter()
                .filter(|config| {
                    let kind = config["@type"].as_str().unwrap_or_default();
                    kind.contains("ListenersConfigDump")
                        || kind.contains("ClustersConfigDump")
                        || kind.contains("RoutesConfigDump")
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn strip_versions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| key != "version_info" && key != "last_updated");
            map.values_mut().for_each(strip_versions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_versions),
        _ => {}
    }
}

#[test]
fn killing_the_replica_envoy_uses_moves_it_to_the_other_with_identical_config() {
    let mut mesh = BusMesh::start();
    let serving = mesh.serving_replica();
    let before = served_config(&mesh.envoy);
    mesh.pilots[serving].take().unwrap().kill();
    let node = mesh.envoy.node_id();
    let other = mesh.pilots[1 - serving].as_ref().unwrap();
    eventually(
        "the Envoy in sync with the other replica",
        Duration::from_secs(30),
        || other.in_sync(&node).then_some(()),
    );
    mesh.wait_for_all("v1", Duration::from_secs(10));
    let after = served_config(&mesh.envoy);
    assert_eq!(before, after, "both replicas serve the same config");
}

/// `trireme proxy-status` against the bus: (all in sync, output).
fn proxy_status(nats_url: &str) -> (bool, String) {
    let output = Command::new(binary("trireme"))
        .args(["proxy-status", "--nats-url", nats_url])
        .output()
        .expect("running trireme proxy-status");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Writes `resource` under `key` straight into the config bucket, as a
/// galley that let something through would.
fn put_behind_galleys_back(nats_url: &str, key: &str, resource: &Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = event_bus::Bus::connect(nats_url, "test").await.unwrap();
        let bucket = bus
            .kv_bucket::<Value>(event_bus::BucketConfig::new(
                mesh_config::store::CONFIG_BUCKET,
            ))
            .await
            .unwrap();
        bucket.put(key, resource).await.unwrap();
    });
}

#[test]
fn proxy_status_shows_the_envoy_synced_on_its_replica_then_nacked_with_envoys_words() {
    let mesh = BusMesh::start();
    let serving = mesh.serving_replica();
    let port = mesh.pilots[serving].as_ref().unwrap().xds_addr.port();
    let node = mesh.envoy.node_id();
    let nats_url = mesh.nats.url();
    let row = eventually("the Envoy in proxy-status", Duration::from_secs(15), || {
        let (_, table) = proxy_status(&nats_url);
        let row = table
            .lines()
            .find(|line| line.starts_with(&node))?
            .to_owned();
        (row.matches("SYNCED").count() == 4).then_some(row)
    });
    eprintln!("proxy-status: {row}");
    assert!(
        row.contains(&format!("-{port} (delta)")),
        "on replica :{port}: {row}"
    );

    // A route with a regex RE2 refuses, as if galley had let it through.
    let bad = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "catalog", "namespace": NAMESPACE},
        "spec": {"hosts": ["*"], "gateways": ["gw"], "http": [{
            "match": [{"uri": {"regex": "([a-z"}}],
            "route": [{"destination": {"host": HOST, "subset": "v1"}}]
        }]}
    });
    put_behind_galleys_back(&nats_url, "VirtualService/shop/catalog", &bad);
    let (in_sync, table) = eventually("a NACK in proxy-status", Duration::from_secs(15), || {
        let (in_sync, table) = proxy_status(&nats_url);
        table.contains("RDS NACKED").then_some((in_sync, table))
    });
    eprintln!("proxy-status:\n{table}");
    assert!(!in_sync, "proxy-status fails while a proxy refuses config");
    assert!(
        table.contains("missing ]"),
        "RE2's own words, via Envoy: {table}"
    );
    assert!(mesh.call().is_some_and(|body| body.contains("v1")));
}
