//! Reading one resource that arrives as JSON already parsed, e.g. the
//! `object` of a Kubernetes AdmissionReview or a watch event. The same strict
//! rules as [`crate::parse_documents`]: an unknown field or a wrong type is an
//! error naming the field path.

use serde_json::Value;

use crate::kinds::{AnyResource, Kind, KindError};

/// Why a JSON object is not a resource Trireme can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromJsonError {
    #[error("{field}: missing")]
    Missing { field: &'static str },
    /// `apiVersion`/`kind` name no Istio kind (or a version Istio does not
    /// serve for it).
    #[error("{field}: {error}")]
    Kind {
        field: &'static str,
        error: KindError,
    },
    /// The document does not fit its kind's types.
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

impl FromJsonError {
    /// Whether the object is simply not an Istio kind Trireme knows (as
    /// opposed to a known kind written wrongly).
    pub fn is_unknown_kind(&self) -> bool {
        matches!(
            self,
            FromJsonError::Kind {
                error: KindError::UnknownKind { .. },
                ..
            }
        )
    }

    /// The field path the error is about (`spec.http[0].timeout`).
    pub fn path(&self) -> &str {
        match self {
            FromJsonError::Missing { field } | FromJsonError::Kind { field, .. } => field,
            FromJsonError::Field { path, .. } => path,
        }
    }
}

/// Reads `value` strictly as the Istio kind its `apiVersion` and `kind` name.
pub fn resource_from_json(value: &Value) -> Result<AnyResource, FromJsonError> {
    let text_field = |field: &'static str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .ok_or(FromJsonError::Missing { field })
    };
    let api_version = text_field("apiVersion")?;
    let kind_name = text_field("kind")?;
    let kind = Kind::resolve(api_version, kind_name).map_err(|error| {
        let field = match error {
            KindError::UnknownKind { .. } => "kind",
            KindError::UnservedVersion { .. } => "apiVersion",
        };
        FromJsonError::Kind { field, error }
    })?;
    AnyResource::deserialize_as(kind, value).map_err(|error| {
        let message = error.inner().to_string();
        FromJsonError::Field {
            path: crate::parse::field_path(&error.path().to_string(), &message),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_known_kind_strictly() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default", "managedFields": [{}]},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
        });
        let resource = resource_from_json(&vs).unwrap();
        assert_eq!(resource.kind(), Kind::VirtualService);

        let mut typo = vs.clone();
        typo["spec"]["http"][0]["rout"] = json!([]);
        let error = resource_from_json(&typo).unwrap_err();
        assert_eq!(error.path(), "spec.http[0].rout", "{error}");

        let mut wrong_type = vs;
        wrong_type["spec"]["http"][0]["route"][0]["weight"] = json!("ten");
        let error = resource_from_json(&wrong_type).unwrap_err();
        assert_eq!(error.path(), "spec.http[0].route[0].weight", "{error}");
    }

    #[test]
    fn tells_unknown_kinds_from_broken_ones() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod"});
        assert!(resource_from_json(&pod).unwrap_err().is_unknown_kind());
        let unserved = json!({"apiVersion": "networking.istio.io/v9", "kind": "Gateway"});
        let error = resource_from_json(&unserved).unwrap_err();
        assert!(!error.is_unknown_kind());
        assert_eq!(error.path(), "apiVersion");
        let error = resource_from_json(&json!({"kind": "Gateway"})).unwrap_err();
        assert_eq!(error.to_string(), "apiVersion: missing");
    }
}
