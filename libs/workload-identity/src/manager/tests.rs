//! The manager against the in-memory CA, on Tokio's paused clock: timings
//! are exact and minutes pass instantly.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::testing::TestCa;

const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

fn config(ttl: Duration) -> ManagerConfig {
    ManagerConfig {
        ttl,
        rotation: RotationPolicy {
            grace_period_ratio: 0.5,
            grace_period_ratio_jitter: 0.0,
        },
        backoff: BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        ..ManagerConfig::new(ID)
    }
}

async fn next_identity(identities: &mut IdentityReceiver) -> Arc<WorkloadIdentity> {
    identities.changed().await.expect("manager running");
    identities.borrow_and_update().clone().expect("an identity")
}

#[tokio::test(start_paused = true)]
async fn renews_when_half_the_lifetime_is_left() {
    let ca = Arc::new(TestCa::new());
    let manager = CertificateManager::start(config(Duration::from_secs(100)), ca.clone()).unwrap();
    let mut identities = manager.subscribe();
    let first = next_identity(&mut identities).await;
    let issued = Instant::now();
    assert_eq!(first.spiffe_id(), ID);

    let second = next_identity(&mut identities).await;
    let waited = issued.elapsed();
    // X.509 times have whole seconds, so the lifetime seen is 99-100 s.
    assert!(
        (Duration::from_millis(49_000)..=Duration::from_millis(50_100)).contains(&waited),
        "renewed after {waited:?}"
    );
    assert_ne!(first.serial(), second.serial());
    assert_ne!(
        first.private_key().pem(),
        second.private_key().pem(),
        "a new key"
    );
    let seen = ca.seen();
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].renewal && seen[1].renewal, "{seen:?}");
    assert!(
        seen.iter()
            .all(|request| request.ttl == Duration::from_secs(100))
    );
}

#[tokio::test(start_paused = true)]
async fn keeps_serving_the_current_certificate_and_backs_off_while_the_ca_is_down() {
    let ca = Arc::new(TestCa::new());
    let manager = CertificateManager::start(config(Duration::from_secs(100)), ca.clone()).unwrap();
    let mut identities = manager.subscribe();
    let first = next_identity(&mut identities).await;
    ca.set_available(false);

    // The renewal is due at ~50 s; at 80 s the CA has been down for 30 s.
    tokio::time::sleep(Duration::from_secs(80)).await;
    assert_eq!(manager.current().unwrap().serial(), first.serial());
    assert!(!identities.has_changed().unwrap(), "nothing new published");
    let failed: Vec<Instant> = ca.seen().iter().skip(1).map(|seen| seen.at).collect();
    assert!(failed.len() >= 8, "{} attempts", failed.len());
    for (retry, pair) in failed.windows(2).enumerate() {
        let nominal = config(Duration::ZERO).backoff.nominal(retry as u32);
        let gap = pair[1] - pair[0];
        assert!(
            nominal / 2 <= gap && gap <= nominal,
            "retry {retry}: waited {gap:?}, nominal {nominal:?}"
        );
    }

    ca.set_available(true);
    let back = Instant::now();
    let renewed = next_identity(&mut identities).await;
    assert!(
        back.elapsed() <= Duration::from_secs(5),
        "{:?}",
        back.elapsed()
    );
    assert_ne!(renewed.serial(), first.serial());
    assert!(ca.seen().last().unwrap().signed);
}

#[tokio::test(start_paused = true)]
async fn the_first_fetch_retries_until_the_ca_answers() {
    let ca = Arc::new(TestCa::new());
    ca.set_available(false);
    let manager = CertificateManager::start(config(Duration::from_secs(100)), ca.clone()).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(manager.current().is_none());
    assert!(ca.seen().len() >= 5, "{:?}", ca.seen().len());

    ca.set_available(true);
    let identity = manager.ready().await;
    assert_eq!(identity.spiffe_id(), ID);
    assert!(!ca.seen().last().unwrap().renewal);
}

#[test]
fn refuses_a_configuration_it_cannot_work_with() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let bad = [
        ManagerConfig::new("cluster.local/ns/a/sa/b"),
        ManagerConfig::new("spiffe://"),
        ManagerConfig {
            ttl: Duration::ZERO,
            ..ManagerConfig::new(ID)
        },
        ManagerConfig {
            rotation: RotationPolicy {
                grace_period_ratio: 2.0,
                grace_period_ratio_jitter: 0.0,
            },
            ..ManagerConfig::new(ID)
        },
        ManagerConfig {
            backoff: BackoffPolicy {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(1),
            },
            ..ManagerConfig::new(ID)
        },
    ];
    for config in bad {
        let shown = format!("{config:?}");
        assert!(
            CertificateManager::start(config, TestCa::new()).is_err(),
            "{shown}"
        );
    }
}
