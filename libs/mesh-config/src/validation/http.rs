//! Pieces of HTTP routing shared by several kinds: string matches, header
//! names and values, destinations and their weights.

use super::{Checker, Path, hosts, names::is_dns_label, ports, regex};
use crate::networking::virtual_service::{
    Destination, HeaderOperations, Headers, Percent, StringMatch,
};

/// `tchar` of RFC 9110: the characters of an HTTP header name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// Headers of the form `@request.auth.claims.NAME` route on JWT claims.
pub fn is_jwt_claim_header(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|rest| rest.len() > 1 && (rest.starts_with('.') || rest.starts_with('[')))
}

/// A header name in a match: an HTTP token, a pseudo-header or a JWT claim.
pub fn match_header_name(v: &mut Checker, at: &Path, name: &str) {
    if is_jwt_claim_header(name) || PSEUDO_HEADERS.contains(&name) {
        return;
    }
    if !is_token(name) {
        v.error(at, format!("{name:?} is not a valid HTTP header name"));
    } else if name.chars().any(|c| c.is_ascii_uppercase()) {
        // Envoy stores header names in lower case; matching still works but
        // the configuration reads as if case mattered.
        v.warn(
            at,
            format!(
                "header name {name:?} should be lower case; HTTP header names are case-insensitive"
            ),
        );
    }
}

/// One of `exact`, `prefix`, `regex`; `prefix` and `regex` non-empty; regexes
/// RE2. `uri` matches may have an empty prefix (`/` is implied).
pub fn string_match(v: &mut Checker, at: &Path, m: &StringMatch, empty_prefix_ok: bool) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if set > 1 {
        v.error(at, "only one of exact, prefix or regex may be set");
        return;
    }
    if let Some(prefix) = &m.prefix {
        v.require(
            &at.field("prefix"),
            empty_prefix_ok || !prefix.is_empty(),
            "prefix match must not be empty",
        );
    }
    if let Some(re) = &m.regex {
        let at = at.field("regex");
        if re.is_empty() {
            v.error(&at, "regex match must not be empty");
        } else {
            v.check(&at, regex::re2(re));
        }
    }
}

/// A header value may not contain control characters other than tab.
fn header_value(v: &mut Checker, at: &Path, value: &str) {
    v.require(
        at,
        !value.chars().any(|c| c.is_control() && c != '\t'),
        "header value contains control characters",
    );
}

fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Header edits: requests may set or add the authority (`host`/`:authority`)
/// but no other pseudo-header; responses and removals may touch neither.
pub fn headers(v: &mut Checker, at: &Path, headers: Option<&Headers>) {
    let Some(headers) = headers else { return };
    if let Some(ops) = &headers.request {
        operations(v, &at.field("request"), ops, true);
    }
    if let Some(ops) = &headers.response {
        operations(v, &at.field("response"), ops, false);
    }
}

fn operations(v: &mut Checker, at: &Path, ops: &HeaderOperations, request: bool) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let at = at.field(field).key(name);
            let allowed = if request {
                !is_internal(name) || is_authority(name)
            } else {
                !is_internal(name)
            };
            v.require(
                &at,
                !name.is_empty() && allowed,
                format!("header {name:?} cannot be changed here"),
            );
            header_value(v, &at, value);
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        v.require(
            &at.field("remove").index(i),
            !name.is_empty() && !is_internal(name),
            format!("header {name:?} cannot be removed"),
        );
    }
}

/// A route destination: a host (no bare `*`), an optional subset named like a
/// DNS label, an optional port in range.
pub fn destination(v: &mut Checker, at: &Path, d: &Destination) {
    let host_at = at.field("host");
    if d.host == "*" {
        v.error(&host_at, "destination host cannot be \"*\"");
    } else {
        v.check(&host_at, hosts::wildcard_domain(&d.host));
    }
    if !d.subset.is_empty() {
        v.require(
            &at.field("subset"),
            is_dns_label(&d.subset),
            format!("subset name {:?} is not a DNS-1123 label", d.subset),
        );
    }
    if let Some(port) = &d.port {
        v.check(
            &at.field("port").field("number"),
            ports::number(port.number.unwrap_or(0)),
        );
    }
}

/// Weights are relative shares: none negative, and when traffic is split
/// between several destinations at least one must get some. (Istio no longer
/// requires a sum of 100.)
pub fn weights(v: &mut Checker, at: &Path, weights: &[Option<i32>]) {
    let mut total: i64 = 0;
    for (i, weight) in weights.iter().enumerate() {
        let weight = weight.unwrap_or(0);
        if weight < 0 {
            v.error(
                &at.index(i).field("weight"),
                format!("weight {weight} is negative"),
            );
        }
        total += i64::from(weight);
    }
    if weights.len() > 1 && total == 0 {
        v.error(
            at,
            "weights of the destinations add up to 0: no destination would receive traffic",
        );
    }
}

/// A fractional percentage: 0, or within [0.0001, 100].
pub fn percent(v: &mut Checker, at: &Path, p: Option<&Percent>) {
    let Some(value) = p.and_then(|p| p.value) else {
        return;
    };
    v.require(
        &at.field("value"),
        (value == 0.0) || (0.0001..=100.0).contains(&value),
        format!("percentage {value} is neither 0 nor within [0.0001, 100]"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_tokens_and_claims() {
        assert!(is_token("x-user"));
        assert!(!is_token("x user"));
        assert!(is_jwt_claim_header("@request.auth.claims.group"));
        assert!(!is_jwt_claim_header("@request.auth.claims"));
    }
}
