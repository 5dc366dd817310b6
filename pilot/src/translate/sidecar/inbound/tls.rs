//! The server side of mesh mutual TLS: the workload's certificate and the
//! mesh root both come from the agent over SDS (`default`, `ROOTCA` on the
//! bootstrap's `sds-grpc` cluster), never inlined, so rotation needs no push.

use trireme_proto::envoy::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsParameters,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    tls_parameters::TlsProtocol,
};
use trireme_proto::envoy::pb::google::protobuf::BoolValue;
use trireme_proto::envoy::util::pack_any;

use crate::translate::traffic_policy::{
    ROOT_CERTIFICATE, TLS_TRANSPORT_SOCKET, WORKLOAD_CERTIFICATE, sds_from_agent,
};

/// TLS 1.2 ciphers Istio accepts on inbound mTLS: forward-secret AES-GCM
/// first, plain AES-GCM for old clients, nothing CBC. (TLS 1.3 suites are
/// not configurable and all acceptable.)
const TLS12_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// ALPN the server offers to HTTP callers. Deliberately never
/// `istio-peer-exchange`: an Istio client that negotiated it would start
/// Istio's metadata exchange, which stock Envoy does not speak.
const HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The transport socket of an mTLS filter chain: a client certificate signed
/// by the mesh root is required; which identities may call is authorization's
/// business, not the handshake's.
pub(super) fn mesh_mtls_socket(http: bool) -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                cipher_suites: TLS12_CIPHERS.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![sds_from_agent(WORKLOAD_CERTIFICATE)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext::default()),
                    validation_context_sds_secret_config: Some(sds_from_agent(ROOT_CERTIFICATE)),
                    ..Default::default()
                },
            )),
            alpn_protocols: if http {
                HTTP_ALPN.iter().map(|p| p.to_string()).collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}
