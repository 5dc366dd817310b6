//! CustomResourceDefinitions generated from the config model, so the schema the
//! API server enforces is the one Trireme parses. The checked-in copies live in
//! `deploy/crds/`; a test fails when they are stale (`make crds` rewrites them).
//! The schemas carry the CEL rules of Istio's own CRDs ([`cel_rules`], which
//! galley's `validation` enforces too) and Istio's size limits ([`limits`]).

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::kinds::Kind;

pub mod cel_rules;
pub mod limits;

/// The CRD of `kind` as a JSON value (apiextensions.k8s.io/v1), every served
/// version carrying the same structural schema.
pub fn custom_resource_definition(kind: Kind) -> Value {
    let info = kind.info();
    let schema = open_api_schema(kind);
    let versions: Vec<Value> = info
        .versions
        .iter()
        .map(|version| {
            json!({
                "name": version,
                "served": true,
                "storage": *version == info.storage_version,
                "schema": { "openAPIV3Schema": schema },
                "subresources": { "status": {} },
            })
        })
        .collect();
    let group_category = info.group.replace('.', "-");
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", info.plural, info.group),
            "labels": { "app.kubernetes.io/part-of": "trireme" },
        },
        "spec": {
            "group": info.group,
            "names": {
                "kind": info.kind,
                "listKind": format!("{}List", info.kind),
                "plural": info.plural,
                "singular": info.kind.to_lowercase(),
                "shortNames": info.short_names,
                "categories": ["istio-io", group_category],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    })
}

/// The CRD rendered as YAML, as written to `deploy/crds/<plural>.<group>.yaml`.
pub fn custom_resource_definition_yaml(kind: Kind) -> String {
    let header = "# Generated from Trireme's config model by `make crds`; do not edit.\n";
    let body = serde_yaml_ng::to_string(&custom_resource_definition(kind))
        .expect("a JSON value always renders as YAML");
    format!("{header}{body}")
}

/// The file name of a kind's CRD inside `deploy/crds/`.
pub fn file_name(kind: Kind) -> String {
    let info = kind.info();
    format!("{}.{}.yaml", info.plural, info.group)
}

/// Where `make crds` writes the CRDs, relative to the workspace root: plain
/// files for `kubectl apply -f`, and the kustomize base (kustomize loads
/// nothing from outside a kustomization's root).
pub const CRD_DIRS: [&str; 2] = ["deploy/crds", "deploy/kubernetes/base/crds"];

/// The `kustomization.yaml` beside the base's CRDs, listing every kind's.
pub fn kustomization_yaml() -> String {
    let mut text = String::from(
        "# Generated from Trireme's config model by `make crds`; do not edit.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for kind in Kind::ALL {
        text.push_str(&format!("  - {}\n", file_name(*kind)));
    }
    text
}

fn open_api_schema(kind: Kind) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let mut spec = kind.spec_schema(&mut generator).to_value();
    make_structural(&mut spec);
    cel_rules::apply(kind, &mut spec);
    limits::apply(kind, &mut spec);
    if let Some(object) = spec.as_object_mut() {
        object.insert(
            "description".into(),
            Value::String(format!("Spec of the {} resource.", kind.info().kind)),
        );
    }
    json!({
        "type": "object",
        "properties": {
            "spec": spec,
            "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
        },
    })
}

/// Rewrites a JSON Schema into the structural subset of OpenAPI v3 that the
/// Kubernetes API server accepts in a CRD.
fn make_structural(schema: &mut Value) {
    if let Value::Bool(_) = schema {
        // `true` accepts anything: a free-form value such as an EnvoyFilter patch.
        *schema = json!({ "x-kubernetes-preserve-unknown-fields": true });
        return;
    }
    let Value::Object(object) = schema else {
        return;
    };
    for key in [
        "$schema",
        "title",
        "default",
        "$defs",
        "propertyNames",
        "examples",
    ] {
        object.remove(key);
    }
    let constrains_shape = [
        "type",
        "enum",
        "const",
        "properties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
    ]
    .iter()
    .any(|key| object.contains_key(*key));
    if !constrains_shape {
        // Only a description: a free-form value (google.protobuf.Struct/Value).
        object.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
        return;
    }
    collapse_nullable(object);
    collapse_const_alternatives(object);
    if let Some(constant) = object.remove("const") {
        object.insert("enum".into(), Value::Array(vec![constant]));
    }
    if object.get("additionalProperties") == Some(&Value::Bool(false)) {
        // Unknown fields are pruned by the API server; `false` is not structural.
        object.remove("additionalProperties");
    }
    if let Some(Value::Object(patterns)) = object.remove("patternProperties") {
        // Maps keyed by numbers (e.g. port-level mTLS): the values' schema is what matters.
        if let Some((_, value_schema)) = patterns.into_iter().next() {
            object.insert("additionalProperties".into(), value_schema);
        }
    }
    if let Some(Value::String(format)) = object.get("format")
        && !matches!(format.as_str(), "int32" | "int64" | "double" | "float")
    {
        object.remove("format");
    }
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(properties) = child {
                    properties.values_mut().for_each(make_structural);
                }
            }
            "items" | "additionalProperties" => make_structural(child),
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(alternatives) = child {
                    alternatives.iter_mut().for_each(make_structural);
                }
            }
            _ => {}
        }
    }
}

/// `type: [T, "null"]` or `anyOf: [S, {type: null}]` (an `Option`) becomes
/// plain `T` / `S`: absence, not null, is how a field is left unset.
fn collapse_nullable(object: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = object.get("type") {
        let non_null: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if non_null.len() == 1 {
            object.insert("type".into(), non_null[0].clone());
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alternatives)) = object.get(key) else {
            continue;
        };
        let non_null: Vec<&Value> = alternatives
            .iter()
            .filter(|alt| alt.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if non_null.len() == 1 && alternatives.len() == 2 {
            let inner = non_null[0].clone();
            object.remove(key);
            merge_into(object, inner);
        }
    }
    if let Some(Value::Array(all)) = object.get("allOf")
        && all.len() == 1
    {
        let inner = all[0].clone();
        object.remove("allOf");
        merge_into(object, inner);
    }
}

/// `oneOf: [{const: A}, {const: B}]` (an enum with documented variants)
/// becomes `type: string, enum: [A, B]`.
fn collapse_const_alternatives(object: &mut Map<String, Value>) {
    let Some(Value::Array(alternatives)) = object.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    for alternative in alternatives {
        match (alternative.get("const"), alternative.get("enum")) {
            (Some(constant), _) => values.push(constant.clone()),
            (None, Some(Value::Array(many))) => values.extend(many.iter().cloned()),
            _ => return,
        }
    }
    object.remove("oneOf");
    object.insert("type".into(), Value::String("string".into()));
    object.insert("enum".into(), Value::Array(values));
}

/// Merges `inner`'s keys into `object`, keeping `object`'s own description.
fn merge_into(object: &mut Map<String, Value>, inner: Value) {
    if let Value::Object(inner) = inner {
        for (key, value) in inner {
            if key == "description" && object.contains_key("description") {
                continue;
            }
            object.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_free_form_values_become_structural() {
        let mut schema = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "timeout": { "type": ["string", "null"], "description": "d" },
                "patch": true,
                "mode": { "oneOf": [ { "const": "A" }, { "const": "B" } ] },
                "port": { "type": "integer", "format": "uint32", "minimum": 0 },
                "nested": { "anyOf": [ { "type": "object", "properties": {} }, { "type": "null" } ], "description": "keep" },
            },
        });
        make_structural(&mut schema);
        assert_eq!(schema.get("additionalProperties"), None);
        let properties = &schema["properties"];
        assert_eq!(
            properties["timeout"],
            json!({ "type": "string", "description": "d" })
        );
        assert_eq!(
            properties["patch"],
            json!({ "x-kubernetes-preserve-unknown-fields": true })
        );
        assert_eq!(
            properties["mode"],
            json!({ "type": "string", "enum": ["A", "B"] })
        );
        assert_eq!(
            properties["port"],
            json!({ "type": "integer", "minimum": 0 })
        );
        assert_eq!(properties["nested"]["description"], "keep");
        assert_eq!(properties["nested"]["type"], "object");
    }
}
