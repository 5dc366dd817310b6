//! The webhook's answer is an RFC 6902 JSON Patch from the pod as sent to
//! the pod as injected, so applying it gives exactly what `trireme
//! kube-inject` prints for the same pod.

use serde_json::Value;

/// The patch turning `before` into `after`, as JSON text.
pub fn create(before: &Value, after: &Value) -> Vec<u8> {
    let patch = json_patch::diff(before, after);
    serde_json::to_vec(&patch).expect("a patch is JSON")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn applying_the_patch_gives_the_injected_pod() {
        let before = json!({"metadata": {"annotations": {"a/b": "1"}}, "spec": {"containers": [{"name": "web"}]}});
        let after = json!({"metadata": {"annotations": {"a/b": "1", "sidecar.istio.io/status": "{}"}},
            "spec": {"containers": [{"name": "web"}, {"name": "istio-proxy"}], "volumes": [{"name": "v"}]}});
        let patch: json_patch::Patch = serde_json::from_slice(&create(&before, &after)).unwrap();
        let mut patched = before.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, after);
    }
}
