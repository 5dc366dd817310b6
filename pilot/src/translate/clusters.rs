//! Outbound clusters (CDS) for one proxy, named and shaped as Istio makes
//! them: `outbound|<port>||<host>` for every service port, one
//! `outbound|<port>|<subset>|<host>` per DestinationRule subset, and the two
//! fixed clusters `BlackHoleCluster` and `PassthroughCluster`.
//!
//! How a cluster finds its endpoints follows the service's resolution:
//! STATIC → EDS (endpoints from [`super::endpoints::load_assignment`]); DNS →
//! STRICT_DNS with the endpoints inline (LOGICAL_DNS for a DNS_ROUND_ROBIN
//! entry with one endpoint); NONE → ORIGINAL_DST on sidecars, EDS on
//! gateways (which have no original destination to send to).
//! The DestinationRule is the one that applies in the proxy's namespace;
//! [`super::traffic_policy`] turns its policy into cluster fields. Where the
//! policy sets no TLS and the destination is in the mesh, auto mTLS reaches
//! endpoints labelled as running Istio's proxy with ISTIO_MUTUAL.
//! Only the services of the proxy's [`ProxyScope`] get clusters.

use mesh_config::Resource;
use mesh_config::networking::destination_rule::{Subset, TrafficPolicy};
use mesh_config::networking::service_entry::Resolution as DeclaredResolution;
use mesh_config::networking::{DestinationRule, ServiceEntry};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::{
    DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};

use super::endpoints::{select, service_endpoints, service_load_assignment};
use super::names::{
    BLACKHOLE_CLUSTER, Direction, PASSTHROUGH_CLUSTER, cluster_name, join_with_port,
};
use super::traffic_policy::{
    AutoMtls, AutoMtlsCache, DEFAULT_CONNECT_TIMEOUT, EffectivePolicy, PolicyTarget,
    UpstreamCluster, apply_traffic_policy, effective_policy, std_to_proto,
};
use crate::model::mtls::{auto_mtls, service_mtls_mode};
use crate::model::service::Resolution;
use crate::model::snapshot::namespace_of;
use crate::model::{MeshSnapshot, Protocol, Proxy, ProxyScope, ProxyType, Service, ServicePort};

/// How long the passthrough cluster keeps idle upstream connections (Istio's value).
const PASSTHROUGH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Every outbound cluster `proxy` needs, ordered by host, port and subset
/// (the subset-less cluster first), then the blackhole and passthrough
/// clusters. Computes the proxy's scope; the xDS generator, which has it
/// already, calls [`scoped_outbound_clusters`].
pub fn outbound_clusters(snapshot: &MeshSnapshot, proxy: &Proxy) -> Vec<Cluster> {
    scoped_outbound_clusters(snapshot, proxy, &ProxyScope::new(snapshot, proxy))
}

/// The outbound clusters of the services in `scope`, then the blackhole and
/// passthrough clusters.
pub fn scoped_outbound_clusters(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    scope: &ProxyScope,
) -> Vec<Cluster> {
    let destinations: Vec<Destination<'_>> = scope
        .services(snapshot)
        .map(|service| Destination::new(snapshot, proxy, service))
        .collect();
    // Sized up front: a Cluster is over 3 KB, so growing the vector as it
    // fills would copy every cluster built so far several times over.
    let count: usize = destinations.iter().map(Destination::cluster_count).sum();
    let mut clusters = Vec::with_capacity(count + 2);
    let mut auto_mtls = AutoMtlsCache::new();
    for destination in &destinations {
        destination.push_clusters(&mut clusters, &mut auto_mtls);
    }
    clusters.push(blackhole_cluster());
    clusters.push(passthrough_cluster());
    clusters
}

/// What every cluster of one service shares.
struct Destination<'a> {
    snapshot: &'a MeshSnapshot,
    proxy: &'a Proxy,
    service: &'a Service,
    rule: Option<&'a DestinationRule>,
    /// By number, each number once.
    ports: Vec<DestinationPort<'a>>,
    /// By name, each name once.
    subsets: Vec<&'a Subset>,
    service_accounts: Vec<String>,
}

/// A port of the service, with what its clusters share.
struct DestinationPort<'a> {
    port: &'a ServicePort,
    /// Whether auto mTLS applies where the policy sets no TLS.
    auto_mtls: bool,
}

impl<'a> Destination<'a> {
    fn new(snapshot: &'a MeshSnapshot, proxy: &'a Proxy, service: &'a Service) -> Self {
        let rule = snapshot
            .destination_rule(&service.hostname, &proxy.namespace)
            .map(|r| &r.spec);
        let mut ports: Vec<&ServicePort> = service.ports.iter().collect();
        ports.sort_by_key(|p| p.number);
        ports.dedup_by_key(|p| p.number);
        let ports: Vec<DestinationPort<'_>> = ports
            .into_iter()
            .map(|port| DestinationPort {
                port,
                auto_mtls: auto_mtls(service_mtls_mode(snapshot, service, port.number)),
            })
            .collect();
        let may_use_mtls = rule.is_some_and(sets_tls) || ports.iter().any(|p| p.auto_mtls);
        let service_accounts = if may_use_mtls {
            service_accounts(snapshot, service)
        } else {
            Vec::new()
        };
        Destination {
            snapshot,
            proxy,
            service,
            rule,
            ports,
            subsets: sorted_subsets(rule),
            service_accounts,
        }
    }

    /// Per port, the default cluster and one per subset.
    fn cluster_count(&self) -> usize {
        self.ports.len() * (1 + self.subsets.len())
    }

    /// Appends the service's clusters: per port, the default one, then one
    /// per subset.
    fn push_clusters(&self, clusters: &mut Vec<Cluster>, auto_mtls: &mut AutoMtlsCache) {
        let auto_mtls = auto_mtls.destination(&self.service_accounts);
        for port in &self.ports {
            push_outbound_cluster(clusters, self, &auto_mtls, port, None);
            for subset in &self.subsets {
                push_outbound_cluster(clusters, self, &auto_mtls, port, Some(subset));
            }
        }
    }
}

/// Whether any policy of the rule configures TLS (which, with auto mTLS,
/// is what needs the service accounts).
fn sets_tls(rule: &DestinationRule) -> bool {
    let in_policy = |policy: &TrafficPolicy| {
        policy.tls.is_some() || policy.port_level_settings.iter().any(|p| p.tls.is_some())
    };
    rule.traffic_policy.as_ref().is_some_and(in_policy)
        || rule
            .subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref())
            .any(in_policy)
}

/// The rule's subsets by name; a repeated name keeps its first definition.
fn sorted_subsets(rule: Option<&DestinationRule>) -> Vec<&Subset> {
    let mut subsets: Vec<&Subset> = rule.map(|r| r.subsets.iter().collect()).unwrap_or_default();
    subsets.sort_by(|a, b| a.name.cmp(&b.name));
    subsets.dedup_by(|a, b| a.name == b.name);
    subsets
}

/// Appends one outbound cluster, built in place (see [`UpstreamCluster`]):
/// discovery, upstream protocol, traffic policy, then EDS config (the policy
/// may have turned it into ORIGINAL_DST).
fn push_outbound_cluster(
    clusters: &mut Vec<Cluster>,
    destination: &Destination<'_>,
    auto_mtls: &AutoMtls<'_>,
    destination_port: &DestinationPort<'_>,
    subset: Option<&Subset>,
) {
    let service = destination.service;
    let port = destination_port.port;
    let subset_name = subset.map_or("", |s| s.name.as_str());
    clusters.push(Cluster::default());
    let slot = clusters.last_mut().expect("pushed above");
    slot.name = cluster_name(
        Direction::Outbound,
        port.number,
        subset_name,
        &service.hostname,
    );
    slot.connect_timeout = Some(std_to_proto(DEFAULT_CONNECT_TIMEOUT));
    let mut cluster = UpstreamCluster::new(slot);
    set_discovery(&mut cluster, destination, port, subset);
    set_upstream_protocol(&mut cluster, port.protocol, destination.proxy.proxy_type);
    let policy = effective_policy(destination.rule, port.number, subset_name);
    let applies_auto_mtls = policy.tls.is_none() && destination_port.auto_mtls;
    // Only TLS reads the SNI; most clusters of a mesh without TLS settings
    // need none.
    let sni = if policy.tls.is_some() || applies_auto_mtls {
        istio_mtls_sni(port.number, subset_name, &service.hostname)
    } else {
        String::new()
    };
    let target = PolicyTarget {
        istio_mtls_sni: &sni,
        service_accounts: &destination.service_accounts,
    };
    apply_traffic_policy(&mut cluster, &policy, &target);
    if applies_auto_mtls {
        auto_mtls.apply(&mut cluster, &sni);
    }
    apply_eds_config(&mut cluster);
    cluster.finish();
}

/// Discovery type from the service's resolution; DNS clusters carry their
/// endpoints (the subset's, by the proxy's rule) inline.
fn set_discovery(
    cluster: &mut UpstreamCluster,
    destination: &Destination<'_>,
    port: &ServicePort,
    subset: Option<&Subset>,
) {
    match destination.service.resolution {
        Resolution::Static => cluster.set_discovery_type(DiscoveryType::Eds),
        Resolution::Passthrough if destination.proxy.proxy_type == ProxyType::Router => {
            cluster.set_discovery_type(DiscoveryType::Eds)
        }
        Resolution::Passthrough => cluster.set_discovery_type(DiscoveryType::OriginalDst),
        Resolution::Dns => set_dns_discovery(cluster, destination, port, subset),
    }
}

fn set_dns_discovery(
    cluster: &mut UpstreamCluster,
    destination: &Destination<'_>,
    port: &ServicePort,
    subset: Option<&Subset>,
) {
    let endpoints = service_endpoints(destination.snapshot, destination.service);
    let selected = select(&endpoints, subset.map(|s| &s.labels));
    let assignment =
        service_load_assignment(&cluster.cluster.name, destination.service, port, selected);
    let endpoint_count: usize = assignment
        .endpoints
        .iter()
        .map(|l| l.lb_endpoints.len())
        .sum();
    let round_robin = declared_resolution(destination.snapshot, destination.service)
        == Some(DeclaredResolution::DnsRoundRobin);
    // LOGICAL_DNS takes exactly one endpoint; anything else stays STRICT_DNS.
    let discovery_type = if round_robin && endpoint_count == 1 {
        DiscoveryType::LogicalDns
    } else {
        DiscoveryType::StrictDns
    };
    cluster.set_discovery_type(discovery_type);
    cluster.cluster.dns_lookup_family = dns_lookup_family(destination.proxy) as i32;
    cluster.cluster.load_assignment = Some(assignment);
}

/// IPv6 only for proxies with only IPv6 addresses, else IPv4 only (Istio
/// without dual stack).
fn dns_lookup_family(proxy: &Proxy) -> DnsLookupFamily {
    if proxy.ipv6_only() {
        DnsLookupFamily::V6Only
    } else {
        DnsLookupFamily::V4Only
    }
}

/// HTTP/2 and gRPC ports speak HTTP/2 upstream; ports of unknown protocol
/// follow the client on sidecars (which sniff the protocol), as in Istio.
fn set_upstream_protocol(cluster: &mut UpstreamCluster, protocol: Protocol, proxy_type: ProxyType) {
    match protocol {
        Protocol::Http2 | Protocol::Grpc => cluster.set_http2(),
        Protocol::Unsupported if proxy_type == ProxyType::Sidecar => {
            cluster.set_use_downstream_protocol()
        }
        _ => {}
    }
}

/// EDS clusters get their endpoints over ADS under their own name, with no
/// initial fetch timeout (pilot always answers); other types get none.
fn apply_eds_config(cluster: &mut UpstreamCluster) {
    if cluster.discovery_type() != Some(DiscoveryType::Eds) {
        cluster.cluster.eds_cluster_config = None;
        return;
    }
    cluster.cluster.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            initial_fetch_timeout: Some(std_to_proto(std::time::Duration::ZERO)),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
        service_name: cluster.cluster.name.clone(),
    });
}

/// Istio's SNI for mesh mTLS: `outbound_.<port>_.<subset>_.<host>`.
pub fn istio_mtls_sni(port: u32, subset: &str, host: &str) -> String {
    join_with_port("outbound_", ".", port, &["_.", subset, "_.", host])
}

/// Identities a service's endpoints may present: the ServiceEntry's
/// `subjectAltNames` and the SPIFFE ids of its endpoints' service accounts.
fn service_accounts(snapshot: &MeshSnapshot, service: &Service) -> Vec<String> {
    let mut accounts = service.subject_alt_names.clone();
    accounts.extend(
        snapshot
            .endpoints(&service.hostname)
            .iter()
            .filter(|e| !e.service_account.is_empty())
            .map(|e| {
                format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    snapshot.settings.trust_domain, service.namespace, e.service_account
                )
            }),
    );
    accounts.sort();
    accounts.dedup();
    accounts
}

/// The ServiceEntry that declares the service, if it came from one.
fn service_entry_of<'a>(
    snapshot: &'a MeshSnapshot,
    service: &Service,
) -> Option<&'a Resource<ServiceEntry>> {
    snapshot.config.service_entries.iter().find(|entry| {
        namespace_of(entry) == service.namespace
            && entry
                .spec
                .hosts
                .iter()
                .any(|host| snapshot.qualify_host(host, namespace_of(entry)) == service.hostname)
    })
}

/// The resolution the ServiceEntry declared (the model folds DNS_ROUND_ROBIN into DNS).
fn declared_resolution(snapshot: &MeshSnapshot, service: &Service) -> Option<DeclaredResolution> {
    service_entry_of(snapshot, service)?.spec.resolution
}

/// Where traffic with no route goes: a STATIC cluster with no endpoints.
pub fn blackhole_cluster() -> Cluster {
    let mut blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        connect_timeout: Some(std_to_proto(DEFAULT_CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    };
    let mut cluster = UpstreamCluster::new(&mut blackhole);
    cluster.set_discovery_type(DiscoveryType::Static);
    cluster.finish();
    blackhole
}

/// Traffic to unknown destinations, sent on to the address the client
/// dialled, in the client's HTTP version, with default circuit breakers.
pub fn passthrough_cluster() -> Cluster {
    let mut passthrough = Cluster {
        name: PASSTHROUGH_CLUSTER.to_string(),
        ..Default::default()
    };
    let mut cluster = UpstreamCluster::new(&mut passthrough);
    cluster.set_discovery_type(DiscoveryType::OriginalDst);
    let target = PolicyTarget {
        istio_mtls_sni: "",
        service_accounts: &[],
    };
    apply_traffic_policy(&mut cluster, &EffectivePolicy::default(), &target);
    cluster.set_use_downstream_protocol();
    cluster.common_http_options().idle_timeout = Some(std_to_proto(PASSTHROUGH_IDLE_TIMEOUT));
    cluster.finish();
    passthrough
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_sni_names_port_subset_and_host() {
        assert_eq!(
            istio_mtls_sni(9080, "v1", "reviews.default.svc.cluster.local"),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        assert_eq!(
            istio_mtls_sni(443, "", "api.example.com"),
            "outbound_.443_._.api.example.com"
        );
    }

    #[test]
    fn fixed_clusters_are_what_istio_names() {
        let blackhole = blackhole_cluster();
        assert_eq!(blackhole.name, "BlackHoleCluster");
        assert!(blackhole.load_assignment.is_none());
        let passthrough = passthrough_cluster();
        assert_eq!(passthrough.lb_policy, LbPolicy::ClusterProvided as i32);
        assert!(passthrough.circuit_breakers.is_some());
    }
}
