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

/// A listen address that can be turned off with `none` (a service's
/// optional ports: pilot's mTLS xDS, the webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<std::net::SocketAddr>);

/// Reads an [`OptionalAddr`]: `host:port` or `none`.
pub fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|addr| OptionalAddr(Some(addr)))
        .map_err(|error| format!("{text:?}: {error} (or `none`)"))
}

/// Reads durations on the command line and in environment variables:
/// `500ms`, `3s`, `1m`, and sums of them the way Go's `time.ParseDuration`
/// (and so Istio's environment variables) writes whole numbers: `2h0m0s`,
/// `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (use e.g. 500ms, 3s, 1h30m)".into());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a whole number at {rest:?}"));
        }
        let number: u32 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: {} is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "" => return Err(format!("{text:?} has no unit (use ms, s, m or h)")),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            unit => {
                return Err(format!(
                    "{text:?} has unknown unit {unit:?} (use ms, s, m or h)"
                ));
            }
        };
        total = total.saturating_add(unit.saturating_mul(number));
        rest = &rest[unit_len..];
    }
    Ok(total)
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

    #[test]
    fn reads_istio_style_durations() {
        let cases = [
            ("24h", 24 * 3_600_000),
            ("2h0m0s", 2 * 3_600_000),
            ("1h30m", 90 * 60_000),
            ("90s", 90_000),
            ("4s", 4000),
            ("500ms", 500),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in ["", "24", "1d", "h", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
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
