//! Reading a pod (or a workload's pod template) as JSON: the injector keeps
//! pods as `serde_json::Value` so that every field it does not touch,
//! including ones newer than this code, passes through exactly.

use serde_json::{Map, Value};

use crate::selector::Labels;

/// Why a pod cannot be injected: its shape is not a pod's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PodShapeError {
    /// Path of the offending field, e.g. `spec.containers[1].name`.
    pub field: String,
    pub reason: String,
}

impl PodShapeError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What the injection decision reads from a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub labels: Labels,
    pub annotations: Labels,
    pub host_network: bool,
}

impl PodMeta {
    pub fn read(pod: &Value) -> Result<Self, PodShapeError> {
        let object = as_object(pod, "")?;
        let metadata = optional_object(object, "metadata", "metadata")?;
        let spec = optional_object(object, "spec", "spec")?;
        let host_network = match spec.and_then(|spec| spec.get("hostNetwork")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return Err(PodShapeError::new(
                    "spec.hostNetwork",
                    "must be true or false",
                ));
            }
        };
        Ok(Self {
            labels: string_map(metadata, "labels")?,
            annotations: string_map(metadata, "annotations")?,
            host_network,
        })
    }
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, PodShapeError> {
    value.as_object().ok_or_else(|| {
        let field = if field.is_empty() { "pod" } else { field };
        PodShapeError::new(
            field,
            format!("must be an object, not {}", type_name(value)),
        )
    })
}

fn optional_object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_object(value, field).map(Some),
    }
}

/// `metadata.<key>` as a string map (labels, annotations).
fn string_map(metadata: Option<&Map<String, Value>>, key: &str) -> Result<Labels, PodShapeError> {
    let field = format!("metadata.{key}");
    let Some(map) = metadata
        .map(|metadata| optional_object(metadata, key, &field))
        .transpose()?
        .flatten()
    else {
        return Ok(Labels::new());
    };
    map.iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name.clone(), text.clone())),
            other => Err(PodShapeError::new(
                format!("{field}.{name}"),
                format!("must be a string, not {}", type_name(other)),
            )),
        })
        .collect()
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The containers of `spec.<list>` (`containers`, `initContainers`): each
/// must be an object with a string `name`.
pub fn containers<'a>(spec: &'a Value, list: &str) -> Result<Vec<&'a Value>, PodShapeError> {
    let field = format!("spec.{list}");
    let items = match spec.get(list) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(PodShapeError::new(
                field,
                format!("must be a list, not {}", type_name(other)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            as_object(item, &format!("{field}[{index}]"))?;
            match item.get("name") {
                Some(Value::String(_)) => Ok(item),
                _ => Err(PodShapeError::new(
                    format!("{field}[{index}].name"),
                    "every container needs a name",
                )),
            }
        })
        .collect()
}

/// The name of a container already checked by [`containers`].
pub fn name_of(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// `object[key]` as a mutable object, created when absent or null.
pub fn object_entry<'a>(object: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let map = object
        .as_object_mut()
        .expect("callers pass objects checked by PodMeta::read");
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_labels_annotations_and_host_network() {
        let meta = PodMeta::read(&json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"hostNetwork": true, "containers": []}
        }))
        .unwrap();
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.annotations["a"], "b");
        assert!(meta.host_network);
        assert_eq!(PodMeta::read(&json!({})).unwrap(), PodMeta::default());
    }

    #[test]
    fn a_bad_shape_names_its_field() {
        let error = PodMeta::read(&json!({"metadata": {"labels": {"v": 2}}})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "metadata.labels.v: must be a string, not a number"
        );
        let error = PodMeta::read(&json!([1])).unwrap_err();
        assert_eq!(error.field, "pod");
        let error = containers(&json!({"containers": [{"image": "x"}]}), "containers").unwrap_err();
        assert_eq!(error.field, "spec.containers[0].name");
        let error = containers(&json!({"containers": "web"}), "containers").unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.containers: must be a list, not a string"
        );
    }
}
