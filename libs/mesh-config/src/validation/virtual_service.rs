//! VirtualService: hosts and gateways, then each HTTP, TLS and TCP route.

use super::{Checker, Path, export_to, hosts, http, http_route, names, ports};
use crate::networking::virtual_service::{
    HttpMatchRequest, HttpRoute, L4MatchAttributes, TcpRoute, TlsMatchAttributes, TlsRoute,
    VirtualService,
};

pub fn validate(v: &mut Checker, at: &Path, vs: &VirtualService) {
    // A VirtualService without hosts is a delegate, reachable only from
    // another VirtualService's `delegate`.
    let delegate = vs.hosts.is_empty();
    if delegate {
        v.require(
            &at.field("gateways"),
            vs.gateways.is_empty(),
            "a delegate VirtualService (no hosts) cannot name gateways",
        );
        v.require(
            &at.field("tls"),
            vs.tls.is_empty(),
            "a delegate VirtualService (no hosts) cannot have tls routes",
        );
        v.require(
            &at.field("tcp"),
            vs.tcp.is_empty(),
            "a delegate VirtualService (no hosts) cannot have tcp routes",
        );
    }
    for (i, gw) in vs.gateways.iter().enumerate() {
        gateway_reference(v, &at.field("gateways").index(i), gw);
    }
    // Bound to a gateway as soon as one gateway other than `mesh` is named.
    let on_gateway = vs.gateways.iter().any(|g| g != "mesh");
    if !on_gateway {
        jwt_claims_need_a_gateway(v, at, vs);
    }
    hosts_of(v, at, vs, on_gateway);
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        v.error(at, "at least one of http, tls or tcp routes is required");
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route::validate(v, &at.field("http").index(i), route, delegate);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        tls_route(v, &at.field("tls").index(i), route, vs);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        tcp_route(v, &at.field("tcp").index(i), route);
    }
    export_to::validate(
        v,
        &at.field("exportTo"),
        &vs.export_to,
        export_to::Owner::Other,
    );
    unreachable_http_routes(v, at, &vs.http);
}

pub fn gateway_reference(v: &mut Checker, at: &Path, name: &str) {
    match hosts::gateway_reference(name) {
        Ok(Some(warning)) => v.warn(at, warning),
        Ok(None) => {}
        Err(e) => v.error(at, e),
    }
}

fn hosts_of(v: &mut Checker, at: &Path, vs: &VirtualService, on_gateway: bool) {
    let mut all_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let at = at.field("hosts").index(i);
        if let Err(e) = hosts::wildcard_domain(host) {
            if !hosts::is_ip(host) {
                v.error(&at, e);
                all_valid = false;
            }
        } else if !on_gateway && host == "*" {
            v.error(
                &at,
                "host \"*\" is only allowed on VirtualServices bound to a gateway other than mesh",
            );
            all_valid = false;
        }
    }
    if !all_valid {
        return;
    }
    for (i, a) in vs.hosts.iter().enumerate() {
        for b in &vs.hosts[i + 1..] {
            if hosts::hosts_overlap(a, b) {
                v.error(
                    &at.field("hosts").index(i),
                    format!("hosts {a:?} and {b:?} overlap"),
                );
            }
        }
    }
}

/// Routing on JWT claims needs the gateway's RequestAuthentication.
fn jwt_claims_need_a_gateway(v: &mut Checker, at: &Path, vs: &VirtualService) {
    for (i, route) in vs.http.iter().enumerate() {
        for (j, m) in route.r#match.iter().enumerate() {
            let m_at = at.field("http").index(i).field("match").index(j);
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for name in map.keys().filter(|n| http::is_jwt_claim_header(n)) {
                    v.error(
                        &m_at.field(field).key(name),
                        "routing on JWT claims is only supported on gateways",
                    );
                }
            }
        }
    }
}

fn tls_route(v: &mut Checker, at: &Path, r: &TlsRoute, vs: &VirtualService) {
    v.require(
        &at.field("match"),
        !r.r#match.is_empty(),
        "a TLS route needs at least one match",
    );
    for (i, m) in r.r#match.iter().enumerate() {
        tls_match(v, &at.field("match").index(i), m, vs);
    }
    route_destinations(v, at, &r.route, "TLS");
}

fn tls_match(v: &mut Checker, at: &Path, m: &TlsMatchAttributes, vs: &VirtualService) {
    v.require(
        &at.field("sniHosts"),
        !m.sni_hosts.is_empty(),
        "a TLS match needs at least one SNI host",
    );
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        let at = at.field("sniHosts").index(i);
        if let Err(e) = hosts::wildcard_domain(sni) {
            if hosts::is_ip(sni) {
                v.warn(&at, format!("{sni:?} is an IP address; SNI carries host names and most clients never send an IP"));
            } else {
                v.error(&at, e);
            }
            continue;
        }
        if !vs
            .hosts
            .iter()
            .any(|h| hosts::covers(&h.to_ascii_lowercase(), &sni.to_ascii_lowercase()))
        {
            v.error(
                &at,
                format!("SNI host {sni:?} is not within the VirtualService's hosts"),
            );
        }
    }
    l4_common(
        v,
        at,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
    );
}

fn tcp_route(v: &mut Checker, at: &Path, r: &TcpRoute) {
    for (i, m) in r.r#match.iter().enumerate() {
        tcp_match(v, &at.field("match").index(i), m);
    }
    route_destinations(v, at, &r.route, "TCP");
}

fn tcp_match(v: &mut Checker, at: &Path, m: &L4MatchAttributes) {
    l4_common(
        v,
        at,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
    );
    if !m.source_subnet.is_empty() {
        v.check(
            &at.field("sourceSubnet"),
            hosts::ip_or_cidr(&m.source_subnet),
        );
    }
}

fn l4_common(
    v: &mut Checker,
    at: &Path,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &std::collections::BTreeMap<String, String>,
    gateways: &[String],
) {
    for (i, subnet) in subnets.iter().enumerate() {
        v.check(
            &at.field("destinationSubnets").index(i),
            hosts::ip_or_cidr(subnet),
        );
    }
    if let Some(port) = port {
        v.check(&at.field("port"), ports::number(port));
    }
    names::labels(v, &at.field("sourceLabels"), source_labels);
    for (i, gw) in gateways.iter().enumerate() {
        gateway_reference(v, &at.field("gateways").index(i), gw);
    }
}

fn route_destinations(
    v: &mut Checker,
    at: &Path,
    route: &[crate::networking::virtual_service::RouteDestination],
    kind: &str,
) {
    let route_at = at.field("route");
    v.require(
        &route_at,
        !route.is_empty(),
        format!("a {kind} route needs at least one destination"),
    );
    for (i, dest) in route.iter().enumerate() {
        http::destination(
            v,
            &route_at.index(i).field("destination"),
            &dest.destination,
        );
    }
    http::weights(
        v,
        &route_at,
        &route.iter().map(|d| d.weight).collect::<Vec<_>>(),
    );
}

/// A match that matches every request: no conditions at all.
fn matches_everything(m: &HttpMatchRequest) -> bool {
    *m == HttpMatchRequest {
        name: m.name.clone(),
        stat_prefix: m.stat_prefix.clone(),
        ..Default::default()
    }
}

/// Routes after a catch-all route (no match, or an empty match) are never used.
fn unreachable_http_routes(v: &mut Checker, at: &Path, routes: &[HttpRoute]) {
    let catch_all = routes
        .iter()
        .position(|r| r.r#match.is_empty() || r.r#match.iter().any(matches_everything));
    if let Some(first) = catch_all {
        for i in first + 1..routes.len() {
            v.warn(
                &at.field("http").index(i),
                format!("route is never used: http[{first}] already matches every request"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
