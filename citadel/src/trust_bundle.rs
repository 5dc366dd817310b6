//! The trust bundle on the bus: a JetStream key-value entry, one per trust
//! domain, that pilot, the injector and agents read to know which roots to
//! trust. citadel is its only writer.

use std::future::Future;
use std::time::Duration;

use event_bus::{BackoffPolicy, BucketConfig, Bus, ConnectionState, KvBucket};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::reload::SharedAuthority;

/// The bucket holding trust bundles, keyed by trust domain.
pub const TRUST_BUNDLE_BUCKET: &str = "trust-bundle";

/// The value stored under a trust domain's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub trust_domain: String,
    /// Every trusted root, PEM, the signing root first. Two while a root
    /// rotation is under way.
    pub roots: Vec<String>,
}

impl TrustBundle {
    pub fn of(trust_domain: &str, authority: &Authority) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            roots: pem::parse_many(authority.root_cert_pem())
                .unwrap_or_default()
                .into_iter()
                .map(|block| {
                    pem::encode_config(
                        &block,
                        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                    )
                })
                .collect(),
        }
    }
}

pub fn bucket_config() -> BucketConfig {
    BucketConfig::new(TRUST_BUNDLE_BUCKET)
        .with_description("Trust bundle (root certificates) per trust domain, written by citadel")
}

/// Keeps the bus's copy of the trust bundle equal to the authority's: written
/// when the bus (re)connects, so a NATS server that lost its state gets it
/// back, and whenever the bundle changes. Runs until `shutdown`.
pub async fn publish(
    bus: Bus,
    trust_domain: String,
    mut authority: SharedAuthority,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connection = bus.watch_connection();
    let mut published: Option<TrustBundle> = None;
    let mut bucket: Option<KvBucket<TrustBundle>> = None;
    let mut failures = 0;
    loop {
        let bundle = TrustBundle::of(&trust_domain, &authority.borrow_and_update());
        if published.as_ref() != Some(&bundle) && bus.is_connected() {
            let attempt = tokio::time::timeout(PUT_TIMEOUT, put(&bus, &mut bucket, &bundle)).await;
            let attempt = attempt
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {PUT_TIMEOUT:?}")));
            match attempt {
                Ok(revision) => {
                    tracing::info!(%trust_domain, roots = bundle.roots.len(), revision, "trust bundle published");
                    published = Some(bundle);
                    failures = 0;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "publishing the trust bundle failed; retrying"
                    );
                }
            }
        }
        let retry = retry_delay(failures);
        tokio::select! {
            _ = &mut shutdown => return,
            changed = authority.changed() => if changed.is_err() { return },
            changed = connection.changed() => {
                if changed.is_err() { return }
                if *connection.borrow_and_update() == ConnectionState::Connected {
                    // The server may have restarted without its state.
                    published = None;
                }
            }
            _ = tokio::time::sleep(retry), if failures > 0 => {}
        }
    }
}

async fn put(
    bus: &Bus,
    bucket: &mut Option<KvBucket<TrustBundle>>,
    bundle: &TrustBundle,
) -> anyhow::Result<u64> {
    if bucket.is_none() {
        *bucket = Some(bus.kv_bucket(bucket_config()).await?);
    }
    let bucket = bucket.as_ref().expect("opened above");
    Ok(bucket.put(&bundle.trust_domain, bundle).await?)
}

/// Bounds one attempt, so a connection lost mid-way is retried rather than
/// waited on.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

fn retry_delay(failures: u32) -> Duration {
    BackoffPolicy::DEFAULT.delay(failures)
}
