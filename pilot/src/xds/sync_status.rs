//! What each connected proxy has been sent and has acknowledged, per type:
//! the data behind `/debug/syncz` and, later, `trireme proxy-status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The last rejection of a type by a proxy, with Envoy's own words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nack {
    pub version: String,
    pub nonce: String,
    pub error: String,
    /// Milliseconds since the Unix epoch.
    pub at: u128,
}

/// Sync state of one resource type on one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeSync {
    pub sent_version: String,
    pub sent_nonce: String,
    pub sent_at: Option<u128>,
    pub acked_version: String,
    pub acked_at: Option<u128>,
    pub last_nack: Option<Nack>,
    /// Names the proxy subscribed to (empty for wildcard types).
    pub subscribed: Vec<String>,
}

/// Sync state of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxySync {
    pub proxy: String,
    #[serde(skip)]
    pub identity: crate::model::Proxy,
    #[serde(skip)]
    connection_id: u64,
    pub connected_at: u128,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// By type URL.
    pub types: BTreeMap<String, TypeSync>,
}

/// Every connected proxy's sync state.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    proxies: Arc<Mutex<BTreeMap<String, ProxySync>>>,
    next_connection_id: Arc<std::sync::atomic::AtomicU64>,
}

pub fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl SyncStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProxySync>> {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new stream; returns its id for [`SyncStatus::disconnect`].
    pub fn connect(&self, proxy: &crate::model::Proxy, protocol: &'static str) -> u64 {
        let connection_id = self
            .next_connection_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(
            proxy.id.clone(),
            ProxySync {
                proxy: proxy.id.clone(),
                identity: proxy.clone(),
                connection_id,
                connected_at: now_millis(),
                protocol,
                types: BTreeMap::new(),
            },
        );
        connection_id
    }

    /// Forgets a stream, unless the proxy has reconnected on a newer one.
    pub fn disconnect(&self, proxy_id: &str, connection_id: u64) {
        let mut proxies = self.lock();
        if proxies
            .get(proxy_id)
            .is_some_and(|p| p.connection_id == connection_id)
        {
            proxies.remove(proxy_id);
        }
    }

    /// Changes one type's state of one proxy.
    pub fn update(&self, proxy_id: &str, type_url: &str, change: impl FnOnce(&mut TypeSync)) {
        if let Some(proxy) = self.lock().get_mut(proxy_id) {
            change(proxy.types.entry(type_url.to_string()).or_default());
        }
    }

    pub fn snapshot(&self) -> Vec<ProxySync> {
        self.lock().values().cloned().collect()
    }

    pub fn is_connected(&self, proxy_id: &str) -> bool {
        self.lock().contains_key(proxy_id)
    }
}
