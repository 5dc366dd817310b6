//! The node a simulated proxy sends, rendered from a JSON template the way
//! Istio's agent fills in a sidecar's bootstrap: id
//! `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` and the metadata pilot
//! reads (NAMESPACE, LABELS, INTERCEPTION_MODE, ...; see pilot's
//! `model::proxy`).
//!
//! Placeholders in any string of the template: `{i}` (proxy index), `{ns}`,
//! `{pod}`, `{ip}`.

use std::net::Ipv4Addr;

use anyhow::Context;
use serde_json::Value as Json;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

/// A sidecar of an app labelled `app: load` in its namespace. Every proxy of
/// a namespace has the same labels, so pilot's per-view sharing applies as
/// it would to one deployment's pods.
pub const DEFAULT_TEMPLATE: &str = r#"{
  "id": "sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local",
  "cluster": "load.{ns}",
  "metadata": {
    "NAMESPACE": "{ns}",
    "LABELS": {"app": "load", "security.istio.io/tlsMode": "istio"},
    "INTERCEPTION_MODE": "REDIRECT",
    "INSTANCE_IPS": "{ip}",
    "CLUSTER_ID": "Kubernetes",
    "SERVICE_ACCOUNT": "default",
    "WORKLOAD_NAME": "load",
    "ISTIO_VERSION": "1.24.0",
    "MESH_ID": "cluster.local"
  }
}"#;

/// Who one simulated proxy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    pub index: usize,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
}

impl ProxyIdentity {
    /// Proxy `index` of a load spread round-robin over `namespaces`
    /// namespaces `ns-0`.., with consecutive pod IPs from `first_ip`.
    pub fn new(index: usize, namespaces: usize, first_ip: Ipv4Addr) -> ProxyIdentity {
        ProxyIdentity {
            index,
            namespace: format!("ns-{}", index % namespaces.max(1)),
            pod: format!("load-{index}"),
            ip: Ipv4Addr::from(u32::from(first_ip).wrapping_add(index as u32)),
        }
    }
}

/// A parsed node template.
#[derive(Debug, Clone)]
pub struct NodeTemplate(Json);

impl NodeTemplate {
    /// Reads a template: inline JSON, or `@path` to a JSON file.
    pub fn parse(text: &str) -> anyhow::Result<NodeTemplate> {
        let text = match text.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading node template {path}"))?,
            None => text.to_string(),
        };
        let json: Json = serde_json::from_str(&text).context("node template is not JSON")?;
        let id = json.get("id").and_then(Json::as_str);
        anyhow::ensure!(id.is_some(), "node template needs a string \"id\"");
        if let Some(metadata) = json.get("metadata") {
            anyhow::ensure!(
                metadata.is_object(),
                "node template's \"metadata\" must be an object"
            );
        }
        Ok(NodeTemplate(json))
    }

    /// The node of one proxy.
    pub fn render(&self, proxy: &ProxyIdentity) -> Node {
        let json = substitute(&self.0, proxy);
        let string = |key: &str| {
            json.get(key)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let metadata = match json.get("metadata") {
            Some(Json::Object(map)) => Some(to_struct(map)),
            _ => None,
        };
        Node {
            id: string("id"),
            cluster: string("cluster"),
            metadata,
            user_agent_name: "envoy".into(),
            ..Default::default()
        }
    }
}

impl Default for NodeTemplate {
    fn default() -> Self {
        NodeTemplate::parse(DEFAULT_TEMPLATE).expect("the default template is valid")
    }
}

fn substitute(json: &Json, proxy: &ProxyIdentity) -> Json {
    match json {
        Json::String(s) if s.contains('{') => Json::String(
            s.replace("{i}", &proxy.index.to_string())
                .replace("{ns}", &proxy.namespace)
                .replace("{pod}", &proxy.pod)
                .replace("{ip}", &proxy.ip.to_string()),
        ),
        Json::Array(items) => Json::Array(items.iter().map(|v| substitute(v, proxy)).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, proxy)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn to_struct(map: &serde_json::Map<String, Json>) -> Struct {
    Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_field<'a>(s: &'a Struct, key: &str) -> &'a str {
        match s.fields[key].kind.as_ref() {
            Some(Kind::StringValue(v)) => v,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn the_default_node_is_a_sidecar_of_its_namespace() {
        let proxy = ProxyIdentity::new(12, 5, "10.200.0.1".parse().unwrap());
        assert_eq!(proxy.namespace, "ns-2");
        assert_eq!(proxy.ip, "10.200.0.13".parse::<Ipv4Addr>().unwrap());
        let node = NodeTemplate::default().render(&proxy);
        assert_eq!(
            node.id,
            "sidecar~10.200.0.13~load-12.ns-2~ns-2.svc.cluster.local"
        );
        let metadata = node.metadata.unwrap();
        assert_eq!(string_field(&metadata, "NAMESPACE"), "ns-2");
        assert_eq!(string_field(&metadata, "INSTANCE_IPS"), "10.200.0.13");
        let Some(Kind::StructValue(labels)) = metadata.fields["LABELS"].kind.as_ref() else {
            panic!("LABELS is a struct");
        };
        assert_eq!(string_field(labels, "app"), "load");
    }

    #[test]
    fn templates_need_an_id() {
        assert!(NodeTemplate::parse(r#"{"metadata": {}}"#).is_err());
        assert!(NodeTemplate::parse(r#"{"id": "x", "metadata": 3}"#).is_err());
        let router =
            NodeTemplate::parse(r#"{"id": "router~{ip}~gw-{i}.{ns}~{ns}.svc.cluster.local"}"#)
                .unwrap()
                .render(&ProxyIdentity::new(1, 1, "10.0.0.1".parse().unwrap()));
        assert_eq!(
            router.id,
            "router~10.0.0.2~gw-1.ns-0~ns-0.svc.cluster.local"
        );
    }
}
