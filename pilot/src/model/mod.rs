//! What pilot knows about the mesh, independent of Envoy: proxies, services
//! and endpoints, and the immutable snapshot of config + registry that every
//! push is generated from.

pub mod instances;
pub mod peer_authentication;
pub mod proxy;
pub mod service;
pub mod sidecar_scope;
pub mod snapshot;

pub use instances::ServiceInstance;
pub use peer_authentication::{MtlsMode, WorkloadMtls, destination_mtls_allowed};
pub use proxy::{InterceptionMode, Proxy, ProxyParseError, ProxyType};
pub use service::{Endpoint, Protocol, Service, ServicePort};
pub use snapshot::{ConfigSet, MeshSettings, MeshSnapshot};
