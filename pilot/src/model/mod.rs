//! What pilot knows about the mesh, independent of Envoy: proxies, services
//! and endpoints, and the immutable snapshot of config + registry that every
//! push is generated from.

pub mod proxy;
pub mod service;
pub mod snapshot;

pub use proxy::{Proxy, ProxyParseError, ProxyType};
pub use service::{Endpoint, Protocol, Service, ServicePort};
pub use snapshot::{ConfigSet, MeshSettings, MeshSnapshot};
