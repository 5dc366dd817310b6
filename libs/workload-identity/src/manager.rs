//! Keeps a workload's certificate fresh: fetches it (retrying with backoff
//! until the CA answers), replaces it when the configured share of its life
//! is left, and publishes every new identity on a watch channel. While the CA
//! is unreachable the current certificate stays published and the manager
//! keeps trying.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::ca_client::{CertificateSigner, SignRequest};
use crate::identity::{PrivateKey, WorkloadIdentity};
use crate::keys::{self, KeyError, KeyType};
use crate::schedule::{Backoff, BackoffPolicy, RotationPolicy};

/// The identities a manager publishes: `None` until the first certificate
/// arrives, then always the newest one.
pub type IdentityReceiver = watch::Receiver<Option<Arc<WorkloadIdentity>>>;

/// Istio's `SECRET_TTL` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What to ask for and when to renew it.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub spiffe_id: String,
    pub key_type: KeyType,
    /// Requested lifetime (Istio's `SECRET_TTL`); the CA may shorten it.
    pub ttl: Duration,
    pub rotation: RotationPolicy,
    pub backoff: BackoffPolicy,
}

impl ManagerConfig {
    /// Istio's defaults for `spiffe_id`: a P-256 key, 24 h, renewed at half life.
    pub fn new(spiffe_id: impl Into<String>) -> Self {
        Self {
            spiffe_id: spiffe_id.into(),
            key_type: KeyType::default(),
            ttl: DEFAULT_TTL,
            rotation: RotationPolicy::DEFAULT,
            backoff: BackoffPolicy::DEFAULT,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let rest = self
            .spiffe_id
            .strip_prefix("spiffe://")
            .ok_or_else(|| ConfigError::SpiffeId(self.spiffe_id.clone()))?;
        if rest.is_empty() || !rest.contains('/') {
            return Err(ConfigError::SpiffeId(self.spiffe_id.clone()));
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(ConfigError::Ttl(self.ttl));
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err(ConfigError::Backoff(self.backoff));
        }
        self.rotation.validate().map_err(ConfigError::Rotation)
    }
}

/// A manager that cannot work with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0:?} is not a SPIFFE ID (spiffe://<trust-domain>/<path>)")]
    SpiffeId(String),
    #[error("certificate TTL {0:?} is shorter than a second")]
    Ttl(Duration),
    #[error("backoff {0:?} must start above zero and not exceed its maximum")]
    Backoff(BackoffPolicy),
    #[error("{0}")]
    Rotation(String),
}

/// Holds the workload's certificate; the task stops when this is dropped.
#[derive(Debug)]
pub struct CertificateManager {
    identities: IdentityReceiver,
    task: JoinHandle<()>,
}

impl CertificateManager {
    /// Starts fetching at once, on the current Tokio runtime.
    pub fn start<S: CertificateSigner>(
        config: ManagerConfig,
        signer: S,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (publish, identities) = watch::channel(None);
        let span = tracing::info_span!("workload_certificate", spiffe_id = %config.spiffe_id);
        span.in_scope(|| {
            tracing::info!(
                key_type = %config.key_type,
                ttl = ?config.ttl,
                grace_period_ratio = config.rotation.grace_period_ratio,
                "requesting a workload certificate"
            );
        });
        let task = tokio::spawn(keep_fresh(config, signer, publish).instrument(span));
        Ok(Self { identities, task })
    }

    /// A receiver of every identity from now on.
    pub fn subscribe(&self) -> IdentityReceiver {
        self.identities.clone()
    }

    /// The newest identity, if one has arrived.
    pub fn current(&self) -> Option<Arc<WorkloadIdentity>> {
        self.identities.borrow().clone()
    }

    /// Waits for the first identity (returns at once if there is one).
    pub async fn ready(&self) -> Arc<WorkloadIdentity> {
        let mut identities = self.subscribe();
        let ready = identities
            .wait_for(Option::is_some)
            .await
            .expect("the manager's task lives as long as the manager");
        ready.clone().expect("waited for Some")
    }
}

impl Drop for CertificateManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetch, publish, sleep until the refresh is due; forever.
async fn keep_fresh<S: CertificateSigner>(
    config: ManagerConfig,
    signer: S,
    publish: watch::Sender<Option<Arc<WorkloadIdentity>>>,
) {
    let mut backoff = Backoff::new(config.backoff);
    loop {
        let current = publish.borrow().clone();
        let identity = obtain(&config, &signer, current.as_deref(), &mut backoff).await;
        let refresh_in = config
            .rotation
            .jittered_refresh_delay(identity.lifetime(), identity.remaining(SystemTime::now()));
        tracing::info!(
            serial = identity.serial(),
            lifetime = ?identity.lifetime(),
            ?refresh_in,
            renewal = current.is_some(),
            "workload certificate issued"
        );
        publish.send_replace(Some(Arc::new(identity)));
        sleep(refresh_in).await;
    }
}

/// A new identity, however many attempts that takes. `current` stays
/// published (and, while valid, authenticates the renewal) meanwhile.
async fn obtain<S: CertificateSigner>(
    config: &ManagerConfig,
    signer: &S,
    current: Option<&WorkloadIdentity>,
    backoff: &mut Backoff,
) -> WorkloadIdentity {
    // One key per certificate, kept across retries: RSA keys take a while.
    let (key, csr) = loop {
        match new_key_and_csr(config).await {
            Ok(made) => break made,
            Err(error) => sleep(note_failure(backoff, &error, current)).await,
        }
    };
    loop {
        match attempt(config, signer, &key, &csr, current).await {
            Ok(identity) => {
                backoff.reset();
                return identity;
            }
            Err(error) => sleep(note_failure(backoff, &*error, current)).await,
        }
    }
}

async fn new_key_and_csr(config: &ManagerConfig) -> Result<(PrivateKey, String), KeyError> {
    let (key_type, spiffe_id) = (config.key_type, config.spiffe_id.clone());
    // Key generation is CPU work (a prime search for RSA): keep it off the
    // async workers.
    tokio::task::spawn_blocking(move || make_key_and_csr(key_type, &spiffe_id))
        .await
        .expect("key generation does not panic")
}

fn make_key_and_csr(key_type: KeyType, spiffe_id: &str) -> Result<(PrivateKey, String), KeyError> {
    let key: Zeroizing<String> = keys::generate(key_type)?;
    let csr = keys::csr_pem(spiffe_id, &key)?;
    Ok((PrivateKey::new(key), csr))
}

async fn attempt<S: CertificateSigner>(
    config: &ManagerConfig,
    signer: &S,
    key: &PrivateKey,
    csr: &str,
    current: Option<&WorkloadIdentity>,
) -> Result<WorkloadIdentity, Box<dyn std::error::Error + Send + Sync>> {
    let signed = signer
        .sign(SignRequest {
            csr_pem: csr,
            ttl: config.ttl,
            current,
        })
        .await?;
    let identity = WorkloadIdentity::new(
        &config.spiffe_id,
        key.clone(),
        signed.chain,
        &signed.configured_roots,
        SystemTime::now(),
    )?;
    Ok(identity)
}

/// Logs a failed attempt; returns how long to wait before the next.
fn note_failure(
    backoff: &mut Backoff,
    error: &(dyn std::error::Error + 'static),
    current: Option<&WorkloadIdentity>,
) -> Duration {
    let retry_in = backoff.next_delay();
    let now = SystemTime::now();
    tracing::warn!(
        %error,
        failures = backoff.failures(),
        ?retry_in,
        serving = current.map(WorkloadIdentity::serial),
        serving_expires_in_s = current.map(|identity| identity.seconds_until_expiry(now) as i64),
        "could not obtain a workload certificate; retrying"
    );
    retry_in
}

#[cfg(test)]
mod tests;
