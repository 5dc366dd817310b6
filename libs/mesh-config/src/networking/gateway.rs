//! `Gateway` (`istio.networking.v1alpha3.Gateway`) and the messages it uses.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A load balancer at the edge of the mesh and the ports/hosts it exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods this configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listening port of a gateway and the hosts served on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: Port,
    /// Address (IP or `unix://` socket) to bind to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Hosts exposed, optionally as `namespace/host`.
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Loopback endpoint to forward to (not implemented upstream).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// Unique name, used e.g. for stats and route names.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A port a gateway listens on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    pub number: u32,
    /// HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS.
    pub protocol: String,
    pub name: String,
    /// Deprecated; only meaningful for ServiceEntry ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS settings of a gateway server or sidecar ingress listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP requests to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Path to the server certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Path to the private key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path to the CA bundle used to verify client certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Path to a certificate revocation list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// Secret holding the key and certificate (and optionally the CA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Several secrets, e.g. one RSA and one ECDSA certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Secret holding only the CA certificate for client verification.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    /// Several file-based key/certificate pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Base64 SHA-256 hashes of accepted client certificates' SPKI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Hex SHA-256 hashes of accepted client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Let connections through even when the client certificate fails validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// How a server handles TLS (`ServerTLSSettings.TLSmode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// Forward the connection untouched, routing on SNI.
    #[default]
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    /// Terminate TLS with server authentication only.
    #[serde(rename = "SIMPLE")]
    Simple,
    /// Terminate TLS and require a client certificate.
    #[serde(rename = "MUTUAL")]
    Mutual,
    /// Passthrough that routes on SNI without a matching VirtualService.
    #[serde(rename = "AUTO_PASSTHROUGH")]
    AutoPassthrough,
    /// Mutual TLS with Istio-issued certificates.
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
    /// Like `MUTUAL`, but a client certificate is optional.
    #[serde(rename = "OPTIONAL_MUTUAL")]
    OptionalMutual,
}

/// One file-based key/certificate pair (`ServerTLSSettings.TLSCertificate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}

/// TLS protocol version (`ServerTLSSettings.TLSProtocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    /// Let the proxy choose.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}
