//! ServiceEntry: hosts, addresses, ports, and how endpoints are resolved.

use std::collections::BTreeSet;

use super::{Checker, Path, export_to, hosts, names, ports, selectors, workload_entry};
use crate::networking::service_entry::{Resolution, ServiceEntry};

pub fn validate(v: &mut Checker, at: &Path, se: &ServiceEntry) {
    let resolution = se.resolution.unwrap_or_default();
    if let Some(selector) = &se.workload_selector {
        selectors::labels(
            v,
            &at.field("workloadSelector").field("labels"),
            &selector.labels,
        );
        if !se.endpoints.is_empty() {
            v.error(
                &at.field("workloadSelector"),
                "only one of workloadSelector and endpoints may be set",
            );
        }
    }
    v.require(
        &at.field("hosts"),
        !se.hosts.is_empty(),
        "a ServiceEntry needs at least one host",
    );
    for (i, host) in se.hosts.iter().enumerate() {
        let at = at.field("hosts").index(i);
        if host == "*" {
            v.error(&at, "host \"*\" is not allowed on a ServiceEntry");
            continue;
        }
        v.check(&at, hosts::wildcard_domain(host));
        if resolution != Resolution::DynamicDns
            && let Err(e) = hosts::no_partial_wildcard(host)
        {
            v.warn(&at, e);
        }
    }
    let mut has_cidr = false;
    for (i, address) in se.addresses.iter().enumerate() {
        has_cidr |= address.contains('/');
        v.check(&at.field("addresses").index(i), hosts::ip_or_cidr(address));
    }
    if has_cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
        v.error(
            &at.field("addresses"),
            "CIDR addresses need resolution NONE or STATIC",
        );
    }
    let port_names = ports_of(v, at, se);
    resolution_rules(v, at, se, resolution, &port_names);
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let opaque = se.ports.iter().position(|p| {
            ports::Protocol::parse(&p.protocol).is_none_or(|p| !p.is_http() && !p.is_tls())
        });
        if let Some(i) = opaque {
            v.error(
                &at.field("ports").index(i).field("protocol"),
                "with several hosts every port must be HTTP or TLS, or resolution NONE",
            );
        }
    }
    export_to::validate(
        v,
        &at.field("exportTo"),
        &se.export_to,
        export_to::Owner::ServiceEntry,
    );
}

/// Port numbers and names are unique; returns the names.
fn ports_of<'a>(v: &mut Checker, at: &Path, se: &'a ServiceEntry) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let at = at.field("ports").index(i);
        if !names.insert(port.name.as_str()) {
            v.error(
                &at.field("name"),
                format!("port name {:?} is used twice", port.name),
            );
        } else {
            v.check(&at.field("name"), ports::name(&port.name));
        }
        if !numbers.insert(port.number) {
            v.error(
                &at.field("number"),
                format!("port {} is defined twice", port.number),
            );
        } else {
            v.check(&at.field("number"), ports::number(port.number));
        }
        v.check(&at.field("protocol"), ports::protocol(&port.protocol));
        // A targetPort written out must be a port, 0 included (the CRD's CEL
        // rule refuses it even though the webhook reads 0 as unset).
        if let Some(target) = port.target_port {
            v.check(&at.field("targetPort"), ports::number(target));
        }
        if se.addresses.is_empty()
            && matches!(port.protocol.to_ascii_uppercase().as_str(), "" | "TCP")
        {
            v.warn(
                &at,
                "a TCP (or unset) protocol port without addresses relies on IP auto-allocation",
            );
        }
    }
    names
}

fn resolution_rules(
    v: &mut Checker,
    at: &Path,
    se: &ServiceEntry,
    resolution: Resolution,
    port_names: &BTreeSet<&str>,
) {
    let endpoints_at = at.field("endpoints");
    match resolution {
        Resolution::None => {
            v.require(
                &endpoints_at,
                se.endpoints.is_empty(),
                "resolution NONE cannot have endpoints",
            );
            if se.workload_selector.is_some() {
                v.warn(
                    &at.field("workloadSelector"),
                    "workloadSelector has no effect with resolution NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, endpoint) in se.endpoints.iter().enumerate() {
                workload_entry::entry(v, &endpoints_at.index(i), endpoint, Some(port_names), false);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if se.endpoints.is_empty()
                && let Some(i) = se.hosts.iter().position(|h| hosts::fqdn(h).is_err())
            {
                v.error(&at.field("hosts").index(i), "without endpoints, DNS resolution needs fully qualified hosts without wildcards");
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                v.error(&endpoints_at, "DNS_ROUND_ROBIN allows at most one endpoint");
            }
            for (i, endpoint) in se.endpoints.iter().enumerate() {
                let at = endpoints_at.index(i);
                if !hosts::is_ip(&endpoint.address) && hosts::fqdn(&endpoint.address).is_err() {
                    v.error(
                        &at.field("address"),
                        format!(
                            "{:?} is neither an IP address nor a host name",
                            endpoint.address
                        ),
                    );
                }
                names::labels(v, &at.field("labels"), &endpoint.labels);
                endpoint_ports(v, &at, &endpoint.ports, port_names);
            }
        }
        Resolution::DynamicDns => {
            for (i, host) in se.hosts.iter().enumerate() {
                v.require(
                    &at.field("hosts").index(i),
                    host.starts_with('*'),
                    "DYNAMIC_DNS needs wildcard hosts",
                );
            }
            v.require(
                &at.field("addresses"),
                se.addresses.is_empty(),
                "DYNAMIC_DNS cannot have addresses",
            );
            v.require(
                &endpoints_at,
                se.endpoints.is_empty(),
                "DYNAMIC_DNS cannot have endpoints",
            );
            for (i, port) in se.ports.iter().enumerate() {
                let ok = matches!(
                    port.protocol.to_ascii_uppercase().as_str(),
                    "HTTP" | "TLS" | "GRPC" | "HTTP2"
                );
                v.require(
                    &at.field("ports").index(i).field("protocol"),
                    ok,
                    "DYNAMIC_DNS supports HTTP, TLS, GRPC and HTTP2 ports only",
                );
            }
        }
    }
}

pub fn endpoint_ports(
    v: &mut Checker,
    at: &Path,
    ports_map: &std::collections::BTreeMap<String, u32>,
    service_ports: &BTreeSet<&str>,
) {
    for (name, number) in ports_map {
        let at = at.field("ports").key(name);
        if !service_ports.contains(name.as_str()) {
            v.error(
                &at,
                format!("endpoint port {name:?} is not a port of the ServiceEntry"),
            );
        }
        v.check(&at, ports::name(name));
        v.check(&at, ports::number(*number));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn se(spec: &str) -> String {
        doc("networking.istio.io/v1", "ServiceEntry", spec)
    }

    #[test]
    fn dns_needs_fqdn_hosts_without_endpoints() {
        assert_one_error(
            &se(
                "  hosts: ['*.example.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DNS\n",
            ),
            "spec.hosts[0]",
        );
        assert_valid(&se(
            "  hosts: ['*.example.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: NONE\n",
        ));
    }

    #[test]
    fn several_hosts_need_http_or_tls_ports() {
        assert_one_error(
            &se(
                "  hosts: [a.example.com, b.example.com]\n  addresses: [10.0.0.1]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
            ),
            "spec.ports[0].protocol",
        );
    }

    #[test]
    fn dynamic_dns() {
        assert_valid(&se(
            "  hosts: ['*.example.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n",
        ));
        assert_one_error(
            &se(
                "  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n",
            ),
            "spec.hosts[0]",
        );
        assert_one_error(
            &se(
                "  hosts: ['*.example.com']\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DYNAMIC_DNS\n",
            ),
            "spec.ports[0].protocol",
        );
    }

    #[test]
    fn warnings() {
        assert_warning(
            &se(
                "  hosts: ['*foo.example.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: NONE\n",
            ),
            "spec.hosts[0]",
        );
        assert_warning(
            &se(
                "  hosts: [db.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
            ),
            "spec.ports[0]",
        );
        assert_warning(
            &se(
                "  hosts: [db.example.com]\n  addresses: [10.0.0.1]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  workloadSelector: {labels: {app: db}}\n",
            ),
            "spec.workloadSelector",
        );
    }

    #[test]
    fn ports_and_endpoints() {
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]\n  resolution: DNS\n",
            ),
            "spec.ports[1].name",
        );
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: SCTP}]\n  resolution: DNS\n",
            ),
            "spec.ports[0].protocol",
        );
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 70000}]\n  resolution: DNS\n",
            ),
            "spec.ports[0].targetPort",
        );
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 0}]\n  resolution: DNS\n",
            ),
            "spec.ports[0].targetPort",
        );
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  addresses: [10.0.0.1]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - address: vm.example.com\n",
            ),
            "spec.endpoints[0].address",
        );
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  endpoints:\n  - address: 'bad host'\n",
            ),
            "spec.endpoints[0].address",
        );
    }

    #[test]
    fn export_to_none_only_alone() {
        assert_valid(&se(
            "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  exportTo: ['~']\n",
        ));
        assert_one_error(
            &se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  exportTo: ['~', '.']\n",
            ),
            "spec.exportTo",
        );
    }
}
