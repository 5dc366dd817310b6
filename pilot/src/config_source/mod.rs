//! Where pilot's Istio config comes from: galley's bucket on the bus
//! (`--nats-url`), or a directory of YAML watched for changes
//! (`--config-dir`, for tests and single-process setups).

pub mod bus;
pub mod directory;

pub use directory::{DirectorySource, LoadReport};
