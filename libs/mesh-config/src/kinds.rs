//! The Istio kinds Trireme understands, with their API groups, the versions
//! Istio serves for each, and their plural and short names.

use crate::{networking, resource::Resource, security, telemetry};

/// An API group and the versions Istio serves in it for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub group: &'static str,
    /// Served versions; the one stored by the API server is `storage_version`.
    pub versions: &'static [&'static str],
    pub storage_version: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
}

const NETWORKING: &str = "networking.istio.io";
const SECURITY: &str = "security.istio.io";
const TELEMETRY: &str = "telemetry.istio.io";
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

/// Declares every kind once: the `Kind` enum, its table of facts, and the
/// `AnyResource` enum holding a typed resource of any kind.
macro_rules! istio_kinds {
    ($( $kind:ident: $spec:ty, $group:expr, $versions:expr, $storage:literal, $plural:literal, [$($short:literal),*]; )+) => {
        /// An Istio kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind { $($kind),+ }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),+];

            pub fn info(self) -> &'static KindInfo {
                match self {
                    $(Kind::$kind => &KindInfo {
                        kind: stringify!($kind),
                        group: $group,
                        versions: $versions,
                        storage_version: $storage,
                        plural: $plural,
                        short_names: &[$($short),*],
                    },)+
                }
            }

            /// The JSON schema of this kind's `spec`, for CRD generation.
            pub fn spec_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self {
                    $(Kind::$kind => generator.root_schema_for::<$spec>(),)+
                }
            }
        }

        /// A resource of any Istio kind, with its typed spec (boxed: specs
        /// differ widely in size).
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(untagged)]
        pub enum AnyResource { $($kind(Box<Resource<$spec>>)),+ }

        impl AnyResource {
            pub fn kind(&self) -> Kind {
                match self { $(AnyResource::$kind(_) => Kind::$kind),+ }
            }

            pub fn metadata(&self) -> &crate::resource::ObjectMeta {
                match self { $(AnyResource::$kind(r) => &r.metadata),+ }
            }

            pub fn api_version(&self) -> &str {
                match self { $(AnyResource::$kind(r) => &r.api_version),+ }
            }

            /// Reads a resource of `kind` from one deserializer, strictly.
            pub(crate) fn deserialize_as<'de, D>(kind: Kind, deserializer: D)
                -> Result<Self, serde_path_to_error::Error<D::Error>>
            where
                D: serde::Deserializer<'de>,
            {
                match kind {
                    $(Kind::$kind => serde_path_to_error::deserialize(deserializer).map(|r| AnyResource::$kind(Box::new(r))),)+
                }
            }
        }
    };
}

istio_kinds! {
    VirtualService: networking::VirtualService, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "virtualservices", ["vs"];
    DestinationRule: networking::DestinationRule, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "destinationrules", ["dr"];
    Gateway: networking::Gateway, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "gateways", ["gw"];
    ServiceEntry: networking::ServiceEntry, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "serviceentries", ["se"];
    WorkloadEntry: networking::WorkloadEntry, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "workloadentries", ["we"];
    WorkloadGroup: networking::WorkloadGroup, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "workloadgroups", ["wg"];
    Sidecar: networking::Sidecar, NETWORKING, NETWORKING_VERSIONS, "v1alpha3", "sidecars", [];
    EnvoyFilter: networking::EnvoyFilter, NETWORKING, &["v1alpha3"], "v1alpha3", "envoyfilters", [];
    ProxyConfig: networking::ProxyConfig, NETWORKING, &["v1beta1"], "v1beta1", "proxyconfigs", [];
    PeerAuthentication: security::PeerAuthentication, SECURITY, SECURITY_VERSIONS, "v1beta1", "peerauthentications", ["pa"];
    AuthorizationPolicy: security::AuthorizationPolicy, SECURITY, SECURITY_VERSIONS, "v1beta1", "authorizationpolicies", ["ap"];
    RequestAuthentication: security::RequestAuthentication, SECURITY, SECURITY_VERSIONS, "v1beta1", "requestauthentications", ["ra"];
    Telemetry: telemetry::Telemetry, TELEMETRY, TELEMETRY_VERSIONS, "v1alpha1", "telemetries", ["telemetry"];
}

/// Why an `apiVersion`/`kind` pair names no Istio kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("unknown kind {kind:?}; Trireme reads {}", known_kinds())]
    UnknownKind { kind: String },
    #[error("apiVersion {api_version:?} is not served for {kind}; use one of {}", .expected.join(", "))]
    UnservedVersion {
        kind: &'static str,
        api_version: String,
        expected: Vec<String>,
    },
}

fn known_kinds() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.info().kind)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind {
    /// Finds the kind named by a manifest's `apiVersion` and `kind`, accepting
    /// every version alias Istio serves for it.
    pub fn resolve(api_version: &str, kind: &str) -> Result<Kind, KindError> {
        let found = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.info().kind == kind)
            .ok_or_else(|| KindError::UnknownKind {
                kind: kind.to_string(),
            })?;
        let info = found.info();
        let served = api_version.split_once('/').is_some_and(|(group, version)| {
            group == info.group && info.versions.contains(&version)
        });
        if served {
            Ok(found)
        } else {
            Err(KindError::UnservedVersion {
                kind: info.kind,
                api_version: api_version.to_string(),
                expected: info.api_versions().collect(),
            })
        }
    }
}

impl KindInfo {
    /// Every `group/version` string under which this kind is served.
    pub fn api_versions(&self) -> impl Iterator<Item = String> + '_ {
        self.versions.iter().map(|v| format!("{}/{v}", self.group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_served_alias() {
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let api_version = format!("networking.istio.io/{version}");
            assert_eq!(
                Kind::resolve(&api_version, "VirtualService"),
                Ok(Kind::VirtualService)
            );
        }
        assert_eq!(
            Kind::resolve("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Ok(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::resolve("telemetry.istio.io/v1alpha1", "Telemetry"),
            Ok(Kind::Telemetry)
        );
    }

    #[test]
    fn refuses_versions_istio_does_not_serve() {
        let err = Kind::resolve("networking.istio.io/v1", "EnvoyFilter").unwrap_err();
        assert!(
            err.to_string().contains("networking.istio.io/v1alpha3"),
            "{err}"
        );
        let err = Kind::resolve("security.istio.io/v1alpha3", "PeerAuthentication").unwrap_err();
        assert!(err.to_string().contains("not served"), "{err}");
        let err = Kind::resolve("networking.istio.io/v1", "VirtualSrevice").unwrap_err();
        assert!(err.to_string().contains("unknown kind"), "{err}");
    }
}
