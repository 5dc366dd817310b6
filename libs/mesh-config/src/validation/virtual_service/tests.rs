//! VirtualService and HTTP route rules, one table of documents per concern.

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
        &route_with("    rewrite:\n      uri: /a\n      uriRegexRewrite: {match: a, rewrite: b}\n"),
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
        &route_with("    fault:\n      abort: {httpStatus: 500, percentage: {value: 0.00001}}\n"),
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
