//! Helpers shared by the injector's tests and its benchmark (which takes
//! them through `#[path]`).
//!
//! Each test crate uses only part of them, hence the allow.
#![allow(dead_code)]

pub mod certs;
pub mod reviews;
