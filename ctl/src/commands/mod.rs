//! One module per `trireme` subcommand.

pub mod analyze;
mod bus;
pub mod kube_inject;
pub mod proxy_status;
pub mod token;
pub mod validate;
