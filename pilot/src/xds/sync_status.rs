//! What each connected proxy has been sent and has acknowledged, per type:
//! the data behind `/debug/syncz` and, later, `trireme proxy-status`.

use std::collections::{BTreeMap, BTreeSet};
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
    #[serde(serialize_with = "names_as_list")]
    pub subscribed: Arc<BTreeSet<String>>,
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

/// Every connected proxy's sync state. Each stream writes its own entry
/// through a [`ProxySyncHandle`], so the many streams of a push do not queue
/// on one lock.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    proxies: Arc<Mutex<BTreeMap<String, Arc<Mutex<ProxySync>>>>>,
    next_connection_id: Arc<std::sync::atomic::AtomicU64>,
}

/// One stream's entry in [`SyncStatus`]; removed when dropped (unless a
/// newer stream of the same proxy replaced it).
#[derive(Debug)]
pub struct ProxySyncHandle {
    entry: Arc<Mutex<ProxySync>>,
    status: SyncStatus,
    proxy_id: String,
    connection_id: u64,
}

/// The shared name set, written as the list it is.
fn names_as_list<S: serde::Serializer>(
    names: &Arc<BTreeSet<String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(names.iter())
}

pub fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncStatus {
    /// Records a new stream of `proxy`.
    pub fn connect(&self, proxy: &crate::model::Proxy, protocol: &'static str) -> ProxySyncHandle {
        let connection_id = self
            .next_connection_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = Arc::new(Mutex::new(ProxySync {
            proxy: proxy.id.clone(),
            identity: proxy.clone(),
            connection_id,
            connected_at: now_millis(),
            protocol,
            types: BTreeMap::new(),
        }));
        lock(&self.proxies).insert(proxy.id.clone(), entry.clone());
        ProxySyncHandle {
            entry,
            status: self.clone(),
            proxy_id: proxy.id.clone(),
            connection_id,
        }
    }

    pub fn snapshot(&self) -> Vec<ProxySync> {
        let entries: Vec<Arc<Mutex<ProxySync>>> = lock(&self.proxies).values().cloned().collect();
        entries.iter().map(|entry| lock(entry).clone()).collect()
    }

    pub fn is_connected(&self, proxy_id: &str) -> bool {
        lock(&self.proxies).contains_key(proxy_id)
    }
}

impl ProxySyncHandle {
    /// Changes one type's state of this proxy.
    pub fn update(&self, type_url: &str, change: impl FnOnce(&mut TypeSync)) {
        let mut proxy = lock(&self.entry);
        match proxy.types.get_mut(type_url) {
            Some(sync) => change(sync),
            None => change(proxy.types.entry(type_url.to_string()).or_default()),
        }
    }
}

impl Drop for ProxySyncHandle {
    fn drop(&mut self) {
        let mut proxies = lock(&self.status.proxies);
        let ours = proxies
            .get(&self.proxy_id)
            .is_some_and(|p| lock(p).connection_id == self.connection_id);
        if ours {
            proxies.remove(&self.proxy_id);
        }
    }
}
