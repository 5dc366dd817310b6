//! `DestinationRule` (`istio.networking.v1alpha3.DestinationRule`): how traffic to a
//! service is handled once routing has picked it — load balancing, connection
//! pools, outlier detection, upstream TLS — optionally per subset and per port.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, WorkloadSelector};
use crate::networking::virtual_service::PortSelector;

/// Spec of a `DestinationRule`: traffic policies for one destination host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service the rule applies to, as a registry name (short names are
    /// resolved against the rule's namespace) or a ServiceEntry host.
    pub host: String,
    /// Policies for all traffic to the host, unless a subset overrides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints (versions) that routes can target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is visible to (`.` = own namespace, `*` = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Restricts the rule to the workloads whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Load-balancing, connection-pool, outlier-detection and TLS settings for a destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS used when connecting to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Overrides for individual destination ports; these replace, not merge with,
    /// the settings above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnels TCP traffic to the host through an HTTP proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Sends a PROXY protocol header to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Caps concurrent retries relative to active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policy for one port of the destination (`TrafficPolicy.PortTrafficPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The destination port the settings apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Where and how to tunnel the downstream connection (`TrafficPolicy.TunnelSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (the default when empty) or `POST`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// FQDN or IP address the connection is tunneled to.
    pub target_host: String,
    pub target_port: u32,
}

/// Upstream PROXY protocol settings (`TrafficPolicy.ProxyProtocol`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol version (`TrafficPolicy.ProxyProtocol.VERSION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// Text header.
    #[default]
    #[serde(rename = "V1")]
    V1,
    /// Binary header.
    #[serde(rename = "V2")]
    V2,
}

/// Limit on concurrent retries as a share of active requests (`TrafficPolicy.RetryBudget`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Percentage (0–100) of active plus pending requests that may be retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Window over which new requests count towards the budget; zero means only
    /// in-flight requests count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

/// A named group of the host's endpoints, selected by labels, with its own policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    /// Endpoint labels that select the subset's members.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Replaces the rule-level policy for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// How requests are spread over the endpoints. `simple` and `consistentHash` are
/// alternatives (protobuf oneof `lb_policy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// Slow-start period for new endpoints (older form of `warmup.duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow-start ramp for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Built-in load-balancing algorithms (`LoadBalancerSettings.SimpleLB`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SimpleLb {
    /// Let the proxy pick its default.
    #[default]
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    /// Deprecated: use `LEAST_REQUEST`.
    #[serde(rename = "LEAST_CONN")]
    LeastConn,
    #[serde(rename = "RANDOM")]
    Random,
    /// Send to the address the caller asked for, without load balancing.
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
}

/// Session affinity by hashing a request property (`LoadBalancerSettings.ConsistentHashLB`).
///
/// The hash key (`httpHeaderName`, `httpCookie`, `useSourceIp`,
/// `httpQueryParameterName`) is one protobuf oneof and the algorithm (`ringHash`,
/// `maglev`) another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on a cookie, which the proxy creates if it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Ketama ring-hash algorithm settings (`ConsistentHashLB.RingHash`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Number of virtual nodes on the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev algorithm settings (`ConsistentHashLB.MagLev`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size; should be a prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Cookie used as the hash key (`ConsistentHashLB.HTTPCookie`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Lifetime of a generated cookie; without it the cookie is a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes set on a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<HttpCookieAttribute>,
}

/// One attribute of a generated cookie (`ConsistentHashLB.HTTPCookie.Attribute`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookieAttribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Gradual ramp-up of traffic to newly added endpoints (`WarmupConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Length of the ramp. Istio requires it; it is an `Option` only because
    /// [`Duration`] has no default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Share of the normal weight (0–100) an endpoint starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// Shape of the ramp: 1.0 is linear, larger is faster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Limits on upstream connections and requests, for TCP and HTTP (`ConnectionPoolSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Connection settings shared by TCP and HTTP upstreams (`ConnectionPoolSettings.TCPSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Turns on `SO_KEEPALIVE` on upstream sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Hard cap on a connection's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Closes TCP connections with no bytes sent or received for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive probing (`ConnectionPoolSettings.TCPSettings.TcpKeepalive`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Gap between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// HTTP/1.1, HTTP/2 and gRPC pool settings (`ConnectionPoolSettings.HTTPSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests that may queue while waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Active requests to the destination at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Requests per connection before it is recycled; 1 disables keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Outstanding retries across all hosts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Closes upstream connections with no active requests for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Speak to the upstream in the protocol the client used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 PING keepalive on upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

/// Whether HTTP/1.1 upstream connections are upgraded to HTTP/2 (`HTTPSettings.H2UpgradePolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum H2UpgradePolicy {
    /// Follow the mesh-wide setting.
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "DO_NOT_UPGRADE")]
    DoNotUpgrade,
    #[serde(rename = "UPGRADE")]
    Upgrade,
}

/// HTTP/2 PING keepalive (`HTTPSettings.ConnectionKeepalive`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionKeepalive {
    /// Gap between PINGs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long to wait for a PING reply before closing the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Ejection of misbehaving endpoints from the load-balancing pool (`OutlierDetection`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: use `consecutive5xxErrors` / `consecutiveGatewayErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Count locally originated failures (timeouts, resets) separately from
    /// upstream responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection; needs
    /// `splitExternalLocalOriginErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 responses (or connect failures) before ejection; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx responses (or connect failures) before ejection; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Period of the ejection sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Ejection time, multiplied by the number of times the host was ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Below this share of healthy hosts, outlier detection is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// HTTP status codes (100–599) that count as errors; empty means 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// TLS settings for connections to the upstream (`ClientTLSSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Path of the client certificate file (`MUTUAL` mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// Path of the client private key file (`MUTUAL` mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path of the CA bundle used to verify the server certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Name of a secret holding the client certificate, key and CA; replaces the
    /// file paths above.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Accepted SANs of the server certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI sent in the TLS handshake.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// Skip verification of the server certificate and SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Path of a certificate revocation list file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

/// Upstream TLS mode (`ClientTLSSettings.TLSmode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// Plain text.
    #[default]
    #[serde(rename = "DISABLE")]
    Disable,
    /// TLS, server authenticated only.
    #[serde(rename = "SIMPLE")]
    Simple,
    /// Mutual TLS with user-provided certificates.
    #[serde(rename = "MUTUAL")]
    Mutual,
    /// Mutual TLS with the mesh's own workload certificates.
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
}

/// Locality-weighted load balancing and failover (`LocalityLoadBalancerSetting`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic shares from each source locality to destination localities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region to fail over to when a region's endpoints are unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Ordered endpoint labels that define failover priority tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Overrides the mesh-wide locality load-balancing switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Weights for traffic from one locality (`LocalityLoadBalancerSetting.Distribute`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Source locality (`region/zone/subzone`, `*` wildcards allowed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// Destination locality to weight; weights should sum to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Region-to-region failover for locality load balancing (`LocalityLoadBalancerSetting.Failover`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
}

/// Zone-aware load balancing for this destination (`ZoneAwareLoadBalancerSetting`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLoadBalancerSetting {
    /// Overrides the mesh-wide setting entirely (no merging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Ordering of cross-region failover tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<ZoneAwareFailover>,
    /// Ordered endpoint labels that define priority tiers; may not name the
    /// region, zone or subzone labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Fewest hosts in the local region for zone-aware balancing to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

/// Region-to-region failover for zone-aware load balancing (`ZoneAwareLoadBalancerSetting.Failover`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareFailover {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
}
