//! What the agent knows about its workload and its control plane, read the
//! way Istio's injected sidecar receives it: environment variables (`POD_NAME`,
//! `POD_NAMESPACE`, `INSTANCE_IP`, `SERVICE_ACCOUNT`, `CA_ADDR`,
//! `TRUST_DOMAIN`, `PROXY_CONFIG`, `ISTIO_META_*`, `ISTIO_KUBE_APP_PROBERS`),
//! each also settable by a flag, flags winning.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Istio's proxy types, as in the node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

impl ProxyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        }
    }
}

/// How the agent talks to pilot: Istio's `controlPlaneAuthPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ControlPlaneAuthPolicy {
    /// TLS to pilot's 15012, the agent presenting its workload certificate.
    #[default]
    MutualTls,
    /// Plain text, to pilot's 15010: tests and trusted networks only.
    None,
}

/// The part of Istio's mesh `ProxyConfig` (the `PROXY_CONFIG` JSON and the
/// `proxy.istio.io/config` annotation) the agent acts on; other fields are
/// accepted and ignored, as a newer Istio's would be.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    pub discovery_address: Option<String>,
    pub control_plane_auth_policy: Option<ControlPlaneAuthPolicy>,
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub termination_drain_duration: Option<Duration>,
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    pub proxy_admin_port: Option<u16>,
    pub status_port: Option<u16>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("PROXY_CONFIG: {path}: {reason}")]
    ProxyConfig { path: String, reason: String },
    #[error("{variable}: {reason}")]
    Invalid { variable: String, reason: String },
}

impl ProxyConfig {
    /// Parses the `PROXY_CONFIG` JSON, naming the field that is wrong.
    pub fn from_json(json: &str) -> Result<ProxyConfig, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(deserializer).map_err(|error| ConfigError::ProxyConfig {
            path: error.path().to_string(),
            reason: error.inner().to_string(),
        })
    }
}

/// Protobuf JSON durations: `"5s"`, `"1.5s"`, `"100ms"`.
fn deserialize_duration<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// Accepts the protobuf JSON form (`1.5s`) as well as `100ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let seconds = text
        .strip_suffix('s')
        .filter(|s| !s.ends_with('m'))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0);
    if let Some(seconds) = seconds {
        return Ok(Duration::from_secs_f64(seconds));
    }
    service_runtime::args::parse_duration(text)
}

/// Everything about the workload that goes into the node Envoy announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub pod_name: String,
    pub namespace: String,
    pub instance_ips: Vec<String>,
    pub service_account: String,
    pub trust_domain: String,
    pub labels: BTreeMap<String, String>,
    /// `ISTIO_META_*` variables (prefix removed) and anything else destined
    /// for the node metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Workload {
    /// Istio's node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    pub fn node_id(&self, kind: ProxyKind) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            kind.as_str(),
            self.instance_ips
                .first()
                .map_or("127.0.0.1", String::as_str),
            self.pod_name,
            self.namespace,
            self.namespace
        )
    }

    /// The workload's SPIFFE identity.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// How Envoy's traffic is captured: `REDIRECT` (iptables, the default)
    /// or `NONE` (explicit listeners, no root needed).
    pub fn interception_mode(&self) -> &str {
        self.metadata
            .get("INTERCEPTION_MODE")
            .map_or("REDIRECT", String::as_str)
    }
}

/// String-to-string maps: node metadata and labels.
pub type StringMap = BTreeMap<String, String>;

/// The `ISTIO_META_*` variables of `environment`, prefix removed; Istio's
/// agent copies them into the node metadata. `ISTIO_METAJSON_LABELS` holds
/// the pod labels as a JSON object.
pub fn node_metadata_from_env<'a>(
    environment: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(StringMap, StringMap), ConfigError> {
    let mut metadata = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for (name, value) in environment {
        if name == "ISTIO_METAJSON_LABELS" {
            labels = serde_json::from_str(value).map_err(|error| ConfigError::Invalid {
                variable: name.to_owned(),
                reason: format!("not a JSON object of strings: {error}"),
            })?;
        } else if let Some(key) = name.strip_prefix("ISTIO_META_") {
            metadata.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok((metadata, labels))
}

/// Parses `key=value,key=value` (the `--labels` flag).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| format!("{pair:?} is not key=value"))
        })
        .collect()
}

/// Where the agent keeps its sockets and scratch files, under `--root-dir`
/// (`/` in a pod, a temporary directory in tests and the local demo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// The SDS socket, at Istio's path.
    pub fn sds_socket(&self) -> PathBuf {
        self.root.join("var/run/secrets/workload-spiffe-uds/socket")
    }

    /// The socket Envoy's ADS stream goes to; the agent proxies it to pilot.
    pub fn xds_socket(&self) -> PathBuf {
        self.root.join("etc/istio/proxy/XDS")
    }

    /// Where the bootstrap is written.
    pub fn bootstrap(&self) -> PathBuf {
        self.root.join("etc/istio/proxy/envoy-rev.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_config_reads_istio_json_and_names_a_bad_field() {
        let config = ProxyConfig::from_json(
            r#"{"discoveryAddress":"pilot.istio-system.svc:15012",
                "controlPlaneAuthPolicy":"NONE","terminationDrainDuration":"7.5s",
                "holdApplicationUntilProxyStarts":true,
                "proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"},
                "tracing":{"zipkin":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            config.discovery_address.as_deref(),
            Some("pilot.istio-system.svc:15012")
        );
        assert_eq!(
            config.control_plane_auth_policy,
            Some(ControlPlaneAuthPolicy::None)
        );
        assert_eq!(
            config.termination_drain_duration,
            Some(Duration::from_millis(7500))
        );
        assert_eq!(config.hold_application_until_proxy_starts, Some(true));
        assert_eq!(config.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");

        let error = ProxyConfig::from_json(r#"{"terminationDrainDuration": 5}"#).unwrap_err();
        assert!(
            error.to_string().contains("terminationDrainDuration"),
            "{error}"
        );
        let error =
            ProxyConfig::from_json(r#"{"controlPlaneAuthPolicy":"SOMETIMES"}"#).unwrap_err();
        assert!(
            error.to_string().contains("controlPlaneAuthPolicy"),
            "{error}"
        );
    }

    #[test]
    fn node_id_and_identity_follow_istio() {
        let workload = Workload {
            pod_name: "reviews-v1-5d8f".into(),
            namespace: "bookinfo".into(),
            instance_ips: vec!["10.1.0.7".into()],
            service_account: "reviews".into(),
            trust_domain: "cluster.local".into(),
            labels: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        assert_eq!(
            workload.node_id(ProxyKind::Sidecar),
            "sidecar~10.1.0.7~reviews-v1-5d8f.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(
            workload.spiffe_id(),
            "spiffe://cluster.local/ns/bookinfo/sa/reviews"
        );
        assert_eq!(workload.interception_mode(), "REDIRECT");
    }

    #[test]
    fn istio_meta_variables_become_node_metadata() {
        let (metadata, labels) = node_metadata_from_env([
            ("ISTIO_META_INTERCEPTION_MODE", "NONE"),
            (
                "ISTIO_METAJSON_LABELS",
                r#"{"app":"reviews","version":"v1"}"#,
            ),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert_eq!(metadata["INTERCEPTION_MODE"], "NONE");
        assert!(!metadata.contains_key("PATH"));
        assert_eq!(labels["version"], "v1");
        let error = node_metadata_from_env([("ISTIO_METAJSON_LABELS", "[1]")]).unwrap_err();
        assert!(error.to_string().contains("ISTIO_METAJSON_LABELS"));
    }

    #[test]
    fn durations_in_both_notations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }
}
