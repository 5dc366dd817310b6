//! The sidecar template: Jinja syntax (minijinja) rendering YAML, the parts
//! of a pod the injector adds. Operators replace the built-in one with
//! `--template`; [`TemplateValues`] is everything a template receives
//! (documented field by field in `injector/TEMPLATE.md`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::config::Resources;

/// The built-in template.
pub const BUILT_IN: &str = include_str!("../templates/sidecar.yaml.j2");
const NAME: &str = "sidecar";

/// What a template receives.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateValues<'a> {
    /// The pod as it came in (`metadata`, `spec`); borrowed, as a pod may
    /// be large and the template seldom reads it.
    pub pod: &'a Value,
    pub workload: WorkloadValues,
    /// This injector's revision (`istio.io/rev`).
    pub revision: String,
    pub images: Images,
    pub proxy: ProxyValues,
    pub capture: CaptureValues,
    pub mesh: MeshValues,
    /// The merged ProxyConfig (mesh `defaultConfig`, then the pod's
    /// `proxy.istio.io/config`), as JSON text for `PROXY_CONFIG`.
    pub proxy_config: String,
    /// The pod's labels as they will be after injection.
    pub labels: BTreeMap<String, String>,
    /// The app containers' probes for the agent (`ISTIO_KUBE_APP_PROBERS`),
    /// JSON text; empty when no probe is rewritten.
    pub app_probers: String,
    /// The app's own Prometheus annotations, for the agent to merge its
    /// metrics (`ISTIO_PROMETHEUS_ANNOTATIONS`), JSON text; may be empty.
    pub prometheus_annotations: String,
    /// The app containers' ports, JSON text (`ISTIO_META_POD_PORTS`).
    pub pod_ports: String,
    /// The app containers' names.
    pub app_containers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadValues {
    /// The owning workload's name (Deployment, StatefulSet, ...) or the pod's.
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub canonical_name: String,
    pub canonical_revision: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Images {
    pub proxy: String,
    pub init: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyValues {
    pub uid: u32,
    pub log_level: String,
    pub agent_log_level: String,
    pub resources: Resources,
    pub status_port: u16,
    pub concurrency: u32,
    pub readiness: Readiness,
    pub native_sidecar: bool,
    pub hold_application_until_proxy_starts: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub failure_threshold: u32,
}

/// The capture rules' settings, as `agent init` takes them.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureValues {
    /// `REDIRECT`, or `NONE` (no init container).
    pub mode: String,
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub include_outbound_ip_ranges: String,
    pub exclude_outbound_ip_ranges: String,
    pub include_outbound_ports: String,
    pub exclude_outbound_ports: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeshValues {
    pub trust_domain: String,
    pub ca_address: String,
    pub mesh_id: String,
    /// The pod's cluster (`ISTIO_META_CLUSTER_ID`).
    pub cluster_id: String,
    /// The pod's network (`ISTIO_META_NETWORK`); empty for one network.
    pub network: String,
}

/// Why a template cannot be used or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading template {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template syntax: {0}")]
    Syntax(String),
    #[error("rendering the sidecar template: {0}")]
    Render(String),
    #[error("the rendered sidecar template is not valid YAML: {reason}\n{rendered}")]
    Yaml { reason: String, rendered: String },
    #[error("the rendered sidecar template must be a mapping with `metadata` and/or `spec`")]
    Shape,
}

/// A compiled template, shared by every injection.
pub struct SidecarTemplate {
    environment: minijinja::Environment<'static>,
}

impl std::fmt::Debug for SidecarTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarTemplate").finish_non_exhaustive()
    }
}

impl SidecarTemplate {
    pub fn built_in() -> Self {
        Self::compile(BUILT_IN.to_string()).expect("the built-in template compiles")
    }

    pub fn from_file(path: &Path) -> Result<Self, TemplateError> {
        let source = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::compile(source)
    }

    pub fn compile(source: String) -> Result<Self, TemplateError> {
        let mut environment = minijinja::Environment::new();
        // A misspelt value is an error, not an empty string in a pod.
        environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        environment
            .add_template_owned(NAME, source)
            .map_err(|error| TemplateError::Syntax(describe(&error)))?;
        Ok(Self { environment })
    }

    /// Renders the template for `values` and reads the result as YAML.
    pub fn render(&self, values: &TemplateValues<'_>) -> Result<Value, TemplateError> {
        let template = self
            .environment
            .get_template(NAME)
            .map_err(|error| TemplateError::Render(describe(&error)))?;
        let rendered = template
            .render(minijinja::value::Serde(values))
            .map_err(|error| TemplateError::Render(describe(&error)))?;
        let fragment: Value =
            serde_yaml_ng::from_str(&rendered).map_err(|error| TemplateError::Yaml {
                reason: error.to_string(),
                rendered: rendered.clone(),
            })?;
        match &fragment {
            Value::Object(map) if map.keys().all(|k| k == "metadata" || k == "spec") => {
                Ok(fragment)
            }
            Value::Null => Ok(Value::Object(Default::default())),
            _ => Err(TemplateError::Shape),
        }
    }
}

fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!("line {line}: {error}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_value_is_an_error_not_an_empty_field() {
        let template = SidecarTemplate::compile("spec:\n  x: {{ proxy.nmae }}\n".into()).unwrap();
        let error = template
            .render(&crate::inject::tests::sample_values())
            .unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        let error = SidecarTemplate::compile("{% if %}".into()).unwrap_err();
        assert!(matches!(error, TemplateError::Syntax(_)), "{error}");
    }

    #[test]
    fn a_fragment_with_other_keys_is_refused() {
        let template = SidecarTemplate::compile("kind: Pod\n".into()).unwrap();
        let error = template
            .render(&crate::inject::tests::sample_values())
            .unwrap_err();
        assert!(matches!(error, TemplateError::Shape), "{error}");
    }
}
