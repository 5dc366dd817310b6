//! Service registries: where services and endpoints come from. Each registry
//! implements [`ServiceRegistry`]; pilot aggregates them into one view.

pub mod kubernetes;
pub mod service_entries;

use std::collections::BTreeMap;

use crate::model::{ConfigSet, Endpoint, MeshSettings, Service};

/// Services and their endpoints from one source.
pub trait ServiceRegistry {
    /// A short name for debug pages (`ServiceEntry`, `Kubernetes`).
    fn name(&self) -> &'static str;
    fn services(&self) -> Vec<Service>;
    /// Endpoints by service host name.
    fn endpoints(&self) -> BTreeMap<String, Vec<Endpoint>>;
}

/// Merges registries: the first to define a host name owns it.
pub fn aggregate(
    registries: &[&dyn ServiceRegistry],
) -> (BTreeMap<String, Service>, BTreeMap<String, Vec<Endpoint>>) {
    let mut services = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for registry in registries {
        let registry_endpoints = registry.endpoints();
        for service in registry.services() {
            if services.contains_key(&service.hostname) {
                continue;
            }
            if let Some(eps) = registry_endpoints.get(&service.hostname) {
                endpoints.insert(service.hostname.clone(), eps.clone());
            }
            services.insert(service.hostname.clone(), service);
        }
    }
    (services, endpoints)
}

/// The registry view of a config set: Kubernetes first, then ServiceEntry +
/// WorkloadEntry (Istio's order), so a Service's host wins over a
/// ServiceEntry's.
pub fn from_config(
    config: &ConfigSet,
    settings: &MeshSettings,
) -> (BTreeMap<String, Service>, BTreeMap<String, Vec<Endpoint>>) {
    let service_entries = service_entries::ServiceEntryRegistry::new(config, settings);
    aggregate(&[config.kubernetes.as_ref(), &service_entries])
}
