//! Publishes this replica's proxies' sync state to the bus
//! ([`PROXY_STATUS_BUCKET`]), so `trireme proxy-status` sees every proxy
//! of every replica in one place. Entries are refreshed well within the
//! bucket's TTL and deleted when their proxy disconnects; a replica that
//! dies takes its entries with it when the TTL runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use event_bus::{BucketConfig, Bus, KvBucket, KvError};
use mesh_config::store::{
    PROXY_STATUS_BUCKET, PROXY_STATUS_TTL_SECONDS, ProxyStatus, TypeStatus, proxy_status_key,
};
use tokio_util::sync::CancellationToken;

use super::sync_status::{ProxySync, SyncStatus, TypeSync, now_millis};

/// How often the state is compared and changes written.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

pub async fn open_bucket(bus: &Bus) -> Result<KvBucket<ProxyStatus>, KvError> {
    bus.kv_bucket(
        BucketConfig::new(PROXY_STATUS_BUCKET)
            .with_description("each connected proxy's xDS sync state, by pilot replica")
            .with_max_age(Duration::from_secs(PROXY_STATUS_TTL_SECONDS)),
    )
    .await
}

/// This replica's view of one proxy, in the bus's words.
pub fn proxy_status(sync: &ProxySync, replica: &str) -> ProxyStatus {
    ProxyStatus {
        proxy: sync.proxy.clone(),
        replica: replica.to_owned(),
        protocol: sync.protocol.to_owned(),
        types: sync
            .types
            .iter()
            .map(|(type_url, state)| (short_type_name(type_url), type_status(state)))
            .collect(),
        updated_at: now_millis() as u64,
    }
}

fn type_status(state: &TypeSync) -> TypeStatus {
    let acked_at = state.acked_at.map(|at| at as u64);
    // A NACK counts until a later ACK supersedes it.
    let nack = state
        .last_nack
        .as_ref()
        .filter(|nack| acked_at.is_none_or(|acked| nack.at as u64 >= acked))
        .map(|nack| nack.error.clone());
    TypeStatus {
        sent_version: state.sent_version.clone(),
        acked_version: state.acked_version.clone(),
        sent_at: state.sent_at.map(|at| at as u64),
        acked_at,
        nack,
    }
}

/// `CDS` for `type.googleapis.com/envoy.config.cluster.v3.Cluster`, and so on.
fn short_type_name(type_url: &str) -> String {
    let message = type_url.rsplit('.').next().unwrap_or(type_url);
    match message {
        "Cluster" => "CDS",
        "Listener" => "LDS",
        "ClusterLoadAssignment" => "EDS",
        "RouteConfiguration" => "RDS",
        "Secret" => "SDS",
        other => other,
    }
    .to_owned()
}

/// Writes changes every [`PUBLISH_INTERVAL`] until `stop` is cancelled.
pub async fn run(
    bucket: KvBucket<ProxyStatus>,
    sync: SyncStatus,
    replica: String,
    stop: CancellationToken,
) {
    let refresh_after = Duration::from_secs(PROXY_STATUS_TTL_SECONDS / 3).as_millis() as u64;
    let mut published: BTreeMap<String, ProxyStatus> = BTreeMap::new();
    let mut interval = tokio::time::interval(PUBLISH_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let current: BTreeMap<String, ProxyStatus> = sync
            .snapshot()
            .iter()
            .map(|proxy| {
                let status = proxy_status(proxy, &replica);
                (proxy_status_key(&replica, &status.proxy), status)
            })
            .collect();
        for (key, status) in &current {
            let due = published.get(key).is_none_or(|last| {
                !same_state(last, status) || status.updated_at - last.updated_at >= refresh_after
            });
            if !due {
                continue;
            }
            match bucket.put(key, status).await {
                Ok(_) => {
                    published.insert(key.clone(), status.clone());
                }
                Err(error) => tracing::debug!(%key, %error, "proxy status not published; retrying"),
            }
        }
        let gone: Vec<String> = published
            .keys()
            .filter(|key| !current.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            if bucket.delete(&key).await.is_ok() {
                published.remove(&key);
            }
        }
    }
}

fn same_state(a: &ProxyStatus, b: &ProxyStatus) -> bool {
    (&a.protocol, &a.types) == (&b.protocol, &b.types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::sync_status::Nack;

    #[test]
    fn type_urls_get_istioctl_short_names() {
        assert_eq!(
            short_type_name("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
            "CDS"
        );
        assert_eq!(
            short_type_name("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"),
            "EDS"
        );
    }

    #[test]
    fn a_nack_shows_until_a_later_ack() {
        let mut state = TypeSync {
            sent_version: "3".into(),
            acked_version: "2".into(),
            acked_at: Some(100),
            last_nack: Some(Nack {
                version: "3".into(),
                nonce: "n".into(),
                error: "invalid regex".into(),
                at: 200,
            }),
            ..TypeSync::default()
        };
        assert_eq!(type_status(&state).state(), "NACKED");
        state.acked_version = "4".into();
        state.sent_version = "4".into();
        state.acked_at = Some(300);
        assert_eq!(type_status(&state).state(), "SYNCED");
    }
}
