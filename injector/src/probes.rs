//! Application probes through the agent. With mTLS enforced, kubelet's
//! plain-text probes of the app's ports would be refused by the sidecar, so
//! (as Istio does) each HTTP, TCP and gRPC probe of an app container is
//! rewritten to an HTTP GET of `/app-health/<container>/<livez|readyz|startupz>`
//! on the agent's status port, and the original probe is handed to the agent
//! in `ISTIO_KUBE_APP_PROBERS`, which it runs from inside the pod.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::pod::{PodShapeError, name_of};

/// Probe fields and the path suffix the agent serves them under.
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// The original probes by their new path: `ISTIO_KUBE_APP_PROBERS`.
pub type AppProbers = BTreeMap<String, Value>;

/// The probes of `containers` that the agent will run, by path, with named
/// ports resolved to numbers (the agent cannot see container ports).
pub fn collect(containers: &[&Value]) -> Result<AppProbers, PodShapeError> {
    let mut probers = AppProbers::new();
    for (index, container) in containers.iter().enumerate() {
        for (field, suffix) in PROBES {
            let Some(probe) = container.get(field).filter(|p| !p.is_null()) else {
                continue;
            };
            let at = format!("spec.containers[{index}].{field}");
            if let Some(original) = agent_probe(container, probe, &at)? {
                let path = format!("/app-health/{}/{suffix}", name_of(container));
                probers.insert(path, original);
            }
        }
    }
    Ok(probers)
}

/// What the agent runs for `probe`, or `None` for an exec probe (run by
/// kubelet in the container, untouched).
fn agent_probe(container: &Value, probe: &Value, at: &str) -> Result<Option<Value>, PodShapeError> {
    let mut original = Map::new();
    for action in ["httpGet", "tcpSocket", "grpc"] {
        if let Some(handler) = probe.get(action).filter(|h| !h.is_null()) {
            let mut handler = handler.clone();
            let port_at = format!("{at}.{action}.port");
            if let Some(port) = handler.get_mut("port") {
                *port = json!(resolve_port(container, port, &port_at)?);
            } else {
                return Err(PodShapeError::new(port_at, "a probe needs a port"));
            }
            original.insert(action.to_string(), handler);
        }
    }
    if original.is_empty() {
        return Ok(None);
    }
    if let Some(timeout) = probe.get("timeoutSeconds") {
        original.insert("timeoutSeconds".to_string(), timeout.clone());
    }
    Ok(Some(Value::Object(original)))
}

fn resolve_port(container: &Value, port: &Value, at: &str) -> Result<u16, PodShapeError> {
    match port {
        Value::Number(number) => number
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| PodShapeError::new(at, format!("{number} is not a port number"))),
        Value::String(name) => {
            if let Ok(number) = name.parse::<u16>() {
                return Ok(number);
            }
            named_port(container, name).ok_or_else(|| {
                PodShapeError::new(at, format!("the container has no port named {name:?}"))
            })
        }
        _ => Err(PodShapeError::new(at, "must be a port number or name")),
    }
}

fn named_port(container: &Value, name: &str) -> Option<u16> {
    container
        .get("ports")?
        .as_array()?
        .iter()
        .find(|port| port.get("name").and_then(Value::as_str) == Some(name))?
        .get("containerPort")?
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
}

/// Points every collected probe of `containers` at the agent on
/// `status_port`, keeping the probe's timing fields.
pub fn rewrite(containers: &mut [Value], probers: &AppProbers, status_port: u16) {
    for container in containers {
        let name = name_of(container).to_string();
        for (field, suffix) in PROBES {
            let path = format!("/app-health/{name}/{suffix}");
            if !probers.contains_key(&path) {
                continue;
            }
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            for action in ["httpGet", "tcpSocket", "grpc"] {
                probe.remove(action);
            }
            probe.insert(
                "httpGet".to_string(),
                json!({"path": path, "port": status_port, "scheme": "HTTP"}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tcp_and_grpc_probes_go_through_the_agent_exec_stays() {
        let mut containers = vec![
            json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
                   "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "timeoutSeconds": 3, "periodSeconds": 7},
                   "readinessProbe": {"tcpSocket": {"port": 8080}}}),
            json!({"name": "rpc", "startupProbe": {"grpc": {"port": 9090}},
                   "readinessProbe": {"exec": {"command": ["true"]}}}),
        ];
        let probers = collect(&containers.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            serde_json::to_value(&probers).unwrap(),
            json!({
                "/app-health/web/livez": {"httpGet": {"path": "/live", "port": 8080}, "timeoutSeconds": 3},
                "/app-health/web/readyz": {"tcpSocket": {"port": 8080}},
                "/app-health/rpc/startupz": {"grpc": {"port": 9090}},
            })
        );
        rewrite(&mut containers, &probers, 15020);
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/web/livez", "port": 15020, "scheme": "HTTP"},
                   "timeoutSeconds": 3, "periodSeconds": 7})
        );
        assert_eq!(containers[0]["readinessProbe"]["httpGet"]["port"], 15020);
        assert!(containers[0]["readinessProbe"].get("tcpSocket").is_none());
        assert_eq!(
            containers[1]["readinessProbe"],
            json!({"exec": {"command": ["true"]}})
        );
    }

    #[test]
    fn an_unknown_named_port_names_the_probe() {
        let container = json!({"name": "web", "readinessProbe": {"httpGet": {"port": "admin"}}});
        let error = collect(&[&container]).unwrap_err();
        assert_eq!(
            error.field,
            "spec.containers[0].readinessProbe.httpGet.port"
        );
        assert!(error.reason.contains("\"admin\""));
    }
}
