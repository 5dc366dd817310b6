//! What the control plane keeps on the bus, and how: accepted config and
//! galley's verdicts (one key per resource), and each pilot replica's
//! proxies' sync state. galley writes the config and verdict buckets; pilot
//! reads the config and writes the sync state; `trireme analyze` and
//! `trireme proxy-status` read the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AnyResource, Kind};

/// The JetStream key-value bucket of accepted resources: one key per
/// resource ([`resource_key`]), its value the resource as JSON.
pub const CONFIG_BUCKET: &str = "trireme-config";

/// The bucket of galley's verdicts, one per resource key, accepted or not.
pub const VERDICT_BUCKET: &str = "trireme-config-verdicts";

/// The namespace of a resource that names none, as `kubectl` would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `<Kind>/<namespace>/<name>`, e.g. `VirtualService/default/reviews`:
/// unique per resource, and made only of characters NATS keys allow
/// (Kubernetes names are DNS labels or subdomains).
pub fn resource_key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.info().kind)
}

/// The key of `resource`, its namespace defaulted.
pub fn key_of(resource: &AnyResource) -> String {
    let meta = resource.metadata();
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    resource_key(resource.kind(), namespace, &meta.name)
}

/// galley's word on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The resource's key ([`resource_key`]).
    pub key: String,
    pub accepted: bool,
    /// Why it was rejected, each naming the field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Deprecated or suspicious settings; they do not reject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Where the resource came from, e.g. `dir:catalog.yaml#2`.
    pub source: String,
    /// When, in RFC 3339.
    pub observed_at: String,
}

/// The bucket of proxies' sync state: one key per (replica, proxy),
/// written by the replica the proxy is connected to, gone after
/// [`PROXY_STATUS_TTL_SECONDS`] without a refresh (a dead replica's
/// proxies drop out on their own).
pub const PROXY_STATUS_BUCKET: &str = "trireme-proxy-status";

/// How long a sync-state entry lives without being refreshed.
pub const PROXY_STATUS_TTL_SECONDS: u64 = 60;

/// `<replica>/<proxy id>`, each part's characters outside NATS keys'
/// alphabet (Envoy node ids have `~`) replaced by `_`.
pub fn proxy_status_key(replica: &str, proxy: &str) -> String {
    format!("{}/{}", key_safe(replica), key_safe(proxy))
}

/// `text` with every character a NATS key may not hold replaced by `_`.
pub fn key_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One proxy's sync state as its pilot replica reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// The proxy's node id.
    pub proxy: String,
    /// The pilot replica it is connected to.
    pub replica: String,
    /// `sotw` or `delta`.
    pub protocol: String,
    /// Per xDS type, by short name (`CDS`, `LDS`, `EDS`, `RDS`, ...).
    pub types: BTreeMap<String, TypeStatus>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: u64,
}

/// One xDS type's sync state on one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    pub sent_version: String,
    pub acked_version: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<u64>,
    /// The last rejection, when it is newer than the last ACK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack: Option<String>,
}

impl TypeStatus {
    /// `istioctl proxy-status`'s words: SYNCED, NOT SENT, STALE or NACKED.
    pub fn state(&self) -> &'static str {
        if self.nack.is_some() {
            "NACKED"
        } else if self.sent_version.is_empty() {
            "NOT SENT"
        } else if self.acked_version == self.sent_version {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_keys_hold_only_what_nats_allows() {
        assert_eq!(
            proxy_status_key(
                "pilot-0",
                "router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local"
            ),
            "pilot-0/router_10.0.0.1_gw-1.istio-system_istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn a_type_is_synced_when_its_last_push_is_acked_and_nacked_while_refused() {
        let mut status = TypeStatus::default();
        assert_eq!(status.state(), "NOT SENT");
        status.sent_version = "7".into();
        assert_eq!(status.state(), "STALE");
        status.acked_version = "7".into();
        assert_eq!(status.state(), "SYNCED");
        status.nack = Some("invalid regex".into());
        assert_eq!(status.state(), "NACKED");
    }

    #[test]
    fn keys_name_kind_namespace_and_name() {
        assert_eq!(
            resource_key(Kind::VirtualService, "shop", "reviews.v1"),
            "VirtualService/shop/reviews.v1"
        );
    }
}
