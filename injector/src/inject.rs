//! One injection, start to end: decide, read the annotations, compute the
//! template's values, render, merge, then what Istio does after its
//! template: probes through the agent, the status and default-container
//! annotations, Prometheus scraping of the merged metrics. The webhook and
//! `trireme kube-inject` both call [`Injector::inject`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::annotations::{self, AnnotationError, Overrides};
use crate::config::InjectorConfig;
use crate::merge::merge;
use crate::pod::{PodMeta, PodShapeError, containers, name_of, object_entry};
use crate::policy::{self, Decision, STATUS_ANNOTATION};
use crate::probes;
use crate::selector::Labels;
use crate::template::{
    CaptureValues, Images, MeshValues, ProxyValues, Readiness, SidecarTemplate, TemplateError,
    TemplateValues, WorkloadValues,
};

pub const PROXY_CONTAINER: &str = "istio-proxy";
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-logs-container";
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
const PROMETHEUS_KEYS: [&str; 3] = ["scrape", "path", "port"];

/// Where a pod is being created.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The namespace, when the pod itself does not say (the admission
    /// request's, or the workload's).
    pub namespace: Option<String>,
    /// The namespace's labels, when known.
    pub namespace_labels: Option<Labels>,
    /// The owning workload's name (a Deployment's, ...), when known.
    pub workload_name: Option<String>,
    /// The cluster and network the webhook was called for (its URL path,
    /// `/inject/cluster/<id>/net/<network>`), over the config's.
    pub cluster_id: Option<String>,
    pub network: Option<String>,
}

/// What became of a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    Injected {
        pod: Value,
        reason: String,
        warnings: Vec<String>,
    },
    Skipped {
        reason: String,
    },
}

/// Why a pod that should be injected cannot be.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{0}")]
    Shape(#[from] PodShapeError),
    #[error("{}", join(.0))]
    Annotations(Vec<AnnotationError>),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

fn join(errors: &[AnnotationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `sidecar.istio.io/status` annotation: what was injected.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    init_containers: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
    image_pull_secrets: Option<Vec<String>>,
    revision: String,
}

/// The injector: its configuration and compiled template.
#[derive(Debug)]
pub struct Injector {
    pub config: InjectorConfig,
    pub template: SidecarTemplate,
}

impl Injector {
    pub fn new(config: InjectorConfig, template: SidecarTemplate) -> Self {
        Self { config, template }
    }

    /// Whether `pod` would be injected at `target`, and why.
    pub fn decide(&self, pod: &Value, target: &Target) -> Result<Decision, InjectError> {
        let meta = PodMeta::read(pod)?;
        let namespace = namespace_of(pod, target);
        Ok(policy::decide(
            &self.config,
            &meta,
            &namespace,
            target.namespace_labels.as_ref(),
        ))
    }

    /// Injects `pod` (a Pod or a pod template), or says why not.
    pub fn inject(&self, pod: &Value, target: &Target) -> Result<Injection, InjectError> {
        let meta = PodMeta::read(pod)?;
        let namespace = namespace_of(pod, target);
        let decision = policy::decide(
            &self.config,
            &meta,
            &namespace,
            target.namespace_labels.as_ref(),
        );
        if !decision.inject {
            return Ok(Injection::Skipped {
                reason: decision.reason,
            });
        }
        let (overrides, warnings) =
            annotations::read(&meta.annotations).map_err(InjectError::Annotations)?;
        let plan = self.plan(pod, &meta, &namespace, target, &overrides)?;
        let fragment = self.template.render(&plan.values)?;
        let injected = self.apply(pod, &plan, &fragment);
        Ok(Injection::Injected {
            pod: injected,
            reason: decision.reason,
            warnings,
        })
    }

    /// Everything computed before rendering.
    fn plan<'a>(
        &self,
        pod: &'a Value,
        meta: &PodMeta,
        namespace: &str,
        target: &Target,
        overrides: &Overrides,
    ) -> Result<Plan<'a>, InjectError> {
        let values = &self.config.values;
        let proxy = &values.global.proxy;
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        let app_containers: Vec<&Value> = containers(&spec, "containers")?
            .into_iter()
            .filter(|c| name_of(c) != PROXY_CONTAINER)
            .collect();
        if app_containers.is_empty() {
            return Err(PodShapeError::new(
                "spec.containers",
                "a pod needs at least one container",
            )
            .into());
        }
        containers(&spec, "initContainers")?;
        let rewrite_probes = overrides
            .rewrite_app_probes
            .unwrap_or(values.sidecar_injector_webhook.rewrite_app_http_probe);
        let probers = if rewrite_probes {
            probes::collect(&app_containers)?
        } else {
            probes::AppProbers::new()
        };
        // Field by field, nested ones too, as Istio merges ProxyConfig.
        let mut merged = Value::Object(self.config.mesh_config.default_config.clone());
        crate::merge::overlay(&mut merged, &Value::Object(overrides.proxy_config.clone()));
        let Value::Object(proxy_config) = merged else {
            unreachable!("an object overlaid with an object stays an object")
        };
        let hold = proxy_config
            .get("holdApplicationUntilProxyStarts")
            .and_then(Value::as_bool)
            .unwrap_or(proxy.hold_application_until_proxy_starts);
        let native_sidecar = overrides.native_sidecar.unwrap_or(proxy.native_sidecar);
        let status_port = overrides.status_port.unwrap_or(proxy.status_port);
        let merge_metrics = overrides.merge_metrics.unwrap_or(true)
            && meta
                .annotations
                .get("prometheus.io/scrape")
                .map(String::as_str)
                != Some("false");
        let workload_name = workload_name(pod, target);
        let labels = injected_labels(&meta.labels, &workload_name);
        let mut resources = proxy.resources.clone();
        resources.requests.extend(overrides.requests.clone());
        resources.limits.extend(overrides.limits.clone());
        let exclude_inbound_ports = with_status_port(
            overrides
                .exclude_inbound_ports
                .as_deref()
                .unwrap_or(&proxy.exclude_inbound_ports),
            status_port,
            proxy.status_port,
        );
        let pick = |annotation: &Option<String>, default: &String| {
            annotation.clone().unwrap_or_else(|| default.clone())
        };
        let template_values = TemplateValues {
            pod,
            workload: WorkloadValues {
                name: workload_name,
                namespace: namespace.to_string(),
                service_account: service_account(&spec),
                canonical_name: labels[CANONICAL_NAME_LABEL].clone(),
                canonical_revision: labels[CANONICAL_REVISION_LABEL].clone(),
            },
            revision: self.config.revision().to_string(),
            images: Images {
                proxy: overrides
                    .proxy_image
                    .clone()
                    .unwrap_or_else(|| self.config.proxy_image()),
                init: overrides
                    .proxy_image
                    .clone()
                    .unwrap_or_else(|| self.config.init_image()),
            },
            proxy: ProxyValues {
                uid: 1337,
                log_level: pick(&overrides.log_level, &proxy.log_level),
                agent_log_level: match &overrides.agent_log_level {
                    Some(level) => level.clone(),
                    // A config value in Envoy's words works too.
                    None => annotations::agent_log_level(&proxy.agent_log_level)
                        .unwrap_or_else(|_| proxy.agent_log_level.clone()),
                },
                resources,
                status_port,
                concurrency: proxy.concurrency,
                readiness: Readiness {
                    initial_delay_seconds: overrides
                        .readiness_initial_delay_seconds
                        .unwrap_or(proxy.readiness_initial_delay_seconds),
                    period_seconds: overrides
                        .readiness_period_seconds
                        .unwrap_or(proxy.readiness_period_seconds),
                    failure_threshold: overrides
                        .readiness_failure_threshold
                        .unwrap_or(proxy.readiness_failure_threshold),
                },
                native_sidecar,
                hold_application_until_proxy_starts: hold,
            },
            capture: CaptureValues {
                mode: overrides
                    .interception_mode
                    .clone()
                    .unwrap_or_else(|| "REDIRECT".to_string()),
                include_inbound_ports: pick(
                    &overrides.include_inbound_ports,
                    &proxy.include_inbound_ports,
                ),
                exclude_inbound_ports,
                include_outbound_ip_ranges: pick(
                    &overrides.include_outbound_ip_ranges,
                    &proxy.include_ip_ranges,
                ),
                exclude_outbound_ip_ranges: pick(
                    &overrides.exclude_outbound_ip_ranges,
                    &proxy.exclude_ip_ranges,
                ),
                include_outbound_ports: pick(
                    &overrides.include_outbound_ports,
                    &proxy.include_outbound_ports,
                ),
                exclude_outbound_ports: pick(
                    &overrides.exclude_outbound_ports,
                    &proxy.exclude_outbound_ports,
                ),
            },
            mesh: MeshValues {
                trust_domain: self.config.mesh_config.trust_domain.clone(),
                ca_address: values.global.ca_address.clone(),
                mesh_id: values.global.mesh_id.clone(),
                cluster_id: target
                    .cluster_id
                    .clone()
                    .unwrap_or_else(|| values.global.multi_cluster.cluster_name.clone()),
                network: target
                    .network
                    .clone()
                    .unwrap_or_else(|| values.global.network.clone()),
            },
            proxy_config: Value::Object(proxy_config).to_string(),
            labels: labels.clone(),
            app_probers: if probers.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&probers).expect("probes are JSON")
            },
            prometheus_annotations: if merge_metrics {
                app_prometheus_annotations(&meta.annotations)
            } else {
                String::new()
            },
            pod_ports: pod_ports(&app_containers),
            app_containers: app_containers
                .iter()
                .map(|c| name_of(c).to_string())
                .collect(),
        };
        Ok(Plan {
            values: template_values,
            probers,
            labels,
            status_port,
            merge_metrics,
            proxy_first: hold && !native_sidecar,
        })
    }

    /// The pod with the rendered `fragment` merged in and Istio's
    /// post-template changes made.
    fn apply(&self, pod: &Value, plan: &Plan<'_>, fragment: &Value) -> Value {
        let mut injected = pod.clone();
        if !injected.is_object() {
            injected = Value::Object(Map::new());
        }
        {
            let metadata = object_entry(&mut injected, "metadata");
            let labels = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(labels) = labels.as_object_mut() {
                for (key, value) in &plan.labels {
                    labels
                        .entry(key.clone())
                        .or_insert_with(|| Value::String(value.clone()));
                }
            }
        }
        merge(&mut injected, fragment, plan.proxy_first);
        let app_names = &plan.values.app_containers;
        if let Some(Value::Array(list)) = injected
            .get_mut("spec")
            .and_then(|spec| spec.get_mut("containers"))
        {
            probes::rewrite(list, &plan.probers, plan.status_port);
        }
        let status = Status {
            init_containers: names(fragment, "initContainers"),
            containers: names(fragment, "containers"),
            volumes: names(fragment, "volumes"),
            image_pull_secrets: Some(names(fragment, "imagePullSecrets")).filter(|n| !n.is_empty()),
            revision: self.config.revision().to_string(),
        };
        let annotations =
            object_entry(object_entry_value(&mut injected, "metadata"), "annotations");
        annotations.insert(
            STATUS_ANNOTATION.to_string(),
            Value::String(serde_json::to_string(&status).expect("status is JSON")),
        );
        if let Some(first_app) = app_names.first() {
            for key in [
                DEFAULT_CONTAINER_ANNOTATION,
                DEFAULT_LOGS_CONTAINER_ANNOTATION,
            ] {
                annotations
                    .entry(key.to_string())
                    .or_insert_with(|| Value::String(first_app.clone()));
            }
        }
        if plan.merge_metrics {
            annotations.insert("prometheus.io/scrape".into(), json!("true"));
            annotations.insert(
                "prometheus.io/port".into(),
                json!(plan.status_port.to_string()),
            );
            annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
        }
        for (key, value) in &self.config.injected_annotations {
            annotations.insert(key.clone(), Value::String(value.clone()));
        }
        injected
    }
}

/// What [`Injector::plan`] worked out.
struct Plan<'a> {
    values: TemplateValues<'a>,
    probers: probes::AppProbers,
    labels: BTreeMap<String, String>,
    status_port: u16,
    merge_metrics: bool,
    proxy_first: bool,
}

fn object_entry_value<'a>(object: &'a mut Value, key: &str) -> &'a mut Value {
    object_entry(object, key);
    object.get_mut(key).expect("created by object_entry")
}

fn names(fragment: &Value, list: &str) -> Vec<String> {
    fragment
        .get("spec")
        .and_then(|spec| spec.get(list))
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|item| name_of(item).to_string()).collect())
        .unwrap_or_default()
}

fn namespace_of(pod: &Value, target: &Target) -> String {
    pod.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .map(str::to_string)
        .or_else(|| target.namespace.clone())
        .unwrap_or_else(|| "default".to_string())
}

/// The workload's name as Istio derives it: given (kube-inject knows it),
/// else from the pod's controller: a Deployment's ReplicaSet less the
/// `pod-template-hash`, a CronJob's Job less its schedule suffix, any other
/// owner as named; else the pod's `generateName` or name.
fn workload_name(pod: &Value, target: &Target) -> String {
    if let Some(name) = &target.workload_name {
        return name.clone();
    }
    let metadata = pod.get("metadata");
    let field = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    if let Some(owner) = controller_of(pod) {
        let name = owner
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = owner
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hash = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str);
        match (kind, hash) {
            ("ReplicaSet", Some(hash)) => {
                if let Some(deployment) = name.strip_suffix(&format!("-{hash}")) {
                    return deployment.to_string();
                }
            }
            ("Job", _) => {
                if let Some(cron_job) = cron_job_of(name) {
                    return cron_job.to_string();
                }
            }
            _ => {}
        }
        if !name.is_empty() {
            return name.to_string();
        }
    }
    if let Some(generate) = field("generateName").filter(|g| !g.is_empty()) {
        return generate.trim_end_matches('-').to_string();
    }
    field("name").unwrap_or("unknown").to_string()
}

/// The owner reference marked `controller`, else the first.
fn controller_of(pod: &Value) -> Option<&Value> {
    let owners = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    owners
        .iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| owners.first())
}

/// A CronJob names its Jobs `<cronjob>-<scheduled time in minutes>`.
fn cron_job_of(job: &str) -> Option<&str> {
    let (cron_job, suffix) = job.rsplit_once('-')?;
    ((8..=10).contains(&suffix.len()) && suffix.chars().all(|c| c.is_ascii_digit()))
        .then_some(cron_job)
}

/// The pod's labels plus the ones injection adds where absent.
fn injected_labels(labels: &Labels, workload_name: &str) -> BTreeMap<String, String> {
    let first = |keys: &[&str]| keys.iter().find_map(|key| labels.get(*key)).cloned();
    let canonical_name = first(&[CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload_name.to_string());
    let canonical_revision = first(&[
        CANONICAL_REVISION_LABEL,
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_string());
    let mut result = labels.clone();
    result
        .entry(TLS_MODE_LABEL.into())
        .or_insert_with(|| "istio".into());
    result
        .entry(CANONICAL_NAME_LABEL.into())
        .or_insert(canonical_name);
    result
        .entry(CANONICAL_REVISION_LABEL.into())
        .or_insert(canonical_revision);
    result
}

fn service_account(spec: &Value) -> String {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|key| spec.get(*key).and_then(Value::as_str))
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// `excluded` plus the status port when it is not Istio's (which `agent
/// init` always excludes).
fn with_status_port(excluded: &str, status_port: u16, default_port: u16) -> String {
    if status_port == default_port
        || excluded
            .split(',')
            .any(|port| port.trim() == status_port.to_string())
    {
        return excluded.to_string();
    }
    if excluded.trim().is_empty() {
        status_port.to_string()
    } else {
        format!("{excluded},{status_port}")
    }
}

/// The app's own `prometheus.io/*` annotations as JSON, for the agent.
fn app_prometheus_annotations(annotations: &Labels) -> String {
    let own: BTreeMap<&str, &str> = PROMETHEUS_KEYS
        .iter()
        .filter_map(|key| {
            annotations
                .get(&format!("prometheus.io/{key}"))
                .map(|value| (*key, value.as_str()))
        })
        .collect();
    if own.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&own).expect("strings are JSON")
    }
}

/// The app containers' ports, as Istio's `ISTIO_META_POD_PORTS`.
fn pod_ports(app_containers: &[&Value]) -> String {
    let ports: Vec<&Value> = app_containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .collect();
    serde_json::to_string(&ports).expect("ports are JSON")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_values() -> TemplateValues<'static> {
        let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
        // Leaked: the values borrow the pod, and tests keep them.
        let pod: &'static Value = Box::leak(Box::new(
            json!({"metadata": {"name": "web-1"}, "spec": {"containers": [{"name": "web"}]}}),
        ));
        let meta = PodMeta::read(pod).unwrap();
        injector
            .plan(
                pod,
                &meta,
                "shop",
                &Target::default(),
                &Overrides::default(),
            )
            .unwrap()
            .values
    }

    fn injector() -> Injector {
        Injector::new(InjectorConfig::default(), SidecarTemplate::built_in())
    }

    fn injected(pod: Value) -> Value {
        match injector().inject(&pod, &Target::default()).unwrap() {
            Injection::Injected { pod, .. } => pod,
            Injection::Skipped { reason } => panic!("skipped: {reason}"),
        }
    }

    #[test]
    fn the_built_in_template_adds_init_proxy_volumes_labels_and_status() {
        let pod = injected(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web", "version": "v2"}},
            "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}
        }));
        let spec = &pod["spec"];
        assert_eq!(spec["initContainers"][0]["name"], "istio-init");
        assert_eq!(spec["initContainers"][0]["args"][0], "init");
        assert_eq!(
            spec["initContainers"][0]["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        assert_eq!(spec["containers"][0]["name"], "web");
        let proxy = &spec["containers"][1];
        assert_eq!(proxy["name"], "istio-proxy");
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels[TLS_MODE_LABEL], "istio");
        assert_eq!(labels[CANONICAL_NAME_LABEL], "web");
        assert_eq!(labels[CANONICAL_REVISION_LABEL], "v2");
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations[DEFAULT_CONTAINER_ANNOTATION], "web");
        assert_eq!(annotations["prometheus.io/port"], "15020");
        let status: Value =
            serde_json::from_str(annotations[STATUS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(status["containers"], json!(["istio-proxy"]));
        assert_eq!(status["revision"], "default");
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let once = injected(json!({"spec": {"containers": [{"name": "web"}]}}));
        match injector().inject(&once, &Target::default()).unwrap() {
            Injection::Skipped { reason } => assert!(reason.contains("already injected")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_annotations_refuse_the_pod_naming_each() {
        let error = injector()
            .inject(
                &json!({"metadata": {"annotations": {
                    "sidecar.istio.io/proxyCPU": "lots", "sidecar.istio.io/logLevel": "loud"}},
                    "spec": {"containers": [{"name": "web"}]}}),
                &Target::default(),
            )
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("sidecar.istio.io/proxyCPU")
                && text.contains("sidecar.istio.io/logLevel"),
            "{text}"
        );
    }

    #[test]
    fn workload_names_come_from_owners_and_generate_name() {
        let target = Target::default();
        let owned = json!({"metadata": {"labels": {"pod-template-hash": "7f9c8d"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "reviews-v1-7f9c8d", "controller": true}]}});
        assert_eq!(workload_name(&owned, &target), "reviews-v1");
        let bare = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "legacy-frontend"}]}});
        assert_eq!(workload_name(&bare, &target), "legacy-frontend");
        let scheduled = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "nightly-report-29000000"}]}});
        assert_eq!(workload_name(&scheduled, &target), "nightly-report");
        let generated = json!({"metadata": {"generateName": "ratings-"}});
        assert_eq!(workload_name(&generated, &target), "ratings");
    }
}
