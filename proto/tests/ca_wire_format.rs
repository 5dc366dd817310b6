//! The certificate service must be byte-compatible with Istio's: an Istio
//! agent's request has to decode here and our responses there.

use prost::Message;
use trireme_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};

#[test]
fn request_fields_use_istios_numbers() {
    let request = IstioCertificateRequest {
        csr: "x".into(),
        validity_duration: 60,
        metadata: None,
    };
    // csr is field 1 (length-delimited: tag 0x0a), validity_duration field 3
    // (varint: tag 0x18); field 2 is unused, as in Istio.
    assert_eq!(request.encode_to_vec(), vec![0x0a, 1, b'x', 0x18, 60]);
}

#[test]
fn metadata_is_a_struct_in_field_4() {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "ClusterID".to_string(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("Kubernetes".into())),
        },
    );
    let request = IstioCertificateRequest {
        csr: String::new(),
        validity_duration: 0,
        metadata: Some(prost_types::Struct { fields }),
    };
    let bytes = request.encode_to_vec();
    assert_eq!(bytes[0], 0x22, "field 4, length-delimited");
    let decoded = IstioCertificateRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, request);
}

#[test]
fn response_chain_is_repeated_field_1() {
    let response = IstioCertificateResponse {
        cert_chain: vec!["leaf".into(), "root".into()],
    };
    let bytes = response.encode_to_vec();
    assert_eq!(&bytes[..2], &[0x0a, 4]);
    assert_eq!(
        IstioCertificateResponse::decode(bytes.as_slice()).unwrap(),
        response
    );
}

#[test]
fn generated_service_name_matches_istio_and_our_constant() {
    use trireme_proto::istio::v1::auth::istio_certificate_service_server::SERVICE_NAME;
    assert_eq!(SERVICE_NAME, "istio.v1.auth.IstioCertificateService");
    assert_eq!(
        trireme_proto::CREATE_CERTIFICATE_PATH,
        format!("/{SERVICE_NAME}/CreateCertificate")
    );
}
