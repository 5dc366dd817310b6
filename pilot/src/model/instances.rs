//! A proxy's own workload, as Istio's "service instances" of a proxy: the
//! service endpoints whose address is one of the proxy's IPs, each with the
//! port the workload serves it on. Inbound listeners are built from them.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Endpoint, MeshSnapshot, Proxy, Service, ServicePort};

/// One port of one service that the proxy's workload serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInstance<'a> {
    pub service: &'a Service,
    pub port: &'a ServicePort,
    pub endpoint: &'a Endpoint,
    /// The port the workload itself listens on for `port`.
    pub target_port: u32,
}

/// Positions of endpoints by address: `(service host, index in its endpoints)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceIndex {
    by_address: HashMap<String, Vec<(String, usize)>>,
}

impl InstanceIndex {
    pub(crate) fn build<'a>(
        endpoints: impl IntoIterator<Item = (&'a String, &'a Arc<Vec<Endpoint>>)>,
    ) -> InstanceIndex {
        let mut by_address: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        for (host, list) in endpoints {
            for (position, endpoint) in list.iter().enumerate() {
                by_address
                    .entry(endpoint.address.clone())
                    .or_default()
                    .push((host.clone(), position));
            }
        }
        InstanceIndex { by_address }
    }
}

impl MeshSnapshot {
    /// The service instances of `proxy`, ordered by host and port. Only
    /// services in the proxy's namespace count, as in Istio: a service in
    /// another namespace cannot claim a workload it does not own.
    pub fn instances_of(&self, proxy: &Proxy) -> Vec<ServiceInstance<'_>> {
        let mut instances = Vec::new();
        for address in &proxy.ip_addresses {
            let positions = self.instance_index().by_address.get(address);
            for (host, position) in positions.into_iter().flatten() {
                let Some(service) = self.service(host) else {
                    continue;
                };
                if service.namespace != proxy.namespace {
                    continue;
                }
                let endpoint = &self.endpoints(host)[*position];
                instances.extend(service.ports.iter().map(|port| ServiceInstance {
                    service,
                    port,
                    endpoint,
                    target_port: service.endpoint_port(port, endpoint),
                }));
            }
        }
        instances.sort_by(|a, b| {
            (&a.service.hostname, a.port.number).cmp(&(&b.service.hostname, b.port.number))
        });
        instances
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

    fn proxy(ips: &[&str], namespace: &str) -> Proxy {
        Proxy {
            id: format!(
                "sidecar~{}~server-1.{namespace}~{namespace}.svc.cluster.local",
                ips[0]
            ),
            proxy_type: ProxyType::Sidecar,
            ip_addresses: ips.iter().map(|ip| ip.to_string()).collect(),
            pod_id: format!("server-1.{namespace}"),
            namespace: namespace.into(),
            dns_domain: format!("{namespace}.svc.cluster.local"),
            labels: Default::default(),
            cluster_id: String::new(),
            service_account: String::new(),
            workload_name: String::new(),
            interception_mode: String::new(),
            istio_version: String::new(),
            mesh_id: String::new(),
        }
    }

    const MESH: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: ns}
spec:
  hosts: [server.ns.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 5432, name: tcp-db, protocol: TCP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-1, namespace: ns}
spec: {address: 10.0.0.7, labels: {app: server}, ports: {tcp-db: 15432}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: intruder, namespace: elsewhere}
spec:
  hosts: [intruder.elsewhere.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9999, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.7}]
";

    #[test]
    fn instances_are_the_endpoints_at_the_proxy_ip_with_their_ports() {
        let snapshot = snapshot(MESH);
        let instances = snapshot.instances_of(&proxy(&["10.0.0.7"], "ns"));
        let ports: Vec<(u32, u32)> = instances
            .iter()
            .map(|i| (i.port.number, i.target_port))
            .collect();
        assert_eq!(ports, [(80, 8080), (5432, 15432)]);
        assert!(
            snapshot
                .instances_of(&proxy(&["10.0.0.8"], "ns"))
                .is_empty()
        );
    }

    #[test]
    fn any_of_the_proxy_ips_matches_but_only_in_its_namespace() {
        let snapshot = snapshot(MESH);
        let instances = snapshot.instances_of(&proxy(&["fd00::7", "10.0.0.7"], "ns"));
        assert_eq!(instances.len(), 2);
        assert!(
            instances
                .iter()
                .all(|i| i.service.hostname == "server.ns.svc.cluster.local"),
            "a service in another namespace does not claim the workload"
        );
    }
}
