//! A real Envoy (`.tools/bin/envoy`) started from a bootstrap that points at
//! pilot over ADS, the way Istio's agent writes it for a gateway, plus
//! readers for its admin API (readiness, listeners, stats, config dump).

use std::{
    collections::BTreeMap, net::SocketAddr, path::PathBuf, process::Command, time::Duration,
};

use serde_json::{Value, json};

use crate::{Process, eventually, free_port, http_client::HttpRequest, log_tail, tool};

/// Which flavour of ADS Envoy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsApi {
    /// State of the world (`StreamAggregatedResources`).
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

impl XdsApi {
    fn api_type(self) -> &'static str {
        match self {
            XdsApi::Sotw => "GRPC",
            XdsApi::Delta => "DELTA_GRPC",
        }
    }
}

/// Who the proxy says it is: Istio's node id and metadata.
#[derive(Clone, Debug)]
pub struct ProxyIdentity {
    pub proxy_type: &'static str,
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl ProxyIdentity {
    /// An ingress gateway pod (`istio: ingressgateway`) in `istio-system`.
    pub fn ingress_gateway(pod: &str) -> ProxyIdentity {
        ProxyIdentity {
            proxy_type: "router",
            pod: pod.to_string(),
            namespace: "istio-system".to_string(),
            labels: BTreeMap::from([
                ("istio".to_string(), "ingressgateway".to_string()),
                ("app".to_string(), "istio-ingressgateway".to_string()),
            ]),
        }
    }

    /// `router~127.0.0.1~<pod>.<namespace>~<namespace>.svc.cluster.local`
    pub fn node_id(&self) -> String {
        format!(
            "{}~127.0.0.1~{}.{ns}~{ns}.svc.cluster.local",
            self.proxy_type,
            self.pod,
            ns = self.namespace
        )
    }
}

/// The bootstrap Envoy starts from: node identity, ADS to pilot at
/// `xds_ports` (several: replicas behind one Service), admin on `admin_port`. Like Istio's, it also defines the
/// `sds-grpc` cluster (a Unix socket nobody serves here) that SDS references
/// in generated clusters and listeners point at.
pub fn bootstrap(
    identity: &ProxyIdentity,
    api: XdsApi,
    xds_ports: &[u16],
    admin_port: u16,
    sds_socket: &str,
) -> Value {
    let control_planes: Vec<Value> = xds_ports
        .iter()
        .map(|port| {
            json!({ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            } } })
        })
        .collect();
    let http2 = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    json!({
        "node": {
            "id": identity.node_id(),
            "cluster": format!("{}.{}", identity.pod, identity.namespace),
            "metadata": {
                "NAMESPACE": identity.namespace,
                "LABELS": identity.labels,
                "CLUSTER_ID": "Kubernetes",
                "MESH_ID": "cluster.local",
                "ISTIO_VERSION": "1.24.0",
                "WORKLOAD_NAME": identity.pod,
            }
        },
        "admin": {
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api.api_type(),
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds-grpc" } }],
                "set_node_on_first_message_only": true
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2,
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{ "lb_endpoints": control_planes }]
                    }
                },
                {
                    "name": "sds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2,
                    "load_assignment": {
                        "cluster_name": "sds-grpc",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                            "pipe": { "path": sds_socket }
                        } } }] }]
                    }
                }
            ]
        }
    })
}

/// A running Envoy; killed when dropped (printing its log tail if the test
/// is failing). It logs at `warning` unless `TRIREME_ENVOY_LOG_LEVEL` says
/// otherwise.
pub struct Envoy {
    pub identity: ProxyIdentity,
    pub admin: SocketAddr,
    process: Process,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy as `identity`, talking `api` to pilot's xDS port, and
    /// waits until its admin API answers (not until it has config).
    pub fn start(identity: ProxyIdentity, api: XdsApi, xds_port: u16) -> Envoy {
        Self::start_with_control_planes(identity, api, &[xds_port])
    }

    /// Like [`Envoy::start`] with several pilot replicas to choose from.
    pub fn start_with_control_planes(
        identity: ProxyIdentity,
        api: XdsApi,
        xds_ports: &[u16],
    ) -> Envoy {
        let dir = tempfile::tempdir().expect("a temp dir for Envoy");
        let admin_port = free_port();
        let sds_socket = dir.path().join("sds.sock");
        let config = bootstrap(
            &identity,
            api,
            xds_ports,
            admin_port,
            &sds_socket.to_string_lossy(),
        );
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("writing the bootstrap");
        let mut command = Command::new(tool("ENVOY_BIN", "envoy"));
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l"])
            .arg(std::env::var("TRIREME_ENVOY_LOG_LEVEL").unwrap_or("warning".into()));
        let log = dir.path().join("envoy.log");
        let mut process = Process::spawn_logged("envoy", command, &log);
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        eventually("Envoy's admin API", Duration::from_secs(15), || {
            if let Some(status) = process.exited() {
                panic!("envoy exited with {status}:\n{}", log_tail(&log, 30));
            }
            std::net::TcpStream::connect(admin).ok()
        });
        Envoy {
            identity,
            admin,
            process,
            dir,
        }
    }

    pub fn node_id(&self) -> String {
        self.identity.node_id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// GET on the admin API; panics when the admin API does not answer.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        HttpRequest::get(path)
            .send(self.admin)
            .map(|response| (response.status, response.body))
            .unwrap_or_else(|e| panic!("Envoy admin {path}: {e}"))
    }

    /// `/ready` says LIVE: the initial CDS and LDS have arrived.
    pub fn is_live(&self) -> bool {
        matches!(self.admin_get("/ready"), (200, _))
    }

    pub fn wait_live(&self, limit: Duration) {
        eventually("Envoy to be LIVE (initial xDS received)", limit, || {
            self.is_live().then_some(())
        });
    }

    /// Names of the active listeners.
    pub fn listener_names(&self) -> Vec<String> {
        let (_, body) = self.admin_get("/listeners?format=json");
        let listeners: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        listeners["listener_statuses"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn wait_for_listener(&self, name: &str, limit: Duration) {
        eventually(&format!("Envoy listener {name}"), limit, || {
            self.listener_names()
                .iter()
                .any(|l| l == name)
                .then_some(())
        });
    }

    /// Every counter and gauge (histograms left out).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let (_, body) = self.admin_get("/stats");
        body.lines()
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().remove(name)
    }

    /// Every `*update_rejected` stat that is not zero: CDS, LDS, per-cluster
    /// EDS and per-route-config RDS rejections.
    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.stats()
            .into_iter()
            .filter(|(name, value)| name.ends_with("update_rejected") && *value > 0)
            .collect()
    }

    /// `/config_dump`, optionally only `resource` (e.g. `dynamic_active_clusters`).
    pub fn config_dump(&self, resource: Option<&str>) -> Value {
        let path = match resource {
            Some(resource) => format!("/config_dump?resource={resource}&include_eds"),
            None => "/config_dump?include_eds".to_string(),
        };
        let (status, body) = self.admin_get(&path);
        assert_eq!(status, 200, "Envoy {path}: {body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// The active (warmed) cluster called `name`, as Envoy holds it.
    pub fn active_cluster(&self, name: &str) -> Option<Value> {
        let dump = self.config_dump(Some("dynamic_active_clusters"));
        dump["configs"]
            .as_array()?
            .iter()
            .map(|entry| &entry["cluster"])
            .find(|cluster| cluster["name"] == name)
            .cloned()
    }

    /// Names of clusters Envoy received but has not activated yet (an EDS
    /// cluster warms until its endpoints arrive).
    pub fn warming_clusters(&self) -> Vec<String> {
        let dump = self.config_dump(Some("dynamic_warming_clusters"));
        dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["cluster"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Whether Envoy holds an open ADS stream to its control plane.
    pub fn connected_to_control_plane(&self) -> bool {
        self.stat("control_plane.connected_state") == Some(1)
    }

    /// The last `lines` lines Envoy logged.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy ({}) log tail ---\n{}",
                self.node_id(),
                self.log_tail(40)
            );
        }
    }
}
