//! Where traffic for destinations outside the registry goes, following the
//! outbound traffic policy: ALLOW_ANY passes it on as addressed
//! (`PassthroughCluster`, or the policy's egress proxy), REGISTRY_ONLY drops
//! it (`BlackHoleCluster` for connections, `502` for HTTP requests, as
//! Istio's `block_all`).

use mesh_config::networking::sidecar::Mode as OutboundMode;
use trireme_proto::envoy::pb::envoy::config::listener::v3::FilterChain;
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteMatch, VirtualHost, route, route_action,
    route_match::PathSpecifier,
};
use trireme_proto::envoy::pb::google::protobuf::Duration;

use crate::model::{MeshSnapshot, ProxyScope};
use crate::translate::listeners::tcp_proxy;
use crate::translate::names::{self, BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};

/// Istio's names for the catch-all virtual hosts and their routes.
const ALLOW_ANY: &str = "allow_any";
const BLOCK_ALL: &str = "block_all";
/// What Istio answers HTTP requests for unknown hosts with under REGISTRY_ONLY.
const BLOCKED_STATUS: u32 = 502;

/// The destination of unknown traffic for one proxy view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnknownTraffic {
    /// `None` when unknown traffic is dropped.
    cluster: Option<String>,
}

impl UnknownTraffic {
    pub(super) fn new(snapshot: &MeshSnapshot, scope: &ProxyScope) -> UnknownTraffic {
        let policy = scope.outbound_policy();
        let cluster = match (policy.mode, &policy.egress_proxy) {
            (OutboundMode::RegistryOnly, _) => None,
            (OutboundMode::AllowAny, None) => Some(PASSTHROUGH_CLUSTER.to_string()),
            (OutboundMode::AllowAny, Some(proxy)) => {
                Some(names::destination_cluster(snapshot, "", proxy, 0))
            }
        };
        UnknownTraffic { cluster }
    }

    /// Unknown traffic dropped, whatever the policy.
    pub(super) fn blocked() -> UnknownTraffic {
        UnknownTraffic { cluster: None }
    }

    /// The same policy for a listener the application connects to itself
    /// (interception NONE): its original destination is the proxy, so
    /// passing traffic on as addressed would loop back; only an egress proxy
    /// can take it.
    pub(super) fn for_bound_listener(&self) -> UnknownTraffic {
        UnknownTraffic {
            cluster: self
                .cluster
                .clone()
                .filter(|cluster| cluster != PASSTHROUGH_CLUSTER),
        }
    }

    /// The cluster connections go to: the passthrough (or egress proxy)
    /// cluster, else the blackhole.
    pub(super) fn cluster(&self) -> &str {
        self.cluster.as_deref().unwrap_or(BLACKHOLE_CLUSTER)
    }

    fn passes(&self) -> bool {
        self.cluster.is_some()
    }

    /// A filter chain forwarding whole connections to [`Self::cluster`],
    /// named as Istio names a port listener's fallback chain.
    pub(super) fn filter_chain(&self) -> FilterChain {
        let name = if self.passes() {
            "PassthroughFilterChain"
        } else {
            "BlackHoleFilterChain"
        };
        self.named_filter_chain(name)
    }

    pub(super) fn named_filter_chain(&self, name: &str) -> FilterChain {
        FilterChain {
            name: name.to_string(),
            filters: vec![tcp_proxy(
                self.cluster().to_string(),
                &[(self.cluster().to_string(), 1)],
            )],
            ..Default::default()
        }
    }

    /// The virtual host for every HTTP host no other virtual host claims.
    pub(super) fn virtual_host(&self) -> VirtualHost {
        let (name, action) = match &self.cluster {
            Some(cluster) => (
                ALLOW_ANY,
                route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.clone(),
                    )),
                    // Unknown upstreams may stream for as long as they like.
                    timeout: Some(Duration::default()),
                    ..Default::default()
                }),
            ),
            None => (
                BLOCK_ALL,
                route::Action::DirectResponse(DirectResponseAction {
                    status: BLOCKED_STATUS,
                    ..Default::default()
                }),
            ),
        };
        VirtualHost {
            name: name.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: name.to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(action),
                ..Default::default()
            }],
            include_request_attempt_count: true,
            ..Default::default()
        }
    }
}
