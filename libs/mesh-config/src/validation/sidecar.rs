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
        if let Some(n) = listener.port.number
            && !ingress_ports.insert(n)
        {
            v.error(
                &at.field("port").field("number"),
                format!("port {n} is used by another ingress listener"),
            );
        }
    }
    let mut egress_ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    for (i, listener) in s.egress.iter().enumerate() {
        let at = at.field("egress").index(i);
        match &listener.port {
            // A port-less listener catches everything the others do not; it
            // must come last.
            None => v.require(
                &at.field("port"),
                i == s.egress.len() - 1,
                "only the last egress listener may omit the port",
            ),
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn sidecar(spec: &str) -> String {
        doc("networking.istio.io/v1", "Sidecar", spec)
    }

    fn ingress(body: &str) -> String {
        sidecar(&format!(
            "  ingress:\n  - port: {{number: 9080, protocol: HTTP, name: http}}\n{body}"
        ))
    }

    #[test]
    fn ingress_listeners() {
        assert_valid(&ingress("    defaultEndpoint: 127.0.0.1:8080\n"));
        assert_valid(&ingress("    defaultEndpoint: unix:///var/run/app.sock\n"));
        assert_one_error(
            &ingress("    defaultEndpoint: 10.0.0.1:8080\n"),
            "spec.ingress[0].defaultEndpoint",
        );
        assert_one_error(
            &ingress("    defaultEndpoint: 127.0.0.1:http\n"),
            "spec.ingress[0].defaultEndpoint",
        );
        assert_one_error(&ingress("    bind: not-an-ip\n"), "spec.ingress[0].bind");
        assert_one_error(
            &sidecar(
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http, targetPort: 80}\n",
            ),
            "spec.ingress[0].port.targetPort",
        );
        assert_one_error(
            &sidecar(
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n  - port: {number: 9080, protocol: TCP, name: tcp}\n",
            ),
            "spec.ingress[1].port.number",
        );
        assert_one_error(
            &sidecar("  ingress:\n  - port: {protocol: HTTP, name: http}\n"),
            "spec.ingress[0].port.number",
        );
    }

    #[test]
    fn ingress_tls() {
        let tls = |mode: &str| {
            sidecar(&format!(
                "  ingress:\n  - port: {{number: 8443, protocol: HTTPS, name: https}}\n    tls: {{mode: {mode}, serverCertificate: /c.pem, privateKey: /k.pem}}\n"
            ))
        };
        assert_valid(&tls("SIMPLE"));
        assert_one_error(&tls("AUTO_PASSTHROUGH"), "spec.ingress[0].tls.mode");
        assert_one_error(
            &sidecar(
                "  ingress:\n  - port: {number: 8443, protocol: HTTPS, name: https}\n    tls: {mode: SIMPLE, credentialName: cert}\n",
            ),
            "spec.ingress[0].tls.credentialName",
        );
        assert_one_error(
            &sidecar(
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n",
            ),
            "spec.ingress[0].tls",
        );
    }

    #[test]
    fn egress_listeners() {
        assert_valid(&sidecar(
            "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: unix:///var/run/egress.sock\n    hosts: ['*/*']\n",
        ));
        assert_one_error(
            &sidecar(
                "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    hosts: ['*/*']\n",
            ),
            "spec.egress[0].port.number",
        );
        assert_one_error(
            &sidecar(
                "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: unix:///var/run/egress.sock\n    captureMode: IPTABLES\n    hosts: ['*/*']\n",
            ),
            "spec.egress[0].captureMode",
        );
        assert_one_error(
            &sidecar(
                "  egress:\n  - port: {number: 80, protocol: HTTP, name: http_web}\n    hosts: ['./*']\n",
            ),
            "spec.egress[0].port.name",
        );
        assert_one_error(
            &sidecar(
                "  egress:\n  - port: {number: 80, protocol: HTTP, name: a}\n    hosts: ['./*']\n  - port: {number: 80, protocol: HTTP, name: b}\n    hosts: ['./*']\n",
            ),
            "spec.egress[1].port",
        );
        assert_one_error(
            &sidecar("  egress:\n  - hosts: ['./*']\n  - hosts: ['./*']\n"),
            "spec.egress[0].port",
        );
        assert_one_error(
            &sidecar("  egress:\n  - hosts: []\n"),
            "spec.egress[0].hosts",
        );
        assert_warning(
            &sidecar("  egress:\n  - hosts: ['./*', './reviews.default.svc.cluster.local']\n"),
            "spec.egress[0].hosts[1]",
        );
        assert_warning(
            &sidecar("  egress:\n  - hosts: ['*/*', 'istio-system/*']\n"),
            "spec.egress[0].hosts",
        );
    }

    #[test]
    fn outbound_traffic_policy() {
        let policy = |body: &str| sidecar(&format!("  outboundTrafficPolicy:\n{body}"));
        assert_valid(&policy(
            "    mode: ALLOW_ANY\n    egressProxy: {host: egress.example.com, port: {number: 443}}\n",
        ));
        assert_one_error(
            &policy(
                "    mode: REGISTRY_ONLY\n    egressProxy: {host: egress.example.com, port: {number: 443}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy",
        );
        assert_one_error(
            &policy("    mode: ALLOW_ANY\n    egressProxy: {host: egress.example.com}\n"),
            "spec.outboundTrafficPolicy.egressProxy.port",
        );
        assert_one_error(
            &policy(
                "    mode: ALLOW_ANY\n    egressProxy: {host: '*.example.com', port: {number: 443}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy.host",
        );
    }

    #[test]
    fn an_empty_selector_warns() {
        assert_warning(
            &sidecar("  workloadSelector: {}\n  egress:\n  - hosts: ['./*']\n"),
            "spec.workloadSelector.labels",
        );
    }
}
