//! DestinationRule traffic policies applied to outbound clusters, the way
//! Istio applies them.
//!
//! The policy for one cluster is the rule's `trafficPolicy`, replaced as a
//! whole by a `portLevelSettings` entry for the cluster's port, then
//! overridden field by field (load balancer, connection pool, outlier
//! detection, TLS) by the subset's own policy, itself port-level resolved
//! first ([`effective_policy`], Istio's `MergeSubsetTrafficPolicy`). Each
//! `apply_*` function below turns one part of that policy into Envoy fields.
//!
//! Envoy puts the consistent-hash key on the route, not the cluster, so
//! [`hash_policy_for`] exposes it for the route translator.

mod tls;

use mesh_config::common::Duration;
use mesh_config::networking::DestinationRule;
use mesh_config::networking::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, H2UpgradePolicy, HttpSettings,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection, PortTrafficPolicy,
    RetryBudget, SimpleLb, TcpKeepalive, TcpSettings, TlsMode, TrafficPolicy,
};
use prost::Message;
use trireme_proto::envoy::pb::envoy::config::cluster::v3::circuit_breakers::{
    Thresholds, thresholds::RetryBudget as EnvoyRetryBudget,
};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, LeastRequestLbConfig,
    MaglevLbConfig, RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
};
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions,
    TcpKeepalive as EnvoyTcpKeepalive, TransportSocket, UpstreamHttpProtocolOptions,
    transport_socket::ConfigType,
};
use trireme_proto::envoy::pb::envoy::config::route::v3::route_action::HashPolicy;
use trireme_proto::envoy::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, CookieAttribute, Header, PolicySpecifier, QueryParameter,
};
use trireme_proto::envoy::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use trireme_proto::envoy::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    explicit_http_config::ProtocolConfig,
};
use trireme_proto::envoy::pb::envoy::r#type::v3::Percent;
use trireme_proto::envoy::pb::google::protobuf::{
    Any, Duration as ProtoDuration, UInt32Value, UInt64Value,
};

use crate::model::MeshSnapshot;

pub use tls::{
    AutoMtls, AutoMtlsCache, EncodedIstioMutual, ROOT_CERTIFICATE, TRANSPORT_SOCKET_MATCH_METADATA,
    TlsTarget, WORKLOAD_CERTIFICATE, sds_from_agent, upstream_tls_context,
};

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Istio's mesh default `connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Envoy's default ring size, which Istio sets explicitly when a consistent
/// hash names no algorithm.
const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;

/// Name of Envoy's TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The parts of a TrafficPolicy that shape one cluster, after merging.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EffectivePolicy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    pub tls: Option<&'a ClientTlsSettings>,
    pub retry_budget: Option<&'a RetryBudget>,
}

impl<'a> EffectivePolicy<'a> {
    fn of(policy: &'a TrafficPolicy) -> Self {
        Self {
            load_balancer: policy.load_balancer.as_ref(),
            connection_pool: policy.connection_pool.as_ref(),
            outlier_detection: policy.outlier_detection.as_ref(),
            tls: policy.tls.as_ref(),
            retry_budget: policy.retry_budget.as_ref(),
        }
    }

    /// A port-level entry; like Istio it carries no retry budget.
    fn of_port(policy: &'a PortTrafficPolicy) -> Self {
        Self {
            load_balancer: policy.load_balancer.as_ref(),
            connection_pool: policy.connection_pool.as_ref(),
            outlier_detection: policy.outlier_detection.as_ref(),
            tls: policy.tls.as_ref(),
            retry_budget: None,
        }
    }

    /// `policy` as seen by `port`: its `portLevelSettings` entry for the port
    /// replaces it wholesale (omitted fields fall back to defaults, not to the
    /// top level). The flag says whether such an entry was found.
    fn for_port(policy: &'a TrafficPolicy, port: u32) -> (Self, bool) {
        let port_level = policy
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port));
        match port_level {
            Some(entry) => (Self::of_port(entry), true),
            None => (Self::of(policy), false),
        }
    }

    /// `self` with the fields `other` sets; with `wholesale` (a port-level
    /// entry of a subset) every field is taken from `other`, set or not.
    fn overridden_by(self, other: Self, wholesale: bool) -> Self {
        fn pick<T>(base: Option<T>, over: Option<T>, wholesale: bool) -> Option<T> {
            if wholesale || over.is_some() {
                over
            } else {
                base
            }
        }
        Self {
            load_balancer: pick(self.load_balancer, other.load_balancer, wholesale),
            connection_pool: pick(self.connection_pool, other.connection_pool, wholesale),
            outlier_detection: pick(self.outlier_detection, other.outlier_detection, wholesale),
            tls: pick(self.tls, other.tls, wholesale),
            retry_budget: other.retry_budget.or(self.retry_budget),
        }
    }
}

/// The policy that applies to cluster (`port`, `subset`) of the rule's host;
/// `subset` is empty for the service's default cluster.
pub fn effective_policy<'a>(
    rule: Option<&'a DestinationRule>,
    port: u32,
    subset: &str,
) -> EffectivePolicy<'a> {
    let Some(rule) = rule else {
        return EffectivePolicy::default();
    };
    let base = rule
        .traffic_policy
        .as_ref()
        .map(|policy| EffectivePolicy::for_port(policy, port).0)
        .unwrap_or_default();
    let subset_policy = rule
        .subsets
        .iter()
        .filter(|s| !subset.is_empty() && s.name == subset)
        .find_map(|s| s.traffic_policy.as_ref());
    match subset_policy {
        Some(policy) => {
            let (overrides, port_level) = EffectivePolicy::for_port(policy, port);
            base.overridden_by(overrides, port_level)
        }
        None => base,
    }
}

/// What the policy needs to know about the destination of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct PolicyTarget<'a> {
    /// SNI used for ISTIO_MUTUAL when the rule names none
    /// (`outbound_.<port>_.<subset>_.<host>`).
    pub istio_mtls_sni: &'a str,
    /// Identities the destination may present (SPIFFE URIs or SANs).
    pub service_accounts: &'a [String],
}

/// A cluster being built, with the upstream HTTP options that
/// [`UpstreamCluster::finish`] packs into `typed_extension_protocol_options`.
/// It borrows the cluster so that it can be built where it will stay (a
/// `Cluster` is over 3 KB, and CDS builds thousands of them).
#[derive(Debug)]
pub struct UpstreamCluster<'c> {
    pub cluster: &'c mut Cluster,
    pub http_options: Option<HttpProtocolOptions>,
}

impl<'c> UpstreamCluster<'c> {
    pub fn new(cluster: &'c mut Cluster) -> Self {
        Self {
            cluster,
            http_options: None,
        }
    }

    pub fn discovery_type(&self) -> Option<DiscoveryType> {
        match self.cluster.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
            _ => None,
        }
    }

    pub fn set_discovery_type(&mut self, discovery_type: DiscoveryType) {
        self.cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(discovery_type as i32));
    }

    fn http_options(&mut self) -> &mut HttpProtocolOptions {
        self.http_options.get_or_insert_with(Default::default)
    }

    pub fn common_http_options(&mut self) -> &mut CommonHttpProtocolOptions {
        self.http_options()
            .common_http_protocol_options
            .get_or_insert_with(Default::default)
    }

    fn upstream_http_options(&mut self) -> &mut UpstreamHttpProtocolOptions {
        self.http_options()
            .upstream_http_protocol_options
            .get_or_insert_with(Default::default)
    }

    /// Speak HTTP/2 to the upstream.
    pub fn set_http2(&mut self) {
        self.http_options().upstream_protocol_options = Some(
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            }),
        );
    }

    /// Speak to the upstream in whatever protocol the client used.
    pub fn set_use_downstream_protocol(&mut self) {
        self.http_options().upstream_protocol_options = Some(
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(use_downstream_protocol()),
        );
    }

    fn http2_options(&mut self) -> Option<&mut Http2ProtocolOptions> {
        match self
            .http_options
            .as_mut()?
            .upstream_protocol_options
            .as_mut()?
        {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(options)),
            }) => Some(options),
            _ => None,
        }
    }

    /// Whether the cluster speaks HTTP/2 explicitly.
    pub fn is_http2(&self) -> bool {
        matches!(
            self.http_options
                .as_ref()
                .and_then(|o| o.upstream_protocol_options.as_ref()),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_)),
                }
            ))
        )
    }

    /// Finishes the cluster. Envoy requires `upstream_protocol_options`, so
    /// options that set none get explicit HTTP/1.1, as Istio does.
    pub fn finish(mut self) {
        if let Some(mut options) = self.http_options.take() {
            if options.upstream_protocol_options.is_none() {
                options.upstream_protocol_options = Some(
                    UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                            Http1ProtocolOptions::default(),
                        )),
                    }),
                );
            }
            self.cluster
                .typed_extension_protocol_options
                .insert(HTTP_PROTOCOL_OPTIONS.to_string(), to_any(&options));
        }
    }
}

/// HTTP/1.1 or HTTP/2 upstream, following the downstream connection.
pub fn use_downstream_protocol() -> UseDownstreamHttpConfig {
    UseDownstreamHttpConfig {
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        http3_protocol_options: None,
    }
}

/// Applies `policy` to `cluster`, in Istio's order: upstream protocol,
/// connection pool, outlier detection, load balancer (which may turn the
/// cluster into ORIGINAL_DST), then TLS (whose ALPN depends on HTTP/2).
pub fn apply_traffic_policy(
    cluster: &mut UpstreamCluster,
    policy: &EffectivePolicy<'_>,
    target: &PolicyTarget<'_>,
) {
    let http = policy.connection_pool.and_then(|p| p.http.as_ref());
    apply_upstream_protocol(cluster, http);
    apply_connection_pool(cluster, policy.connection_pool);
    apply_retry_budget(cluster.cluster, policy.retry_budget);
    apply_outlier_detection(cluster.cluster, policy.outlier_detection);
    apply_load_balancer(cluster, policy.load_balancer);
    apply_tls(cluster, policy.tls, target);
    if cluster.discovery_type() == Some(DiscoveryType::OriginalDst) {
        cluster.cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    }
}

/// `useClientProtocol` follows the client; `h2UpgradePolicy: UPGRADE` forces
/// HTTP/2 (on any port: the user says the port speaks HTTP).
fn apply_upstream_protocol(cluster: &mut UpstreamCluster, http: Option<&HttpSettings>) {
    let Some(http) = http else { return };
    if http.use_client_protocol == Some(true) {
        cluster.set_use_downstream_protocol();
    }
    if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
        cluster.set_http2();
    }
}

/// Connection limits. Like Istio, every cluster gets circuit breakers (with
/// limits lifted to the maximum unless the pool sets them), and the connect
/// timeout is the mesh default unless the pool sets it.
fn apply_connection_pool(cluster: &mut UpstreamCluster, pool: Option<&ConnectionPoolSettings>) {
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    cluster.cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds(tcp, http)],
        ..Default::default()
    });
    cluster.cluster.connect_timeout = tcp
        .and_then(|t| t.connect_timeout.as_ref())
        .and_then(proto_duration)
        .or_else(|| Some(std_to_proto(DEFAULT_CONNECT_TIMEOUT)));
    apply_tcp_keepalive(cluster.cluster, tcp.and_then(|t| t.tcp_keepalive.as_ref()));
    apply_http_connection_limits(cluster, tcp, http);
}

/// Circuit-breaker thresholds: unset or non-positive limits are lifted to
/// `u32::MAX` (Istio's defaults; Envoy's own, such as 3 retries, are too low).
fn thresholds(tcp: Option<&TcpSettings>, http: Option<&HttpSettings>) -> Thresholds {
    let limit = |value: Option<i32>| {
        let value = value.filter(|v| *v > 0).map_or(u32::MAX, |v| v as u32);
        Some(UInt32Value { value })
    };
    Thresholds {
        max_connections: limit(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: limit(http.and_then(|h| h.http2_max_requests)),
        max_retries: limit(http.and_then(|h| h.max_retries)),
        track_remaining: true,
        ..Default::default()
    }
}

/// `SO_KEEPALIVE` on upstream sockets; unset fields keep the OS defaults.
fn apply_tcp_keepalive(cluster: &mut Cluster, keepalive: Option<&TcpKeepalive>) {
    let Some(keepalive) = keepalive else { return };
    let seconds = |d: &Option<Duration>| {
        d.as_ref().and_then(proto_duration).map(|d| UInt32Value {
            value: u32::try_from(d.seconds).unwrap_or(u32::MAX),
        })
    };
    cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
        tcp_keepalive: Some(EnvoyTcpKeepalive {
            keepalive_probes: keepalive
                .probes
                .filter(|p| *p > 0)
                .map(|value| UInt32Value { value }),
            keepalive_time: seconds(&keepalive.time),
            keepalive_interval: seconds(&keepalive.interval),
        }),
        ..Default::default()
    });
}

/// Idle timeout (HTTP's, else TCP's), requests per connection, connection
/// lifetime and HTTP/2 stream limit, in the upstream HTTP options.
fn apply_http_connection_limits(
    cluster: &mut UpstreamCluster,
    tcp: Option<&TcpSettings>,
    http: Option<&HttpSettings>,
) {
    let idle_timeout = http
        .and_then(|h| h.idle_timeout.as_ref())
        .or_else(|| tcp.and_then(|t| t.idle_timeout.as_ref()))
        .and_then(proto_duration);
    let max_requests = http
        .and_then(|h| h.max_requests_per_connection)
        .filter(|n| *n > 0)
        .map(|n| UInt32Value { value: n as u32 });
    let max_duration = tcp
        .and_then(|t| t.max_connection_duration.as_ref())
        .and_then(proto_duration);
    let max_streams = http
        .and_then(|h| h.max_concurrent_streams)
        .filter(|n| *n > 0)
        .map(|n| UInt32Value { value: n as u32 });
    if idle_timeout.is_some() || max_requests.is_some() || max_duration.is_some() {
        let common = cluster.common_http_options();
        common.idle_timeout = idle_timeout;
        common.max_requests_per_connection = max_requests;
        common.max_connection_duration = max_duration;
    }
    if let (Some(h2), Some(streams)) = (cluster.http2_options(), max_streams) {
        h2.max_concurrent_streams = Some(streams);
    }
}

/// `retryBudget` → the circuit breaker's retry budget.
fn apply_retry_budget(cluster: &mut Cluster, budget: Option<&RetryBudget>) {
    let Some(budget) = budget else { return };
    let Some(thresholds) = cluster
        .circuit_breakers
        .as_mut()
        .and_then(|c| c.thresholds.first_mut())
    else {
        return;
    };
    thresholds.retry_budget = Some(EnvoyRetryBudget {
        budget_percent: budget.percent.map(|value| Percent { value }),
        min_retry_concurrency: budget
            .min_retry_concurrency
            .map(|value| UInt32Value { value }),
        budget_interval: budget.budget_interval.as_ref().and_then(proto_duration),
    });
}

/// Istio's outlier-detection mapping: success-rate ejection off; a
/// consecutive-error count enforces at 100% (0 disables it); local-origin
/// errors counted apart only when split; the panic threshold set to
/// `minHealthPercent` (0, i.e. disabled, unless given).
fn apply_outlier_detection(cluster: &mut Cluster, outlier: Option<&OutlierDetection>) {
    let Some(outlier) = outlier else { return };
    let count = |value: u32| Some(UInt32Value { value });
    let enforcing = |value: u32| count(if value > 0 { 100 } else { 0 });
    let mut out = EnvoyOutlierDetection {
        enforcing_success_rate: count(0),
        interval: outlier.interval.as_ref().and_then(proto_duration),
        base_ejection_time: outlier.base_ejection_time.as_ref().and_then(proto_duration),
        max_ejection_percent: outlier
            .max_ejection_percent
            .filter(|p| *p > 0)
            .and_then(|p| count(p as u32)),
        ..Default::default()
    };
    if let Some(errors) = outlier.consecutive_5xx_errors {
        out.consecutive_5xx = count(errors);
        out.enforcing_consecutive_5xx = enforcing(errors);
    }
    if let Some(errors) = outlier.consecutive_gateway_errors {
        out.consecutive_gateway_failure = count(errors);
        out.enforcing_consecutive_gateway_failure = enforcing(errors);
    }
    if outlier.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(failures) = outlier.consecutive_local_origin_failures.filter(|f| *f > 0) {
            out.consecutive_local_origin_failure = count(failures);
            out.enforcing_consecutive_local_origin_failure = count(100);
        }
        out.enforcing_local_origin_success_rate = count(0);
    }
    cluster.outlier_detection = Some(out);
    let min_health = outlier.min_health_percent.unwrap_or(0);
    if min_health >= 0 {
        common_lb_config(cluster).healthy_panic_threshold = Some(Percent {
            value: f64::from(min_health),
        });
    }
}

fn common_lb_config(cluster: &mut Cluster) -> &mut CommonLbConfig {
    cluster
        .common_lb_config
        .get_or_insert_with(Default::default)
}

/// Load-balancing algorithm. Istio's default is LEAST_REQUEST; ORIGINAL_DST
/// clusters balance nothing; `PASSTHROUGH` turns the cluster into one.
fn apply_load_balancer(cluster: &mut UpstreamCluster, lb: Option<&LoadBalancerSettings>) {
    apply_locality_lb(
        cluster.cluster,
        lb.and_then(|l| l.locality_lb_setting.as_ref()),
    );
    if cluster.discovery_type() == Some(DiscoveryType::OriginalDst) {
        return;
    }
    let c = &mut *cluster.cluster;
    match lb.and_then(|l| l.simple).unwrap_or_default() {
        SimpleLb::Random => c.lb_policy = LbPolicy::Random as i32,
        SimpleLb::RoundRobin => {
            c.lb_policy = LbPolicy::RoundRobin as i32;
            c.lb_config = slow_start(lb).map(|slow_start_config| {
                LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(slow_start_config),
                })
            });
        }
        SimpleLb::Passthrough => {
            cluster.set_discovery_type(DiscoveryType::OriginalDst);
            cluster.cluster.load_assignment = None;
            return;
        }
        SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => {
            c.lb_policy = LbPolicy::LeastRequest as i32;
            c.lb_config = slow_start(lb).map(|slow_start_config| {
                LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: Some(slow_start_config),
                    ..Default::default()
                })
            });
        }
    }
    if let Some(hash) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        apply_consistent_hash(c, hash);
    }
}

/// Slow start for new endpoints (`warmup` or the older `warmupDurationSecs`).
fn slow_start(lb: Option<&LoadBalancerSettings>) -> Option<SlowStartConfig> {
    let lb = lb?;
    let warmup = lb.warmup.as_ref();
    let window = warmup
        .and_then(|w| w.duration.as_ref())
        .or(lb.warmup_duration_secs.as_ref())
        .and_then(proto_duration)?;
    Some(SlowStartConfig {
        slow_start_window: Some(window),
        min_weight_percent: warmup
            .and_then(|w| w.minimum_percent)
            .map(|value| Percent { value }),
        ..Default::default()
    })
}

/// RING_HASH (the default when no algorithm is named) or MAGLEV.
fn apply_consistent_hash(cluster: &mut Cluster, hash: &ConsistentHashLb) {
    if let Some(maglev) = &hash.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        cluster.lb_config = maglev.table_size.filter(|s| *s > 0).map(|value| {
            LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value }),
            })
        });
        return;
    }
    cluster.lb_policy = LbPolicy::RingHash as i32;
    let minimum_ring_size = match &hash.ring_hash {
        Some(ring) => ring.minimum_ring_size.filter(|s| *s > 0),
        None => Some(
            hash.minimum_ring_size
                .filter(|s| *s > 0)
                .unwrap_or(DEFAULT_MINIMUM_RING_SIZE),
        ),
    };
    cluster.lb_config = minimum_ring_size.map(|value| {
        LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value }),
            ..Default::default()
        })
    });
}

/// Locality-weighted balancing when the setting distributes traffic, or
/// fails over (which needs outlier detection to notice failures). Priorities
/// per proxy locality are not computed: endpoints are shared by all proxies.
fn apply_locality_lb(cluster: &mut Cluster, setting: Option<&LocalityLoadBalancerSetting>) {
    let Some(setting) = setting.filter(|s| s.enabled != Some(false)) else {
        return;
    };
    let fails_over = cluster.outlier_detection.is_some()
        && (!setting.failover.is_empty() || !setting.failover_priority.is_empty());
    if fails_over || !setting.distribute.is_empty() {
        common_lb_config(cluster).locality_config_specifier = Some(
            LocalityConfigSpecifier::LocalityWeightedLbConfig(LocalityWeightedLbConfig {}),
        );
    }
}

/// Upstream TLS as a transport socket; SIMPLE and MUTUAL without an explicit
/// SNI (or SANs) take them from the request, as Istio's `auto_sni` does.
fn apply_tls(
    cluster: &mut UpstreamCluster,
    tls: Option<&ClientTlsSettings>,
    target: &PolicyTarget<'_>,
) {
    let Some(tls) = tls else { return };
    let tls_target = TlsTarget {
        istio_mtls_sni: target.istio_mtls_sni,
        service_accounts: target.service_accounts,
        http2: cluster.is_http2(),
    };
    let Some(context) = upstream_tls_context(tls, &tls_target) else {
        return;
    };
    if matches!(tls.mode, Some(TlsMode::Simple | TlsMode::Mutual)) && tls.sni.is_empty() {
        let verify = tls.subject_alt_names.is_empty() && tls.insecure_skip_verify != Some(true);
        let options = cluster.upstream_http_options();
        options.auto_sni = true;
        options.auto_san_validation = verify;
    }
    cluster.cluster.transport_socket = Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(to_any(&context))),
    });
}

/// The route hash policy for traffic to (`host`, `port`, `subset`) from a
/// proxy in `proxy_namespace`: the consistent-hash key of the policy that
/// applies to that cluster, or nothing. `port` 0 means no port-level
/// settings apply. Uses the same merged policy as the cluster, so the route
/// hashes exactly when the cluster is RING_HASH or MAGLEV.
pub fn hash_policy_for(
    snapshot: &MeshSnapshot,
    proxy_namespace: &str,
    host: &str,
    port: u32,
    subset: &str,
) -> Vec<HashPolicy> {
    let Some(rule) = snapshot.destination_rule(host, proxy_namespace) else {
        return Vec::new();
    };
    effective_policy(Some(&rule.spec), port, subset)
        .load_balancer
        .filter(|lb| lb.simple != Some(SimpleLb::Passthrough))
        .and_then(|lb| lb.consistent_hash.as_ref())
        .and_then(consistent_hash_policy)
        .into_iter()
        .collect()
}

/// The route-side half of a consistent hash: which request property is hashed.
pub fn consistent_hash_policy(hash: &ConsistentHashLb) -> Option<HashPolicy> {
    let specifier = if let Some(header) = &hash.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.name.clone(),
            ttl: cookie.ttl.as_ref().and_then(proto_duration),
            path: cookie.path.clone(),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                })
                .collect(),
        })
    } else if hash.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(parameter) = &hash.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter {
            name: parameter.clone(),
        })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    })
}

/// Packs an Envoy message into an `Any`.
pub fn to_any<M: Message + prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// An Istio duration as a protobuf one; unreadable durations count as unset
/// (galley refuses them before they get here).
pub fn proto_duration(duration: &Duration) -> Option<ProtoDuration> {
    match duration.to_std() {
        Ok(d) => Some(std_to_proto(d)),
        Err(error) => {
            tracing::warn!(%error, "ignoring an invalid duration in a DestinationRule");
            None
        }
    }
}

pub fn std_to_proto(duration: std::time::Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::networking::destination_rule::Subset;

    /// Rules are written as JSON, which needs no extra dependency.
    fn rule(json: &str) -> DestinationRule {
        serde_json::from_str(json).expect("test rule parses")
    }

    #[test]
    fn port_level_settings_replace_the_top_level_wholesale() {
        let rule = rule(
            r#"{"host": "a", "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM"},
                "outlierDetection": {"consecutive5xxErrors": 3},
                "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]
            }}"#,
        );
        let on_80 = effective_policy(Some(&rule), 80, "");
        assert_eq!(
            on_80.load_balancer.unwrap().simple,
            Some(SimpleLb::RoundRobin)
        );
        assert!(
            on_80.outlier_detection.is_none(),
            "port level does not inherit"
        );
        let on_81 = effective_policy(Some(&rule), 81, "");
        assert_eq!(on_81.load_balancer.unwrap().simple, Some(SimpleLb::Random));
        assert!(on_81.outlier_detection.is_some());
    }

    #[test]
    fn subset_policy_overrides_field_by_field() {
        let mut rule = rule(
            r#"{"host": "a", "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM"},
                "outlierDetection": {"consecutive5xxErrors": 3}
            }}"#,
        );
        rule.subsets.push(Subset {
            name: "v1".into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: Some(LoadBalancerSettings {
                    simple: Some(SimpleLb::RoundRobin),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let v1 = effective_policy(Some(&rule), 80, "v1");
        assert_eq!(v1.load_balancer.unwrap().simple, Some(SimpleLb::RoundRobin));
        assert!(
            v1.outlier_detection.is_some(),
            "unset subset fields inherit"
        );
        let default = effective_policy(Some(&rule), 80, "");
        assert_eq!(
            default.load_balancer.unwrap().simple,
            Some(SimpleLb::Random)
        );
    }

    #[test]
    fn no_hash_key_means_no_route_hash_policy() {
        assert!(consistent_hash_policy(&ConsistentHashLb::default()).is_none());
        let by_ip = ConsistentHashLb {
            use_source_ip: Some(true),
            ..Default::default()
        };
        assert!(matches!(
            consistent_hash_policy(&by_ip).unwrap().policy_specifier,
            Some(PolicySpecifier::ConnectionProperties(
                ConnectionProperties { source_ip: true }
            ))
        ));
    }
}
