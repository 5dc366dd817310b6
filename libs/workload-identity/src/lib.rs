//! A workload's certificate from citadel (or Istio's CA): keys and CSRs for a
//! SPIFFE ID, the `IstioCertificateService` client, and a
//! [`CertificateManager`] that keeps the certificate fresh and publishes each
//! new one. The agent serves it to Envoy over SDS; control-plane services use
//! it for their own serving certificates.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use workload_identity::{CaClient, CaClientConfig, CertificateManager, ManagerConfig};
//!
//! let ca = CaClient::new(CaClientConfig {
//!     address: "citadel.istio-system.svc:15012".into(),
//!     root_cert: "./var/run/secrets/istio/root-cert.pem".into(),
//!     token_path: "./var/run/secrets/tokens/istio-token".into(),
//!     server_name: None,
//!     timeout: CaClientConfig::DEFAULT_TIMEOUT,
//! })?;
//! let manager = CertificateManager::start(
//!     ManagerConfig::new("spiffe://cluster.local/ns/bookinfo/sa/reviews"),
//!     ca,
//! )?;
//! let identities = manager.subscribe(); // hand to the SDS server
//! let first = manager.ready().await;
//! println!("serving {}", first.serial());
//! # Ok(()) }
//! ```

pub mod args;
pub mod ca_client;
pub mod identity;
pub mod keys;
pub mod manager;
pub mod schedule;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use args::IdentityArgs;
pub use ca_client::{CaClient, CaClientConfig, CaError, CertificateSigner, SignRequest, Signed};
pub use identity::{IdentityError, PrivateKey, WorkloadIdentity};
pub use keys::{KeyType, RsaKeySize};
pub use manager::{CertificateManager, ConfigError, IdentityReceiver, ManagerConfig};
pub use schedule::{BackoffPolicy, RotationPolicy};
