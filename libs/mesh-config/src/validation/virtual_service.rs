//! VirtualService: hosts and gateways, then each HTTP, TLS and TCP route.

use super::{Checker, Path, durations, export_to, hosts, http, names, ports, regex};
use crate::networking::virtual_service::{
    CorsPolicy, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute, L4MatchAttributes, TcpRoute, TlsMatchAttributes, TlsRoute, VirtualService,
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
        http_route(v, &at.field("http").index(i), route, delegate);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        tls_route(v, &at.field("tls").index(i), route, vs, on_gateway);
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

fn http_route(v: &mut Checker, at: &Path, r: &HttpRoute, in_delegate: bool) {
    route_conflicts(v, at, r, in_delegate);
    for (i, m) in r.r#match.iter().enumerate() {
        match_request(v, &at.field("match").index(i), m);
    }
    http::headers(v, &at.field("headers"), r.headers.as_ref());
    if let Some(cors) = &r.cors_policy {
        cors_policy(v, &at.field("corsPolicy"), cors);
    }
    if let Some(fault) = &r.fault {
        fault_injection(v, &at.field("fault"), fault);
    }
    if let Some(percent) = r.mirror_percent {
        let at = at.field("mirrorPercent");
        v.require(
            &at,
            percent <= 100,
            format!("mirrorPercent {percent} is above 100"),
        );
        v.warn(&at, "mirrorPercent is deprecated; use mirrorPercentage");
    }
    http::percent(
        v,
        &at.field("mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    );
    if let Some(mirror) = &r.mirror {
        http::destination(v, &at.field("mirror"), mirror);
    }
    for (i, mirror) in r.mirrors.iter().enumerate() {
        let at = at.field("mirrors").index(i);
        http::destination(v, &at.field("destination"), &mirror.destination);
        http::percent(v, &at.field("percentage"), mirror.percentage.as_ref());
    }
    if let Some(redirect) = &r.redirect {
        redirect_of(v, &at.field("redirect"), redirect, &r.r#match);
    }
    if let Some(direct) = &r.direct_response {
        let at = at.field("directResponse");
        v.require(
            &at.field("status"),
            (200..=599).contains(&direct.status),
            format!("HTTP status {} is not in 200..599", direct.status),
        );
        let size = direct.body.as_ref().map_or(0, |b| {
            b.string.as_ref().map_or(0, String::len) + b.bytes.as_ref().map_or(0, String::len)
        });
        if size > 1024 * 1024 {
            v.error(
                &at.field("body"),
                "direct response bodies must be smaller than 1MB",
            );
        } else if size > 100 * 1024 {
            v.warn(
                &at.field("body"),
                "large direct response bodies slow down configuration pushes",
            );
        }
    }
    if let Some(retries) = &r.retries {
        retry(v, &at.field("retries"), retries);
    }
    if let Some(rewrite) = &r.rewrite {
        rewrite_of(v, &at.field("rewrite"), rewrite);
    }
    authority_rewrites(v, at, r);
    let route_at = at.field("route");
    for (i, dest) in r.route.iter().enumerate() {
        let at = route_at.index(i);
        http::destination(v, &at.field("destination"), &dest.destination);
        http::headers(v, &at.field("headers"), dest.headers.as_ref());
    }
    http::weights(
        v,
        &route_at,
        &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
    );
    if let Some(timeout) = &r.timeout {
        v.check(&at.field("timeout"), durations::at_least_1ms(timeout));
    }
}

/// What a route does with a request: forward (`route`), `redirect`, answer
/// (`directResponse`) or `delegate`, never two at once.
fn route_conflicts(v: &mut Checker, at: &Path, r: &HttpRoute, in_delegate: bool) {
    if r.delegate.is_some() {
        if in_delegate {
            v.error(
                &at.field("delegate"),
                "a delegate VirtualService cannot delegate again",
            );
        }
        v.require(
            &at.field("redirect"),
            r.redirect.is_none(),
            "a route that delegates cannot redirect",
        );
        v.require(
            &at.field("route"),
            r.route.is_empty(),
            "a route that delegates cannot have destinations",
        );
        return;
    }
    let action = if r.redirect.is_some() {
        Some("redirect")
    } else if r.direct_response.is_some() {
        Some("directResponse")
    } else {
        None
    };
    match action {
        Some(action) => {
            v.require(
                &at.field("route"),
                r.route.is_empty(),
                format!("a route with {action} cannot have destinations"),
            );
            v.require(
                &at.field("fault"),
                r.fault.is_none(),
                format!("a route with {action} cannot inject faults"),
            );
            v.require(
                &at.field("rewrite"),
                r.rewrite.is_none(),
                format!("a route with {action} cannot rewrite"),
            );
            if action == "redirect" {
                v.require(
                    &at.field("directResponse"),
                    r.direct_response.is_none(),
                    "a route cannot both redirect and answer directly",
                );
            }
        }
        None => v.require(
            &at.field("route"),
            !r.route.is_empty(),
            "a route needs destinations, a redirect, a directResponse or a delegate",
        ),
    }
    v.require(
        &at.field("mirrors"),
        r.mirror.is_none() || r.mirrors.is_empty(),
        "only one of mirror and mirrors may be set",
    );
}

fn match_request(v: &mut Checker, at: &Path, m: &HttpMatchRequest) {
    for (name, sm) in &m.headers {
        let at = at.field("headers").key(name);
        http::match_header_name(v, &at, name);
        http::string_match(v, &at, sm, false);
    }
    for (name, sm) in &m.without_headers {
        let at = at.field("withoutHeaders").key(name);
        http::match_header_name(v, &at, name);
        http::string_match(v, &at, sm, false);
    }
    if let Some(uri) = &m.uri {
        http::string_match(v, &at.field("uri"), uri, true);
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            http::string_match(v, &at.field(field), sm, false);
        }
    }
    for (name, sm) in &m.query_params {
        http::string_match(v, &at.field("queryParams").key(name), sm, false);
    }
    if let Some(port) = m.port {
        v.check(&at.field("port"), ports::number(port));
    }
    names::labels(v, &at.field("sourceLabels"), &m.source_labels);
    for (i, gw) in m.gateways.iter().enumerate() {
        gateway_reference(v, &at.field("gateways").index(i), gw);
    }
    if !m.source_namespace.is_empty() {
        v.require(
            &at.field("sourceNamespace"),
            names::is_dns_label(&m.source_namespace),
            format!("{:?} is not a namespace name", m.source_namespace),
        );
    }
}

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

fn cors_policy(v: &mut Checker, at: &Path, cors: &CorsPolicy) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let at = at.field("allowOrigins").index(i);
        let value = origin
            .exact
            .as_ref()
            .or(origin.prefix.as_ref())
            .or(origin.regex.as_ref());
        if value.is_none_or(String::is_empty) {
            v.error(
                &at,
                "an allowed origin needs a non-empty exact, prefix or regex",
            );
        } else {
            http::string_match(v, &at, origin, false);
        }
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        v.require(
            &at.field("allowMethods").index(i),
            CORS_METHODS.contains(&method.as_str()),
            format!("{method:?} is not an HTTP method"),
        );
    }
    for (field, list) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (i, name) in list.iter().enumerate() {
            let ok = name == "*"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)));
            v.require(
                &at.field(field).index(i),
                ok,
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
    }
    if let Some(max_age) = &cors.max_age {
        v.check(&at.field("maxAge"), durations::whole_seconds(max_age));
    }
    if !cors.allow_origin.is_empty() {
        v.warn(
            &at.field("allowOrigin"),
            "allowOrigin is deprecated; use allowOrigins",
        );
    }
}

/// gRPC status names Envoy can inject.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn fault_injection(v: &mut Checker, at: &Path, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        v.error(at, "fault injection needs an abort, a delay or both");
    }
    if let Some(abort) = &fault.abort {
        let at = at.field("abort");
        http::percent(v, &at.field("percentage"), abort.percentage.as_ref());
        if let Some(status) = abort.http_status {
            v.require(
                &at.field("httpStatus"),
                (200..=599).contains(&status),
                format!("HTTP status {status} is not in 200..599"),
            );
        } else if let Some(status) = &abort.grpc_status {
            v.require(
                &at.field("grpcStatus"),
                GRPC_STATUSES.contains(&status.as_str()),
                format!("{status:?} is not a gRPC status name such as UNAVAILABLE"),
            );
        } else if abort.http2_error.is_some() {
            v.error(
                &at.field("http2Error"),
                "aborting with an HTTP/2 error is not supported",
            );
        } else {
            v.warn(
                &at,
                "abort has no httpStatus or grpcStatus: it does nothing",
            );
        }
    }
    if let Some(delay) = &fault.delay {
        let at = at.field("delay");
        http::percent(v, &at.field("percentage"), delay.percentage.as_ref());
        if let Some(percent) = delay.percent {
            v.require(
                &at.field("percent"),
                (0..=100).contains(&percent),
                format!("percent {percent} is not in 0..100"),
            );
            v.warn(
                &at.field("percent"),
                "percent is deprecated; use percentage",
            );
        }
        if let Some(fixed) = &delay.fixed_delay {
            v.check(&at.field("fixedDelay"), durations::at_least_1ms(fixed));
        }
        if delay.exponential_delay.is_some() {
            v.error(
                &at.field("exponentialDelay"),
                "exponentialDelay is not supported",
            );
        }
    }
}

fn redirect_of(v: &mut Checker, at: &Path, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
    if !r.uri.is_empty() && !r.prefix_rewrite.is_empty() {
        v.error(
            &at.field("prefixRewrite"),
            "only one of uri and prefixRewrite may be set",
        );
    }
    if !r.prefix_rewrite.is_empty()
        && matches
            .iter()
            .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
    {
        v.error(
            &at.field("prefixRewrite"),
            "prefixRewrite needs every uri match to be a prefix match",
        );
    }
    let changes_something = !r.uri.is_empty()
        || !r.prefix_rewrite.is_empty()
        || !r.authority.is_empty()
        || !r.scheme.is_empty()
        || r.port.is_some()
        || r.derive_port.is_some();
    v.require(
        at,
        changes_something,
        "a redirect must change the uri, authority, scheme or port",
    );
    if let Some(code) = r.redirect_code {
        v.require(
            &at.field("redirectCode"),
            (300..=399).contains(&code),
            format!("redirect code {code} is not a 3xx status"),
        );
    }
    v.require(
        &at.field("scheme"),
        matches!(r.scheme.as_str(), "" | "http" | "https"),
        "redirect scheme must be http or https",
    );
    if let Some(port) = r.port {
        v.check(&at.field("port"), ports::number(port));
    }
    if r.port.is_some() && r.derive_port.is_some() {
        v.error(
            &at.field("derivePort"),
            "only one of port and derivePort may be set",
        );
    }
}

/// Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn retry(v: &mut Checker, at: &Path, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    v.require(
        &at.field("attempts"),
        attempts >= 0,
        format!("attempts {attempts} is negative"),
    );
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        v.error(
            &at.field("attempts"),
            "retry settings are given but attempts is 0, which disables retries",
        );
    }
    if let Some(timeout) = &r.per_try_timeout {
        v.check(&at.field("perTryTimeout"), durations::at_least_1ms(timeout));
    }
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',') {
            let is_status = policy
                .parse::<u16>()
                .is_ok_and(|s| (100..=599).contains(&s));
            v.require(
                &at.field("retryOn"),
                is_status || RETRY_ON.contains(&policy),
                format!("{policy:?} is not a retry condition Envoy knows"),
            );
        }
    }
    if let Some(backoff) = &r.backoff {
        v.check(&at.field("backoff"), durations::at_least_1ms(backoff));
    }
}

fn rewrite_of(v: &mut Checker, at: &Path, r: &HttpRewrite) {
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        v.error(
            &at.field("uriRegexRewrite"),
            "only one of uri and uriRegexRewrite may be set",
        );
    }
    if r.uri.is_empty() && r.uri_regex_rewrite.is_none() && r.authority.is_empty() {
        v.error(at, "a rewrite must change the uri or the authority");
    }
    if let Some(re) = &r.uri_regex_rewrite {
        let at = at.field("uriRegexRewrite");
        if re.r#match.is_empty() || re.rewrite.is_empty() {
            v.error(&at, "uriRegexRewrite needs both match and rewrite");
        } else {
            v.check(&at.field("match"), regex::re2(&re.r#match));
        }
    }
}

/// The authority may be rewritten once: by `rewrite.authority` or one header.
fn authority_rewrites(v: &mut Checker, at: &Path, r: &HttpRoute) {
    let mut count = usize::from(
        r.rewrite
            .as_ref()
            .is_some_and(|rw| !rw.authority.is_empty()),
    );
    if let Some(ops) = r.headers.as_ref().and_then(|h| h.request.as_ref()) {
        count += ops
            .set
            .keys()
            .chain(ops.add.keys())
            .filter(|k| k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case(":authority"))
            .count();
    }
    if count > 1 {
        v.error(
            &at.field("headers").field("request"),
            "the authority is rewritten more than once",
        );
    }
}

fn tls_route(v: &mut Checker, at: &Path, r: &TlsRoute, vs: &VirtualService, on_gateway: bool) {
    v.require(
        &at.field("match"),
        !r.r#match.is_empty(),
        "a TLS route needs at least one match",
    );
    for (i, m) in r.r#match.iter().enumerate() {
        tls_match(v, &at.field("match").index(i), m, vs, on_gateway);
    }
    route_destinations(v, at, &r.route, "TLS");
}

fn tls_match(
    v: &mut Checker,
    at: &Path,
    m: &TlsMatchAttributes,
    vs: &VirtualService,
    _on_gateway: bool,
) {
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
mod tests {
    use super::super::test_support::*;

    fn vs(spec: &str) -> String {
        doc("networking.istio.io/v1", "VirtualService", spec)
    }

    const ROUTE: &str = "  - route:\n    - destination: {host: reviews}\n";

    fn route_with(extra: &str) -> String {
        vs(&format!("  hosts: [reviews]\n  http:\n{ROUTE}{extra}"))
    }

    #[test]
    fn a_plain_route_is_valid() {
        assert_valid(&route_with(""));
    }

    #[test]
    fn ip_hosts_and_gateway_star_hosts_are_allowed() {
        assert_valid(&vs(&format!("  hosts: [10.0.0.1]\n  http:\n{ROUTE}")));
        assert_valid(&vs(&format!(
            "  hosts: ['*']\n  gateways: [istio-system/ingress]\n  http:\n{ROUTE}"
        )));
    }

    #[test]
    fn wildcard_hosts_overlapping_others_are_refused() {
        assert_one_error(
            &vs(&format!(
                "  hosts: ['*.example.com', api.example.com]\n  http:\n{ROUTE}"
            )),
            "spec.hosts[0]",
        );
    }

    #[test]
    fn single_destination_weight_zero_is_fine_several_need_traffic() {
        assert_valid(&vs(
            "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 0\n",
        ));
        // Istio no longer requires a sum of 100: weights are relative.
        assert_valid(&vs(
            "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 30\n    - destination: {host: reviews, subset: v2}\n      weight: 30\n",
        ));
        assert_one_error(
            &vs(
                "  hosts: [reviews]\n  tcp:\n  - route:\n    - destination: {host: reviews, subset: v1}\n    - destination: {host: reviews, subset: v2}\n",
            ),
            "spec.tcp[0].route",
        );
    }

    #[test]
    fn legacy_gateway_names_warn() {
        assert_warning(
            &vs(&format!(
                "  hosts: [reviews]\n  gateways: [ingress.istio-system]\n  http:\n{ROUTE}"
            )),
            "spec.gateways[0]",
        );
    }

    #[test]
    fn delegates_cannot_have_tls_or_tcp_or_delegate_again() {
        assert_one_error(
            &vs("  tcp:\n  - route:\n    - destination: {host: reviews}\n"),
            "spec.tcp",
        );
        assert_one_error(
            &vs("  http:\n  - delegate: {name: other}\n"),
            "spec.http[0].delegate",
        );
    }

    #[test]
    fn a_delegating_route_has_no_destinations() {
        assert_valid(&vs(
            "  hosts: [reviews]\n  http:\n  - delegate: {name: reviews-delegate, namespace: team}\n",
        ));
        assert_one_error(
            &vs(
                "  hosts: [reviews]\n  http:\n  - delegate: {name: d}\n    route:\n    - destination: {host: reviews}\n",
            ),
            "spec.http[0].route",
        );
    }

    #[test]
    fn direct_response_conflicts_and_status() {
        assert_valid(&vs(
            "  hosts: [reviews]\n  http:\n  - directResponse:\n      status: 503\n      body: {string: unavailable}\n",
        ));
        assert_one_error(
            &vs(
                "  hosts: [reviews]\n  http:\n  - directResponse: {status: 503}\n    fault:\n      abort: {httpStatus: 500}\n",
            ),
            "spec.http[0].fault",
        );
        assert_one_error(
            &vs("  hosts: [reviews]\n  http:\n  - directResponse: {status: 99}\n"),
            "spec.http[0].directResponse.status",
        );
        let big = "x".repeat(1024 * 1024 + 1);
        assert_one_error(
            &vs(&format!(
                "  hosts: [reviews]\n  http:\n  - directResponse:\n      status: 200\n      body: {{string: {big}}}\n"
            )),
            "spec.http[0].directResponse.body",
        );
        let large = "x".repeat(200 * 1024);
        assert_warning(
            &vs(&format!(
                "  hosts: [reviews]\n  http:\n  - directResponse:\n      status: 200\n      body: {{string: {large}}}\n"
            )),
            "spec.http[0].directResponse.body",
        );
    }

    #[test]
    fn mirror_rules() {
        assert_one_error(
            &route_with(
                "    mirror: {host: reviews, subset: v2}\n    mirrors:\n    - destination: {host: reviews, subset: v3}\n",
            ),
            "spec.http[0].mirrors",
        );
        assert_one_error(
            &route_with("    mirrors:\n    - destination: {host: '*'}\n"),
            "spec.http[0].mirrors[0].destination.host",
        );
        assert_warning(
            &route_with("    mirror: {host: reviews}\n    mirrorPercent: 50\n"),
            "spec.http[0].mirrorPercent",
        );
        assert_one_error(
            &route_with("    mirror: {host: reviews}\n    mirrorPercent: 150\n"),
            "spec.http[0].mirrorPercent",
        );
    }

    #[test]
    fn redirect_rules() {
        let redirect = |body: &str| {
            vs(&format!(
                "  hosts: [reviews]\n  http:\n  - redirect:\n{body}"
            ))
        };
        assert_valid(&redirect(
            "      authority: example.com\n      scheme: https\n      port: 8443\n",
        ));
        assert_one_error(
            &redirect("      uri: /a\n      prefixRewrite: /b\n"),
            "spec.http[0].redirect.prefixRewrite",
        );
        assert_one_error(
            &redirect("      scheme: ftp\n"),
            "spec.http[0].redirect.scheme",
        );
        assert_one_error(
            &redirect("      redirectCode: 301\n"),
            "spec.http[0].redirect",
        );
        assert_one_error(&redirect("      port: 0\n"), "spec.http[0].redirect.port");
        assert_one_error(
            &vs(
                "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {exact: /old}\n    redirect:\n      prefixRewrite: /new\n",
            ),
            "spec.http[0].redirect.prefixRewrite",
        );
    }

    #[test]
    fn rewrite_rules() {
        assert_valid(&route_with(
            "    rewrite:\n      uriRegexRewrite: {match: '^/v1/(.*)', rewrite: '/v2/\\1'}\n",
        ));
        assert_one_error(
            &route_with(
                "    rewrite:\n      uri: /a\n      uriRegexRewrite: {match: a, rewrite: b}\n",
            ),
            "spec.http[0].rewrite.uriRegexRewrite",
        );
        assert_one_error(
            &route_with("    rewrite:\n      uriRegexRewrite: {match: a}\n"),
            "spec.http[0].rewrite.uriRegexRewrite",
        );
        assert_one_error(
            &route_with("    rewrite:\n      uriRegexRewrite: {match: '(?=x)', rewrite: b}\n"),
            "spec.http[0].rewrite.uriRegexRewrite.match",
        );
        assert_one_error(
            &route_with(
                "    rewrite: {authority: a.example.com}\n    headers:\n      request:\n        set: {host: b.example.com}\n",
            ),
            "spec.http[0].headers.request",
        );
    }

    #[test]
    fn fault_rules() {
        assert_one_error(&route_with("    fault: {}\n"), "spec.http[0].fault");
        assert_one_error(
            &route_with("    fault:\n      abort: {grpcStatus: SOMETIMES}\n"),
            "spec.http[0].fault.abort.grpcStatus",
        );
        assert_valid(&route_with(
            "    fault:\n      abort: {grpcStatus: UNAVAILABLE}\n",
        ));
        assert_one_error(
            &route_with("    fault:\n      abort: {http2Error: REFUSED_STREAM}\n"),
            "spec.http[0].fault.abort.http2Error",
        );
        assert_warning(
            &route_with("    fault:\n      abort: {percentage: {value: 10}}\n"),
            "spec.http[0].fault.abort",
        );
        assert_one_error(
            &route_with("    fault:\n      delay: {exponentialDelay: 1s}\n"),
            "spec.http[0].fault.delay.exponentialDelay",
        );
        assert_warning(
            &route_with("    fault:\n      delay: {fixedDelay: 1s, percent: 10}\n"),
            "spec.http[0].fault.delay.percent",
        );
        assert_one_error(
            &route_with(
                "    fault:\n      abort: {httpStatus: 500, percentage: {value: 0.00001}}\n",
            ),
            "spec.http[0].fault.abort.percentage.value",
        );
    }

    #[test]
    fn retry_rules() {
        assert_valid(&route_with(
            "    retries: {attempts: 3, retryOn: '5xx,503,reset', backoff: 25ms}\n",
        ));
        assert_one_error(
            &route_with("    retries: {attempts: -1}\n"),
            "spec.http[0].retries.attempts",
        );
        assert_one_error(
            &route_with("    retries: {attempts: 1, backoff: 0s}\n"),
            "spec.http[0].retries.backoff",
        );
    }

    #[test]
    fn cors_rules() {
        assert_valid(&route_with(
            "    corsPolicy:\n      allowOrigins: [{prefix: 'https://'}]\n      allowHeaders: ['*', x-user]\n      maxAge: 24h\n",
        ));
        assert_one_error(
            &route_with("    corsPolicy:\n      allowOrigins: [{exact: ''}]\n"),
            "spec.http[0].corsPolicy.allowOrigins[0]",
        );
        assert_one_error(
            &route_with("    corsPolicy:\n      exposeHeaders: ['x y']\n"),
            "spec.http[0].corsPolicy.exposeHeaders[0]",
        );
        assert_one_error(
            &route_with("    corsPolicy:\n      maxAge: 1.5s\n"),
            "spec.http[0].corsPolicy.maxAge",
        );
        assert_warning(
            &route_with("    corsPolicy:\n      allowOrigin: ['https://example.com']\n"),
            "spec.http[0].corsPolicy.allowOrigin",
        );
    }

    #[test]
    fn header_operations() {
        assert_valid(&route_with(
            "    headers:\n      request:\n        set: {':authority': api.example.com, x-a: b}\n      response:\n        remove: [x-internal]\n",
        ));
        assert_one_error(
            &route_with("    headers:\n      response:\n        set: {host: x}\n"),
            "spec.http[0].headers.response.set[host]",
        );
        assert_one_error(
            &route_with("    headers:\n      request:\n        add: {':path': /x}\n"),
            "spec.http[0].headers.request.add[:path]",
        );
        assert_one_error(
            &route_with("    headers:\n      request:\n        remove: [':authority']\n"),
            "spec.http[0].headers.request.remove[0]",
        );
        assert_one_error(
            &route_with("    headers:\n      request:\n        set: {x-a: \"bad\\u0001value\"}\n"),
            "spec.http[0].headers.request.set[x-a]",
        );
        assert_one_error(
            &vs(
                "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      headers:\n        response:\n          add: {':status': '200'}\n",
            ),
            "spec.http[0].route[0].headers.response.add[:status]",
        );
    }

    #[test]
    fn match_fields() {
        let m = |body: &str| {
            vs(&format!(
                "  hosts: [reviews]\n  http:\n  - match:\n    - {body}\n    route:\n    - destination: {{host: reviews}}\n"
            ))
        };
        assert_valid(&m("uri: {prefix: ''}"));
        assert_valid(&m("headers: {':authority': {exact: a.example.com}}"));
        assert_one_error(
            &m("method: {regex: ''}"),
            "spec.http[0].match[0].method.regex",
        );
        assert_one_error(
            &m("queryParams: {v: {prefix: ''}}"),
            "spec.http[0].match[0].queryParams[v].prefix",
        );
        assert_one_error(&m("port: 0"), "spec.http[0].match[0].port");
        assert_one_error(
            &m("sourceNamespace: bad_ns"),
            "spec.http[0].match[0].sourceNamespace",
        );
        assert_one_error(&m("gateways: ['/gw']"), "spec.http[0].match[0].gateways[0]");
        assert_one_error(
            &m("withoutHeaders: {'x y': {exact: a}}"),
            "spec.http[0].match[0].withoutHeaders[x y]",
        );
        assert_warning(
            &m("headers: {End-User: {exact: jason}}"),
            "spec.http[0].match[0].headers[End-User]",
        );
    }

    #[test]
    fn jwt_claim_routing_on_a_gateway_is_fine() {
        assert_valid(&vs(
            "  hosts: [bookinfo.example.com]\n  gateways: [bookinfo-gateway]\n  http:\n  - match:\n    - headers:\n        '@request.auth.claims.group': {exact: admin}\n    route:\n    - destination: {host: productpage}\n",
        ));
    }

    #[test]
    fn tls_and_tcp_matches() {
        let tls = |m: &str| {
            vs(&format!(
                "  hosts: ['*.example.com']\n  tls:\n  - match:\n    - {m}\n    route:\n    - destination: {{host: a.example.com}}\n"
            ))
        };
        assert_valid(&tls("sniHosts: [a.example.com]"));
        assert_one_error(&tls("sniHosts: []"), "spec.tls[0].match[0].sniHosts");
        assert_warning(
            &tls("sniHosts: [10.0.0.1]"),
            "spec.tls[0].match[0].sniHosts[0]",
        );
        assert_one_error(
            &tls("sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/99]"),
            "spec.tls[0].match[0].destinationSubnets[0]",
        );
        assert_one_error(
            &vs(
                "  hosts: [a.example.com]\n  tls:\n  - match: []\n    route:\n    - destination: {host: a.example.com}\n",
            ),
            "spec.tls[0].match",
        );
        let tcp = |m: &str| {
            vs(&format!(
                "  hosts: [db]\n  tcp:\n  - match:\n    - {m}\n    route:\n    - destination: {{host: db}}\n"
            ))
        };
        assert_one_error(
            &tcp("sourceSubnet: nowhere"),
            "spec.tcp[0].match[0].sourceSubnet",
        );
        assert_one_error(&tcp("port: 70000"), "spec.tcp[0].match[0].port");
    }

    #[test]
    fn export_to_rules() {
        assert_valid(&vs(&format!(
            "  hosts: [reviews]\n  exportTo: ['.', other]\n  http:\n{ROUTE}"
        )));
        assert_one_error(
            &vs(&format!(
                "  hosts: [reviews]\n  exportTo: ['*', other]\n  http:\n{ROUTE}"
            )),
            "spec.exportTo",
        );
        assert_one_error(
            &vs(&format!(
                "  hosts: [reviews]\n  exportTo: ['~']\n  http:\n{ROUTE}"
            )),
            "spec.exportTo[0]",
        );
        assert_one_error(
            &vs(&format!(
                "  hosts: [reviews]\n  exportTo: ['.', default]\n  http:\n{ROUTE}"
            )),
            "spec.exportTo[1]",
        );
    }

    #[test]
    fn routes_after_a_catch_all_are_unreachable() {
        assert_warning(
            &vs(
                "  hosts: [reviews]\n  http:\n  - match:\n    - {}\n    route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: reviews}\n",
            ),
            "spec.http[1]",
        );
    }
}
