//! What pilot knows about the mesh, independent of Envoy: proxies, services
//! and endpoints, the immutable snapshot of config + registry that every
//! push is generated from, what each proxy may see of it, and which
//! destinations accept mutual TLS.

pub mod mtls;
pub mod proxy;
pub mod scope;
pub mod service;
pub mod snapshot;

pub use proxy::{InterceptionMode, Proxy, ProxyParseError, ProxyType};
pub use scope::ProxyScope;
pub use service::{Endpoint, Protocol, Service, ServicePort};
pub use snapshot::{ConfigSet, MeshSettings, MeshSnapshot};
