//! Translation speed against DESIGN.md's targets: CDS for 1000 services
//! (target <= 2 ms; istiod 3.5 ms) and RDS for 1000 gateway hosts (target
//! <= 20 ms; istiod 43 ms), plus a sidecar's outbound scope, LDS and RDS for
//! the same services. Prints median and p99 over repeated runs and writes
//! them, with the machine and git revision, to `target/bench/translate.json`;
//! no assertions (the machines are noisy).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bench_report::{Machine, Summary, git_revision};
use mesh_config::parse_all;
use pilot::model::{ConfigSet, MeshSettings, MeshSnapshot, Proxy, ProxyScope, ProxyType};
use pilot::translate::sidecar::inbound::{inbound_clusters, inbound_listeners};
use pilot::translate::sidecar::outbound;
use pilot::translate::{clusters::outbound_clusters, routes::gateway_route_configuration};
use pilot::xds::generator::view_key;
use prost::Message;

const SERVICES: usize = 1000;
const RUNS: usize = 30;

fn mesh_yaml() -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*/*']\n",
    );
    for i in 0..SERVICES {
        let ns = format!("ns-{}", i % 50);
        let host = format!("svc-{i}.{ns}.svc.cluster.local");
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.{}.{}, labels: {{version: v1}}}}, {{address: 10.1.{}.{}, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  host: {host}
  trafficPolicy: {{connectionPool: {{http: {{http1MaxPendingRequests: 100}}}}, outlierDetection: {{consecutive5xxErrors: 5}}}}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [svc-{i}.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{{headers: {{end-user: {{exact: tester}}}}}}]
    route: [{{destination: {{host: {host}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 90}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 10}}
    retries: {{attempts: 3, perTryTimeout: 2s}}
",
            i / 250,
            i % 250,
            i / 250,
            i % 250
        ));
    }
    yaml
}

fn gateway() -> Proxy {
    Proxy {
        id: "router~10.1.0.1~gw-1.istio-system~istio-system.svc.cluster.local".into(),
        proxy_type: ProxyType::Router,
        ip_addresses: vec!["10.1.0.1".into()],
        pod_id: "gw-1.istio-system".into(),
        namespace: "istio-system".into(),
        dns_domain: "istio-system.svc.cluster.local".into(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        cluster_id: String::new(),
        service_account: String::new(),
        workload_name: String::new(),
        interception_mode: String::new(),
        istio_version: String::new(),
        mesh_id: String::new(),
    }
}

/// A sidecar at the first endpoint of service `i`, so it has service instances.
fn sidecar(i: usize) -> Proxy {
    let ns = format!("ns-{}", i % 50);
    let ip = format!("10.0.{}.{}", i / 250, i % 250);
    Proxy {
        id: format!("sidecar~{ip}~svc-{i}-1.{ns}~{ns}.svc.cluster.local"),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec![ip],
        pod_id: format!("svc-{i}-1.{ns}"),
        namespace: ns,
        dns_domain: String::new(),
        labels: BTreeMap::from([("version".to_string(), "v1".to_string())]),
        cluster_id: String::new(),
        service_account: String::new(),
        workload_name: String::new(),
        interception_mode: String::new(),
        istio_version: String::new(),
        mesh_id: String::new(),
    }
}

/// A sidecar with no service instances, for the outbound side.
fn outbound_sidecar() -> Proxy {
    Proxy {
        id: "sidecar~10.2.0.1~app-1.ns-0~ns-0.svc.cluster.local".into(),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec!["10.2.0.1".into()],
        pod_id: "app-1.ns-0".into(),
        namespace: "ns-0".into(),
        labels: BTreeMap::from([("app".to_string(), "app".to_string())]),
        ..gateway()
    }
}

/// What one case measured.
struct Case {
    label: &'static str,
    timings: Summary,
    bytes: usize,
}

impl Case {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "case": self.label,
            "median_ms": ms(self.timings.median),
            "p99_ms": ms(self.timings.p99),
            "runs": self.timings.count,
            "bytes_encoded": self.bytes,
        })
    }
}

/// Times `RUNS` runs of `run` (which returns the bytes it encoded) and
/// prints the case's line.
fn measure(cases: &mut Vec<Case>, label: &'static str, mut run: impl FnMut() -> usize) {
    let mut timings = Vec::with_capacity(RUNS);
    let mut bytes = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        bytes = run();
        timings.push(start.elapsed());
    }
    let case = Case {
        label,
        timings: Summary::of(&timings),
        bytes,
    };
    println!(
        "  {label:<44} median {:>7.2} ms   p99 {:>7.2} ms   {:>8} bytes encoded",
        ms(case.timings.median),
        ms(case.timings.p99),
        bytes
    );
    cases.push(case);
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `target/bench/translate.json`: every case beside the machine and source.
fn write_report(machine: &Machine, cases: &[Case]) {
    let report = serde_json::json!({
        "bench": "pilot translate",
        "services": SERVICES,
        "runs_per_case": RUNS,
        "machine": machine.to_json(),
        "git": git_revision().to_json(),
        "cases": cases.iter().map(Case::to_json).collect::<Vec<_>>(),
    });
    match bench_report::write_json("translate", &report) {
        Ok(path) => println!("figures written to {}", path.display()),
        Err(error) => eprintln!("cannot write target/bench/translate.json: {error}"),
    }
}

fn main() {
    // Before the work, so the load average is the machine's.
    let machine = Machine::detect();
    let mut cases = Vec::new();
    let resources = parse_all("mesh.yaml", &mesh_yaml()).expect("generated mesh parses");
    let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
    let snapshot = MeshSnapshot::from_config(config, MeshSettings::default());
    let proxy = gateway();
    println!("translation, {SERVICES} services (2 subsets each), {RUNS} runs, generate + encode:");
    measure(&mut cases, "CDS for 1000 services (target <= 2 ms)", || {
        outbound_clusters(&snapshot, &proxy)
            .iter()
            .map(|c| c.encode_to_vec().len())
            .sum()
    });
    let sidecars: Vec<Proxy> = (0..SERVICES).map(sidecar).collect();
    measure(
        &mut cases,
        "view keys of 1000 sidecars (once per push each)",
        || {
            sidecars
                .iter()
                .map(|proxy| view_key(&snapshot, proxy).len())
                .sum()
        },
    );
    measure(&mut cases, "inbound LDS + CDS of one sidecar", || {
        let listeners = inbound_listeners(&snapshot, &sidecars[0]);
        let clusters = inbound_clusters(&snapshot, &sidecars[0]);
        listeners
            .iter()
            .map(|l| l.encode_to_vec().len())
            .sum::<usize>()
            + clusters
                .iter()
                .map(|c| c.encode_to_vec().len())
                .sum::<usize>()
    });
    measure(
        &mut cases,
        "RDS for 1000 gateway hosts (target <= 20 ms)",
        || {
            gateway_route_configuration(&snapshot, &proxy, "http.80")
                .map(|r| r.encode_to_vec().len())
                .unwrap_or(0)
        },
    );
    let sidecar = outbound_sidecar();
    measure(&mut cases, "sidecar scope for 1000 services", || {
        ProxyScope::new(&snapshot, &sidecar)
            .services(&snapshot)
            .count()
    });
    let scope = ProxyScope::new(&snapshot, &sidecar);
    measure(
        &mut cases,
        "sidecar CDS for 1000 services (auto mTLS)",
        || {
            outbound::clusters(&snapshot, &sidecar, &scope)
                .iter()
                .map(|c| c.encode_to_vec().len())
                .sum()
        },
    );
    measure(&mut cases, "sidecar LDS for 1000 services", || {
        outbound::listeners(&snapshot, &sidecar, &scope)
            .iter()
            .map(|l| l.encode_to_vec().len())
            .sum()
    });
    measure(&mut cases, "sidecar RDS `80` for 1000 services", || {
        outbound::route_configuration(&snapshot, &sidecar, &scope, "80")
            .map(|r| r.encode_to_vec().len())
            .unwrap_or(0)
    });
    write_report(&machine, &cases);
}
