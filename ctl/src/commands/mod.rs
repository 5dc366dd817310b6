//! One module per `trireme` subcommand.

pub mod analyze;
pub mod token;
pub mod validate;
