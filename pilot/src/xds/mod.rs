//! The xDS side of pilot: which resources each proxy gets, how they are
//! generated once per proxy view and shared, and the ADS server that streams
//! them (state-of-the-world and delta), tracking ACK/NACK per proxy and type.

pub mod authorization;
pub mod connection;
pub mod debounce;
pub mod delta;
pub mod generator;
pub mod grpc;
pub mod metrics;
pub mod push_context;
pub mod resource_type;
pub mod server;
pub mod sotw;
pub mod status_publisher;
pub mod stream;
pub mod sync_status;
pub mod wire;

pub use metrics::XdsMetrics;
pub use push_context::{PushContext, PushTrigger};
pub use resource_type::ResourceType;
pub use server::AdsServer;
