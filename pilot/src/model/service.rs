//! Services and their endpoints, as every registry (Kubernetes,
//! ServiceEntry/WorkloadEntry) reports them.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Application protocol of a service port, from its `protocol` field or, as in
/// Istio, from its name prefix (`http-web`, `grpc`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    Unsupported,
}

impl Protocol {
    /// Parses Istio's protocol names, case-insensitively.
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "GRPC" | "GRPC-WEB" => Protocol::Grpc,
            "HTTPS" => Protocol::Https,
            "TLS" => Protocol::Tls,
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => Protocol::Tcp,
            _ => Protocol::Unsupported,
        }
    }

    /// The protocol of a port declared with `protocol` (may be empty) and `name`.
    pub fn of_port(protocol: &str, name: &str) -> Protocol {
        if !protocol.is_empty() {
            return Protocol::parse(protocol);
        }
        let prefix = name.split('-').next().unwrap_or(name);
        match Protocol::parse(prefix) {
            Protocol::Unsupported => Protocol::Tcp,
            known => known,
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServicePort {
    pub name: String,
    pub number: u32,
    pub protocol: Protocol,
    /// Where endpoints listen when they do not say otherwise.
    pub target_port: Option<u32>,
}

/// How Envoy finds the addresses of a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Resolution {
    /// Endpoints are IPs pilot sends over EDS.
    Static,
    /// Endpoints are host names Envoy resolves itself.
    Dns,
    /// Traffic goes to the address the client asked for.
    Passthrough,
}

/// A service: a host name with ports, backed by endpoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub mesh_external: bool,
    /// Virtual IPs or CIDRs, if any.
    pub addresses: Vec<String>,
    /// Namespaces the service is visible to (`exportTo`); empty means all.
    pub export_to: Vec<String>,
    /// Identities the service's workloads may present besides their service
    /// accounts' (a ServiceEntry's `subjectAltNames`).
    pub subject_alt_names: Vec<String>,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The service's readable `addresses` (others are skipped).
    pub fn parsed_addresses(&self) -> impl Iterator<Item = ServiceAddress> + '_ {
        self.addresses
            .iter()
            .filter_map(|a| ServiceAddress::parse(a))
    }

    /// The port an endpoint receives traffic for `service_port` on: the
    /// endpoint's own port of that name, else the service's target port,
    /// else the service port itself.
    pub fn endpoint_port(&self, service_port: &ServicePort, endpoint: &Endpoint) -> u32 {
        endpoint
            .ports
            .get(&service_port.name)
            .copied()
            .or(service_port.target_port)
            .unwrap_or(service_port.number)
    }
}

/// One entry of a service's `addresses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAddress {
    /// A single virtual IP (also written as a full-length CIDR).
    Ip(IpAddr),
    /// A range of addresses.
    Range { network: IpAddr, prefix_len: u32 },
}

impl ServiceAddress {
    /// Reads an IP or a CIDR; `None` for anything else.
    pub fn parse(address: &str) -> Option<ServiceAddress> {
        let Some((ip, prefix_len)) = address.split_once('/') else {
            return address.parse().ok().map(ServiceAddress::Ip);
        };
        let network: IpAddr = ip.parse().ok()?;
        let prefix_len: u32 = prefix_len.parse().ok()?;
        let full = if network.is_ipv4() { 32 } else { 128 };
        match prefix_len {
            len if len > full => None,
            len if len == full => Some(ServiceAddress::Ip(network)),
            len => Some(ServiceAddress::Range {
                network,
                prefix_len: len,
            }),
        }
    }
}

/// One instance behind a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// IP address (or a DNS name for DNS-resolved services).
    pub address: String,
    /// Ports by service port name, overriding the service's target ports.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight; 1 when unset.
    pub weight: u32,
    /// `region/zone/subzone`, possibly shorter or empty.
    pub locality: String,
    pub service_account: String,
    pub network: String,
}

impl Endpoint {
    /// Whether the endpoint carries every label of a subset's selector.
    pub fn matches_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ServiceAddress::parse("10.0.0.1"),
            Some(ServiceAddress::Ip(ip("10.0.0.1")))
        );
        assert_eq!(
            ServiceAddress::parse("10.0.0.1/32"),
            Some(ServiceAddress::Ip(ip("10.0.0.1")))
        );
        assert_eq!(
            ServiceAddress::parse("10.0.0.0/24"),
            Some(ServiceAddress::Range {
                network: ip("10.0.0.0"),
                prefix_len: 24
            })
        );
        assert_eq!(ServiceAddress::parse("10.0.0.0/33"), None);
        assert_eq!(ServiceAddress::parse("db.example.com"), None);
    }
}
