//! Which mutual TLS a workload accepts, from PeerAuthentication, with Istio's
//! precedence: a policy selecting the workload in its namespace, else the
//! namespace-wide policy, else the mesh-wide policy (no selector, in the root
//! namespace), else PERMISSIVE. A mode left UNSET inherits from the next
//! level down; `portLevelMtls` counts only on a policy with a selector, and
//! a port entry left UNSET inherits the workload's mode. When several
//! policies match at one level the oldest wins (creation time, then name).
//! Policies with a selector in the root namespace are ignored, as in Istio.
//!
//! The policies are indexed once per snapshot: inbound listeners ask once
//! per workload, but auto-mTLS asks once per endpoint of every cluster.

use std::collections::{BTreeMap, HashMap};

use mesh_config::Resource;
use mesh_config::security::PeerAuthentication;
use mesh_config::security::peer_authentication::{MutualTls, MutualTlsMode};

use super::snapshot::namespace_of;
use super::{Endpoint, MeshSnapshot, Service, ServicePort};

/// The mTLS a workload port accepts, once inheritance is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS or plaintext.
    Permissive,
    /// Plaintext only: clients must not use mutual TLS.
    Disable,
}

impl MtlsMode {
    /// The mode that `mode` gives on top of `parent` (UNSET inherits).
    fn over(parent: MtlsMode, mode: Option<MutualTlsMode>) -> MtlsMode {
        match mode.unwrap_or_default() {
            MutualTlsMode::Unset => parent,
            MutualTlsMode::Strict => MtlsMode::Strict,
            MutualTlsMode::Permissive => MtlsMode::Permissive,
            MutualTlsMode::Disable => MtlsMode::Disable,
        }
    }
}

/// What a workload's policies resolve to: one mode, and the ports that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadMtls {
    pub mode: MtlsMode,
    /// Workload (target) ports with their own mode.
    pub ports: BTreeMap<u32, MtlsMode>,
}

impl WorkloadMtls {
    /// The mode on one workload port.
    pub fn port(&self, port: u32) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// One policy, reduced to what the resolution needs.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    selector: BTreeMap<String, String>,
    mode: Option<MutualTlsMode>,
    ports: BTreeMap<u32, Option<MutualTlsMode>>,
}

impl Policy {
    fn from_resource(resource: &Resource<PeerAuthentication>) -> Policy {
        let spec = &resource.spec;
        let mode_of = |mtls: &MutualTls| mtls.mode;
        Policy {
            selector: spec
                .selector
                .as_ref()
                .map(|s| s.match_labels.clone())
                .unwrap_or_default(),
            mode: spec.mtls.as_ref().and_then(mode_of),
            // Keys are validated by galley; one that is not a port cannot match.
            ports: spec
                .port_level_mtls
                .iter()
                .filter_map(|(port, mtls)| Some((port.trim().parse().ok()?, mode_of(mtls))))
                .collect(),
        }
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The policies of one namespace, each list oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
struct NamespacePolicies {
    namespace_wide: Option<Policy>,
    with_selector: Vec<Policy>,
}

/// PeerAuthentications by level, built once per snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerAuthenticationIndex {
    mesh: Option<Policy>,
    namespaces: HashMap<String, NamespacePolicies>,
}

impl PeerAuthenticationIndex {
    pub fn build(
        policies: &[Resource<PeerAuthentication>],
        root_namespace: &str,
    ) -> PeerAuthenticationIndex {
        let mut oldest_first: Vec<&Resource<PeerAuthentication>> = policies.iter().collect();
        // RFC 3339 UTC timestamps, as Kubernetes writes them, sort as text;
        // policies read from files have none and count as oldest.
        oldest_first.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        let mut index = PeerAuthenticationIndex::default();
        for resource in oldest_first {
            let policy = Policy::from_resource(resource);
            let namespace = namespace_of(resource);
            match (policy.selector.is_empty(), namespace == root_namespace) {
                (true, true) => {
                    index.mesh.get_or_insert(policy);
                }
                (true, false) => {
                    let level = index.namespaces.entry(namespace.to_string()).or_default();
                    level.namespace_wide.get_or_insert(policy);
                }
                (false, false) => index
                    .namespaces
                    .entry(namespace.to_string())
                    .or_default()
                    .with_selector
                    .push(policy),
                (false, true) => {
                    tracing::debug!(
                        name = %resource.metadata.name,
                        "PeerAuthentication with a selector in the root namespace is ignored"
                    );
                }
            }
        }
        index
    }

    /// The mTLS of a workload in `namespace` with `labels`.
    pub fn workload_mtls(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadMtls {
        let mesh = MtlsMode::over(
            MtlsMode::Permissive,
            self.mesh.as_ref().and_then(|p| p.mode),
        );
        let Some(level) = self.namespaces.get(namespace) else {
            return WorkloadMtls {
                mode: mesh,
                ports: BTreeMap::new(),
            };
        };
        let namespace_mode =
            MtlsMode::over(mesh, level.namespace_wide.as_ref().and_then(|p| p.mode));
        let Some(workload) = level.with_selector.iter().find(|p| p.selects(labels)) else {
            return WorkloadMtls {
                mode: namespace_mode,
                ports: BTreeMap::new(),
            };
        };
        let mode = MtlsMode::over(namespace_mode, workload.mode);
        WorkloadMtls {
            mode,
            ports: workload
                .ports
                .iter()
                .map(|(port, port_mode)| (*port, MtlsMode::over(mode, *port_mode)))
                .filter(|(_, port_mode)| *port_mode != mode)
                .collect(),
        }
    }
}

impl MeshSnapshot {
    /// The mTLS a workload in `namespace` with `labels` accepts.
    pub fn workload_mtls(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadMtls {
        self.peer_authentication_index()
            .workload_mtls(namespace, labels)
    }
}

/// Whether a client may use mutual TLS towards `endpoint` of `service` on
/// `port`: not when the destination workload's policy DISABLEs it (it then
/// only accepts plaintext). Auto-mTLS asks this per endpoint.
pub fn destination_mtls_allowed(
    snapshot: &MeshSnapshot,
    service: &Service,
    endpoint: &Endpoint,
    port: &ServicePort,
) -> bool {
    // Endpoints live in their service's namespace (WorkloadEntries are
    // selected only from the ServiceEntry's own namespace).
    let mtls = snapshot.workload_mtls(&service.namespace, &endpoint.labels);
    mtls.port(service.endpoint_port(port, endpoint)) != MtlsMode::Disable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConfigSet, MeshSettings};

    fn index(yaml: &str) -> PeerAuthenticationIndex {
        let resources = mesh_config::parse_all("test.yaml", yaml).expect("test YAML parses");
        let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
        PeerAuthenticationIndex::build(&config.peer_authentications, "istio-system")
    }

    fn pa(namespace: &str, name: &str, body: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n"
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const APP: &[(&str, &str)] = &[("app", "server")];

    #[test]
    fn nothing_configured_means_permissive() {
        let mtls = index("").workload_mtls("ns", &labels(APP));
        assert_eq!(mtls.mode, MtlsMode::Permissive);
        assert_eq!(mtls.port(8080), MtlsMode::Permissive);
    }

    #[test]
    fn workload_beats_namespace_beats_mesh() {
        let mesh = pa("istio-system", "default", "  mtls: {mode: STRICT}");
        let namespace = pa("ns", "default", "  mtls: {mode: DISABLE}");
        let workload = pa(
            "ns",
            "server",
            "  selector: {matchLabels: {app: server}}\n  mtls: {mode: PERMISSIVE}",
        );
        let only_mesh = index(&mesh);
        assert_eq!(
            only_mesh.workload_mtls("ns", &labels(APP)).mode,
            MtlsMode::Strict
        );
        let with_namespace = index(&format!("{mesh}{namespace}"));
        assert_eq!(
            with_namespace.workload_mtls("ns", &labels(APP)).mode,
            MtlsMode::Disable
        );
        assert_eq!(
            with_namespace.workload_mtls("other", &labels(APP)).mode,
            MtlsMode::Strict,
            "a namespace policy stays in its namespace"
        );
        let all = index(&format!("{mesh}{namespace}{workload}"));
        assert_eq!(
            all.workload_mtls("ns", &labels(APP)).mode,
            MtlsMode::Permissive
        );
        assert_eq!(
            all.workload_mtls("ns", &labels(&[("app", "client")])).mode,
            MtlsMode::Disable,
            "the selector only picks its workload"
        );
    }

    #[test]
    fn unset_inherits_from_the_level_below() {
        let yaml = [
            pa("istio-system", "default", "  mtls: {mode: STRICT}"),
            pa("ns", "default", "  mtls: {mode: UNSET}"),
            pa(
                "ns",
                "server",
                "  selector: {matchLabels: {app: server}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    9090: {mode: UNSET}",
            ),
        ]
        .concat();
        let mtls = index(&yaml).workload_mtls("ns", &labels(APP));
        assert_eq!(mtls.mode, MtlsMode::Strict, "workload and namespace UNSET");
        assert_eq!(mtls.port(8080), MtlsMode::Disable);
        assert_eq!(mtls.port(9090), MtlsMode::Strict, "port UNSET");
        assert_eq!(mtls.port(7070), MtlsMode::Strict);
    }

    #[test]
    fn port_level_counts_only_with_a_selector() {
        let yaml = pa(
            "ns",
            "default",
            "  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"8080\": {mode: DISABLE}",
        );
        let mtls = index(&yaml).workload_mtls("ns", &labels(APP));
        assert_eq!(mtls.port(8080), MtlsMode::Strict);
        let with_selector = pa(
            "ns",
            "server",
            "  selector: {matchLabels: {app: server}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"8080\": {mode: DISABLE}",
        );
        let mtls = index(&with_selector).workload_mtls("ns", &labels(APP));
        assert_eq!(mtls.port(8080), MtlsMode::Disable);
        assert_eq!(mtls.port(9090), MtlsMode::Strict);
    }

    #[test]
    fn selector_policies_in_the_root_namespace_are_ignored() {
        let yaml = pa(
            "istio-system",
            "server",
            "  selector: {matchLabels: {app: server}}\n  mtls: {mode: STRICT}",
        );
        let mtls = index(&yaml).workload_mtls("istio-system", &labels(APP));
        assert_eq!(mtls.mode, MtlsMode::Permissive);
    }

    #[test]
    fn the_oldest_policy_of_a_level_wins() {
        let old =
            "metadata: {name: zz-old, namespace: ns, creationTimestamp: '2024-01-01T00:00:00Z'}";
        let new =
            "metadata: {name: aa-new, namespace: ns, creationTimestamp: '2025-01-01T00:00:00Z'}";
        let doc = |meta: &str, mode: &str| {
            format!(
                "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n{meta}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  mtls: {{mode: {mode}}}\n"
            )
        };
        let yaml = format!("{}{}", doc(new, "DISABLE"), doc(old, "STRICT"));
        let mtls = index(&yaml).workload_mtls("ns", &labels(APP));
        assert_eq!(mtls.mode, MtlsMode::Strict, "older by creation time");

        // Without timestamps, the name decides.
        let yaml = [
            pa("ns", "b", "  mtls: {mode: DISABLE}"),
            pa("ns", "a", "  mtls: {mode: STRICT}"),
        ]
        .concat();
        assert_eq!(
            index(&yaml).workload_mtls("ns", &labels(APP)).mode,
            MtlsMode::Strict
        );
    }

    #[test]
    fn an_empty_selector_is_namespace_wide() {
        let yaml = [
            pa(
                "ns",
                "a",
                "  selector: {matchLabels: {}}\n  mtls: {mode: DISABLE}",
            ),
            pa("ns", "b", "  mtls: {mode: STRICT}"),
        ]
        .concat();
        assert_eq!(
            index(&yaml).workload_mtls("ns", &labels(APP)).mode,
            MtlsMode::Disable,
            "`a` is the oldest namespace-wide policy"
        );
    }

    #[test]
    fn clients_must_not_use_mtls_towards_a_disabled_destination() {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: server, namespace: ns}}
spec:
  hosts: [server.ns.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 8080}}, {{number: 90, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 10.0.0.1, labels: {{app: server}}}}, {{address: 10.0.0.2, labels: {{app: other}}}}]
{}",
            pa(
                "ns",
                "server",
                "  selector: {matchLabels: {app: server}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}"
            )
        );
        let resources = mesh_config::parse_all("test.yaml", &yaml).unwrap();
        let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
        let snapshot = MeshSnapshot::from_config(config, MeshSettings::default());
        let service = snapshot.service("server.ns.svc.cluster.local").unwrap();
        let endpoints = snapshot.endpoints(&service.hostname);
        let (http, tcp) = (service.port(80).unwrap(), service.port(90).unwrap());
        assert!(!destination_mtls_allowed(
            &snapshot,
            service,
            &endpoints[0],
            http
        ));
        assert!(destination_mtls_allowed(
            &snapshot,
            service,
            &endpoints[0],
            tcp
        ));
        assert!(destination_mtls_allowed(
            &snapshot,
            service,
            &endpoints[1],
            http
        ));
    }
}
