//! Endpoints of outbound clusters as Envoy `ClusterLoadAssignment`s: served
//! over EDS for statically resolved services, inlined in the cluster for DNS
//! ones.
//!
//! An EDS response is shared by every proxy that asks for the cluster, so the
//! subset selector cannot come from the asking proxy's namespace. It comes
//! from the DestinationRule that applies in the service's own namespace
//! (then the root namespace, as [`MeshSnapshot::destination_rule`] looks);
//! when that rule does not define the subset — a proxy got it from a rule in
//! its own namespace — the first rule (by namespace, then name) for the host
//! that does define it is used.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use trireme_proto::envoy::pb::envoy::config::core::v3::{
    Address, HealthStatus, Locality, Metadata, Pipe, SocketAddress, address,
    socket_address::PortSpecifier,
};
use trireme_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use trireme_proto::envoy::pb::google::protobuf::{Struct, UInt32Value, Value, value::Kind};

use mesh_config::Resource;
use mesh_config::networking::DestinationRule;

use crate::model::mtls::{TLS_MODE_KEY, TLS_MODE_LABEL};
use crate::model::service::Resolution;
use crate::model::snapshot::namespace_of;
use crate::model::{Endpoint, MeshSnapshot, Service, ServicePort};
use crate::translate::names::{Direction, cluster_name, parse_cluster_name};
use crate::translate::traffic_policy::TRANSPORT_SOCKET_MATCH_METADATA;

/// The endpoints of outbound cluster `cluster_name` (`outbound|port|subset|host`).
/// `None` for names pilot did not make or whose service or port is gone; a
/// known cluster with no endpoints gets an empty assignment, so Envoy does
/// not wait for one.
pub fn load_assignment(
    snapshot: &MeshSnapshot,
    cluster_name: &str,
) -> Option<ClusterLoadAssignment> {
    let key = parse_cluster_name(cluster_name)?;
    if key.direction != Direction::Outbound {
        return None;
    }
    let service = snapshot.service(key.host)?;
    let port = service.port(key.port)?;
    let selector = if key.subset.is_empty() {
        None
    } else {
        match subset_selector(snapshot, service, key.subset) {
            Some(labels) => Some(labels),
            None => return Some(empty_assignment(cluster_name)),
        }
    };
    let endpoints = service_endpoints(snapshot, service);
    Some(service_load_assignment(
        cluster_name,
        service,
        port,
        select(&endpoints, selector),
    ))
}

/// Every cluster whose endpoints EDS serves: each port of each statically
/// resolved service, and of each passthrough service (gateways reach those
/// over EDS), with the subsets of the rule in the service's namespace.
pub fn eds_cluster_names(snapshot: &MeshSnapshot) -> Vec<String> {
    let mut names = Vec::new();
    for service in snapshot.services.values() {
        if service.resolution == Resolution::Dns {
            continue;
        }
        let subsets = subset_names(snapshot, service);
        let mut ports: Vec<u32> = service.ports.iter().map(|p| p.number).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            names.push(cluster_name(
                Direction::Outbound,
                port,
                "",
                &service.hostname,
            ));
            for subset in &subsets {
                names.push(cluster_name(
                    Direction::Outbound,
                    port,
                    subset,
                    &service.hostname,
                ));
            }
        }
    }
    names
}

/// Subset names of the rule that EDS uses for the service, sorted.
fn subset_names(snapshot: &MeshSnapshot, service: &Service) -> Vec<String> {
    let mut names: Vec<String> = snapshot
        .destination_rule(&service.hostname, &service.namespace)
        .map(|rule| rule.spec.subsets.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// Labels of `subset` for the service's endpoints: from the rule in the
/// service's namespace, else from any rule for the host that defines it.
pub fn subset_selector<'a>(
    snapshot: &'a MeshSnapshot,
    service: &Service,
    subset: &str,
) -> Option<&'a BTreeMap<String, String>> {
    let in_rule = |rule: &'a Resource<DestinationRule>| {
        rule.spec
            .subsets
            .iter()
            .find(|s| s.name == subset)
            .map(|s| &s.labels)
    };
    snapshot
        .destination_rule(&service.hostname, &service.namespace)
        .and_then(in_rule)
        .or_else(|| {
            snapshot
                .config
                .destination_rules
                .iter()
                .filter(|rule| {
                    snapshot.qualify_host(&rule.spec.host, namespace_of(rule)) == service.hostname
                })
                .find_map(in_rule)
        })
}

/// The service's endpoints. A DNS service that lists none is reached at its
/// own host name, as Istio does for ServiceEntries without endpoints.
pub fn service_endpoints<'a>(snapshot: &'a MeshSnapshot, service: &Service) -> Cow<'a, [Endpoint]> {
    let endpoints = snapshot.endpoints(&service.hostname);
    if endpoints.is_empty()
        && service.resolution == Resolution::Dns
        && !service.hostname.contains('*')
    {
        return Cow::Owned(vec![Endpoint {
            address: service.hostname.clone(),
            ports: BTreeMap::new(),
            labels: BTreeMap::new(),
            weight: 1,
            locality: String::new(),
            service_account: String::new(),
            network: String::new(),
        }]);
    }
    Cow::Borrowed(endpoints)
}

/// Endpoints carrying every label of `selector` (all of them without one).
pub fn select<'a>(
    endpoints: &'a [Endpoint],
    selector: Option<&BTreeMap<String, String>>,
) -> Vec<&'a Endpoint> {
    endpoints
        .iter()
        .filter(|e| selector.is_none_or(|labels| e.matches_labels(labels)))
        .collect()
}

/// The assignment of `endpoints` for a cluster of `service` on `port`:
/// grouped by locality (sorted), each endpoint at its own port for the
/// service port, weighted. Static services keep only IP (or `unix://`)
/// addresses: anything else would make Envoy reject the whole response.
pub fn service_load_assignment(
    cluster_name: &str,
    service: &Service,
    port: &ServicePort,
    endpoints: Vec<&Endpoint>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<(&Endpoint, u32)>> = BTreeMap::new();
    for endpoint in endpoints {
        if service.resolution != Resolution::Dns && !is_ip_or_socket(&endpoint.address) {
            tracing::warn!(
                cluster = cluster_name,
                address = endpoint.address,
                "skipping an endpoint that is not an IP address"
            );
            continue;
        }
        let endpoint_port = service.endpoint_port(port, endpoint);
        by_locality
            .entry(endpoint.locality.as_str())
            .or_default()
            .push((endpoint, endpoint_port));
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, endpoints)| locality_endpoints(locality, endpoints))
            .collect(),
        ..Default::default()
    }
}

fn empty_assignment(cluster_name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        ..Default::default()
    }
}

fn is_ip_or_socket(address: &str) -> bool {
    address.parse::<IpAddr>().is_ok() || address.starts_with("unix://")
}

/// One locality's endpoints, sorted by address and port; the locality's
/// weight is the sum of its endpoints' (used with locality-weighted balancing).
fn locality_endpoints(locality: &str, mut endpoints: Vec<(&Endpoint, u32)>) -> LocalityLbEndpoints {
    endpoints.sort_by(|(a, a_port), (b, b_port)| (&a.address, a_port).cmp(&(&b.address, b_port)));
    let weight: u32 = endpoints
        .iter()
        .fold(0u32, |sum, (e, _)| sum.saturating_add(e.weight.max(1)));
    LocalityLbEndpoints {
        locality: parse_locality(locality),
        lb_endpoints: endpoints
            .into_iter()
            .map(|(endpoint, port)| lb_endpoint(endpoint, port))
            .collect(),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    }
}

fn lb_endpoint(endpoint: &Endpoint, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(endpoint_address(&endpoint.address, port)),
            ..Default::default()
        })),
        health_status: HealthStatus::Healthy as i32,
        load_balancing_weight: Some(UInt32Value {
            value: endpoint.weight.max(1),
        }),
        metadata: transport_socket_metadata(endpoint),
    }
}

/// The endpoint's `security.istio.io/tlsMode` label where clusters' transport
/// socket matches look for it: auto mTLS offers mTLS only to endpoints that
/// say `istio`.
fn transport_socket_metadata(endpoint: &Endpoint) -> Option<Metadata> {
    let mode = endpoint.labels.get(TLS_MODE_LABEL)?;
    let fields = [(
        TLS_MODE_KEY.to_string(),
        Value {
            kind: Some(Kind::StringValue(mode.clone())),
        },
    )];
    Some(Metadata {
        filter_metadata: [(
            TRANSPORT_SOCKET_MATCH_METADATA.to_string(),
            Struct {
                fields: fields.into(),
            },
        )]
        .into(),
        ..Default::default()
    })
}

/// A socket address, or a Unix socket for `unix://<path>` endpoints.
fn endpoint_address(address: &str, port: u32) -> Address {
    let address = match address.strip_prefix("unix://") {
        Some(path) => address::Address::Pipe(Pipe {
            path: path.to_string(),
            mode: 0,
        }),
        None => address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        }),
    };
    Address {
        address: Some(address),
    }
}

/// `region/zone/subzone` (any suffix may be missing); `None` when empty.
pub fn parse_locality(locality: &str) -> Option<Locality> {
    if locality.is_empty() {
        return None;
    }
    let mut parts = locality.splitn(3, '/').map(str::to_string);
    Some(Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        sub_zone: parts.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localities_split_into_region_zone_subzone() {
        let locality = parse_locality("us-east1/us-east1-b/rack7").unwrap();
        assert_eq!(
            (
                locality.region.as_str(),
                locality.zone.as_str(),
                locality.sub_zone.as_str()
            ),
            ("us-east1", "us-east1-b", "rack7")
        );
        assert_eq!(parse_locality("eu").unwrap().zone, "");
        assert!(parse_locality("").is_none());
    }

    #[test]
    fn only_ips_and_unix_sockets_are_static_addresses() {
        assert!(is_ip_or_socket("10.0.0.1"));
        assert!(is_ip_or_socket("fd00::1"));
        assert!(is_ip_or_socket("unix:///var/run/app.sock"));
        assert!(!is_ip_or_socket("db.example.com"));
    }
}
