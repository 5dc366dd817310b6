//! One HTTP route of a VirtualService: what it does with a request (forward,
//! redirect, answer, delegate), its matches, and its fault, retry, rewrite,
//! CORS and mirroring settings.

use super::virtual_service::gateway_reference;
use super::{Checker, Path, durations, http, names, ports, regex};
use crate::networking::virtual_service::{
    CorsPolicy, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute, grpc_status_code,
};

/// One HTTP route; `in_delegate` when it belongs to a delegate VirtualService.
pub fn validate(v: &mut Checker, at: &Path, r: &HttpRoute, in_delegate: bool) {
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
                grpc_status_code(status).is_some(),
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
