//! An in-memory CA for tests of code that holds or serves identities: it
//! signs any CSR it is given for the TTL asked, and can be switched off to
//! play an unreachable CA. Not for production (feature `testing`).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::ca_client::{CaError, CertificateSigner, SignRequest, Signed};
use crate::identity::{PrivateKey, WorkloadIdentity};
use crate::keys::{self, KeyType};

/// One request the CA saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub ttl: Duration,
    /// Whether the caller offered its current certificate (a renewal).
    pub renewal: bool,
    /// Whether it was signed (the CA was available).
    pub signed: bool,
    /// When it arrived, on Tokio's clock (which tests may pause).
    pub at: tokio::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    unavailable: bool,
    seen: Vec<SeenRequest>,
}

pub struct TestCa {
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    state: Mutex<State>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A fresh self-signed P-256 root.
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Trireme test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).expect("self-signed root");
        Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
            state: Mutex::default(),
        }
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// While unavailable, every request fails as if the CA were down.
    pub fn set_available(&self, available: bool) {
        self.state.lock().unwrap().unavailable = !available;
    }

    /// Every request so far, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().seen.clone()
    }

    /// An identity for `spiffe_id` valid for `ttl` from now, made directly
    /// (no manager): for tests of what consumes identities.
    pub fn issue(&self, spiffe_id: &str, ttl: Duration) -> WorkloadIdentity {
        let key = keys::generate(KeyType::EcdsaP256).expect("P-256 key");
        let csr = keys::csr_pem(spiffe_id, &key).expect("CSR");
        let chain = self.sign_csr(&csr, ttl).expect("signing");
        WorkloadIdentity::new(
            spiffe_id,
            PrivateKey::new(key),
            chain,
            &[],
            SystemTime::now(),
        )
        .expect("a valid identity")
    }

    pub(crate) fn sign_csr(
        &self,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, rcgen::Error> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - time::Duration::seconds(60);
        csr.params.not_after = now + ttl;
        let mut serial = fastrand::u128(..).to_be_bytes();
        serial[0] &= 0x7f;
        csr.params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = csr.signed_by(&self.issuer)?;
        Ok(vec![leaf.pem(), self.root_pem.clone()])
    }
}

impl CertificateSigner for TestCa {
    async fn sign<'a>(&'a self, request: SignRequest<'a>) -> Result<Signed, CaError> {
        let available = {
            let mut state = self.state.lock().unwrap();
            let available = !state.unavailable;
            state.seen.push(SeenRequest {
                ttl: request.ttl,
                renewal: request.current.is_some(),
                signed: available,
                at: tokio::time::Instant::now(),
            });
            available
        };
        if !available {
            return Err(CaError::Connect {
                address: "test-ca".into(),
                detail: "the test CA is switched off".into(),
            });
        }
        let chain = self
            .sign_csr(request.csr_pem, request.ttl)
            .map_err(|error| CaError::Refused {
                code: tonic::Code::InvalidArgument,
                message: error.to_string(),
            })?;
        Ok(Signed {
            chain,
            configured_roots: vec![self.root_pem.clone()],
        })
    }
}
