//! Istio `HTTPRoute`s → Envoy `Route`s, the part of RDS that gateways and
//! sidecars share. One Envoy route per `match` entry of an Istio route (a route
//! without `match` becomes a catch-all on `/`), with Istio's defaults where the
//! YAML says nothing: no route timeout, two retries on connection-level
//! failures and 503, redirects with 301.
//!
//! Per-route policies that live in HTTP filters (fault injection, CORS) go into
//! `typed_per_filter_config` under the names of the filters the connection
//! manager runs.

mod matching;
mod policy;

use std::collections::BTreeMap;

use mesh_config::Resource;
use mesh_config::common::Duration as IstioDuration;
use mesh_config::networking::VirtualService;
use mesh_config::networking::virtual_service::{
    Destination, HeaderOperations, Headers, HttpDirectResponse, HttpMatchRequest, HttpRedirect,
    HttpRoute, HttpRouteDestination, RedirectPortSelection,
};
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, Metadata, data_source,
    header_value_option::HeaderAppendAction,
};
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    Decorator, DirectResponseAction, RedirectAction, Route, RouteAction, WeightedCluster,
    redirect_action, route, route_action, route_match::PathSpecifier,
    weighted_cluster::ClusterWeight, weighted_cluster::cluster_weight,
};
use trireme_proto::envoy::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use trireme_proto::envoy::pb::google::protobuf::{
    Duration, Struct, UInt32Value, Value, value::Kind,
};
use trireme_proto::envoy::util::pack_any;

use self::matching::{regex_matcher, route_match};
use super::names;
use crate::model::snapshot::{MESH_GATEWAY, gateway_reference_matches, namespace_of};
use crate::model::{MeshSnapshot, Proxy};

/// Name of the HTTP filter that answers CORS; routes configure it per route.
pub use super::listeners::CORS_FILTER;
/// Name of the HTTP filter that injects faults; routes configure it per route.
pub use super::listeners::FAULT_FILTER;

/// Whose traffic the routes are built for; decides which `match` entries that
/// name `gateways` apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteScope<'a> {
    /// A gateway, by its namespace and name.
    Gateway { namespace: &'a str, name: &'a str },
    /// Sidecars (Istio's reserved gateway name `mesh`).
    Mesh,
}

/// What the routes of one VirtualService depend on, besides the routes.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    pub snapshot: &'a MeshSnapshot,
    pub virtual_service: &'a Resource<VirtualService>,
    pub scope: RouteScope<'a>,
    /// The proxy the routes are for: `sourceLabels`/`sourceNamespace` of a
    /// match are checked against it, as Istio does (for a gateway, against the
    /// gateway's own pod).
    pub proxy: &'a Proxy,
    /// The port of the listener serving the routes.
    pub listener_port: u32,
    /// Whether that listener terminates TLS; a redirect without a scheme keeps it.
    pub tls: bool,
}

impl RouteContext<'_> {
    fn namespace(&self) -> &str {
        namespace_of(self.virtual_service)
    }

    fn vs_name(&self) -> &str {
        &self.virtual_service.metadata.name
    }
}

/// The Envoy routes of a VirtualService's `http` section, in order. Like
/// Istio, nothing after the first catch-all is kept: Envoy would never reach it.
pub fn virtual_service_routes(ctx: &RouteContext<'_>) -> Vec<Route> {
    let mut routes = Vec::new();
    // Delegating routes yield nothing yet (see `http_route`), so they must not
    // end the table as a catch-all either.
    for http in ctx
        .virtual_service
        .spec
        .http
        .iter()
        .filter(|http| http.delegate.is_none())
    {
        let translated = http_route(ctx, http);
        let reached_catch_all =
            http.r#match.is_empty() || translated.last().is_some_and(is_catch_all);
        routes.extend(translated);
        if reached_catch_all {
            break;
        }
    }
    routes
}

/// The Envoy routes of one Istio HTTP route: one per `match` entry that applies
/// to this proxy and port, stopping after a catch-all.
pub fn http_route(ctx: &RouteContext<'_>, http: &HttpRoute) -> Vec<Route> {
    if http.delegate.is_some() {
        // Delegation splices another VirtualService's routes in here; that is
        // not supported yet, so the route is left out rather than sent nowhere.
        return Vec::new();
    }
    if http.r#match.is_empty() {
        return translate(ctx, http, None).into_iter().collect();
    }
    let mut routes = Vec::new();
    for condition in http.r#match.iter().filter(|m| applies(ctx, m)) {
        let Some(route) = translate(ctx, http, Some(condition)) else {
            continue;
        };
        let catch_all = is_catch_all(&route);
        routes.push(route);
        if catch_all {
            break;
        }
    }
    routes
}

/// The route of a service no VirtualService routes (Istio's `default`):
/// every request to `cluster`, with Istio's default retries, no timeout, and
/// the hash policy of the cluster's consistent-hash balancing, if any.
#[allow(deprecated)] // max_grpc_timeout, as in `forward_action`.
pub fn default_route(cluster: String, hash_policy: Vec<route_action::HashPolicy>) -> Route {
    let operation = names::parse_cluster_name(&cluster)
        .map(|key| format!("{}:{}/*", key.host, key.port))
        .unwrap_or_default();
    Route {
        name: "default".to_string(),
        r#match: Some(route_match(None)),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(Duration::default()),
            max_grpc_timeout: Some(Duration::default()),
            retry_policy: policy::retry_policy(None),
            hash_policy,
            ..Default::default()
        })),
        decorator: Some(Decorator {
            operation,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a route matches every request: path prefix `/` (or regex `.*`)
/// and no header or query conditions.
pub fn is_catch_all(route: &Route) -> bool {
    let Some(m) = &route.r#match else {
        return false;
    };
    let any_path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(prefix)) => prefix == "/",
        Some(PathSpecifier::SafeRegex(regex)) => regex.regex == ".*",
        _ => false,
    };
    any_path
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// Whether a match condition applies to this listener and proxy.
fn applies(ctx: &RouteContext<'_>, condition: &HttpMatchRequest) -> bool {
    if condition
        .port
        .is_some_and(|port| port != 0 && port != ctx.listener_port)
    {
        return false;
    }
    if !condition.gateways.is_empty() {
        return condition
            .gateways
            .iter()
            .any(|reference| names_scope(ctx, reference));
    }
    let labels_match = condition
        .source_labels
        .iter()
        .all(|(key, value)| ctx.proxy.labels.get(key) == Some(value));
    labels_match
        && (condition.source_namespace.is_empty()
            || condition.source_namespace == ctx.proxy.namespace)
}

fn names_scope(ctx: &RouteContext<'_>, reference: &str) -> bool {
    match ctx.scope {
        RouteScope::Mesh => reference == MESH_GATEWAY,
        RouteScope::Gateway { namespace, name } => {
            gateway_reference_matches(reference, ctx.namespace(), namespace, name)
        }
    }
}

/// One Envoy route for `http` under one of its match conditions; `None` when
/// the route cannot be expressed (no destination, unsupported redirect code).
fn translate(
    ctx: &RouteContext<'_>,
    http: &HttpRoute,
    condition: Option<&HttpMatchRequest>,
) -> Option<Route> {
    let mut route = Route {
        name: route_name(http, condition),
        r#match: Some(route_match(condition)),
        metadata: Some(config_metadata(ctx)),
        stat_prefix: condition.map(|c| c.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let edits = HeaderEdits::new(http.headers.as_ref());
    let authority = edits.authority.clone();
    edits.apply_to_route(&mut route);
    let action = if let Some(redirect) = &http.redirect {
        route::Action::Redirect(redirect_action(ctx, redirect)?)
    } else if let Some(direct) = &http.direct_response {
        route::Action::DirectResponse(direct_response(direct))
    } else {
        route::Action::Route(forward_action(ctx, http, authority, &mut route)?)
    };
    route.action = Some(action);
    route.decorator = Some(Decorator {
        operation: operation(&route, ctx.vs_name(), ctx.listener_port),
        ..Default::default()
    });
    route.typed_per_filter_config = policy::per_filter_config(http);
    Some(route)
}

/// Istio's route name: the route's, plus `.<match name>` when the match has one.
fn route_name(http: &HttpRoute, condition: Option<&HttpMatchRequest>) -> String {
    match condition {
        Some(c) if !c.name.is_empty() => format!("{}.{}", http.name, c.name),
        _ => http.name.clone(),
    }
}

/// Points a route back at the config it came from, in Istio's format, so
/// config dumps and access logs name the VirtualService.
fn config_metadata(ctx: &RouteContext<'_>) -> Metadata {
    let path = format!(
        "/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}",
        ctx.namespace(),
        ctx.vs_name()
    );
    let fields = [(
        "config".to_string(),
        Value {
            kind: Some(Kind::StringValue(path)),
        },
    )];
    Metadata {
        filter_metadata: [(
            "istio".to_string(),
            Struct {
                fields: fields.into(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// Tracing's name for the route: `host:port/path` when it goes to one
/// cluster, else `<virtual service>:<listener port>/path`.
fn operation(route: &Route, vs_name: &str, listener_port: u32) -> String {
    let path = match route
        .r#match
        .as_ref()
        .and_then(|m| m.path_specifier.as_ref())
    {
        Some(PathSpecifier::Prefix(prefix)) => format!("{prefix}*"),
        Some(PathSpecifier::Path(path)) => path.clone(),
        Some(PathSpecifier::SafeRegex(regex)) => regex.regex.clone(),
        _ => "/*".to_string(),
    };
    let single_cluster = match &route.action {
        Some(route::Action::Route(action)) => match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(cluster)) => {
                names::parse_cluster_name(cluster)
            }
            _ => None,
        },
        _ => None,
    };
    match single_cluster {
        Some(key) => format!("{}:{}{path}", key.host, key.port),
        None => format!("{vs_name}:{listener_port}{path}"),
    }
}

// ---- actions ----

fn redirect_action(ctx: &RouteContext<'_>, redirect: &HttpRedirect) -> Option<RedirectAction> {
    use redirect_action::RedirectResponseCode as Code;
    let response_code = match redirect.redirect_code.unwrap_or(301) {
        301 => Code::MovedPermanently,
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        other => {
            tracing::warn!(
                code = other,
                virtual_service = ctx.vs_name(),
                "unsupported redirect code; route left out"
            );
            return None;
        }
    };
    let path_rewrite = if !redirect.uri.is_empty() {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            redirect.uri.clone(),
        ))
    } else if !redirect.prefix_rewrite.is_empty() {
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
            redirect.prefix_rewrite.clone(),
        ))
    } else {
        None
    };
    Some(RedirectAction {
        host_redirect: redirect.authority.clone(),
        port_redirect: redirect_port(ctx, redirect),
        response_code: response_code as i32,
        scheme_rewrite_specifier: (!redirect.scheme.is_empty()).then(|| {
            redirect_action::SchemeRewriteSpecifier::SchemeRedirect(redirect.scheme.clone())
        }),
        path_rewrite_specifier: path_rewrite,
        ..Default::default()
    })
}

/// The port put in the `Location`; 0 leaves it to Envoy (the scheme's default).
fn redirect_port(ctx: &RouteContext<'_>, redirect: &HttpRedirect) -> u32 {
    let port = match (redirect.port, redirect.derive_port) {
        (Some(port), _) => port,
        // Envoy cannot copy the request's port, but routes are built per
        // listener port, which is the port the request arrived on.
        (None, Some(RedirectPortSelection::FromRequestPort)) => ctx.listener_port,
        _ => return 0,
    };
    let scheme = match redirect.scheme.as_str() {
        "" if ctx.tls => "https",
        "" => "http",
        scheme => scheme,
    };
    // An explicit default port would show up in the Location for no reason.
    match (scheme, port) {
        ("http", 80) | ("https", 443) => 0,
        _ => port,
    }
}

fn direct_response(direct: &HttpDirectResponse) -> DirectResponseAction {
    let body = direct.body.as_ref().and_then(|body| {
        let specifier = match (&body.string, &body.bytes) {
            (Some(text), _) => data_source::Specifier::InlineString(text.clone()),
            (None, Some(encoded)) => data_source::Specifier::InlineBytes(decode_base64(encoded)?),
            (None, None) => return None,
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        })
    });
    DirectResponseAction {
        status: direct.status,
        body,
        ..Default::default()
    }
}

/// The hash policy of the destination's consistent-hash load balancing, if
/// its DestinationRule asks for one: Envoy hashes on the route, not the cluster.
fn consistent_hash(ctx: &RouteContext<'_>, cluster: &str) -> Vec<route_action::HashPolicy> {
    names::parse_cluster_name(cluster)
        .map(|key| {
            super::traffic_policy::hash_policy_for(
                ctx.snapshot,
                &ctx.proxy.namespace,
                key.host,
                key.port,
                key.subset,
            )
        })
        .unwrap_or_default()
}

/// Forwarding to the route's destinations, with rewrites, timeout, retries and
/// mirrors. A single destination's header edits go on the route itself.
#[allow(deprecated)] // max_grpc_timeout: Istio keeps using it, MaxStreamDuration regressed for it.
fn forward_action(
    ctx: &RouteContext<'_>,
    http: &HttpRoute,
    authority: Option<String>,
    route: &mut Route,
) -> Option<RouteAction> {
    let timeout = http
        .timeout
        .as_ref()
        .map_or(Duration::default(), proto_duration);
    let mut action = RouteAction {
        timeout: Some(timeout),
        max_grpc_timeout: Some(timeout),
        retry_policy: policy::retry_policy(http.retries.as_ref()),
        request_mirror_policies: policy::mirror_policies(http, |d| cluster_for(ctx, d)),
        ..Default::default()
    };
    let mut authority = authority;
    if let Some(rewrite) = &http.rewrite {
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(&regex.r#match)),
                substitution: regex.rewrite.clone(),
            });
        } else if !rewrite.uri.is_empty() {
            action.prefix_rewrite = rewrite.uri.clone();
        }
        if !rewrite.authority.is_empty() {
            authority = Some(rewrite.authority.clone());
        }
    }
    if let [only] = http.route.as_slice() {
        let edits = HeaderEdits::new(only.headers.as_ref());
        // A destination's authority only applies when the route sets none, so
        // one destination behaves like one of several.
        authority = authority.or(edits.authority.clone());
        edits.apply_to_route(route);
        let cluster = cluster_for(ctx, &only.destination);
        action.hash_policy = consistent_hash(ctx, &cluster);
        action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(cluster));
    } else {
        let clusters = weighted_clusters(ctx, &http.route);
        if clusters.is_empty() {
            return None;
        }
        action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters,
                ..Default::default()
            },
        ));
    }
    action.host_rewrite_specifier =
        authority.map(route_action::HostRewriteSpecifier::HostRewriteLiteral);
    Some(action)
}

/// Weighted destinations; unweighted ones get no traffic, as in Istio. Should
/// every weight be missing (which Istio's validation refuses), traffic is
/// spread evenly rather than sending Envoy an empty list.
fn weighted_clusters(
    ctx: &RouteContext<'_>,
    destinations: &[HttpRouteDestination],
) -> Vec<ClusterWeight> {
    let weight_of = |d: &HttpRouteDestination| d.weight.unwrap_or(0).max(0) as u32;
    let all_unweighted = destinations.iter().all(|d| weight_of(d) == 0);
    destinations
        .iter()
        .filter(|d| all_unweighted || weight_of(d) > 0)
        .map(|d| {
            let weight = if all_unweighted { 1 } else { weight_of(d) };
            weighted_cluster(ctx, d, weight)
        })
        .collect()
}

fn weighted_cluster(
    ctx: &RouteContext<'_>,
    destination: &HttpRouteDestination,
    weight: u32,
) -> ClusterWeight {
    let edits = HeaderEdits::new(destination.headers.as_ref());
    ClusterWeight {
        name: cluster_for(ctx, &destination.destination),
        weight: Some(UInt32Value { value: weight }),
        host_rewrite_specifier: edits
            .authority
            .clone()
            .map(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral),
        request_headers_to_add: edits.request_add,
        request_headers_to_remove: edits.request_remove,
        response_headers_to_add: edits.response_add,
        response_headers_to_remove: edits.response_remove,
        ..Default::default()
    }
}

/// The outbound cluster of a destination. Without an explicit port, the
/// service's only port is meant; failing that, the listener's port.
fn cluster_for(ctx: &RouteContext<'_>, destination: &Destination) -> String {
    names::destination_cluster(
        ctx.snapshot,
        ctx.namespace(),
        destination,
        ctx.listener_port,
    )
}

// ---- headers ----

/// Istio `headers` as Envoy header edits. Envoy refuses edits of pseudo-headers
/// and `host`; setting `host`/`:authority` becomes a host rewrite instead.
#[derive(Debug, Default)]
struct HeaderEdits {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
    authority: Option<String>,
}

impl HeaderEdits {
    fn new(headers: Option<&Headers>) -> HeaderEdits {
        let Some(headers) = headers else {
            return HeaderEdits::default();
        };
        let request = headers.request.as_ref();
        let response = headers.response.as_ref();
        let authority =
            |ops: Option<&HeaderOperations>,
             pick: fn(&HeaderOperations) -> &BTreeMap<String, String>| {
                ops.and_then(|ops| {
                    pick(ops)
                        .iter()
                        .find(|(k, _)| is_authority(k))
                        .map(|(_, v)| v.clone())
                })
            };
        HeaderEdits {
            request_add: header_additions(request),
            request_remove: header_removals(request),
            response_add: header_additions(response),
            response_remove: header_removals(response),
            // `set` wins over `add` when both name the authority.
            authority: authority(request, |o| &o.set).or_else(|| authority(request, |o| &o.add)),
        }
    }

    fn apply_to_route(self, route: &mut Route) {
        route.request_headers_to_add.extend(self.request_add);
        route.request_headers_to_remove.extend(self.request_remove);
        route.response_headers_to_add.extend(self.response_add);
        route
            .response_headers_to_remove
            .extend(self.response_remove);
    }
}

/// `set` (overwrite) then `add` (append), each by header name.
fn header_additions(ops: Option<&HeaderOperations>) -> Vec<HeaderValueOption> {
    let Some(ops) = ops else {
        return Vec::new();
    };
    let with_action = |headers: &BTreeMap<String, String>, action: HeaderAppendAction| {
        headers
            .iter()
            .filter(|(key, value)| editable(key) && valid_header_value(value))
            .map(move |(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let mut additions = with_action(&ops.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
    additions.extend(with_action(
        &ops.add,
        HeaderAppendAction::AppendIfExistsOrAdd,
    ));
    additions
}

fn header_removals(ops: Option<&HeaderOperations>) -> Vec<String> {
    ops.map(|ops| ops.remove.iter().filter(|k| editable(k)).cloned().collect())
        .unwrap_or_default()
}

fn is_authority(key: &str) -> bool {
    key.eq_ignore_ascii_case(":authority") || key.eq_ignore_ascii_case("host")
}

fn editable(key: &str) -> bool {
    !key.is_empty() && !key.starts_with(':') && !key.eq_ignore_ascii_case("host")
}

fn valid_header_value(value: &str) -> bool {
    !value.contains(['\r', '\n', '\0'])
}

// ---- small conversions ----

/// An Istio duration as protobuf's; an unreadable one (validation refuses
/// those) counts as zero.
pub(crate) fn proto_duration(duration: &IstioDuration) -> Duration {
    let std = duration.to_std().unwrap_or_default();
    Duration {
        seconds: i64::try_from(std.as_secs()).unwrap_or(i64::MAX),
        nanos: std.subsec_nanos() as i32,
    }
}

/// Decodes standard base64 (as Kubernetes writes `bytes` fields); `None` if
/// it is not base64.
fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .take_while(|&b| b != b'=')
        .map(|b| match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | (u32::from(d) << (18 - 6 * i)));
        let produced = chunk.len() - 1;
        bytes.extend_from_slice(&bits.to_be_bytes()[1..=produced]);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies_decode() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("not base64!").is_none());
    }

    #[test]
    fn durations_convert_with_fractions() {
        let half = proto_duration(&IstioDuration::from("0.5s"));
        assert_eq!((half.seconds, half.nanos), (0, 500_000_000));
        let bad = proto_duration(&IstioDuration::from("soon"));
        assert_eq!((bad.seconds, bad.nanos), (0, 0));
    }

    #[test]
    fn authority_edits_become_host_rewrites_not_headers() {
        let headers = Headers {
            request: Some(HeaderOperations {
                set: [
                    ("Host".to_string(), "a.example".to_string()),
                    ("x-a".to_string(), "1".to_string()),
                ]
                .into(),
                add: [(":authority".to_string(), "b.example".to_string())].into(),
                remove: vec!["host".into(), "x-b".into()],
            }),
            response: None,
        };
        let edits = HeaderEdits::new(Some(&headers));
        assert_eq!(edits.authority.as_deref(), Some("a.example"));
        let keys: Vec<_> = edits
            .request_add
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.as_str())
            .collect();
        assert_eq!(keys, ["x-a"]);
        assert_eq!(edits.request_remove, ["x-b"]);
    }
}
