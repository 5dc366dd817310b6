//! The Envoy bootstrap the agent writes: who the proxy is (node id and
//! metadata as pilot reads them), ADS through the agent's xDS socket, SDS
//! through its SDS socket, Prometheus stats and readiness listeners. Every
//! other resource comes from pilot.

use std::path::Path;

use serde_json::{Value, json};

use super::config::{ProxyKind, Workload};

/// Ports the bootstrap binds or points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPorts {
    /// Envoy's admin API, on loopback only (Istio's 15000).
    pub admin: u16,
    /// Prometheus stats (Istio's 15090).
    pub stats: u16,
    /// Readiness, answered by the agent through Envoy (Istio's 15021).
    pub readiness: u16,
    /// The agent's status server (Istio's 15020).
    pub status: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            admin: 15000,
            stats: 15090,
            readiness: 15021,
            status: 15020,
        }
    }
}

/// The ADS flavour Envoy speaks to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdsMode {
    /// Incremental xDS, Istio's agent default since 1.22.
    Delta,
    /// State of the world.
    Sotw,
}

/// Everything a bootstrap depends on.
pub struct BootstrapInputs<'a> {
    pub kind: ProxyKind,
    pub workload: &'a Workload,
    pub ports: ProxyPorts,
    pub xds_mode: XdsMode,
    pub xds_socket: &'a Path,
    pub sds_socket: &'a Path,
    pub istio_version: &'a str,
}

/// The bootstrap as JSON (Envoy reads JSON or YAML alike).
pub fn bootstrap(inputs: &BootstrapInputs<'_>) -> Value {
    json!({
        "node": node(inputs),
        "admin": {
            "address": socket_address("127.0.0.1", inputs.ports.admin),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": match inputs.xds_mode {
                    XdsMode::Delta => "DELTA_GRPC",
                    XdsMode::Sotw => "GRPC",
                },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds-grpc" } }],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s" },
            "lds_config": { "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s" },
        },
        "static_resources": {
            "clusters": [
                unix_socket_cluster("xds-grpc", inputs.xds_socket),
                unix_socket_cluster("sds-grpc", inputs.sds_socket),
                loopback_cluster("prometheus_stats", inputs.ports.admin),
                loopback_cluster("agent", inputs.ports.status),
            ],
            "listeners": [
                forwarding_listener("prometheus", inputs.ports.stats, "/stats/prometheus", "prometheus_stats"),
                forwarding_listener("readiness", inputs.ports.readiness, "/healthz/ready", "agent"),
            ],
        },
    })
}

fn node(inputs: &BootstrapInputs<'_>) -> Value {
    let workload = inputs.workload;
    let mut metadata = serde_json::Map::new();
    // ISTIO_META_* first, so the agent's own facts below win over them.
    for (key, value) in &workload.metadata {
        metadata.insert(key.clone(), json!(value));
    }
    let facts = [
        ("NAMESPACE", workload.namespace.clone()),
        ("NAME", workload.pod_name.clone()),
        ("SERVICE_ACCOUNT", workload.service_account.clone()),
        ("INSTANCE_IPS", workload.instance_ips.join(",")),
        ("INTERCEPTION_MODE", workload.interception_mode().to_owned()),
        ("ISTIO_VERSION", inputs.istio_version.to_owned()),
    ];
    for (key, value) in facts {
        metadata.insert(key.to_owned(), json!(value));
    }
    metadata
        .entry("CLUSTER_ID")
        .or_insert_with(|| json!("Kubernetes"));
    metadata
        .entry("WORKLOAD_NAME")
        .or_insert_with(|| json!(workload_name(workload)));
    metadata.insert("LABELS".to_owned(), json!(workload.labels));
    json!({
        "id": workload.node_id(inputs.kind),
        "cluster": format!("{}.{}", workload_name(workload), workload.namespace),
        "metadata": metadata,
    })
}

/// The workload's name as Istio derives it: the `app` label, else the pod.
fn workload_name(workload: &Workload) -> String {
    workload
        .labels
        .get("app")
        .or_else(|| workload.labels.get("app.kubernetes.io/name"))
        .cloned()
        .unwrap_or_else(|| workload.pod_name.clone())
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

fn http2_options() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} },
        }
    })
}

fn unix_socket_cluster(name: &str, socket: &Path) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": { "pipe": { "path": socket.display().to_string() } }
            } }] }],
        },
    })
}

fn loopback_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": socket_address("127.0.0.1", port)
            } }] }],
        },
    })
}

/// A listener answering `path` (and below) from `cluster`: how Istio exposes
/// admin's Prometheus stats and the agent's readiness without exposing admin.
fn forwarding_listener(name: &str, port: u16, path: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": { "virtual_hosts": [{
                    "name": name,
                    "domains": ["*"],
                    "routes": [{ "match": { "prefix": path }, "route": { "cluster": cluster } }],
                }] },
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                }],
            },
        }] }],
    })
}
