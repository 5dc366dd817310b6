//! One module per `trireme` subcommand.

pub mod validate;
