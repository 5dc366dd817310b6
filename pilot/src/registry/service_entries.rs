//! Services declared with ServiceEntry, with endpoints listed inline or
//! selected from WorkloadEntries by `workloadSelector`.

use std::collections::BTreeMap;

use mesh_config::Resource;
use mesh_config::networking::service_entry::{Location, Resolution as SeResolution};
use mesh_config::networking::{ServiceEntry, WorkloadEntry};

use super::ServiceRegistry;
use crate::model::snapshot::namespace_of;
use crate::model::{
    ConfigSet, Endpoint, MeshSettings, Protocol, Service, ServicePort, service::Resolution,
};

/// Services and endpoints from ServiceEntry and WorkloadEntry resources.
pub struct ServiceEntryRegistry<'a> {
    config: &'a ConfigSet,
    settings: &'a MeshSettings,
}

impl<'a> ServiceEntryRegistry<'a> {
    pub fn new(config: &'a ConfigSet, settings: &'a MeshSettings) -> Self {
        Self { config, settings }
    }

    fn hosts<'r>(&self, entry: &'r Resource<ServiceEntry>) -> impl Iterator<Item = String> + 'r {
        let namespace = namespace_of(entry).to_string();
        let suffix = self.settings.domain_suffix.clone();
        entry.spec.hosts.iter().map(move |host| {
            if host.contains('.') || host.contains('*') {
                host.clone()
            } else {
                format!("{host}.{namespace}.svc.{suffix}")
            }
        })
    }

    /// Endpoints of one entry: inline ones, or WorkloadEntries in the same
    /// namespace whose labels match its selector.
    fn entry_endpoints(&self, entry: &Resource<ServiceEntry>) -> Vec<Endpoint> {
        match &entry.spec.workload_selector {
            Some(selector) => self
                .config
                .workload_entries
                .iter()
                .filter(|we| namespace_of(we) == namespace_of(entry))
                .filter(|we| {
                    selector
                        .labels
                        .iter()
                        .all(|(k, v)| we.spec.labels.get(k) == Some(v))
                })
                .map(|we| endpoint_from(&we.spec))
                .collect(),
            None => entry.spec.endpoints.iter().map(endpoint_from).collect(),
        }
    }
}

fn endpoint_from(workload: &WorkloadEntry) -> Endpoint {
    Endpoint {
        address: workload.address.clone(),
        ports: workload.ports.clone(),
        labels: workload.labels.clone(),
        weight: workload.weight.filter(|w| *w > 0).unwrap_or(1),
        locality: workload.locality.clone(),
        service_account: workload.service_account.clone(),
        network: workload.network.clone(),
    }
}

impl ServiceRegistry for ServiceEntryRegistry<'_> {
    fn name(&self) -> &'static str {
        "ServiceEntry"
    }

    fn services(&self) -> Vec<Service> {
        let mut services = Vec::new();
        for entry in &self.config.service_entries {
            let ports: Vec<ServicePort> = entry
                .spec
                .ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone(),
                    number: p.number,
                    protocol: Protocol::of_port(&p.protocol, &p.name),
                    target_port: p.target_port.filter(|t| *t > 0),
                })
                .collect();
            let resolution = match entry.spec.resolution {
                Some(SeResolution::Dns) | Some(SeResolution::DnsRoundRobin) => Resolution::Dns,
                Some(SeResolution::Static) => Resolution::Static,
                _ => Resolution::Passthrough,
            };
            for hostname in self.hosts(entry) {
                services.push(Service {
                    hostname,
                    namespace: namespace_of(entry).to_string(),
                    ports: ports.clone(),
                    resolution,
                    mesh_external: entry.spec.location != Some(Location::MeshInternal),
                    addresses: entry.spec.addresses.clone(),
                    export_to: entry.spec.export_to.clone(),
                    subject_alt_names: entry.spec.subject_alt_names.clone(),
                });
            }
        }
        services
    }

    fn endpoints(&self) -> BTreeMap<String, Vec<Endpoint>> {
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        for entry in &self.config.service_entries {
            let entry_endpoints = self.entry_endpoints(entry);
            for hostname in self.hosts(entry) {
                endpoints
                    .entry(hostname)
                    .or_default()
                    .extend(entry_endpoints.iter().cloned());
            }
        }
        endpoints
    }
}
