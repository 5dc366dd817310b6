//! Process-level helpers: file descriptor limits, logging and wall-clock
//! timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit (each stream is a
/// socket; the default soft limit is often 1024) and returns the new limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Logs to standard error with a `tracing` filter (the tools' `--log`),
/// keeping standard output for what the runner reads.
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

/// Nanoseconds since the Unix epoch: the clock the runner reads too, so
/// timestamps compare across processes.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
