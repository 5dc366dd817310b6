//! How fast Istio YAML is read: a mesh's worth of VirtualServices and
//! DestinationRules parsed strictly, timed over repeated runs. Prints median
//! and p99; no assertions (the machines are noisy).

use std::time::{Duration, Instant};

const SERVICES: usize = 1000;
const RUNS: usize = 15;

fn mesh_yaml(services: usize) -> String {
    let mut yaml = String::new();
    for i in 0..services {
        let ns = format!("ns-{}", i % 50);
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-{i}
  namespace: {ns}
spec:
  hosts: [svc-{i}.{ns}.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {{exact: tester}}
    route:
    - destination: {{host: svc-{i}.{ns}.svc.cluster.local, subset: v2}}
  - route:
    - destination: {{host: svc-{i}.{ns}.svc.cluster.local, subset: v1}}
      weight: 90
    - destination: {{host: svc-{i}.{ns}.svc.cluster.local, subset: v2}}
      weight: 10
    retries: {{attempts: 3, perTryTimeout: 2s}}
    timeout: 10s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc-{i}
  namespace: {ns}
spec:
  host: svc-{i}.{ns}.svc.cluster.local
  trafficPolicy:
    connectionPool: {{http: {{http1MaxPendingRequests: 100}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
"
        ));
    }
    yaml
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let yaml = mesh_yaml(SERVICES);
    let documents = SERVICES * 2;
    let mut timings = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let parsed = mesh_config::parse_all("mesh.yaml", &yaml).expect("generated config parses");
        timings.push(start.elapsed());
        assert_eq!(parsed.len(), documents);
    }
    timings.sort();
    let median = percentile(&timings, 0.5);
    let p99 = percentile(&timings, 0.99);
    println!(
        "config parsing: {documents} documents ({} KiB) per run, {RUNS} runs",
        yaml.len() / 1024
    );
    println!(
        "  median {:>8.2} ms   p99 {:>8.2} ms   {:>8.0} documents/s at the median",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        documents as f64 / median.as_secs_f64()
    );
}
