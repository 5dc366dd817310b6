//! Sidecar: ingress and egress listeners and the outbound traffic policy.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Path, gateway, hosts, http, ports, selectors};
use crate::networking::gateway::TlsMode;
use crate::networking::sidecar::{
    CaptureMode, IstioEgressListener, IstioIngressListener, Mode, OutboundTrafficPolicy, Sidecar,
    SidecarPort,
};

pub fn validate(v: &mut Checker, at: &Path, s: &Sidecar) {
    if let Some(selector) = &s.workload_selector {
        selectors::labels(
            v,
            &at.field("workloadSelector").field("labels"),
            &selector.labels,
        );
    }
    if s.ingress.is_empty()
        && s.egress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        v.error(
            at,
            "a Sidecar needs ingress, egress, outboundTrafficPolicy or inboundConnectionPool",
        );
        return;
    }
    let mut ingress_ports = BTreeSet::new();
    for (i, listener) in s.ingress.iter().enumerate() {
        let at = at.field("ingress").index(i);
        ingress(v, &at, listener);
        if let Some(n) = listener.port.number {
            if !ingress_ports.insert(n) {
                v.error(
                    &at.field("port").field("number"),
                    format!("port {n} is used by another ingress listener"),
                );
            }
        }
    }
    let mut egress_ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all_seen = false;
    for (i, listener) in s.egress.iter().enumerate() {
        let at = at.field("egress").index(i);
        match &listener.port {
            None => {
                // One port-less listener catches everything else; it must be last.
                if catch_all_seen {
                    v.error(&at, "only one egress listener may omit the port");
                    continue;
                }
                catch_all_seen = true;
                if i != s.egress.len() - 1 {
                    v.error(
                        &at.field("port"),
                        "the egress listener without a port must be the last one",
                    );
                }
            }
            Some(port) => {
                egress_port(
                    v,
                    &at,
                    port,
                    &listener.bind,
                    listener.capture_mode.unwrap_or_default(),
                );
                let n = port.number.unwrap_or(0);
                let unique = if n == 0 {
                    sockets.insert(listener.bind.as_str())
                } else {
                    egress_ports.insert(n)
                };
                v.require(
                    &at.field("port"),
                    unique,
                    "another egress listener uses the same port or socket",
                );
            }
        }
        egress_hosts(v, &at, listener);
    }
    if let Some(policy) = &s.outbound_traffic_policy {
        outbound(v, &at.field("outboundTrafficPolicy"), policy);
    }
}

fn listener_port(v: &mut Checker, at: &Path, port: &SidecarPort) {
    if !port.name.is_empty() {
        v.check(&at.field("name"), ports::name(&port.name));
    }
    v.check(&at.field("protocol"), ports::protocol(&port.protocol));
    if port.target_port.is_some_and(|p| p > 0) {
        v.error(
            &at.field("targetPort"),
            "targetPort has no effect on a Sidecar",
        );
    }
}

fn ingress(v: &mut Checker, at: &Path, l: &IstioIngressListener) {
    let port_at = at.field("port");
    listener_port(v, &port_at, &l.port);
    v.check(
        &port_at.field("number"),
        ports::number(l.port.number.unwrap_or(0)),
    );
    if !l.bind.is_empty() {
        v.check(&at.field("bind"), hosts::ip_address(&l.bind));
    }
    if !l.default_endpoint.is_empty() {
        v.check(
            &at.field("defaultEndpoint"),
            default_endpoint(&l.default_endpoint),
        );
    }
    if let Some(tls) = &l.tls {
        let at = at.field("tls");
        let unsupported = [
            (!tls.subject_alt_names.is_empty(), "subjectAltNames"),
            (tls.https_redirect == Some(true), "httpsRedirect"),
            (!tls.credential_name.is_empty(), "credentialName"),
            (!tls.credential_names.is_empty(), "credentialNames"),
            (!tls.tls_certificates.is_empty(), "tlsCertificates"),
        ];
        for (set, field) in unsupported {
            if set {
                v.error(
                    &at.field(field),
                    format!("{field} is not supported on Sidecar ingress"),
                );
            }
        }
        if matches!(
            tls.mode,
            Some(TlsMode::IstioMutual | TlsMode::AutoPassthrough)
        ) {
            v.error(
                &at.field("mode"),
                "ISTIO_MUTUAL and AUTO_PASSTHROUGH are not allowed on Sidecar ingress",
            );
        }
        let tls_port =
            ports::Protocol::parse(&l.port.protocol).is_some_and(ports::Protocol::is_tls);
        v.require(&at, tls_port, "TLS settings need an HTTPS or TLS port");
        gateway::tls_options(v, &at, tls);
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://PATH`.
fn default_endpoint(endpoint: &str) -> Result<(), String> {
    if let Some(path) = endpoint.strip_prefix(gateway::UNIX_PREFIX) {
        return gateway::unix_address(path);
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("{endpoint:?} must be HOST:PORT or unix://PATH"))?;
    if !matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]") {
        return Err(
            "defaultEndpoint must be 127.0.0.1, 0.0.0.0, [::1] or [::] with a port, or unix://PATH"
                .into(),
        );
    }
    let port: u32 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number"))?;
    ports::number(port)
}

fn egress_port(v: &mut Checker, at: &Path, port: &SidecarPort, bind: &str, capture: CaptureMode) {
    let port_at = at.field("port");
    listener_port(v, &port_at, port);
    match port.number.unwrap_or(0) {
        0 => match bind.strip_prefix(gateway::UNIX_PREFIX) {
            Some(path) => {
                v.check(&at.field("bind"), gateway::unix_address(path));
                v.require(
                    &at.field("captureMode"),
                    matches!(capture, CaptureMode::Default | CaptureMode::None),
                    "unix socket listeners need captureMode DEFAULT or NONE",
                );
            }
            None => v.error(
                &port_at.field("number"),
                "port 0 needs a unix:// bind address",
            ),
        },
        n => {
            v.check(&port_at.field("number"), ports::number(n));
            if !bind.is_empty() {
                v.check(&at.field("bind"), hosts::ip_address(bind));
            }
        }
    }
}

fn egress_hosts(v: &mut Checker, at: &Path, l: &IstioEgressListener) {
    let hosts_at = at.field("hosts");
    if l.hosts.is_empty() {
        v.error(&hosts_at, "an egress listener needs at least one host");
        return;
    }
    let own_ns = v.namespace().unwrap_or(".").to_string();
    let mut by_namespace: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (i, entry) in l.hosts.iter().enumerate() {
        let at = hosts_at.index(i);
        if let Err(e) = hosts::namespace_slash_host(entry, hosts::HostOwner::Sidecar) {
            v.error(&at, e);
            continue;
        }
        let Some((ns, host)) = entry.split_once('/') else {
            continue;
        };
        if ns.starts_with('~') {
            continue;
        }
        let ns = if ns == "." {
            own_ns.clone()
        } else {
            ns.to_string()
        };
        let seen = by_namespace.entry(ns).or_default();
        let duplicate = if host == "*" {
            !seen.is_empty()
        } else {
            seen.contains(host) || seen.contains("*")
        };
        if duplicate {
            v.warn(
                &at,
                format!("{entry:?} is already covered by another host of this listener"),
            );
        }
        seen.insert(host);
    }
    if by_namespace.get("*").is_some_and(|h| h.contains("*")) && by_namespace.len() > 1 {
        v.warn(
            &hosts_at,
            "\"*/*\" already selects everything; the other hosts add nothing",
        );
    }
}

fn outbound(v: &mut Checker, at: &Path, p: &OutboundTrafficPolicy) {
    let Some(proxy) = &p.egress_proxy else { return };
    let at_proxy = at.field("egressProxy");
    if p.mode != Some(Mode::AllowAny) {
        v.error(&at_proxy, "egressProxy requires mode ALLOW_ANY");
        return;
    }
    v.check(&at_proxy.field("host"), hosts::fqdn(&proxy.host));
    if proxy.port.is_none() {
        v.error(&at_proxy.field("port"), "egressProxy needs a port");
        return;
    }
    if !proxy.subset.is_empty() {
        http::destination(v, &at_proxy, proxy);
    } else if let Some(port) = &proxy.port {
        v.check(
            &at_proxy.field("port").field("number"),
            ports::number(port.number.unwrap_or(0)),
        );
    }
}
