//! What pilot knows about the mesh, independent of Envoy: proxies, services
//! and endpoints, the immutable snapshot of config + registry that every
//! push is generated from, what each proxy may see of it, and which
//! destinations accept mutual TLS.

pub mod instances;
pub mod mtls;
pub mod peer_authentication;
pub mod proxy;
pub mod scope;
pub mod service;
pub mod sidecar_scope;
pub mod snapshot;

pub use instances::ServiceInstance;
pub use peer_authentication::{MtlsMode, WorkloadMtls, destination_mtls_allowed};
pub use proxy::{InterceptionMode, Proxy, ProxyParseError, ProxyType};
pub use scope::ProxyScope;
pub use service::{Endpoint, Protocol, Service, ServicePort};
pub use snapshot::{ConfigSet, MeshSettings, MeshSnapshot};
