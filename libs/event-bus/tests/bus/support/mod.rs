//! Helpers shared by the bus tests.

mod nats_server;

use std::{fmt::Debug, future::Future, sync::Once, time::Duration};

use event_bus::{Bus, ConnectionState, KvBucket, KvError, StateEvent, StateWatch};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use nats_server::NatsServer;

/// Upper bound for anything a test waits on that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

/// Set `RUST_LOG=event_bus=debug` to see what the bus code does.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// A bucket value shaped like the config the services will share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub host: String,
    pub weight: u32,
}

pub fn route(host: &str, weight: u32) -> Route {
    Route {
        host: host.to_owned(),
        weight,
    }
}

/// A bus connected to `server`.
pub async fn connected_bus(server: &NatsServer, client_name: &str) -> Bus {
    let bus = Bus::connect(server.url(), client_name)
        .await
        .expect("set up the bus client");
    within(SOON, "the bus to connect", bus.wait_until_connected())
        .await
        .expect("bus connection closed");
    bus
}

/// The next event from `watch`, which must be a decodable one.
pub async fn next_event<T: Debug>(watch: &mut StateWatch<T>) -> StateEvent<T> {
    within(SOON, "the next state event", watch.next())
        .await
        .expect("state watch ended")
        .expect("state watch yielded an invalid entry")
}

/// The next `count` events from `watch`.
pub async fn next_events<T: Debug>(watch: &mut StateWatch<T>, count: usize) -> Vec<StateEvent<T>> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next_event(watch).await);
    }
    events
}

/// Fails if `watch` yields anything within `quiet`.
pub async fn assert_quiet<T: Debug>(watch: &mut StateWatch<T>, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, watch.next()).await {
        panic!("expected no more events, got {item:?}");
    }
}

/// Waits until the connection reaches `state`.
pub async fn wait_for_state(bus: &Bus, state: ConnectionState, limit: Duration) {
    let mut connection = bus.watch_connection();
    within(limit, &format!("connection state {state}"), async {
        connection
            .wait_for(|current| *current == state)
            .await
            .map(|_| ())
    })
    .await
    .expect("connection state channel closed");
}

/// `put`, retried while the server is still coming back (JetStream recovers
/// its streams after accepting connections).
pub async fn put_when_ready<T>(bucket: &KvBucket<T>, key: &str, value: &T) -> u64
where
    T: Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    retry_when_ready(|| bucket.put(key, value)).await
}

pub async fn retry_when_ready<F, Fut, R>(mut operation: F) -> R
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, KvError>>,
{
    within(SOON, "a write to succeed after the restart", async {
        loop {
            match operation().await {
                Ok(result) => return result,
                Err(error) => {
                    tracing::info!(%error, "write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
}

pub fn put<T>(key: &str, value: T, revision: u64) -> StateEvent<T> {
    StateEvent::Put {
        key: key.to_owned(),
        value,
        revision,
    }
}

pub fn delete<T>(key: &str, revision: u64) -> StateEvent<T> {
    StateEvent::Delete {
        key: key.to_owned(),
        revision,
    }
}
