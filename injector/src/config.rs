//! The injector's configuration, in the shape of Istio's
//! `istio-sidecar-injector` ConfigMap (`policy`, `alwaysInjectSelector`,
//! `neverInjectSelector`, `injectedAnnotations`), the part of Istio's Helm
//! `values` the sidecar depends on (under the same names), and the mesh
//! settings the proxy is given (`meshConfig`). Fields Trireme does not read
//! are ignored, so an Istio values file can be used as it is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::selector::LabelSelector;

/// Everything that shapes an injection, read once at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InjectorConfig {
    /// `enabled`: inject unless the pod opts out; `disabled`: only pods that
    /// opt in.
    pub policy: InjectionPolicy,
    /// Pods matching any of these are injected unless they say otherwise.
    pub always_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these are not injected unless they opt in;
    /// checked before `alwaysInjectSelector`.
    pub never_inject_selector: Vec<LabelSelector>,
    /// Annotations added to every injected pod.
    pub injected_annotations: BTreeMap<String, String>,
    pub values: Values,
    pub mesh_config: MeshConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectionPolicy {
    #[default]
    Enabled,
    Disabled,
}

/// Istio's Helm values, the fields the sidecar depends on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Values {
    /// This control plane's revision (`istio.io/rev`); `default` when empty.
    pub revision: String,
    pub global: GlobalValues,
    pub sidecar_injector_webhook: WebhookValues,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GlobalValues {
    /// Registry of the proxy image.
    pub hub: String,
    /// Tag of the proxy image.
    pub tag: String,
    /// The control plane's namespace, never injected unless
    /// `sidecarInjectorWebhook.injectControlPlaneNamespace`.
    pub istio_namespace: String,
    /// citadel's address (Istio's `caAddress`).
    pub ca_address: String,
    pub mesh_id: String,
    pub multi_cluster: MultiClusterValues,
    /// The network pods are on (`ISTIO_META_NETWORK`); empty for one.
    pub network: String,
    pub proxy: ProxyValues,
    pub proxy_init: ProxyInitValues,
}

impl Default for GlobalValues {
    fn default() -> Self {
        Self {
            hub: "trireme".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            istio_namespace: "istio-system".into(),
            ca_address: "citadel.istio-system.svc:15012".into(),
            mesh_id: "cluster.local".into(),
            multi_cluster: MultiClusterValues::default(),
            network: String::new(),
            proxy: ProxyValues::default(),
            proxy_init: ProxyInitValues::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MultiClusterValues {
    /// This cluster's name (`ISTIO_META_CLUSTER_ID`), Istio's `Kubernetes`.
    pub cluster_name: String,
}

impl Default for MultiClusterValues {
    fn default() -> Self {
        Self {
            cluster_name: "Kubernetes".into(),
        }
    }
}

/// The proxy container's defaults; pod annotations override most.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyValues {
    /// Image name under `hub`, or a full reference (with `/`).
    pub image: String,
    /// Envoy's log level (`sidecar.istio.io/logLevel`).
    pub log_level: String,
    /// The agent's own log level (`sidecar.istio.io/agentLogLevel`).
    pub agent_log_level: String,
    pub resources: Resources,
    /// Proxy first, app containers only once it is ready.
    pub hold_application_until_proxy_starts: bool,
    /// The proxy as a Kubernetes native sidecar (an init container with
    /// `restartPolicy: Always`), as Istio's `ENABLE_NATIVE_SIDECARS`.
    pub native_sidecar: bool,
    /// Inbound ports captured (`*` all); `traffic.sidecar.istio.io/includeInboundPorts`.
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    /// Outbound ranges captured (`*` all); `traffic.sidecar.istio.io/includeOutboundIPRanges`.
    #[serde(rename = "includeIPRanges")]
    pub include_ip_ranges: String,
    #[serde(rename = "excludeIPRanges")]
    pub exclude_ip_ranges: String,
    pub include_outbound_ports: String,
    pub exclude_outbound_ports: String,
    /// The proxy's status port (Istio's 15020).
    pub status_port: u16,
    pub readiness_initial_delay_seconds: u32,
    pub readiness_period_seconds: u32,
    pub readiness_failure_threshold: u32,
    /// Envoy worker threads.
    pub concurrency: u32,
}

impl Default for ProxyValues {
    fn default() -> Self {
        Self {
            image: "agent".into(),
            log_level: "warning".into(),
            agent_log_level: "info".into(),
            resources: Resources::istio_defaults(),
            hold_application_until_proxy_starts: false,
            native_sidecar: false,
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            include_ip_ranges: "*".into(),
            exclude_ip_ranges: String::new(),
            include_outbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            status_port: 15020,
            readiness_initial_delay_seconds: 1,
            readiness_period_seconds: 2,
            readiness_failure_threshold: 30,
            concurrency: 2,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyInitValues {
    /// The init container's image; the proxy's when empty (one binary does both).
    pub image: String,
}

/// Kubernetes resource quantities, kept as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Resources {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    /// Istio's chart defaults for the sidecar.
    fn istio_defaults() -> Self {
        Self {
            requests: [("cpu", "100m"), ("memory", "128Mi")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            limits: [("cpu", "2000m"), ("memory", "1024Mi")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookValues {
    /// Rewrite app HTTP/TCP/gRPC probes to the agent's status port.
    #[serde(rename = "rewriteAppHTTPProbe")]
    pub rewrite_app_http_probe: bool,
    /// Namespaces without an injection label count as enabled.
    pub enable_namespaces_by_default: bool,
    /// Inject pods in `global.istioNamespace` too.
    pub inject_control_plane_namespace: bool,
}

impl Default for WebhookValues {
    fn default() -> Self {
        Self {
            rewrite_app_http_probe: true,
            enable_namespaces_by_default: false,
            inject_control_plane_namespace: false,
        }
    }
}

/// The mesh settings the proxy is started with.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    pub trust_domain: String,
    /// Istio's `defaultConfig` (a ProxyConfig); a pod's
    /// `proxy.istio.io/config` annotation is merged over it.
    pub default_config: serde_json::Map<String, serde_json::Value>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        let default_config = serde_json::json!({
            "discoveryAddress": "pilot.istio-system.svc:15012",
        });
        Self {
            trust_domain: "cluster.local".into(),
            default_config: default_config.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading injector config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("injector config {path}: {reason}")]
    Parse { path: String, reason: String },
}

impl InjectorConfig {
    /// Reads the YAML file at `path`, naming the field at fault.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|reason| ConfigError::Parse {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            format!("{path}: {}", error.into_inner())
        })
    }

    /// The revision injected pods are labelled with.
    pub fn revision(&self) -> &str {
        if self.values.revision.is_empty() {
            "default"
        } else {
            &self.values.revision
        }
    }

    /// The proxy image, from `hub`, `tag` and `proxy.image` as Istio builds it.
    pub fn proxy_image(&self) -> String {
        image_reference(&self.values.global, &self.values.global.proxy.image)
    }

    /// The init container's image.
    pub fn init_image(&self) -> String {
        let init = &self.values.global.proxy_init.image;
        if init.is_empty() {
            self.proxy_image()
        } else {
            image_reference(&self.values.global, init)
        }
    }
}

fn image_reference(global: &GlobalValues, image: &str) -> String {
    if image.contains('/') {
        image.to_string()
    } else {
        format!("{}/{}:{}", global.hub, image, global.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istio_names_and_ignores_the_rest_of_istio_values() {
        let config = InjectorConfig::from_yaml(
            r#"
policy: disabled
neverInjectSelector:
  - matchExpressions: [{key: openshift.io/build.name, operator: Exists}]
injectedAnnotations: {team: payments}
values:
  revision: canary
  global:
    hub: registry.example/mesh
    tag: "1.2"
    proxy:
      resources: {requests: {cpu: 10m}}
      holdApplicationUntilProxyStarts: true
    logAsJson: true
  sidecarInjectorWebhook: {rewriteAppHTTPProbe: false}
meshConfig:
  defaultConfig: {discoveryAddress: pilot.mesh:15012}
"#,
        )
        .unwrap();
        assert_eq!(config.policy, InjectionPolicy::Disabled);
        assert_eq!(config.revision(), "canary");
        assert_eq!(config.proxy_image(), "registry.example/mesh/agent:1.2");
        assert_eq!(config.init_image(), "registry.example/mesh/agent:1.2");
        assert!(
            config
                .values
                .global
                .proxy
                .hold_application_until_proxy_starts
        );
        assert!(config.values.global.proxy.resources.limits.is_empty());
        assert!(
            !config
                .values
                .sidecar_injector_webhook
                .rewrite_app_http_probe
        );
        assert_eq!(config.never_inject_selector.len(), 1);
    }

    #[test]
    fn defaults_are_istios() {
        let config = InjectorConfig::default();
        assert_eq!(config.policy, InjectionPolicy::Enabled);
        assert_eq!(config.revision(), "default");
        assert_eq!(config.values.global.proxy.status_port, 15020);
        assert_eq!(config.values.global.proxy.resources.requests["cpu"], "100m");
        assert!(
            config
                .values
                .sidecar_injector_webhook
                .rewrite_app_http_probe
        );
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let error =
            InjectorConfig::from_yaml("values: {global: {proxy: {statusPort: high}}}").unwrap_err();
        assert!(
            error.starts_with("values.global.proxy.statusPort"),
            "{error}"
        );
        let error = InjectorConfig::from_yaml("policy: sometimes").unwrap_err();
        assert!(error.contains("policy"), "{error}");
    }
}
