//! `trireme kube-inject`: the injection applied to workloads in a
//! multi-document YAML stream. The pod template of each Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and
//! CronJob, each Pod, and each such item of a List is injected; every other
//! document, and every workload left as it was, is passed through exactly as
//! written. A Namespace in the same stream supplies its labels to the
//! workloads in it, as the API server's webhook selectors would.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::inject::{InjectError, Injection, Injector, Target};
use crate::selector::Labels;

/// What happened to one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadReport {
    /// `Deployment shop/web`, `Pod default/debug`, ...
    pub workload: String,
    pub injected: bool,
    pub reason: String,
    pub warnings: Vec<String>,
}

/// The rewritten stream and a report per workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    pub yaml: String,
    pub reports: Vec<WorkloadReport>,
}

/// Why the stream cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("document {document}: not YAML: {reason}")]
    Yaml { document: usize, reason: String },
    #[error("document {document}: {workload}: {source}")]
    Inject {
        document: usize,
        workload: String,
        #[source]
        source: InjectError,
    },
}

/// Where a kind keeps its pod template.
fn pod_template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects the workloads of `input` (multi-document YAML). `namespace` is
/// where workloads without one are created.
pub fn rewrite(
    injector: &Injector,
    input: &str,
    namespace: &str,
) -> Result<Rewritten, WorkloadError> {
    let documents = split_documents(input);
    let parsed: Vec<Option<Value>> = documents
        .iter()
        .enumerate()
        .map(|(index, document)| parse(document.body, index + 1))
        .collect::<Result<_, _>>()?;
    let namespaces = namespace_labels(&parsed);
    let mut yaml = String::with_capacity(input.len() * 2);
    let mut reports = Vec::new();
    for (index, (document, value)) in documents.iter().zip(&parsed).enumerate() {
        yaml.push_str(document.separator);
        let rewritten = match value {
            Some(value) => {
                let context = Context {
                    injector,
                    namespaces: &namespaces,
                    default_namespace: namespace,
                    document: index + 1,
                };
                rewrite_object(&context, value, &mut reports)?
            }
            None => None,
        };
        match rewritten {
            Some(value) => yaml.push_str(&to_yaml(&value)),
            None => yaml.push_str(document.body),
        }
    }
    Ok(Rewritten { yaml, reports })
}

struct Context<'a> {
    injector: &'a Injector,
    namespaces: &'a BTreeMap<String, Labels>,
    default_namespace: &'a str,
    document: usize,
}

/// The object with its pod template(s) injected, or `None` when nothing in
/// it changed.
fn rewrite_object(
    context: &Context<'_>,
    object: &Value,
    reports: &mut Vec<WorkloadReport>,
) -> Result<Option<Value>, WorkloadError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "List" || kind.ends_with("List") && object.get("items").is_some() {
        return rewrite_list(context, object, reports);
    }
    let Some(path) = pod_template_path(kind) else {
        return Ok(None);
    };
    let Some(pod) = object.pointer(path) else {
        return Ok(None);
    };
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(context.default_namespace);
    let workload = format!("{kind} {namespace}/{name}");
    let target = Target {
        namespace: Some(namespace.to_string()),
        namespace_labels: context.namespaces.get(namespace).cloned(),
        workload_name: (kind != "Pod").then(|| name.to_string()),
        ..Target::default()
    };
    let outcome =
        context
            .injector
            .inject(pod, &target)
            .map_err(|source| WorkloadError::Inject {
                document: context.document,
                workload: workload.clone(),
                source,
            })?;
    match outcome {
        Injection::Skipped { reason } => {
            reports.push(WorkloadReport {
                workload,
                injected: false,
                reason,
                warnings: Vec::new(),
            });
            Ok(None)
        }
        Injection::Injected {
            pod: injected,
            reason,
            warnings,
        } => {
            reports.push(WorkloadReport {
                workload,
                injected: true,
                reason,
                warnings,
            });
            let mut object = object.clone();
            match object.pointer_mut(path) {
                Some(slot) => *slot = injected,
                None => unreachable!("the pod template was read from this path"),
            }
            Ok(Some(object))
        }
    }
}

fn rewrite_list(
    context: &Context<'_>,
    list: &Value,
    reports: &mut Vec<WorkloadReport>,
) -> Result<Option<Value>, WorkloadError> {
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut changed = false;
    let mut new_items = Vec::with_capacity(items.len());
    for item in items {
        match rewrite_object(context, item, reports)? {
            Some(rewritten) => {
                changed = true;
                new_items.push(rewritten);
            }
            None => new_items.push(item.clone()),
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut list = list.clone();
    list["items"] = Value::Array(new_items);
    Ok(Some(list))
}

/// Labels of the Namespaces defined in the stream.
fn namespace_labels(documents: &[Option<Value>]) -> BTreeMap<String, Labels> {
    let mut namespaces = BTreeMap::new();
    let mut add = |object: &Value| {
        if object.get("kind").and_then(Value::as_str) != Some("Namespace") {
            return;
        }
        let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
            return;
        };
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        namespaces.insert(name.to_string(), labels);
    };
    for document in documents.iter().flatten() {
        add(document);
        if let Some(items) = document.get("items").and_then(Value::as_array) {
            items.iter().for_each(&mut add);
        }
    }
    namespaces
}

/// One document of the stream: the separator line(s) before it, and its text.
struct Document<'a> {
    separator: &'a str,
    body: &'a str,
}

/// Splits at `---` lines, keeping every byte so untouched documents are
/// written back exactly.
fn split_documents(input: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut separator_start = 0;
    let mut body_start = 0;
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        if is_separator(line) {
            if offset > body_start || body_start > separator_start {
                documents.push(Document {
                    separator: &input[separator_start..body_start],
                    body: &input[body_start..offset],
                });
            }
            separator_start = offset;
            body_start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(Document {
        separator: &input[separator_start..body_start],
        body: &input[body_start..],
    });
    documents
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "---"
        || line
            .strip_prefix("---")
            .is_some_and(|rest| rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#'))
}

fn parse(body: &str, document: usize) -> Result<Option<Value>, WorkloadError> {
    let value: Value = serde_yaml_ng::from_str(body).map_err(|error| WorkloadError::Yaml {
        document,
        reason: error.to_string(),
    })?;
    Ok(match value {
        Value::Null => None,
        other => Some(other),
    })
}

fn to_yaml(value: &Value) -> String {
    crate::yaml_out::to_yaml(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InjectorConfig, SidecarTemplate};

    fn injector() -> Injector {
        Injector::new(InjectorConfig::default(), SidecarTemplate::built_in())
    }

    #[test]
    fn other_documents_pass_through_byte_for_byte() {
        let input = "# a comment\napiVersion: v1\nkind: Service\nmetadata:   {name: web}\n---\n\
                     apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
                     spec:\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: web}]\n\
                     --- # trailing\nkind: ConfigMap\nmetadata: {name: c}\n";
        let rewritten = rewrite(&injector(), input, "default").unwrap();
        assert!(rewritten.yaml.starts_with(
            "# a comment\napiVersion: v1\nkind: Service\nmetadata:   {name: web}\n---\n"
        ));
        assert!(
            rewritten
                .yaml
                .ends_with("--- # trailing\nkind: ConfigMap\nmetadata: {name: c}\n")
        );
        assert!(rewritten.yaml.contains("istio-proxy"));
        assert_eq!(rewritten.reports.len(), 1);
        assert_eq!(rewritten.reports[0].workload, "Deployment shop/web");
    }

    #[test]
    fn a_namespace_in_the_stream_decides_for_its_workloads() {
        let input = "kind: Namespace\napiVersion: v1\nmetadata: {name: batch, labels: {istio-injection: disabled}}\n---\n\
                     kind: Job\napiVersion: batch/v1\nmetadata: {name: nightly, namespace: batch}\n\
                     spec: {template: {spec: {containers: [{name: run}], restartPolicy: Never}}}\n";
        let rewritten = rewrite(&injector(), input, "default").unwrap();
        assert_eq!(rewritten.yaml, input);
        assert!(!rewritten.reports[0].injected);
        assert!(
            rewritten.reports[0]
                .reason
                .contains("istio-injection=disabled")
        );
    }

    #[test]
    fn a_bad_workload_names_its_document_and_name() {
        let input = "kind: Pod\nmetadata: {name: p, annotations: {sidecar.istio.io/proxyCPU: lots}}\nspec: {containers: [{name: a}]}\n";
        let error = rewrite(&injector(), input, "default")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("document 1: Pod default/p: annotation sidecar.istio.io/proxyCPU"),
            "{error}"
        );
        let error = rewrite(&injector(), "a: [", "default")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("document 1: not YAML"), "{error}");
    }
}
