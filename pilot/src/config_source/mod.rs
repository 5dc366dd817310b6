//! Where pilot's Istio config comes from. For now a directory of YAML that is
//! watched for changes; the bus (fed by galley) comes next.

pub mod directory;

pub use directory::{DirectorySource, LoadReport};
