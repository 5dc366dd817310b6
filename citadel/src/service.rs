//! The `istio.v1.auth.IstioCertificateService` gRPC service: authenticate,
//! check the CSR, sign for the proved identity only.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use trireme_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use trireme_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};

use crate::auth::{AuthenticatorChain, Credentials};
use crate::authority::{Authority, SignError};
use crate::csr::VerifiedCsr;
use crate::reload::SharedAuthority;

/// Bound on a decoded request: a CSR is a few KiB at most.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// citadel's metrics under Istio's names. Istio exports these counters
/// without the `_total` suffix, so they are gauges that only increase.
#[derive(Debug, Clone, Default)]
pub struct CitadelMetrics {
    pub csr_count: Gauge,
    pub success_cert_issuance_count: Gauge,
    pub authentication_failure_count: Gauge,
    pub csr_parsing_err_count: Gauge,
    pub id_extraction_err_count: Gauge,
    pub csr_sign_err_count: Gauge,
    pub root_cert_expiry_timestamp: Gauge,
    pub cert_chain_expiry_timestamp: Gauge,
}

impl CitadelMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let entries: [(&str, &str, &Gauge); 8] = [
            (
                "citadel_server_csr_count",
                "The number of CSRs received by Citadel server",
                &metrics.csr_count,
            ),
            (
                "citadel_server_success_cert_issuance_count",
                "The number of certificates issuances that have succeeded",
                &metrics.success_cert_issuance_count,
            ),
            (
                "citadel_server_authentication_failure_count",
                "The number of authentication failures",
                &metrics.authentication_failure_count,
            ),
            (
                "citadel_server_csr_parsing_err_count",
                "The number of errors occurred when parsing the CSR",
                &metrics.csr_parsing_err_count,
            ),
            (
                "citadel_server_id_extraction_err_count",
                "The number of errors occurred when extracting the ID from CSR",
                &metrics.id_extraction_err_count,
            ),
            (
                "citadel_server_csr_sign_err_count",
                "The number of errors occurred when signing the CSR",
                &metrics.csr_sign_err_count,
            ),
            (
                "citadel_server_root_cert_expiry_timestamp",
                "The unix timestamp, in seconds, when Citadel root cert will expire",
                &metrics.root_cert_expiry_timestamp,
            ),
            (
                "citadel_server_cert_chain_expiry_timestamp",
                "The unix timestamp, in seconds, when Citadel cert chain will expire",
                &metrics.cert_chain_expiry_timestamp,
            ),
        ];
        for (name, help, gauge) in entries {
            registry.register(name, help, gauge.clone());
        }
        metrics
    }

    pub fn record_authority(&self, authority: &Authority) {
        self.root_cert_expiry_timestamp
            .set(authority.root_not_after().unix_timestamp());
        self.cert_chain_expiry_timestamp
            .set(authority.cert_chain_not_after().unix_timestamp());
    }

    /// Keeps the expiry gauges in step with the authority in use.
    pub async fn follow_authority(&self, mut authority: SharedAuthority) {
        loop {
            self.record_authority(&authority.borrow_and_update());
            if authority.changed().await.is_err() {
                return;
            }
        }
    }
}

pub struct CertificateService {
    authority: SharedAuthority,
    authenticators: AuthenticatorChain,
    metrics: CitadelMetrics,
}

impl CertificateService {
    /// A service that always signs with `authority`.
    pub fn new(
        authority: Arc<Authority>,
        authenticators: AuthenticatorChain,
        metrics: CitadelMetrics,
    ) -> Self {
        Self::following(watch::channel(authority).1, authenticators, metrics)
    }

    /// A service that signs with whatever authority is current, as a plug-in
    /// CA reload or a root rotation changes it.
    pub fn following(
        authority: SharedAuthority,
        authenticators: AuthenticatorChain,
        metrics: CitadelMetrics,
    ) -> Self {
        metrics.record_authority(&authority.borrow());
        Self {
            authority,
            authenticators,
            metrics,
        }
    }

    /// The tonic service with the request size bounded.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let peer_certs: Vec<Vec<u8>> = request
            .peer_certs()
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        let credentials = Credentials {
            metadata: request.metadata(),
            peer_certs: &peer_certs,
        };
        let identity = match self.authenticators.authenticate(&credentials).await {
            Ok(identity) => identity,
            Err(error) => {
                self.metrics.authentication_failure_count.inc();
                tracing::info!(%error, "certificate request not authenticated");
                return Err(Status::unauthenticated(error.to_string()));
            }
        };
        let request = request.into_inner();
        let csr = VerifiedCsr::from_pem(request.csr.as_bytes()).map_err(|error| {
            self.metrics.csr_parsing_err_count.inc();
            tracing::info!(%error, %identity, "CSR refused");
            Status::invalid_argument(error.to_string())
        })?;
        let ttl = match request.validity_duration {
            0 => None,
            seconds if seconds < 0 => {
                return Err(Status::invalid_argument(
                    "validity_duration must not be negative",
                ));
            }
            seconds => Some(Duration::from_secs(seconds as u64)),
        };
        let authority = self.authority.borrow().clone();
        let chain = authority.sign(&csr, &identity, ttl).map_err(|error| {
            tracing::info!(%error, %identity, "signing refused");
            match error {
                SignError::IdentityMismatch { .. } => {
                    self.metrics.id_extraction_err_count.inc();
                    Status::permission_denied(error.to_string())
                }
                SignError::TtlTooLong { .. } | SignError::ZeroTtl | SignError::UnusableKey(_) => {
                    self.metrics.csr_sign_err_count.inc();
                    Status::invalid_argument(error.to_string())
                }
                SignError::CaExpired | SignError::Signing(_) => {
                    self.metrics.csr_sign_err_count.inc();
                    Status::internal(error.to_string())
                }
            }
        })?;
        self.metrics.success_cert_issuance_count.inc();
        tracing::info!(%identity, "certificate issued");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}
