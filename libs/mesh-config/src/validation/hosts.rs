//! Host names, wildcards, `namespace/host` pairs, gateway references and IP
//! addresses, as Istio reads them.

use std::net::IpAddr;

use super::names::is_dns_label;

const DOMAIN_MAX: usize = 255;

fn preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("host name must not be empty".into());
    }
    if domain.len() > DOMAIN_MAX {
        return Err(format!("host name is longer than {DOMAIN_MAX} characters"));
    }
    Ok(())
}

/// Every label of `domain` is a DNS-1123 label and the last one is not all
/// digits (that would be an IP address, not a name). A trailing dot is allowed.
fn dns_labels(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let last = labels.last().copied().unwrap_or_default();
    if !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{domain:?} is not a host name: its top-level label {last:?} is numeric"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if i == labels.len() - 1 && label.is_empty() {
            break;
        }
        if !is_dns_label(label) {
            return Err(format!("{domain:?} has an invalid label {label:?}"));
        }
    }
    Ok(())
}

/// A fully qualified (or short) name without wildcards.
pub fn fqdn(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    dns_labels(domain)
}

/// The first label of a wildcard domain: `*`, `*foo`, `*-foo` or a plain label.
fn is_wildcard_label(label: &str) -> bool {
    let rest = label
        .strip_prefix("*-")
        .or_else(|| label.strip_prefix('*'))
        .unwrap_or(label);
    label == "*" || (label.len() <= 63 && is_dns_label(rest))
}

/// A host that may start with a wildcard label (`*.example.com`, `*`); a
/// wildcard anywhere but the leftmost label is refused.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!("{domain:?} has an invalid label {first:?}"));
    }
    match rest {
        Some(rest) => dns_labels(rest).map_err(|_| {
            format!(
                "{domain:?} is not a valid host name; a wildcard '*' may only be the leftmost label"
            )
        }),
        None => Ok(()),
    }
}

/// Refuses wildcards that are not a whole leftmost label (`*foo.com`), where
/// Gateway, Sidecar and ServiceEntry hosts only accept `*` or `*.suffix`.
pub fn no_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        Err(format!(
            "partial wildcard in {host:?}: use '*' or '*.domain'"
        ))
    } else {
        Ok(())
    }
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn ip_address(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid IP address"))
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_or_cidr(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        None => ip_address(s),
        Some((addr, bits)) => {
            let max = match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return Err(format!("{s:?} is not a valid CIDR block")),
            };
            let valid_bits = !bits.is_empty()
                && bits.chars().all(|c| c.is_ascii_digit())
                && bits.parse::<u32>().is_ok_and(|b| b <= max);
            if valid_bits {
                Ok(())
            } else {
                Err(format!("{s:?} is not a valid CIDR block"))
            }
        }
    }
}

/// Where a `namespace/host` pair is written: the two kinds differ on IPs and
/// on which namespace forms they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOwner {
    Gateway,
    Sidecar,
}

/// The host part of a Gateway server host or a Sidecar egress host: no short
/// names, no partial wildcards; a Gateway may name an IP.
fn scoped_host_part(host: &str, owner: HostOwner) -> Result<(), String> {
    if host != "*" && !host.contains('.') {
        return Err(format!(
            "short name {host:?} is not allowed here; use a fully qualified name"
        ));
    }
    if let Err(e) = wildcard_domain(host)
        && (owner == HostOwner::Sidecar || !is_ip(host))
    {
        return Err(e);
    }
    no_partial_wildcard(host)
}

/// `namespace/dnsName` as used by Gateway servers (where the namespace may be
/// left out) and Sidecar egress listeners (`./`, `*/`, `~ns/` allowed).
pub fn namespace_slash_host(entry: &str, owner: HostOwner) -> Result<(), String> {
    let Some((ns, host)) = entry.split_once('/') else {
        return match owner {
            HostOwner::Gateway => scoped_host_part(entry, owner),
            HostOwner::Sidecar => Err(format!("{entry:?} must have the form namespace/dnsName")),
        };
    };
    if ns.is_empty() || host.is_empty() {
        return Err(format!(
            "{entry:?}: neither the namespace nor the host may be empty"
        ));
    }
    let ns_ok = match owner {
        HostOwner::Sidecar => {
            let ns = ns.strip_prefix('~').unwrap_or(ns);
            ns.is_empty() || ns == "*" || ns == "." || is_dns_label(ns)
        }
        HostOwner::Gateway => ns == "*" || ns == "." || is_dns_label(ns),
    };
    if !ns_ok {
        return Err(format!("{entry:?} has an invalid namespace {ns:?}"));
    }
    scoped_host_part(host, owner)
}

/// Whether two hosts overlap: equal, or one wildcard covers the other.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    covers(&a, &b) || covers(&b, &a)
}

/// Whether wildcard host `pattern` matches every name `host` matches.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// A reference to a Gateway from a VirtualService: `mesh`, `namespace/name`,
/// or a bare (legacy) name. Returns a warning for the legacy dotted form.
pub fn gateway_reference(name: &str) -> Result<Option<String>, String> {
    let Some((ns, gw)) = name.split_once('/') else {
        let warning = name.split_once('.').map(|(gw, ns)| {
            format!("{name:?} uses the legacy name.namespace form; write it as \"{ns}/{gw}\"")
        });
        return fqdn(name).map(|()| warning);
    };
    if ns.is_empty() || gw.is_empty() {
        return Err(format!(
            "gateway reference {name:?} needs both a namespace and a name"
        ));
    }
    if !is_dns_label(ns) {
        return Err(format!(
            "gateway reference {name:?} has an invalid namespace"
        ));
    }
    if !is_dns_label(gw) {
        return Err(format!(
            "gateway reference {name:?} has an invalid gateway name"
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_only_as_the_leftmost_label() {
        assert!(wildcard_domain("*.example.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("reviews").is_ok());
        assert!(wildcard_domain("reviews.default.svc.cluster.local").is_ok());
        assert!(wildcard_domain("*foo.example.com").is_ok());
        assert!(wildcard_domain("foo.*.com").is_err());
        assert!(wildcard_domain("").is_err());
        assert!(wildcard_domain("bad_host").is_err());
        assert!(wildcard_domain("example.123").is_err());
        assert!(wildcard_domain("example.com.").is_ok());
    }

    #[test]
    fn fqdn_refuses_wildcards() {
        assert!(fqdn("api.example.com").is_ok());
        assert!(fqdn("*.example.com").is_err());
    }

    #[test]
    fn namespace_slash_host_forms() {
        use HostOwner::*;
        assert!(namespace_slash_host("*/*", Sidecar).is_ok());
        assert!(namespace_slash_host("./*", Sidecar).is_ok());
        assert!(namespace_slash_host("~/*", Sidecar).is_ok());
        assert!(namespace_slash_host("istio-system/*.example.com", Sidecar).is_ok());
        assert!(namespace_slash_host("reviews.default.svc.cluster.local", Sidecar).is_err());
        assert!(namespace_slash_host("./reviews", Sidecar).is_err());
        assert!(namespace_slash_host("bad_ns/*", Sidecar).is_err());
        assert!(namespace_slash_host("*", Gateway).is_ok());
        assert!(namespace_slash_host("bookinfo.example.com", Gateway).is_ok());
        assert!(namespace_slash_host("10.0.0.1", Gateway).is_ok());
        assert!(namespace_slash_host("*/10.0.0.1", Sidecar).is_err());
        assert!(namespace_slash_host("prod/*.example.com", Gateway).is_ok());
        assert!(namespace_slash_host("~/*", Gateway).is_err());
        assert!(namespace_slash_host("prod/*foo.com", Gateway).is_err());
        assert!(namespace_slash_host("/foo.com", Gateway).is_err());
    }

    #[test]
    fn ips_and_cidrs() {
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("2001:db8::/32").is_ok());
        assert!(ip_or_cidr("10.0.0.1").is_ok());
        assert!(ip_or_cidr("10.0.0.0/33").is_err());
        assert!(ip_or_cidr("10.0.0/8").is_err());
        assert!(ip_or_cidr("example.com").is_err());
    }

    #[test]
    fn gateway_references() {
        assert_eq!(gateway_reference("mesh"), Ok(None));
        assert_eq!(gateway_reference("istio-system/ingress"), Ok(None));
        assert!(gateway_reference("ingress.istio-system").unwrap().is_some());
        assert!(gateway_reference("/ingress").is_err());
        assert!(gateway_reference("istio-system/in_gress").is_err());
    }

    #[test]
    fn overlapping_hosts() {
        assert!(hosts_overlap("*.example.com", "api.example.com"));
        assert!(hosts_overlap("Reviews", "reviews"));
        assert!(!hosts_overlap("a.example.com", "b.example.com"));
    }
}
