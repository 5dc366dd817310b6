//! A connected proxy, identified the way Istio's agent identifies it, so a
//! bootstrap written for Istio works unchanged.
//!
//! Node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, with
//! type `sidecar` or `router`; node metadata carries `NAMESPACE`, `LABELS`,
//! `CLUSTER_ID`, `SERVICE_ACCOUNT`, ... (unknown keys are ignored).

use std::collections::BTreeMap;

use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};

/// Istio's proxy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    /// A workload's sidecar.
    Sidecar,
    /// A gateway (ingress or egress).
    Router,
}

impl ProxyType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Sidecar => "sidecar",
            ProxyType::Router => "router",
        }
    }
}

/// How outbound and inbound traffic reaches a sidecar (Istio's
/// `INTERCEPTION_MODE` node metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum InterceptionMode {
    /// iptables REDIRECT to the proxy's capture ports (Istio's default).
    Redirect,
    /// iptables TPROXY, keeping the original source address.
    Tproxy,
    /// No capture: applications address the proxy's listeners themselves, so
    /// they must bind real ports and nothing can be passed through as addressed.
    None,
}

impl InterceptionMode {
    /// Reads Istio's names; an absent or unknown mode is REDIRECT, as in Istio.
    pub fn parse(mode: &str) -> InterceptionMode {
        match mode.to_ascii_uppercase().as_str() {
            "NONE" => InterceptionMode::None,
            "TPROXY" => InterceptionMode::Tproxy,
            _ => InterceptionMode::Redirect,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        }
    }
}

/// A proxy as pilot sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proxy {
    /// The full node id, unique per connected proxy.
    pub id: String,
    pub proxy_type: ProxyType,
    pub ip_addresses: Vec<String>,
    /// `<pod>.<namespace>`.
    pub pod_id: String,
    pub namespace: String,
    /// DNS domain, e.g. `default.svc.cluster.local`.
    pub dns_domain: String,
    pub labels: BTreeMap<String, String>,
    pub cluster_id: String,
    pub service_account: String,
    pub workload_name: String,
    pub interception_mode: String,
    pub istio_version: String,
    pub mesh_id: String,
}

/// Why a node could not be read as a proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyParseError {
    #[error("request carries no node; Envoy sends one on the first request of a stream")]
    MissingNode,
    #[error(
        "node id {id:?} is malformed: expected <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain> ({reason})"
    )]
    MalformedId { id: String, reason: &'static str },
}

impl Proxy {
    /// How traffic reaches this proxy.
    pub fn interception(&self) -> InterceptionMode {
        InterceptionMode::parse(&self.interception_mode)
    }

    /// Whether every address of the proxy is IPv6 (it then resolves names to
    /// IPv6 only, as Istio does without dual stack).
    pub fn ipv6_only(&self) -> bool {
        !self.ip_addresses.is_empty()
            && self
                .ip_addresses
                .iter()
                .all(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    }

    /// Reads the proxy from the node Envoy sends.
    pub fn from_node(node: Option<&Node>) -> Result<Proxy, ProxyParseError> {
        let node = node.ok_or(ProxyParseError::MissingNode)?;
        let malformed = |reason| ProxyParseError::MalformedId {
            id: node.id.clone(),
            reason,
        };
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ips, pod_id, dns_domain] = parts[..] else {
            return Err(malformed("it must have four parts separated by '~'"));
        };
        let proxy_type = match kind {
            "sidecar" => ProxyType::Sidecar,
            "router" => ProxyType::Router,
            _ => return Err(malformed("the type must be sidecar or router")),
        };
        if ips.is_empty() {
            return Err(malformed("the IP address is empty"));
        }
        if pod_id.is_empty() {
            return Err(malformed("the pod part is empty"));
        }
        let metadata = Metadata(node.metadata.as_ref());
        // The agent lists every pod IP in INSTANCE_IPS; the node id carries one.
        let ip_addresses = metadata
            .string("INSTANCE_IPS")
            .map(|ips| split_ips(&ips))
            .filter(|ips| !ips.is_empty())
            .unwrap_or_else(|| split_ips(ips));
        let namespace = metadata
            .string("NAMESPACE")
            .or_else(|| pod_id.split_once('.').map(|(_, ns)| ns.to_string()))
            .filter(|ns| !ns.is_empty())
            .ok_or_else(|| malformed("no namespace in the pod part or NAMESPACE metadata"))?;
        Ok(Proxy {
            id: node.id.clone(),
            proxy_type,
            ip_addresses,
            pod_id: pod_id.to_string(),
            namespace,
            dns_domain: dns_domain.to_string(),
            labels: metadata.string_map("LABELS"),
            cluster_id: metadata.string("CLUSTER_ID").unwrap_or_default(),
            service_account: metadata.string("SERVICE_ACCOUNT").unwrap_or_default(),
            workload_name: metadata.string("WORKLOAD_NAME").unwrap_or_default(),
            interception_mode: metadata.string("INTERCEPTION_MODE").unwrap_or_default(),
            istio_version: metadata.string("ISTIO_VERSION").unwrap_or_default(),
            mesh_id: metadata.string("MESH_ID").unwrap_or_default(),
        })
    }
}

fn split_ips(ips: &str) -> Vec<String> {
    ips.split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string)
        .collect()
}

/// Typed reads from node metadata; a key of the wrong type counts as absent.
struct Metadata<'a>(Option<&'a Struct>);

impl Metadata<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.0?.fields.get(key)
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.value(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn string_map(&self, key: &str) -> BTreeMap<String, String> {
        let Some(Kind::StructValue(map)) = self.value(key).and_then(|v| v.kind.as_ref()) else {
            return BTreeMap::new();
        };
        map.fields
            .iter()
            .filter_map(|(k, v)| match v.kind.as_ref()? {
                Kind::StringValue(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(value: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(value.into())),
        }
    }

    fn node(id: &str, metadata: Vec<(&str, Value)>) -> Node {
        Node {
            id: id.into(),
            metadata: Some(Struct {
                fields: metadata
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_istio_node_ids_and_metadata() {
        let labels = Value {
            kind: Some(Kind::StructValue(Struct {
                fields: [("istio".to_string(), string("ingressgateway"))].into(),
            })),
        };
        let node = node(
            "router~10.0.0.5~gw-7d9f.istio-system~istio-system.svc.cluster.local",
            vec![
                ("LABELS", labels),
                ("CLUSTER_ID", string("Kubernetes")),
                ("SOMETHING_NEW", string("ignored")),
            ],
        );
        let proxy = Proxy::from_node(Some(&node)).unwrap();
        assert_eq!(proxy.proxy_type, ProxyType::Router);
        assert_eq!(proxy.ip_addresses, vec!["10.0.0.5"]);
        assert_eq!(proxy.namespace, "istio-system");
        assert_eq!(proxy.labels["istio"], "ingressgateway");
        assert_eq!(proxy.cluster_id, "Kubernetes");
    }

    #[test]
    fn metadata_namespace_wins_over_the_pod_part() {
        let node = node(
            "sidecar~10.0.0.6~app.ns1~ns1.svc.cluster.local",
            vec![("NAMESPACE", string("ns2"))],
        );
        assert_eq!(Proxy::from_node(Some(&node)).unwrap().namespace, "ns2");
    }

    #[test]
    fn instance_ips_list_every_address_of_the_pod() {
        let with_ips = node(
            "sidecar~10.0.0.6~app.ns1~ns1.svc.cluster.local",
            vec![
                ("INSTANCE_IPS", string("10.0.0.6,fd00::6")),
                ("INTERCEPTION_MODE", string("NONE")),
            ],
        );
        let proxy = Proxy::from_node(Some(&with_ips)).unwrap();
        assert_eq!(proxy.ip_addresses, vec!["10.0.0.6", "fd00::6"]);
        assert_eq!(proxy.interception(), InterceptionMode::None);
        let plain = node("sidecar~10.0.0.6~app.ns1~ns1.svc.cluster.local", vec![]);
        let plain = Proxy::from_node(Some(&plain)).unwrap();
        assert_eq!(plain.ip_addresses, vec!["10.0.0.6"]);
        assert_eq!(plain.interception(), InterceptionMode::Redirect);
    }

    #[test]
    fn interception_mode_defaults_to_redirect() {
        let none = node(
            "sidecar~10.0.0.6~app.ns1~ns1.svc.cluster.local",
            vec![("INTERCEPTION_MODE", string("NONE"))],
        );
        let proxy = Proxy::from_node(Some(&none)).unwrap();
        assert_eq!(proxy.interception(), InterceptionMode::None);
        let unset = node("sidecar~10.0.0.6~app.ns1~ns1.svc.cluster.local", vec![]);
        assert_eq!(
            Proxy::from_node(Some(&unset)).unwrap().interception(),
            InterceptionMode::Redirect
        );
        assert_eq!(InterceptionMode::parse("tproxy"), InterceptionMode::Tproxy);
    }

    #[test]
    fn malformed_ids_are_refused_with_the_expected_shape() {
        for id in [
            "",
            "sidecar~10.0.0.1",
            "proxy~10.0.0.1~a.b~b.svc.cluster.local",
            "sidecar~~a.b~b.svc.cluster.local",
            "sidecar~10.0.0.1~nonamespace~svc.cluster.local",
        ] {
            let err = Proxy::from_node(Some(&node(id, vec![]))).unwrap_err();
            assert!(err.to_string().contains("<type>~<ip>"), "{id}: {err}");
        }
        assert_eq!(Proxy::from_node(None), Err(ProxyParseError::MissingNode));
    }
}
