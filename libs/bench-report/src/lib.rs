//! What every Trireme benchmark report shares, so the figures of every
//! bench read the same way and carry where they came from:
//!
//! - [`Machine::detect`] and [`git_revision`]: the machine and the source
//!   the figures were measured on;
//! - [`Summary::of`]: median, p99, mean, min and max of latencies
//!   (nearest-rank percentiles);
//! - [`ProcessUsage`]: another process's CPU seconds and memory from
//!   `/proc`, and its CPU per wall second between two samples;
//! - [`write_json`]: the report as `target/bench/<name>.json`.
//!
//! Only std and serde_json, so every crate's benches can depend on it
//! without making their builds heavier.

mod machine;
mod output;
mod process;
mod summary;

pub use machine::{GitRevision, Machine, git_revision};
pub use output::{target_dir, write_json};
pub use process::{ProcessUsage, clock_ticks_per_second};
pub use summary::{Summary, percentile};
