//! The fixture every traffic scenario runs on: backends registered through
//! ServiceEntry + WorkloadEntry, a Gateway, pilot watching the config
//! directory, and one Envoy gateway fed by pilot. Scenarios swap the
//! `scenario.yaml` file (a VirtualService bound to the Gateway, plus any
//! DestinationRule) and wait until Envoy serves it.

use std::{
    cell::Cell,
    collections::BTreeMap,
    time::{Duration, Instant},
};

use integration_tests::{
    backend::Backend,
    config_dir::ConfigDir,
    envoy::{Envoy, ProxyIdentity, XdsApi},
    eventually, free_port,
    http_client::{HttpRequest, HttpResponse},
    istio_yaml::{documents, gateway, service_entry, workload_entry},
    pilot::Pilot,
};
use serde_json::Value;

pub const NAMESPACE: &str = "default";
pub const GATEWAY: &str = "gw";
/// The port every ServiceEntry declares (the backends' own ports come from
/// their WorkloadEntries).
pub const SERVICE_PORT: u16 = 80;
pub const APP: &str = "app.example.internal";
pub const MIRROR: &str = "mirror.example.internal";
pub const POOL: &str = "pool.example.internal";
pub const FLAKY: &str = "flaky.example.internal";

/// Where a scenario's VirtualService (and DestinationRules) live.
const SCENARIO_FILE: &str = "scenario.yaml";
/// The route every scenario's VirtualService starts with: a redirect whose
/// target names the scenario, so a test knows Envoy serves its config.
const MARKER_PATH: &str = "/__trireme/scenario";

/// Istio's cluster name for `host` on the service port.
pub fn cluster_name(subset: &str, host: &str) -> String {
    format!("outbound|{SERVICE_PORT}|{subset}|{host}")
}

pub struct Backends {
    /// `app`, subset v1.
    pub v1: Backend,
    /// `app`, subset v2.
    pub v2: Backend,
    /// Not registered at start: the EDS scenario adds its WorkloadEntry.
    pub v3: Backend,
    pub mirror: Backend,
    pub pool_a: Backend,
    pub pool_b: Backend,
    pub flaky_a: Backend,
    pub flaky_b: Backend,
}

impl Backends {
    fn start() -> Backends {
        Backends {
            v1: Backend::start("v1"),
            v2: Backend::start("v2"),
            v3: Backend::start("v3"),
            mirror: Backend::start("mirror"),
            pool_a: Backend::start("pool-a"),
            pool_b: Backend::start("pool-b"),
            flaky_a: Backend::start("flaky-a"),
            flaky_b: Backend::start("flaky-b"),
        }
    }

    pub fn all(&self) -> [&Backend; 8] {
        [
            &self.v1,
            &self.v2,
            &self.v3,
            &self.mirror,
            &self.pool_a,
            &self.pool_b,
            &self.flaky_a,
            &self.flaky_b,
        ]
    }

    /// ServiceEntries and WorkloadEntries for every backend but v3.
    fn registration(&self) -> String {
        let ns = NAMESPACE;
        documents(&[
            service_entry("app", ns, APP, SERVICE_PORT, "app"),
            workload_entry("app-v1", ns, "app", "v1", self.v1.port()),
            workload_entry("app-v2", ns, "app", "v2", self.v2.port()),
            service_entry("mirror", ns, MIRROR, SERVICE_PORT, "mirror"),
            workload_entry("mirror", ns, "mirror", "v1", self.mirror.port()),
            service_entry("pool", ns, POOL, SERVICE_PORT, "pool"),
            workload_entry("pool-a", ns, "pool", "v1", self.pool_a.port()),
            workload_entry("pool-b", ns, "pool", "v1", self.pool_b.port()),
            service_entry("flaky", ns, FLAKY, SERVICE_PORT, "flaky"),
            workload_entry("flaky-a", ns, "flaky", "v1", self.flaky_a.port()),
            workload_entry("flaky-b", ns, "flaky", "v1", self.flaky_b.port()),
        ])
    }
}

/// DestinationRules always present: subsets v1 and v2 of `app`, hashing on
/// `x-user` for `pool`, and outlier detection for `flaky`.
fn destination_rules() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: app
  namespace: {NAMESPACE}
spec:
  host: {APP}
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: pool
  namespace: {NAMESPACE}
spec:
  host: {POOL}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: flaky
  namespace: {NAMESPACE}
spec:
  host: {FLAKY}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"
    )
}

/// A VirtualService bound to the test Gateway: the marker route, then
/// `routes` (YAML list items indented by two spaces, as under `http:`).
pub fn gateway_virtual_service(marker: &str, routes: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: scenario
  namespace: {NAMESPACE}
spec:
  hosts:
  - \"*\"
  gateways:
  - {GATEWAY}
  http:
  - name: scenario-marker
    match:
    - uri:
        exact: {MARKER_PATH}
    redirect:
      uri: {MARKER_PATH}/{marker}
{routes}"
    )
}

pub struct GatewayMesh {
    pub envoy: Envoy,
    pub pilot: Pilot,
    pub backends: Backends,
    pub config: ConfigDir,
    pub gateway_port: u16,
    /// Files scenarios added beside `scenario.yaml`, removed on reset.
    extra_files: std::cell::RefCell<Vec<String>>,
    applied: Cell<u32>,
}

impl GatewayMesh {
    pub fn start(api: XdsApi) -> GatewayMesh {
        let backends = Backends::start();
        let config = ConfigDir::new();
        let gateway_port = free_port();
        config.write("services.yaml", &backends.registration());
        config.write("destination-rules.yaml", &destination_rules());
        config.write("gateway.yaml", &gateway(GATEWAY, NAMESPACE, gateway_port));
        let pilot = Pilot::start(config.path());
        let pod = match api {
            XdsApi::Sotw => "istio-ingressgateway-sotw",
            XdsApi::Delta => "istio-ingressgateway-delta",
        };
        let envoy = Envoy::start(
            ProxyIdentity::ingress_gateway(pod),
            api,
            pilot.xds_addr.port(),
        );
        envoy.wait_for_listener(&format!("0.0.0.0_{gateway_port}"), Duration::from_secs(30));
        envoy.wait_live(Duration::from_secs(20));
        GatewayMesh {
            envoy,
            pilot,
            backends,
            config,
            gateway_port,
            extra_files: Default::default(),
            applied: Cell::new(0),
        }
    }

    /// Removes every scenario file and puts backends back to healthy and
    /// empty.
    pub fn reset(&self) {
        self.config.remove(SCENARIO_FILE);
        for file in self.extra_files.borrow_mut().drain(..) {
            self.config.remove(&file);
        }
        for backend in self.backends.all() {
            backend.reset();
        }
    }

    /// Writes a scenario file that [`GatewayMesh::reset`] removes.
    pub fn write_extra(&self, name: &str, contents: &str) {
        self.config.write(name, contents);
        self.extra_files.borrow_mut().push(name.to_string());
    }

    /// Serves `routes` (under the marker route) and `other_docs` (e.g.
    /// DestinationRules) from `scenario.yaml`, and waits until Envoy routes
    /// the marker of this version.
    pub fn apply(&self, routes: &str, other_docs: &[String]) {
        let version = self.applied.get() + 1;
        self.applied.set(version);
        let marker = format!("v{version}");
        let mut docs = vec![gateway_virtual_service(&marker, routes)];
        docs.extend_from_slice(other_docs);
        self.config.write(SCENARIO_FILE, &documents(&docs));
        self.wait_for_marker(&marker);
    }

    /// Rewrites `scenario.yaml` without waiting; returns when it was written.
    pub fn rewrite(&self, routes: &str) -> Instant {
        let version = self.applied.get() + 1;
        self.applied.set(version);
        let vs = gateway_virtual_service(&format!("v{version}"), routes);
        self.config.write(SCENARIO_FILE, &vs);
        Instant::now()
    }

    pub fn remove_scenario(&self) -> Instant {
        self.config.remove(SCENARIO_FILE);
        Instant::now()
    }

    fn wait_for_marker(&self, marker: &str) {
        let expected = format!("{MARKER_PATH}/{marker}");
        eventually(
            &format!("Envoy to serve scenario config {marker} (redirect to {expected})"),
            Duration::from_secs(10),
            || {
                let response = self.send(HttpRequest::get(MARKER_PATH)).ok()?;
                (response.status == 301
                    && response
                        .header("location")
                        .is_some_and(|l| l.ends_with(&expected)))
                .then_some(())
            },
        );
    }

    /// Sends `request` to the gateway listener.
    pub fn send(&self, request: HttpRequest) -> std::io::Result<HttpResponse> {
        request.send(([127, 0, 0, 1], self.gateway_port).into())
    }

    /// GET `path` through the gateway; panics if the gateway does not answer.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.send(HttpRequest::get(path))
            .unwrap_or_else(|e| panic!("GET {path} through the gateway: {e}"))
    }

    /// Sends `count` copies of `request` and counts the outcomes: the
    /// answering backend's name for 200s, `status <code>` otherwise.
    pub fn tally(&self, count: usize, request: &HttpRequest) -> BTreeMap<String, usize> {
        let mut tally = BTreeMap::new();
        for _ in 0..count {
            *tally
                .entry(outcome(self.send(request.clone())))
                .or_default() += 1;
        }
        tally
    }

    /// Waits until Envoy's active cluster `name` satisfies `check`.
    pub fn wait_for_cluster(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.envoy.active_cluster(name).is_some_and(|c| check(&c)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Envoy's active cluster {name} did not get {what} within 10s; \
             Envoy's warming clusters: {:?}; pilot's sync status: {}",
            self.envoy.warming_clusters(),
            self.sync_summary()
        );
    }

    /// Per type: sent and ACKed versions pilot reports for this Envoy.
    pub fn sync_summary(&self) -> String {
        let Some(status) = self.pilot.sync_status(&self.envoy.node_id()) else {
            return "proxy not in /debug/syncz".into();
        };
        let Some(types) = status["types"].as_object() else {
            return status.to_string();
        };
        types
            .iter()
            .map(|(url, t)| {
                format!(
                    "{} sent {} acked {}",
                    url.rsplit('.').next().unwrap_or(url),
                    t["sent_version"],
                    t["acked_version"]
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// pilot's pushes by type, as its `/metrics` counts them.
    pub fn pushes(&self) -> BTreeMap<&'static str, f64> {
        let metrics = self.pilot.metrics();
        ["cds", "eds", "lds", "rds"]
            .into_iter()
            .map(|t| (t, metrics.value("pilot_xds_pushes", &[("type", t)])))
            .collect()
    }

    /// Waits until pilot has pushed nothing for a second and Envoy has ACKed
    /// everything pilot sent.
    pub fn wait_until_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let before = self.pushes();
            std::thread::sleep(Duration::from_secs(1));
            if self.pushes() == before && self.pilot.in_sync(&self.envoy.node_id()) {
                return;
            }
        }
        panic!(
            "pilot and Envoy did not settle within 15s (pushes {:?}; {}; Envoy's warming clusters: {:?})",
            self.pushes(),
            self.sync_summary(),
            self.envoy.warming_clusters()
        );
    }
}

/// `"<backend>"` for a 200, `"status <code>"` otherwise, `"error: .."` when
/// the request failed.
pub fn outcome(response: std::io::Result<HttpResponse>) -> String {
    match response {
        Ok(r) if r.status == 200 => r
            .header("x-backend")
            .map(str::to_string)
            .unwrap_or_else(|| format!("200 without x-backend: {}", r.body)),
        Ok(r) => format!("status {}", r.status),
        Err(e) => format!("error: {}", e.kind()),
    }
}
