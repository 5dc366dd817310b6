//! Helpers shared by galley's tests (and its benchmark, through `#[path]`).

pub mod certs;
