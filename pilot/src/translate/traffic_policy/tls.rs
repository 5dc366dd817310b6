//! Upstream TLS (`ClientTLSSettings`) as Envoy's `UpstreamTlsContext`, with
//! every certificate fetched over SDS under Istio's resource names, so an
//! Istio-compatible agent serves them:
//!
//! - ISTIO_MUTUAL: the workload certificate `default` and the mesh root
//!   `ROOTCA` from the agent's SDS cluster `sds-grpc`;
//! - SIMPLE / MUTUAL with files: `file-cert:<cert>~<key>` and
//!   `file-root:<ca>` (`system` when no CA is given) from `sds-grpc`, which
//!   reads the files (and follows their rotation) for Envoy;
//! - SIMPLE / MUTUAL with `credentialName`: `kubernetes://<name>` and
//!   `kubernetes://<name>-cacert` from pilot itself over ADS;
//! - auto mTLS (no TLS settings, destination in the mesh): ISTIO_MUTUAL to
//!   endpoints labelled `tlsMode: istio`, plaintext to the others.

use std::cell::OnceCell;
use std::collections::HashMap;

use mesh_config::networking::destination_rule::{ClientTlsSettings, TlsMode};
use prost::encoding::WireType;
use prost::{Message, Name};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::{
    DiscoveryType, TransportSocketMatch,
};
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService,
    TransportSocket,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    data_source::Specifier,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    transport_socket::ConfigType,
};
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use trireme_proto::envoy::pb::envoy::r#type::matcher::v3::{
    StringMatcher, string_matcher::MatchPattern,
};
use trireme_proto::envoy::pb::google::protobuf::{Any, Struct, Value, value::Kind};

use super::{TLS_TRANSPORT_SOCKET, UpstreamCluster, to_any};
use crate::model::mtls::{TLS_MODE_ISTIO, TLS_MODE_KEY};

/// The agent's SDS cluster in the bootstrap (Istio's name).
pub const SDS_CLUSTER: &str = "sds-grpc";
/// SDS name of the workload's own certificate and key.
pub const WORKLOAD_CERTIFICATE: &str = "default";
/// SDS name of the mesh's root certificate.
pub const ROOT_CERTIFICATE: &str = "ROOTCA";
/// ALPN an in-mesh mTLS client offers (peer metadata exchange, then Istio).
pub const ALPN_IN_MESH: [&str; 2] = ["istio-peer-exchange", "istio"];
/// Prefix of secrets pilot serves from Kubernetes.
const KUBERNETES_SECRET_PREFIX: &str = "kubernetes://";
/// Endpoint metadata namespace Envoy reads to pick a cluster's transport
/// socket among its `transport_socket_matches`.
pub const TRANSPORT_SOCKET_MATCH_METADATA: &str = "envoy.transport_socket_match";
/// Name of Envoy's plaintext transport socket.
const RAW_BUFFER_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// Suffix Istio appends to a credential's name for its CA bundle.
const CA_SUFFIX: &str = "-cacert";

/// What TLS needs to know about the cluster it is built for.
#[derive(Debug, Clone, Copy)]
pub struct TlsTarget<'a> {
    /// SNI for ISTIO_MUTUAL when the rule names none.
    pub istio_mtls_sni: &'a str,
    /// Identities accepted when the rule lists no `subjectAltNames`.
    pub service_accounts: &'a [String],
    /// Whether the cluster speaks HTTP/2 (advertised with ALPN `h2`).
    pub http2: bool,
}

/// The TLS context for `tls`, or `None` for DISABLE (and, as Istio does, for
/// MUTUAL with neither files nor a credential, which cannot work).
pub fn upstream_tls_context(
    tls: &ClientTlsSettings,
    target: &TlsTarget<'_>,
) -> Option<UpstreamTlsContext> {
    match tls.mode.unwrap_or_default() {
        TlsMode::Disable => None,
        TlsMode::IstioMutual => Some(istio_mutual(tls, target)),
        TlsMode::Simple => Some(user_tls(tls, target, false)),
        TlsMode::Mutual
            if tls.credential_name.is_empty()
                && (tls.client_certificate.is_empty() || tls.private_key.is_empty()) =>
        {
            tracing::warn!(
                "DestinationRule TLS mode MUTUAL needs clientCertificate and privateKey or a credentialName; \
                 leaving the cluster without TLS"
            );
            None
        }
        TlsMode::Mutual => Some(user_tls(tls, target, true)),
    }
}

/// The ISTIO_MUTUAL context of one destination, for all its clusters at
/// once: they differ only in SNI, so everything else is encoded once and
/// [`EncodedIstioMutual::with_sni`] adds the SNI of each. (Auto mTLS puts one
/// on nearly every cluster; building each whole costs as much as the rest of
/// the cluster.)
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedIstioMutual {
    common_tls_context: Vec<u8>,
}

impl EncodedIstioMutual {
    pub fn new(service_accounts: &[String], http2: bool) -> EncodedIstioMutual {
        let settings = ClientTlsSettings {
            mode: Some(TlsMode::IstioMutual),
            ..Default::default()
        };
        let target = TlsTarget {
            istio_mtls_sni: "",
            service_accounts,
            http2,
        };
        let common = istio_mutual(&settings, &target).common_tls_context;
        EncodedIstioMutual {
            common_tls_context: common.unwrap_or_default().encode_to_vec(),
        }
    }

    /// `UpstreamTlsContext { common_tls_context, sni }` as an `Any`, encoded
    /// exactly as prost encodes the message (fields in number order).
    pub fn with_sni(&self, sni: &str) -> Any {
        let mut value = Vec::with_capacity(self.common_tls_context.len() + sni.len() + 8);
        prost::encoding::bytes::encode(1, &self.common_tls_context, &mut value);
        if !sni.is_empty() {
            // prost's string field encoding, without copying `sni` into a String first.
            prost::encoding::encode_key(2, WireType::LengthDelimited, &mut value);
            prost::encoding::encode_varint(sni.len() as u64, &mut value);
            value.extend_from_slice(sni.as_bytes());
        }
        Any {
            type_url: UpstreamTlsContext::type_url(),
            value,
        }
    }
}

/// Mesh mTLS with the workload's own certificate.
fn istio_mutual(tls: &ClientTlsSettings, target: &TlsTarget<'_>) -> UpstreamTlsContext {
    let sans = if tls.subject_alt_names.is_empty() {
        target.service_accounts
    } else {
        &tls.subject_alt_names
    };
    let mut alpn: Vec<String> = ALPN_IN_MESH.iter().map(|p| p.to_string()).collect();
    if target.http2 {
        alpn.push("h2".into());
    }
    let common = CommonTlsContext {
        tls_params: Some(tls_params()),
        tls_certificate_sds_secret_configs: vec![sds_from_agent(WORKLOAD_CERTIFICATE)],
        alpn_protocols: alpn,
        validation_context_type: Some(combined_validation(
            sans,
            sds_from_agent(ROOT_CERTIFICATE),
            None,
        )),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: if tls.sni.is_empty() {
            target.istio_mtls_sni.to_string()
        } else {
            tls.sni.clone()
        },
        ..Default::default()
    }
}

/// SIMPLE or MUTUAL TLS with the user's certificates.
fn user_tls(tls: &ClientTlsSettings, target: &TlsTarget<'_>, mutual: bool) -> UpstreamTlsContext {
    let sans = if tls.subject_alt_names.is_empty() {
        target.service_accounts
    } else {
        &tls.subject_alt_names
    };
    let (certificate, root) = if tls.credential_name.is_empty() {
        let ca = if tls.ca_certificates.is_empty() {
            "system"
        } else {
            &tls.ca_certificates
        };
        (
            sds_from_agent(&format!(
                "file-cert:{}~{}",
                tls.client_certificate, tls.private_key
            )),
            sds_from_agent(&format!("file-root:{ca}")),
        )
    } else {
        let name = credential_resource(&tls.credential_name);
        (
            sds_from_pilot(&name),
            sds_from_pilot(&format!("{name}{CA_SUFFIX}")),
        )
    };
    let validation = if tls.insecure_skip_verify == Some(true) {
        ValidationContextType::ValidationContext(CertificateValidationContext::default())
    } else {
        let crl = Some(&tls.ca_crl)
            .filter(|c| !c.is_empty())
            .map(|file| DataSource {
                specifier: Some(Specifier::Filename(file.clone())),
                ..Default::default()
            });
        combined_validation(sans, root, crl)
    };
    let common = CommonTlsContext {
        tls_params: Some(tls_params()),
        tls_certificate_sds_secret_configs: if mutual {
            vec![certificate]
        } else {
            Vec::new()
        },
        alpn_protocols: if target.http2 {
            vec!["h2".into()]
        } else {
            Vec::new()
        },
        validation_context_type: Some(validation),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone(),
        ..Default::default()
    }
}

/// TLS 1.2 to 1.3, as Istio pins for upstreams.
fn tls_params() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

/// Trust the root from SDS, and accept only the given SANs (any, if none).
fn combined_validation(
    sans: &[String],
    root: SdsSecretConfig,
    crl: Option<DataSource>,
) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: sans.iter().map(|san| san_matcher(san)).collect(),
            crl,
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(root),
        ..Default::default()
    })
}

/// Exact SAN match: SPIFFE identities are URI SANs, anything else a DNS name.
fn san_matcher(san: &str) -> SubjectAltNameMatcher {
    let san_type = if san.starts_with("spiffe://") {
        SanType::Uri
    } else {
        SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(san.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `kubernetes://<name>` unless the name already says where it lives.
fn credential_resource(name: &str) -> String {
    if name.contains("://") {
        name.to_string()
    } else {
        format!("{KUBERNETES_SECRET_PREFIX}{name}")
    }
}

/// A secret served by the agent beside Envoy (Istio's `ConstructSdsSecretConfig`).
pub fn sds_from_agent(name: &str) -> SdsSecretConfig {
    let grpc = GrpcService {
        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
            cluster_name: SDS_CLUSTER.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    set_node_on_first_message_only: true,
                    grpc_services: vec![grpc],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// A secret served by pilot on the proxy's ADS stream.
pub fn sds_from_pilot(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// Istio's auto mTLS for the clusters of one destination whose policy sets
/// no TLS: endpoints labelled `tlsMode: istio` (in their
/// `envoy.transport_socket_match` metadata) are reached with ISTIO_MUTUAL,
/// every other endpoint in plaintext, so workloads without a sidecar keep
/// working. Get one from [`AutoMtlsCache::destination`].
#[derive(Debug)]
pub struct AutoMtls<'a> {
    service_accounts: &'a [String],
    /// By whether the cluster speaks HTTP/2 (which adds ALPN `h2`).
    encoded: &'a [OnceCell<EncodedIstioMutual>; 2],
}

/// The ISTIO_MUTUAL contexts auto mTLS puts on the clusters of many
/// destinations (one CDS generation), encoded once per set of identities and
/// HTTP version: most destinations share theirs (often none), and encoding
/// one costs more than the rest of a cluster.
#[derive(Debug, Default)]
pub struct AutoMtlsCache {
    by_identities: HashMap<Vec<String>, [OnceCell<EncodedIstioMutual>; 2]>,
}

impl AutoMtlsCache {
    pub fn new() -> AutoMtlsCache {
        AutoMtlsCache::default()
    }

    /// Auto mTLS to a destination whose workloads present `service_accounts`.
    pub fn destination(&mut self, service_accounts: &[String]) -> AutoMtls<'_> {
        if !self.by_identities.contains_key(service_accounts) {
            self.by_identities
                .insert(service_accounts.to_vec(), Default::default());
        }
        let (service_accounts, encoded) = self
            .by_identities
            .get_key_value(service_accounts)
            .expect("inserted above");
        AutoMtls {
            service_accounts,
            encoded,
        }
    }
}

impl AutoMtls<'_> {
    /// Sets the cluster's transport socket matches. ORIGINAL_DST clusters
    /// have no endpoint metadata to choose by and stay plaintext.
    pub fn apply(&self, cluster: &mut UpstreamCluster, sni: &str) {
        if cluster.discovery_type() == Some(DiscoveryType::OriginalDst) {
            return;
        }
        let http2 = cluster.is_http2();
        let context = self.encoded[usize::from(http2)]
            .get_or_init(|| EncodedIstioMutual::new(self.service_accounts, http2))
            .with_sni(sni);
        let istio = Struct {
            fields: [(
                TLS_MODE_KEY.to_string(),
                Value {
                    kind: Some(Kind::StringValue(TLS_MODE_ISTIO.to_string())),
                },
            )]
            .into(),
        };
        cluster.cluster.transport_socket_matches = vec![
            TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(istio),
                transport_socket: Some(TransportSocket {
                    name: TLS_TRANSPORT_SOCKET.to_string(),
                    config_type: Some(ConfigType::TypedConfig(context)),
                }),
            },
            TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(TransportSocket {
                    name: RAW_BUFFER_TRANSPORT_SOCKET.to_string(),
                    config_type: Some(ConfigType::TypedConfig(to_any(&RawBuffer {}))),
                }),
            },
        ];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;

    const TARGET: TlsTarget<'static> = TlsTarget {
        istio_mtls_sni: "outbound_.80_._.a.example.com",
        service_accounts: &[],
        http2: false,
    };

    fn settings(mode: TlsMode) -> ClientTlsSettings {
        ClientTlsSettings {
            mode: Some(mode),
            ..Default::default()
        }
    }

    #[test]
    fn disable_and_incomplete_mutual_give_no_context() {
        assert!(upstream_tls_context(&settings(TlsMode::Disable), &TARGET).is_none());
        assert!(upstream_tls_context(&settings(TlsMode::Mutual), &TARGET).is_none());
    }

    #[test]
    fn simple_without_ca_trusts_the_system_roots() {
        let context = upstream_tls_context(&settings(TlsMode::Simple), &TARGET).unwrap();
        let common = context.common_tls_context.unwrap();
        assert!(common.tls_certificate_sds_secret_configs.is_empty());
        let Some(ValidationContextType::CombinedValidationContext(combined)) =
            common.validation_context_type
        else {
            panic!("expected a combined validation context");
        };
        assert_eq!(
            combined.validation_context_sds_secret_config.unwrap().name,
            "file-root:system"
        );
    }

    #[test]
    fn istio_mutual_defaults_sni_and_offers_mesh_alpn() {
        let context = upstream_tls_context(
            &settings(TlsMode::IstioMutual),
            &TlsTarget {
                http2: true,
                ..TARGET
            },
        )
        .unwrap();
        assert_eq!(context.sni, "outbound_.80_._.a.example.com");
        let common = context.common_tls_context.unwrap();
        assert_eq!(
            common.alpn_protocols,
            vec!["istio-peer-exchange", "istio", "h2"]
        );
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    }

    #[test]
    fn an_encoded_istio_mutual_context_is_what_prost_would_encode() {
        let accounts = vec!["spiffe://cluster.local/ns/a/sa/b".to_string()];
        for http2 in [false, true] {
            let target = TlsTarget {
                istio_mtls_sni: "outbound_.80_.v1_.a.example.com",
                service_accounts: &accounts,
                http2,
            };
            let built = upstream_tls_context(&settings(TlsMode::IstioMutual), &target).unwrap();
            let encoded = EncodedIstioMutual::new(&accounts, http2).with_sni(target.istio_mtls_sni);
            assert_eq!(encoded.type_url, UpstreamTlsContext::type_url());
            assert_eq!(encoded.value, built.encode_to_vec());
        }
    }

    #[test]
    fn the_auto_mtls_cache_keeps_each_set_of_identities_apart() {
        let a = vec!["spiffe://cluster.local/ns/a/sa/a".to_string()];
        let b = vec!["spiffe://cluster.local/ns/b/sa/b".to_string()];
        let mut cache = AutoMtlsCache::new();
        for accounts in [&a, &b, &a] {
            let mut cluster = Cluster::default();
            cache
                .destination(accounts)
                .apply(&mut UpstreamCluster::new(&mut cluster), "sni");
            let socket = cluster.transport_socket_matches[0].transport_socket.clone();
            let Some(ConfigType::TypedConfig(context)) = socket.unwrap().config_type else {
                panic!("expected a typed TLS context");
            };
            assert_eq!(
                context,
                EncodedIstioMutual::new(accounts, false).with_sni("sni")
            );
        }
    }

    #[test]
    fn credentials_resolve_to_kubernetes_secrets() {
        assert_eq!(
            credential_resource("client-creds"),
            "kubernetes://client-creds"
        );
        assert_eq!(
            credential_resource("configmap://ns/ca"),
            "configmap://ns/ca"
        );
    }
}
