//! WorkloadEntry (standalone, as a ServiceEntry endpoint, or as a
//! WorkloadGroup template) and WorkloadGroup.

use std::collections::BTreeSet;

use super::{Checker, Path, gateway, hosts, names, ports, service_entry};
use crate::networking::workload_entry::WorkloadEntry;
use crate::networking::workload_group::{ReadinessProbe, WorkloadGroup};

pub fn validate_entry(v: &mut Checker, at: &Path, we: &WorkloadEntry) {
    entry(v, at, we, None, true);
}

/// `service_ports`: the port names of the enclosing ServiceEntry, if any.
/// `allow_hostnames`: standalone entries may name a host; STATIC endpoints
/// need an IP.
pub fn entry(
    v: &mut Checker,
    at: &Path,
    we: &WorkloadEntry,
    service_ports: Option<&BTreeSet<&str>>,
    allow_hostnames: bool,
) {
    let address_at = at.field("address");
    if we.address.is_empty() {
        if we.network.is_empty() {
            v.error(
                &address_at,
                "an address is required (or a network, for workloads reached through its gateway)",
            );
            return;
        }
        v.warn(
            &address_at,
            format!(
                "no address: the workload is only reachable through network {:?}'s gateway",
                we.network
            ),
        );
    }
    if let Some(path) = we.address.strip_prefix(gateway::UNIX_PREFIX) {
        v.check(&address_at, gateway::unix_address(path));
        v.require(
            &at.field("ports"),
            we.ports.is_empty(),
            "a unix socket endpoint cannot have ports",
        );
        if service_ports.is_some_and(|p| p.len() != 1) {
            v.error(
                &address_at,
                "a unix socket endpoint needs a ServiceEntry with exactly one port",
            );
        }
    } else if !we.address.is_empty() && !hosts::is_ip(&we.address) {
        if !allow_hostnames {
            v.error(
                &address_at,
                format!("{:?} is not an IP address", we.address),
            );
        } else if hosts::fqdn(&we.address).is_err() {
            v.error(
                &address_at,
                format!("{:?} is neither an IP address nor a host name", we.address),
            );
        }
    }
    match service_ports {
        Some(service_ports) => service_entry::endpoint_ports(v, at, &we.ports, service_ports),
        None => {
            for (name, number) in &we.ports {
                let at = at.field("ports").key(name);
                v.check(&at, ports::name(name));
                v.check(&at, ports::number(*number));
            }
        }
    }
    names::labels(v, &at.field("labels"), &we.labels);
}

pub fn validate_group(v: &mut Checker, at: &Path, wg: &WorkloadGroup) {
    if let Some(meta) = &wg.metadata {
        names::labels(v, &at.field("metadata").field("labels"), &meta.labels);
    }
    // The template's address is filled in per VM, so it is not required here.
    let template_at = at.field("template");
    if let Some(path) = wg.template.address.strip_prefix(gateway::UNIX_PREFIX) {
        // The CRD's CEL rules on the template: a socket path, and no ports.
        v.check(&template_at.field("address"), gateway::unix_address(path));
        v.require(
            &template_at.field("ports"),
            wg.template.ports.is_empty(),
            "a unix socket endpoint cannot have ports",
        );
    }
    names::labels(v, &template_at.field("labels"), &wg.template.labels);
    for (name, number) in &wg.template.ports {
        let at = template_at.field("ports").key(name);
        v.check(&at, ports::name(name));
        v.check(&at, ports::number(*number));
    }
    if let Some(probe) = &wg.probe {
        readiness_probe(v, &at.field("probe"), probe);
    }
}

/// Probe header names follow Kubernetes: letters, digits and `-`.
fn is_probe_header(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn readiness_probe(v: &mut Checker, at: &Path, p: &ReadinessProbe) {
    for (field, value) in [
        ("periodSeconds", p.period_seconds),
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(value) = value {
            v.require(&at.field(field), value >= 0, format!("{field} is negative"));
        }
    }
    let methods = usize::from(p.http_get.is_some())
        + usize::from(p.tcp_socket.is_some())
        + usize::from(p.exec.is_some())
        + usize::from(p.grpc.is_some());
    if methods != 1 {
        v.error(
            at,
            "a probe needs exactly one of httpGet, tcpSocket, exec or grpc",
        );
    }
    if let Some(h) = &p.http_get {
        let at = at.field("httpGet");
        v.check(&at.field("port"), ports::number(h.port));
        v.require(
            &at.field("scheme"),
            matches!(h.scheme.as_str(), "" | "HTTP" | "HTTPS"),
            "scheme must be HTTP or HTTPS",
        );
        for (i, header) in h.http_headers.iter().enumerate() {
            v.require(
                &at.field("httpHeaders").index(i).field("name"),
                is_probe_header(&header.name),
                format!("{:?} is not a valid header name", header.name),
            );
        }
    }
    if let Some(t) = &p.tcp_socket {
        v.check(&at.field("tcpSocket").field("port"), ports::number(t.port));
    }
    if let Some(e) = &p.exec {
        v.require(
            &at.field("exec").field("command"),
            !e.command.is_empty(),
            "exec needs a command",
        );
    }
    if let Some(port) = p.grpc.as_ref().and_then(|g| g.port) {
        v.check(&at.field("grpc").field("port"), ports::number(port));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn we(spec: &str) -> String {
        doc("networking.istio.io/v1", "WorkloadEntry", spec)
    }

    fn wg(spec: &str) -> String {
        doc("networking.istio.io/v1", "WorkloadGroup", spec)
    }

    #[test]
    fn a_template_unix_address_is_a_socket_path_without_ports() {
        assert_valid(&wg("  template:\n    address: unix:///var/run/app.sock\n"));
        assert_one_error(
            &wg("  template:\n    address: unix:///var/run/\n"),
            "spec.template.address",
        );
        assert_one_error(
            &wg("  template:\n    address: unix://@app\n    ports: {http: 8080}\n"),
            "spec.template.ports",
        );
    }

    #[test]
    fn addresses() {
        assert_valid(&we("  address: vm1.example.com\n"));
        assert_valid(&we("  address: unix:///var/run/app.sock\n"));
        assert_one_error(&we("  address: unix://relative.sock\n"), "spec.address");
        assert_one_error(
            &we("  address: unix:///var/run/app.sock\n  ports: {http: 80}\n"),
            "spec.ports",
        );
        assert_one_error(&we("  address: 'not an address'\n"), "spec.address");
        assert_warning(&we("  network: vpc-2\n"), "spec.address");
    }

    #[test]
    fn ports_and_labels() {
        assert_one_error(
            &we("  address: 10.0.0.1\n  ports: {http_web: 80}\n"),
            "spec.ports[http_web]",
        );
        assert_one_error(
            &we("  address: 10.0.0.1\n  labels: {app: 'bad value!'}\n"),
            "spec.labels[app]",
        );
    }

    #[test]
    fn group_probes() {
        assert_valid(&wg(
            "  template: {}\n  probe:\n    exec: {command: [/bin/true]}\n",
        ));
        assert_one_error(
            &wg("  template: {}\n  probe:\n    periodSeconds: 5\n"),
            "spec.probe",
        );
        assert_one_error(
            &wg("  template: {}\n  probe:\n    httpGet: {port: 80, scheme: FTP}\n"),
            "spec.probe.httpGet.scheme",
        );
        assert_one_error(
            &wg(
                "  template: {}\n  probe:\n    httpGet: {port: 80, httpHeaders: [{name: 'x_y', value: a}]}\n",
            ),
            "spec.probe.httpGet.httpHeaders[0].name",
        );
        assert_one_error(
            &wg("  template: {}\n  probe:\n    exec: {command: []}\n"),
            "spec.probe.exec.command",
        );
        assert_one_error(
            &wg("  template: {}\n  probe:\n    grpc: {port: 0}\n"),
            "spec.probe.grpc.port",
        );
        assert_one_error(
            &wg("  metadata: {labels: {'a b': c}}\n  template: {}\n"),
            "spec.metadata.labels[a b]",
        );
        assert_one_error(
            &wg("  template: {ports: {http: 0}}\n"),
            "spec.template.ports[http]",
        );
    }
}
