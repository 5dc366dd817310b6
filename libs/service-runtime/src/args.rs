use std::time::Duration;

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags shared by every service. Flatten into each binary's own arguments.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Log line format.
    #[arg(long, env = "TRIREME_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,pilot=debug`.
    #[arg(long, env = "TRIREME_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Longest time in-flight work may take to finish after SIGTERM/SIGINT
    /// before the process exits anyway.
    #[arg(long, env = "TRIREME_DRAIN_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// Reads durations such as `500ms`, `3s` or `1m` on the command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!(
            "{text:?} has unknown unit {unit:?} (use ms, s, m or h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn reads_flag_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }
}

/// The flags every control-plane service (pilot, citadel, galley, injector)
/// shares: its admin HTTP address, the bus, and the runtime flags.
#[derive(Debug, Clone, Args)]
pub struct ControlPlaneArgs {
    /// Address of the HTTP server for /metrics, /healthz/live, /healthz/ready and /version.
    #[arg(long, env = "TRIREME_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    pub http_addr: std::net::SocketAddr,

    #[command(flatten)]
    pub bus: BusArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where a control-plane service finds the NATS bus.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// NATS server URL(s), comma-separated, e.g. `nats://nats.istio-system:4222`.
    #[arg(
        long,
        env = "TRIREME_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}
