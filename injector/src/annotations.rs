//! The pod annotations Istio users put on workloads to shape their sidecar,
//! read and checked. A value that cannot be honoured is an error naming the
//! annotation (the pod is refused rather than injected wrongly); an
//! annotation in Istio's namespaces that Trireme does not act on, or that
//! Istio does not define (a typo), is a warning.

use std::collections::BTreeMap;

use crate::selector::Labels;

pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const REWRITE_APP_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
pub const TEMPLATES: &str = "inject.istio.io/templates";

/// Annotations read elsewhere (the injection decision, the status).
const HANDLED_ELSEWHERE: [&str; 2] = ["sidecar.istio.io/inject", "sidecar.istio.io/status"];

/// Istio annotations Trireme knows and does not act on.
const NOT_SUPPORTED: [&str; 15] = [
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/proxyImageType",
    "sidecar.istio.io/statsInclusionPrefixes",
    "sidecar.istio.io/statsInclusionRegexps",
    "sidecar.istio.io/statsInclusionSuffixes",
    "sidecar.istio.io/statsHistogramBuckets",
    "sidecar.istio.io/extraStatTags",
    "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount",
    "sidecar.istio.io/bootstrapOverride",
    "sidecar.istio.io/discoveryAddress",
    "sidecar.istio.io/enableCoreDump",
    "traffic.sidecar.istio.io/kubevirtInterfaces",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "proxy.istio.io/overrides",
];

/// Annotation prefixes that belong to the sidecar: anything under them that
/// is not known is reported.
const SIDECAR_PREFIXES: [&str; 5] = [
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/",
    "proxy.istio.io/",
];

const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// The settings the annotations ask for; `None` leaves the config's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    pub proxy_image: Option<String>,
    pub log_level: Option<String>,
    pub agent_log_level: Option<String>,
    /// `REDIRECT`, or `NONE` for no capture (and no init container).
    pub interception_mode: Option<String>,
    pub rewrite_app_probes: Option<bool>,
    pub native_sidecar: Option<bool>,
    /// `proxy.istio.io/config`, parsed.
    pub proxy_config: serde_json::Map<String, serde_json::Value>,
    pub include_inbound_ports: Option<String>,
    pub exclude_inbound_ports: Option<String>,
    pub include_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ip_ranges: Option<String>,
    pub include_outbound_ports: Option<String>,
    pub exclude_outbound_ports: Option<String>,
    pub status_port: Option<u16>,
    pub readiness_initial_delay_seconds: Option<u32>,
    pub readiness_period_seconds: Option<u32>,
    pub readiness_failure_threshold: Option<u32>,
    pub merge_metrics: Option<bool>,
}

/// An annotation whose value cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason}")]
pub struct AnnotationError {
    pub annotation: String,
    pub reason: String,
}

/// The overrides `annotations` ask for, and warnings about the ones that
/// do nothing; every bad value is reported, not only the first.
pub fn read(annotations: &Labels) -> Result<(Overrides, Vec<String>), Vec<AnnotationError>> {
    let mut overrides = Overrides::default();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for (name, value) in annotations {
        match apply(&mut overrides, name, value) {
            Ok(Applied::Yes) => {}
            Ok(Applied::NotOurs) => {
                if let Some(warning) = unhandled_warning(name) {
                    warnings.push(warning);
                }
            }
            Err(reason) => errors.push(AnnotationError {
                annotation: name.clone(),
                reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok((overrides, warnings))
    } else {
        Err(errors)
    }
}

enum Applied {
    Yes,
    NotOurs,
}

fn apply(overrides: &mut Overrides, name: &str, value: &str) -> Result<Applied, String> {
    let text = || Some(value.to_string());
    match name {
        PROXY_CPU => insert_quantity(&mut overrides.requests, "cpu", value)?,
        PROXY_CPU_LIMIT => insert_quantity(&mut overrides.limits, "cpu", value)?,
        PROXY_MEMORY => insert_quantity(&mut overrides.requests, "memory", value)?,
        PROXY_MEMORY_LIMIT => insert_quantity(&mut overrides.limits, "memory", value)?,
        PROXY_IMAGE => overrides.proxy_image = Some(image(value)?),
        LOG_LEVEL => overrides.log_level = Some(log_level(value)?),
        AGENT_LOG_LEVEL => overrides.agent_log_level = Some(agent_log_level(value)?),
        INTERCEPTION_MODE => overrides.interception_mode = Some(interception_mode(value)?),
        REWRITE_APP_PROBERS => overrides.rewrite_app_probes = Some(boolean(value)?),
        NATIVE_SIDECAR => overrides.native_sidecar = Some(boolean(value)?),
        MERGE_METRICS => overrides.merge_metrics = Some(boolean(value)?),
        PROXY_CONFIG => overrides.proxy_config = proxy_config(value)?,
        INCLUDE_INBOUND_PORTS => {
            overrides.include_inbound_ports = port_selection(value).and(Ok(text()))?
        }
        EXCLUDE_INBOUND_PORTS => {
            overrides.exclude_inbound_ports = port_list(value).and(Ok(text()))?
        }
        INCLUDE_OUTBOUND_IP_RANGES => {
            overrides.include_outbound_ip_ranges = cidr_selection(value).and(Ok(text()))?
        }
        EXCLUDE_OUTBOUND_IP_RANGES => {
            overrides.exclude_outbound_ip_ranges = cidr_list(value).and(Ok(text()))?
        }
        INCLUDE_OUTBOUND_PORTS => {
            overrides.include_outbound_ports = port_list(value).and(Ok(text()))?
        }
        EXCLUDE_OUTBOUND_PORTS => {
            overrides.exclude_outbound_ports = port_list(value).and(Ok(text()))?
        }
        STATUS_PORT => overrides.status_port = Some(port(value)?),
        READINESS_INITIAL_DELAY => {
            overrides.readiness_initial_delay_seconds = Some(whole_number(value)?)
        }
        READINESS_PERIOD => overrides.readiness_period_seconds = Some(positive_number(value)?),
        READINESS_FAILURE_THRESHOLD => {
            overrides.readiness_failure_threshold = Some(positive_number(value)?)
        }
        TEMPLATES => templates(value)?,
        _ => return Ok(Applied::NotOurs),
    }
    Ok(Applied::Yes)
}

fn unhandled_warning(name: &str) -> Option<String> {
    if HANDLED_ELSEWHERE.contains(&name) {
        return None;
    }
    if NOT_SUPPORTED.contains(&name) {
        return Some(format!(
            "annotation {name} is not supported by Trireme's injector and is ignored"
        ));
    }
    SIDECAR_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
        .then(|| format!("annotation {name} is not a sidecar annotation Istio defines (a typo?); it is ignored"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn log_level(value: &str) -> Result<String, String> {
    if LOG_LEVELS.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a log level; expected one of {}",
            LOG_LEVELS.join(", ")
        ))
    }
}

/// The agent's log filter for a level written as Envoy's: the agent's
/// logging knows `warn` and `error`, not `warning` and `critical`.
pub fn agent_log_level(value: &str) -> Result<String, String> {
    Ok(match log_level(value)?.as_str() {
        "warning" => "warn".to_string(),
        "critical" => "error".to_string(),
        other => other.to_string(),
    })
}

fn interception_mode(value: &str) -> Result<String, String> {
    match value {
        "REDIRECT" | "NONE" => Ok(value.to_string()),
        "TPROXY" => Err("TPROXY is not supported; use REDIRECT or NONE".to_string()),
        other => Err(format!(
            "{other:?} is not an interception mode; expected REDIRECT or NONE"
        )),
    }
}

fn image(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{value:?} is not an image reference"))
    } else {
        Ok(value.to_string())
    }
}

fn templates(value: &str) -> Result<(), String> {
    if value.split(',').all(|name| name.trim() == "sidecar") {
        Ok(())
    } else {
        Err(format!(
            "{value:?}: only the `sidecar` template is available"
        ))
    }
}

fn proxy_config(value: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    // Istio reads this annotation as YAML (JSON is YAML too).
    let parsed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(value).map_err(|error| format!("not YAML: {error}"))?;
    match serde_json::to_value(parsed) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(serde_json::Value::Null) => Ok(serde_json::Map::new()),
        Ok(_) => Err("must be a ProxyConfig object".to_string()),
        Err(error) => Err(format!("cannot be read as JSON: {error}")),
    }
}

fn port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{value:?} is not a port number (1-65535)")),
    }
}

fn whole_number(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

fn positive_number(value: &str) -> Result<u32, String> {
    match whole_number(value)? {
        0 => Err("must be at least 1".to_string()),
        number => Ok(number),
    }
}

/// A comma-separated list of ports, possibly empty.
fn port_list(value: &str) -> Result<(), String> {
    for item in value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        port(item)?;
    }
    Ok(())
}

/// `*`, or a list of ports.
fn port_selection(value: &str) -> Result<(), String> {
    if value.trim() == "*" {
        Ok(())
    } else {
        port_list(value)
    }
}

fn cidr_list(value: &str) -> Result<(), String> {
    for item in value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        cidr(item)?;
    }
    Ok(())
}

fn cidr_selection(value: &str) -> Result<(), String> {
    if value.trim() == "*" {
        Ok(())
    } else {
        cidr_list(value)
    }
}

fn cidr(item: &str) -> Result<(), String> {
    let (address, prefix) = item.split_once('/').unwrap_or((item, ""));
    let max = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return Err(format!("{item:?} is not an IP range (CIDR)")),
    };
    if prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|bits| bits <= max) {
        Ok(())
    } else {
        Err(format!("{item:?} has a prefix length outside 0-{max}"))
    }
}

/// Records a Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1e3`).
fn insert_quantity(
    into: &mut BTreeMap<String, String>,
    resource: &str,
    value: &str,
) -> Result<(), String> {
    if is_quantity(value) {
        into.insert(resource.to_string(), value.to_string());
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1Gi)"
        ))
    }
}

fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 16] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let digits = number.strip_prefix('+').unwrap_or(number);
    let well_formed_number = !digits.is_empty()
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit())
        && !digits.contains('+');
    let exponent = suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    well_formed_number && (SUFFIXES.contains(&suffix) || exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_resources_image_levels_and_capture() {
        let (overrides, warnings) = read(&annotations(&[
            (PROXY_CPU, "250m"),
            (PROXY_MEMORY_LIMIT, "1Gi"),
            (PROXY_IMAGE, "registry.example/agent:debug"),
            (LOG_LEVEL, "debug"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 169.254.169.254/32"),
            (INCLUDE_INBOUND_PORTS, "*"),
            (PROXY_CONFIG, "holdApplicationUntilProxyStarts: true"),
            ("app.kubernetes.io/name", "ignored"),
        ]))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(overrides.requests["cpu"], "250m");
        assert_eq!(overrides.limits["memory"], "1Gi");
        assert_eq!(overrides.log_level.as_deref(), Some("debug"));
        assert_eq!(
            overrides.proxy_config["holdApplicationUntilProxyStarts"],
            serde_json::Value::Bool(true)
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_its_annotation() {
        let errors = read(&annotations(&[
            (PROXY_CPU, "a lot"),
            (PROXY_MEMORY, "128MB"),
            (INTERCEPTION_MODE, "TPROXY"),
            (EXCLUDE_INBOUND_PORTS, "8080,70000"),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (LOG_LEVEL, "loud"),
            (PROXY_CONFIG, "[1, 2]"),
            (READINESS_PERIOD, "0"),
        ]))
        .unwrap_err();
        let named: Vec<&str> = errors.iter().map(|e| e.annotation.as_str()).collect();
        assert_eq!(named.len(), 8, "{errors:?}");
        assert!(named.contains(&PROXY_CPU) && named.contains(&PROXY_MEMORY));
        let tproxy = errors
            .iter()
            .find(|e| e.annotation == INTERCEPTION_MODE)
            .unwrap();
        assert!(
            tproxy.reason.contains("TPROXY is not supported"),
            "{tproxy}"
        );
    }

    #[test]
    fn unknown_and_unsupported_sidecar_annotations_are_warnings() {
        let (_, warnings) = read(&annotations(&[
            ("sidecar.istio.io/proxyCpu", "100m"),
            ("sidecar.istio.io/componentLogLevel", "misc:error"),
            ("sidecar.istio.io/inject", "true"),
            ("example.com/owner", "me"),
        ]))
        .unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("componentLogLevel") && warnings[0].contains("not supported"));
        assert!(warnings[1].contains("proxyCpu") && warnings[1].contains("typo"));
    }

    #[test]
    fn quantities_follow_kubernetes() {
        for good in ["100m", "0.5", "2", "128Mi", "1Gi", "1e3", "1.5G", "+1"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "1..2", "128MB", "1 Gi", "-1", "1e", "abc"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
