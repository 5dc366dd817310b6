//! The Kubernetes service registry: Services, EndpointSlices, Pods,
//! Namespaces and Nodes become services and endpoints, as in Istio.
//!
//! - [`KubeIndex`] holds the objects (the fields pilot reads) and applies
//!   kube-runtime watch events to them; all the logic is here, tested by
//!   feeding it objects.
//! - [`KubeSnapshot`] is an immutable view of the index's services and
//!   endpoints, carried in [`crate::model::ConfigSet::kubernetes`] so the
//!   push pipeline merges it with ServiceEntries (Kubernetes first: a host
//!   defined by a Service wins over a ServiceEntry's).
//! - [`watch`] is the thin layer: one kube-runtime watcher per kind (with
//!   its default backoff) feeding a shared index, and the task that merges
//!   its snapshots into the config updates.

pub mod index;
pub mod selectors;
pub mod watch;

use std::collections::BTreeMap;

pub use index::{Kind, KubeIndex, kubernetes_protocol};
pub use selectors::DiscoverySelectors;

use super::ServiceRegistry;
use crate::model::{Endpoint, Service};

/// What the Kubernetes registry needs of the mesh config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `cluster.local` unless configured (MeshSettings' domain suffix).
    pub domain_suffix: String,
    /// Namespaces whose objects are kept; none means all.
    pub discovery_selectors: DiscoverySelectors,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            domain_suffix: "cluster.local".into(),
            discovery_selectors: DiscoverySelectors::default(),
        }
    }
}

/// The Kubernetes registry at one moment: services (sorted by host name)
/// and their endpoints. Empty when Kubernetes is not in use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeSnapshot {
    pub services: Vec<Service>,
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

impl KubeSnapshot {
    /// Whether two snapshots define the same services (endpoints aside).
    pub fn same_services(&self, other: &KubeSnapshot) -> bool {
        self.services == other.services
    }
}

impl ServiceRegistry for KubeSnapshot {
    fn name(&self) -> &'static str {
        "Kubernetes"
    }

    fn services(&self) -> Vec<Service> {
        self.services.clone()
    }

    fn endpoints(&self) -> BTreeMap<String, Vec<Endpoint>> {
        self.endpoints.clone()
    }
}

impl ServiceRegistry for KubeIndex {
    fn name(&self) -> &'static str {
        "Kubernetes"
    }

    fn services(&self) -> Vec<Service> {
        self.snapshot().services
    }

    fn endpoints(&self) -> BTreeMap<String, Vec<Endpoint>> {
        self.snapshot().endpoints
    }
}
