//! Which `Sidecar` resource configures a proxy, by Istio's rules: in the
//! proxy's namespace, the oldest one whose `workloadSelector` matches the
//! proxy's labels, else the oldest one without a selector there, else the
//! oldest one without a selector in the root namespace (the mesh default).

use std::collections::HashMap;

use mesh_config::Resource;
use mesh_config::networking::Sidecar;

use super::snapshot::namespace_of;
use super::{MeshSnapshot, Proxy};

/// Positions in `config.sidecars` by namespace, oldest first (creation time,
/// then name), so a lookup reads one namespace's few resources.
#[derive(Debug, Clone, Default)]
pub(crate) struct SidecarIndex {
    by_namespace: HashMap<String, Vec<usize>>,
}

impl SidecarIndex {
    pub(crate) fn build(sidecars: &[Resource<Sidecar>]) -> SidecarIndex {
        let mut positions: Vec<usize> = (0..sidecars.len()).collect();
        // RFC 3339 UTC timestamps sort as text; none (files) counts as oldest.
        positions.sort_by(|&a, &b| {
            let key = |r: &Resource<Sidecar>| {
                (
                    r.metadata.creation_timestamp.clone(),
                    r.metadata.name.clone(),
                )
            };
            key(&sidecars[a]).cmp(&key(&sidecars[b]))
        });
        let mut by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for position in positions {
            by_namespace
                .entry(namespace_of(&sidecars[position]).to_string())
                .or_default()
                .push(position);
        }
        SidecarIndex { by_namespace }
    }
}

fn has_selector(sidecar: &Sidecar) -> bool {
    sidecar
        .workload_selector
        .as_ref()
        .is_some_and(|s| !s.labels.is_empty())
}

impl MeshSnapshot {
    /// The Sidecar that applies to `proxy`, if any.
    pub fn sidecar_for(&self, proxy: &Proxy) -> Option<&Resource<Sidecar>> {
        let sidecars = &self.config.sidecars;
        let in_namespace = |namespace: &str| {
            self.sidecar_index()
                .by_namespace
                .get(namespace)
                .into_iter()
                .flatten()
                .map(|&position| &sidecars[position])
        };
        let selecting = in_namespace(&proxy.namespace).find(|sidecar| {
            sidecar.spec.workload_selector.as_ref().is_some_and(|s| {
                !s.labels.is_empty() && s.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
            })
        });
        selecting
            .or_else(|| in_namespace(&proxy.namespace).find(|s| !has_selector(&s.spec)))
            .or_else(|| {
                in_namespace(&self.settings.root_namespace).find(|s| !has_selector(&s.spec))
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ConfigSet, MeshSettings, MeshSnapshot, Proxy, ProxyType};

    fn snapshot(yaml: &str) -> MeshSnapshot {
        let resources = mesh_config::parse_all("test.yaml", yaml).expect("test YAML parses");
        let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
        MeshSnapshot::from_config(config, MeshSettings::default())
    }

    fn sidecar(namespace: &str, name: &str, selector: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{selector}  egress: [{{hosts: ['./*']}}]\n"
        )
    }

    fn proxy(namespace: &str, app: &str) -> Proxy {
        Proxy {
            id: format!("sidecar~10.0.0.7~p.{namespace}~{namespace}.svc.cluster.local"),
            proxy_type: ProxyType::Sidecar,
            ip_addresses: vec!["10.0.0.7".into()],
            pod_id: format!("p.{namespace}"),
            namespace: namespace.into(),
            dns_domain: String::new(),
            labels: [("app".to_string(), app.to_string())].into(),
            cluster_id: String::new(),
            service_account: String::new(),
            workload_name: String::new(),
            interception_mode: String::new(),
            istio_version: String::new(),
            mesh_id: String::new(),
        }
    }

    fn chosen(snapshot: &MeshSnapshot, proxy: &Proxy) -> Option<String> {
        snapshot
            .sidecar_for(proxy)
            .map(|s| format!("{}/{}", s.namespace_or(""), s.metadata.name))
    }

    #[test]
    fn selector_then_namespace_then_root() {
        let yaml = [
            sidecar("istio-system", "mesh", ""),
            sidecar("ns", "default", ""),
            sidecar(
                "ns",
                "server",
                "  workloadSelector: {labels: {app: server}}\n",
            ),
        ]
        .concat();
        let snapshot = snapshot(&yaml);
        assert_eq!(
            chosen(&snapshot, &proxy("ns", "server")).as_deref(),
            Some("ns/server")
        );
        assert_eq!(
            chosen(&snapshot, &proxy("ns", "client")).as_deref(),
            Some("ns/default")
        );
        assert_eq!(
            chosen(&snapshot, &proxy("other", "server")).as_deref(),
            Some("istio-system/mesh")
        );
    }
}
