//! Types shared by several Istio kinds (`istio.type.v1beta1` and friends).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects workloads by their labels (`istio.type.v1beta1.WorkloadSelector`).
/// An empty selector matches every workload in the resource's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Names the resource a policy attaches to (`istio.type.v1beta1.PolicyTargetReference`),
/// e.g. a Gateway API `Gateway` or a `Service`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A protobuf `google.protobuf.Duration` as Istio's YAML writes it: a string such as
/// `"5s"`, `"1.5s"`, `"100ms"` or `"1h30m"`. Kept as written so that a round trip
/// preserves it; [`Duration::to_std`] parses it. Its schema carries a marker
/// that CRD generation turns into Istio's duration rule (`crd::cel_rules`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("x-trireme-duration" = true))]
pub struct Duration(pub String);

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl Duration {
    /// Parses Go-style durations (`300ms`, `1.5s`, `2h45m`, units ns/us/µs/ms/s/m/h),
    /// which is what Istio accepts. Negative durations are refused.
    pub fn to_std(&self) -> Result<std::time::Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(value: &str) -> Self {
        Duration(value.to_string())
    }
}

fn parse_duration(input: &str) -> Result<std::time::Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit (use ns, us, ms, s, m or h)"))?;
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| err("malformed number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        total_nanos += number * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(err("out of range"));
    }
    Ok(std::time::Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(Duration::from("5s").to_std().unwrap(), Std::from_secs(5));
        assert_eq!(
            Duration::from("1.5s").to_std().unwrap(),
            Std::from_millis(1500)
        );
        assert_eq!(
            Duration::from("100ms").to_std().unwrap(),
            Std::from_millis(100)
        );
        assert_eq!(
            Duration::from("1h30m").to_std().unwrap(),
            Std::from_secs(5400)
        );
        assert_eq!(Duration::from("0").to_std().unwrap(), Std::ZERO);
    }

    #[test]
    fn refuses_malformed_durations() {
        for bad in ["", "5", "-1s", "5 parsecs", "s", "1.2.3s"] {
            assert!(Duration::from(bad).to_std().is_err(), "{bad:?} accepted");
        }
    }
}
