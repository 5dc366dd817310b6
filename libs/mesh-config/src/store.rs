//! How accepted config and galley's verdicts are laid out on the bus: the
//! bucket names, one key per resource, and what a verdict says. galley
//! writes both buckets; pilot reads the config bucket; `trireme analyze`
//! reads the verdicts.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_namespace_and_name() {
        assert_eq!(
            resource_key(Kind::VirtualService, "shop", "reviews.v1"),
            "VirtualService/shop/reviews.v1"
        );
    }
}
