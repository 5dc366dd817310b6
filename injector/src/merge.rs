//! Merging the rendered template into a pod. Labels and annotations are
//! added where the pod has none of that name; containers, init containers,
//! volumes and image pull secrets are merged by name. When the pod already
//! declares a container the template injects (say `istio-proxy`, to give the
//! proxy more memory), the pod's fields are laid over the template's, as
//! Istio does, and the container keeps the pod's position.

use serde_json::{Map, Value};

use crate::pod::object_entry;

/// Named lists merged by `name`, and where the template's new items go.
const NAMED_LISTS: [(&str, Placement); 4] = [
    ("initContainers", Placement::First),
    ("containers", Placement::Last),
    ("volumes", Placement::Last),
    ("imagePullSecrets", Placement::Last),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    First,
    Last,
}

/// Merges `fragment` (`metadata` and `spec`) into `pod`. `proxy_first`
/// places the template's containers before the app's (to start first).
pub fn merge(pod: &mut Value, fragment: &Value, proxy_first: bool) {
    if let Some(metadata) = fragment.get("metadata").and_then(Value::as_object) {
        let pod_metadata = object_entry(pod, "metadata");
        for key in ["labels", "annotations"] {
            if let Some(added) = metadata.get(key).and_then(Value::as_object) {
                add_missing(pod_metadata, key, added);
            }
        }
    }
    let Some(spec_fragment) = fragment.get("spec").and_then(Value::as_object) else {
        return;
    };
    let spec = object_entry(pod, "spec");
    for (key, value) in spec_fragment {
        match NAMED_LISTS.iter().find(|(list, _)| list == key) {
            Some((_, placement)) => {
                let placement = if key == "containers" && proxy_first {
                    Placement::First
                } else {
                    *placement
                };
                merge_named_list(spec, key, value, placement);
            }
            // Other spec fields (e.g. a securityContext): the pod's own win.
            None => {
                spec.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
}

fn add_missing(metadata: &mut Map<String, Value>, key: &str, added: &Map<String, Value>) {
    let entry = metadata
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let existing = entry.as_object_mut().expect("made an object above");
    for (name, value) in added {
        existing
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
}

fn merge_named_list(spec: &mut Map<String, Value>, key: &str, added: &Value, placement: Placement) {
    let Some(added) = added.as_array() else {
        return;
    };
    let mut placed = Vec::new();
    let mut appended = Vec::new();
    for item in added {
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        let own = take_named(spec, key, name).or_else(|| {
            // A pod's own `istio-proxy` follows the proxy into
            // `initContainers` when it becomes a native sidecar (and back).
            sibling_list(key)
                .and_then(|other| take_named(spec, other, name).map(|(_, c)| (usize::MAX, c)))
        });
        match own {
            Some((index, own)) => {
                let mut merged = item.clone();
                overlay(&mut merged, &without_auto_image(own));
                match placement {
                    Placement::Last if index != usize::MAX => placed.push((index, merged)),
                    _ => appended.push(merged),
                }
            }
            None => appended.push(item.clone()),
        }
    }
    let items = list_entry(spec, key);
    // Put the pod's own items back where they were, lowest index first.
    placed.sort_by_key(|(index, _)| *index);
    for (index, merged) in placed {
        items.insert(index.min(items.len()), merged);
    }
    match placement {
        Placement::First => {
            appended.append(items);
            *items = appended;
        }
        Placement::Last => items.extend(appended),
    }
}

fn sibling_list(key: &str) -> Option<&'static str> {
    match key {
        "containers" => Some("initContainers"),
        "initContainers" => Some("containers"),
        _ => None,
    }
}

fn list_entry<'a>(spec: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let list = spec
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    list.as_array_mut().expect("made a list above")
}

/// Removes the item named `name` from `spec[key]`, with its index.
fn take_named(spec: &mut Map<String, Value>, key: &str, name: &str) -> Option<(usize, Value)> {
    let items = spec.get_mut(key)?.as_array_mut()?;
    let index = items
        .iter()
        .position(|item| item.get("name").and_then(Value::as_str) == Some(name))?;
    Some((index, items.remove(index)))
}

/// A pod's own container with Istio's `image: auto` keeps the injected image.
fn without_auto_image(mut container: Value) -> Value {
    if let Some(map) = container.as_object_mut()
        && map.get("image").and_then(Value::as_str) == Some("auto")
    {
        map.remove("image");
    }
    container
}

/// Lays `top` over `base`: objects merge key by key, anything else in `top`
/// replaces what `base` had.
pub fn overlay(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(key) {
                    Some(existing) => overlay(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, top) => *base = top.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn adds_missing_metadata_and_keeps_the_pods_own() {
        let mut pod = json!({"metadata": {"labels": {"app": "web", "service.istio.io/canonical-name": "shop"}}});
        merge(
            &mut pod,
            &json!({"metadata": {"labels": {"service.istio.io/canonical-name": "web", "security.istio.io/tlsMode": "istio"}}}),
            false,
        );
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "web", "service.istio.io/canonical-name": "shop", "security.istio.io/tlsMode": "istio"})
        );
    }

    #[test]
    fn containers_go_last_init_containers_first_unless_the_proxy_must_start_first() {
        let fragment = json!({"spec": {
            "initContainers": [{"name": "istio-init"}],
            "containers": [{"name": "istio-proxy"}],
            "volumes": [{"name": "istio-envoy"}],
        }});
        let pod = json!({"spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "web"}]}});
        let mut last = pod.clone();
        merge(&mut last, &fragment, false);
        assert_eq!(
            last["spec"]["initContainers"],
            json!([{"name": "istio-init"}, {"name": "migrate"}])
        );
        assert_eq!(
            last["spec"]["containers"],
            json!([{"name": "web"}, {"name": "istio-proxy"}])
        );
        assert_eq!(last["spec"]["volumes"], json!([{"name": "istio-envoy"}]));
        let mut first = pod;
        merge(&mut first, &fragment, true);
        assert_eq!(
            first["spec"]["containers"],
            json!([{"name": "istio-proxy"}, {"name": "web"}])
        );
    }

    #[test]
    fn a_pods_own_proxy_moves_with_the_injected_one() {
        let pod = json!({"spec": {"containers": [
            {"name": "web"},
            {"name": "istio-proxy", "image": "auto", "resources": {"limits": {"memory": "2Gi"}}},
        ]}});
        let native =
            json!({"spec": {"initContainers": [{"name": "istio-proxy", "image": "agent:1"}]}});
        let mut moved = pod.clone();
        merge(&mut moved, &native, false);
        assert_eq!(moved["spec"]["containers"], json!([{"name": "web"}]));
        assert_eq!(
            moved["spec"]["initContainers"],
            json!([{"name": "istio-proxy", "image": "agent:1", "resources": {"limits": {"memory": "2Gi"}}}])
        );
        let first = json!({"spec": {"containers": [{"name": "istio-proxy", "image": "agent:1"}]}});
        let mut held = pod;
        merge(&mut held, &first, true);
        assert_eq!(held["spec"]["containers"][0]["name"], "istio-proxy");
        assert_eq!(held["spec"]["containers"][0]["image"], "agent:1");
        assert_eq!(held["spec"]["containers"][1]["name"], "web");
    }

    #[test]
    fn a_pods_own_proxy_container_overrides_the_templates_fields() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "istio-proxy", "resources": {"limits": {"memory": "2Gi"}}},
            {"name": "web"},
        ]}});
        let fragment = json!({"spec": {"containers": [{"name": "istio-proxy", "image": "agent",
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]}});
        merge(&mut pod, &fragment, false);
        assert_eq!(
            pod["spec"]["containers"],
            json!([
                {"name": "istio-proxy", "image": "agent", "resources": {"limits": {"cpu": "2", "memory": "2Gi"}}},
                {"name": "web"},
            ])
        );
    }
}
