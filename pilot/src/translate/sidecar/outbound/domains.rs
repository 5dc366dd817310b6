//! The `Host` values a sidecar's HTTP requests may carry for one host on one
//! port: the name itself, the Kubernetes short forms that resolve to it from
//! the proxy's namespace (`reviews` only from its own namespace,
//! `reviews.default` and `reviews.default.svc` from any), and the service's
//! virtual IPs, each alone and with `:<port>`.

use std::net::IpAddr;

use crate::model::Service;
use crate::model::service::ServiceAddress;

/// The domains of the virtual host for `host` on `port`; `service` brings
/// its virtual IPs.
pub(super) fn domains(
    host: &str,
    port: u32,
    service: Option<&Service>,
    proxy_namespace: &str,
    domain_suffix: &str,
) -> Vec<String> {
    if host == "*" {
        return vec!["*".to_string()];
    }
    let host = host.to_ascii_lowercase();
    let mut names = short_names(&host, proxy_namespace, domain_suffix);
    names.insert(0, host);
    if let Some(service) = service {
        names.extend(
            service
                .parsed_addresses()
                .filter_map(|address| match address {
                    ServiceAddress::Ip(ip) => Some(host_literal(ip)),
                    ServiceAddress::Range { .. } => None,
                }),
        );
    }
    names
        .into_iter()
        .flat_map(|name| {
            let with_port = format!("{name}:{port}");
            [name, with_port]
        })
        .collect()
}

/// `<name>`, `<name>.<ns>.svc` and `<name>.<ns>` for
/// `<name>.<ns>.svc.<domain suffix>`; nothing for other hosts.
fn short_names(host: &str, proxy_namespace: &str, domain_suffix: &str) -> Vec<String> {
    let Some(prefix) = host
        .strip_suffix(domain_suffix)
        .and_then(|h| h.strip_suffix(".svc."))
    else {
        return Vec::new();
    };
    let Some((name, namespace)) = prefix.rsplit_once('.') else {
        return Vec::new();
    };
    let mut names = Vec::with_capacity(3);
    if namespace == proxy_namespace {
        names.push(name.to_string());
    }
    names.push(format!("{prefix}.svc"));
    names.push(prefix.to_string());
    names
}

/// An IP as it appears in a `Host` header (IPv6 in brackets).
fn host_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_depend_on_the_proxy_namespace() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(
            short_names(host, "default", "cluster.local"),
            ["reviews", "reviews.default.svc", "reviews.default"]
        );
        assert_eq!(
            short_names(host, "other", "cluster.local"),
            ["reviews.default.svc", "reviews.default"]
        );
        assert!(short_names("api.example.com", "default", "cluster.local").is_empty());
    }

    #[test]
    fn every_name_comes_with_and_without_the_port() {
        assert_eq!(
            domains("API.example.com", 80, None, "default", "cluster.local"),
            ["api.example.com", "api.example.com:80"]
        );
        assert_eq!(domains("*", 80, None, "default", "cluster.local"), ["*"]);
        assert_eq!(host_literal("fd00::1".parse().unwrap()), "[fd00::1]");
    }
}
