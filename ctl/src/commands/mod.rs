//! One module per `trireme` subcommand.

pub mod token;
pub mod validate;
