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
//!   `kubernetes://<name>-cacert` from pilot itself over ADS.

use mesh_config::networking::destination_rule::{ClientTlsSettings, TlsMode};
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    data_source::Specifier,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
};
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

#[cfg(test)]
mod tests {
    use super::*;

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
