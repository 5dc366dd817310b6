//! galley's verdict on each Kubernetes object, written to its `status` in
//! the shape Istio's analysis writes (istiod with `PILOT_ENABLE_ANALYSIS`,
//! `--enableAnalysis` at install):
//!
//! ```yaml
//! status:
//!   observedGeneration: 3
//!   validationMessages:
//!   - type: {code: IST0106, name: SchemaValidationError}
//!     level: ERROR
//!     documentationUrl: https://istio.io/latest/docs/reference/config/analysis/ist0106/
//!     message: "spec.http[0].route[0].weight: ..."   # Trireme's addition
//! ```
//!
//! Validation errors and warnings are Istio's IST0106 (`SchemaValidationError`)
//! at level `ERROR` or `WARNING`; a resource without findings has no
//! `validationMessages`. The status is written with a JSON merge patch to
//! the object's `status` subresource, and only when it differs from what
//! the object already carries (so galley's own write, coming back through
//! the watch, writes nothing).

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use mesh_config::store::DEFAULT_NAMESPACE;
use serde_json::{Value, json};

use super::reconcile::Judged;

/// Istio's analysis message code for a validation finding.
pub const SCHEMA_VALIDATION_ERROR: &str = "IST0106";
const SCHEMA_VALIDATION_ERROR_NAME: &str = "SchemaValidationError";
const DOCUMENTATION_URL: &str = "https://istio.io/latest/docs/reference/config/analysis/ist0106/";
/// The field manager galley's status writes are recorded under.
pub const FIELD_MANAGER: &str = "galley";

/// Where an object's status is written, and what it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// The object's `status` as last seen (`Null` when it has none).
    pub status: Value,
}

impl StatusTarget {
    /// The target of a watched object; `None` without a name.
    pub fn of(object: &Value) -> Option<StatusTarget> {
        let metadata = &object["metadata"];
        let name = metadata["name"].as_str().filter(|name| !name.is_empty())?;
        let namespace = metadata["namespace"]
            .as_str()
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE);
        Some(StatusTarget {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            generation: metadata["generation"].as_i64(),
            status: object.get("status").cloned().unwrap_or(Value::Null),
        })
    }
}

/// The `validationMessages` for a judgement: one per error, then one per
/// warning.
pub fn validation_messages(judged: &Judged) -> Vec<Value> {
    let (errors, warnings): (&[String], &[String]) = match judged {
        Judged::Accepted { warnings, .. } => (&[], warnings),
        Judged::Rejected {
            errors, warnings, ..
        } => (errors, warnings),
        Judged::Unreadable { error } => (std::slice::from_ref(error), &[]),
    };
    let message = |level: &str, text: &String| {
        json!({
            "type": {"code": SCHEMA_VALIDATION_ERROR, "name": SCHEMA_VALIDATION_ERROR_NAME},
            "level": level,
            "documentationUrl": DOCUMENTATION_URL,
            "message": text,
        })
    };
    errors
        .iter()
        .map(|error| message("ERROR", error))
        .chain(warnings.iter().map(|warning| message("WARNING", warning)))
        .collect()
}

/// The merge patch that makes `target`'s status carry `judged`'s verdict,
/// or `None` when it already does. Other status fields are left alone.
pub fn status_patch(target: &StatusTarget, judged: &Judged) -> Option<Value> {
    let messages = validation_messages(judged);
    let current_messages = match &target.status["validationMessages"] {
        Value::Array(messages) => messages.clone(),
        _ => Vec::new(),
    };
    let generation = target.generation.map(Value::from);
    let current_generation = target.status.get("observedGeneration").and_then(|g| {
        // Istio may write it as a string (an int64 in protobuf JSON).
        g.as_i64()
            .or_else(|| g.as_str().and_then(|s| s.parse().ok()))
            .map(Value::from)
    });
    let mut patch = serde_json::Map::new();
    if messages != current_messages {
        let messages = if messages.is_empty() {
            Value::Null
        } else {
            Value::Array(messages)
        };
        patch.insert("validationMessages".into(), messages);
    }
    if let Some(generation) = generation
        && current_generation.as_ref() != Some(&generation)
    {
        patch.insert("observedGeneration".into(), generation);
    }
    (!patch.is_empty()).then(|| json!({ "status": patch }))
}

/// `status` after applying `patch` (a JSON merge patch of `{"status": ..}`).
pub fn patched_status(current: &Value, patch: &Value) -> Value {
    let mut status = match current {
        Value::Object(_) => current.clone(),
        _ => json!({}),
    };
    if let (Some(fields), Some(changes)) = (status.as_object_mut(), patch["status"].as_object()) {
        for (field, value) in changes {
            if value.is_null() {
                fields.remove(field);
            } else {
                fields.insert(field.clone(), value.clone());
            }
        }
    }
    status
}

/// Writes statuses through the API server.
#[derive(Clone)]
pub struct StatusWriter {
    client: kube::Client,
}

impl StatusWriter {
    pub fn new(client: kube::Client) -> StatusWriter {
        StatusWriter { client }
    }

    /// `PATCH /apis/<group>/<version>/namespaces/<ns>/<plural>/<name>/status`
    /// with `patch` as a JSON merge patch.
    pub async fn write(
        &self,
        resource: &ApiResource,
        target: &StatusTarget,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &target.namespace, resource);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&target.name, &params, &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(status: Value, generation: Option<i64>) -> StatusTarget {
        StatusTarget {
            namespace: "shop".into(),
            name: "a".into(),
            generation,
            status,
        }
    }

    fn rejected() -> Judged {
        Judged::Rejected {
            key: "VirtualService/shop/a".into(),
            errors: vec!["spec.http[0].route[0].weight: must not be negative".into()],
            warnings: vec!["spec.hosts[0]: short name".into()],
        }
    }

    fn accepted() -> Judged {
        Judged::Accepted {
            key: "VirtualService/shop/a".into(),
            resource: json!({}),
            warnings: vec![],
        }
    }

    #[test]
    fn a_rejection_is_written_as_istio_validation_messages() {
        let patch = status_patch(&target(Value::Null, Some(2)), &rejected()).unwrap();
        assert_eq!(patch["status"]["observedGeneration"], 2);
        let messages = patch["status"]["validationMessages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["type"]["code"], "IST0106");
        assert_eq!(messages[0]["level"], "ERROR");
        assert_eq!(
            messages[0]["message"],
            "spec.http[0].route[0].weight: must not be negative"
        );
        assert_eq!(messages[1]["level"], "WARNING");
    }

    #[test]
    fn nothing_is_written_when_the_status_already_says_it() {
        let first = target(json!({"conditions": [{"type": "Reconciled"}]}), Some(2));
        let patch = status_patch(&first, &rejected()).unwrap();
        let written = patched_status(&first.status, &patch);
        assert_eq!(written["conditions"], json!([{"type": "Reconciled"}]));
        assert_eq!(status_patch(&target(written, Some(2)), &rejected()), None);
        // Istio writes observedGeneration as a string: the same generation.
        let as_string = json!({"observedGeneration": "2"});
        assert_eq!(status_patch(&target(as_string, Some(2)), &accepted()), None);
    }

    #[test]
    fn a_fixed_resource_clears_its_messages() {
        let old = status_patch(&target(Value::Null, Some(1)), &rejected()).unwrap();
        let status = patched_status(&Value::Null, &old);
        let patch = status_patch(&target(status.clone(), Some(2)), &accepted()).unwrap();
        assert_eq!(
            patch,
            json!({"status": {"validationMessages": null, "observedGeneration": 2}})
        );
        assert_eq!(
            patched_status(&status, &patch),
            json!({"observedGeneration": 2})
        );
    }
}
