//! The connection to NATS and its observable state.
//!
//! Services must keep serving their last good state while the bus is away and
//! say so in their health and metrics, so connecting never blocks on the
//! server: [`Bus::connect`] returns at once, async-nats keeps (re)connecting in
//! the background with [`BackoffPolicy`] delays, and every transition is
//! published on a [`watch`] channel.

use std::{fmt, sync::Arc, time::Duration};

use async_nats::{Client, ConnectOptions, Event, jetstream};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    backoff::BackoffPolicy,
    kv::{BucketConfig, KvBucket, KvError},
    topic::Topic,
};

/// How to reach the bus and how hard to try.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`; several may be given
    /// separated by commas.
    pub url: String,
    /// Shown by the server (`nats server report connections`), so operators
    /// can tell which service and replica a connection belongs to.
    pub client_name: String,
    /// Delay between reconnect attempts, and between attempts to re-establish
    /// a key-value watch.
    pub reconnect_backoff: BackoffPolicy,
    /// Time allowed for one TCP + handshake attempt.
    pub connection_timeout: Duration,
    /// Time allowed for a request, including JetStream API calls.
    pub request_timeout: Duration,
}

impl BusOptions {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: client_name.into(),
            reconnect_backoff: BackoffPolicy::DEFAULT,
            connection_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the connection to the bus stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Never connected yet; the first attempts are under way.
    Connecting,
    Connected,
    /// Was connected, lost the server, and is reconnecting.
    Disconnected,
    /// The client was closed; it will not reconnect.
    Closed,
}

impl ConnectionState {
    pub fn is_connected(self) -> bool {
        self == ConnectionState::Connected
    }

    /// Stable lower-case name, for health output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Closed => "closed",
        }
    }

    /// Whether a service can work in this state, and how to say so in its
    /// readiness report.
    pub fn readiness(&self) -> (bool, String) {
        (self.is_connected(), self.as_str().to_string())
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client could not even be set up (connection failures are retried in
/// the background and never reported here).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up a NATS client for {url:?}")]
pub struct ConnectError {
    pub url: String,
    #[source]
    pub source: async_nats::ConnectError,
}

/// The client was closed and will not connect again.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the bus connection is closed")]
pub struct ConnectionClosed;

/// A handle on the bus. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Bus {
    client: Client,
    jetstream: jetstream::Context,
    state: watch::Receiver<ConnectionState>,
    backoff: BackoffPolicy,
}

impl Bus {
    /// Connects with default options. Returns at once; see [`Bus::connect_with`].
    pub async fn connect(
        url: impl Into<String>,
        client_name: impl Into<String>,
    ) -> Result<Bus, ConnectError> {
        Self::connect_with(BusOptions::new(url, client_name)).await
    }

    /// Starts connecting and returns without waiting for the server.
    ///
    /// The client retries the first connect and every reconnect forever, with
    /// `options.reconnect_backoff` between attempts. Use
    /// [`Bus::wait_until_connected`] where a caller really needs the server,
    /// and [`Bus::watch_connection`] to report the state.
    pub async fn connect_with(options: BusOptions) -> Result<Bus, ConnectError> {
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let state_tx = Arc::new(state_tx);
        let backoff = options.reconnect_backoff;
        let url: Arc<str> = options.url.as_str().into();
        // async-nats parses one address per string.
        let servers: Vec<&str> = options
            .url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .collect();

        let client = ConnectOptions::new()
            .name(&options.client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(options.connection_timeout)
            .request_timeout(Some(options.request_timeout))
            .reconnect_delay_callback(move |attempt| backoff.reconnect_delay(attempt))
            .event_callback({
                let url = url.clone();
                let client_name: Arc<str> = options.client_name.as_str().into();
                move |event| {
                    record_event(&state_tx, &url, &client_name, event);
                    std::future::ready(())
                }
            })
            .connect(servers)
            .await
            .map_err(|source| ConnectError {
                url: options.url.clone(),
                source,
            })?;

        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(options.request_timeout);

        info!(url = %url, client = %options.client_name, "connecting to the bus");
        Ok(Bus {
            client,
            jetstream,
            state: state_rx,
            backoff,
        })
    }

    pub fn connection_state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub fn is_connected(&self) -> bool {
        self.connection_state().is_connected()
    }

    /// A receiver that sees every connection state change, for health checks
    /// and metrics.
    pub fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits (without limit; wrap it in a timeout) until the bus is connected.
    pub async fn wait_until_connected(&self) -> Result<(), ConnectionClosed> {
        wait_until_connected(&mut self.state.clone()).await
    }

    /// Creates the key-value bucket described by `config`, or opens it if it
    /// exists. See [`KvBucket::open`].
    pub async fn kv_bucket<T>(&self, config: BucketConfig) -> Result<KvBucket<T>, KvError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        KvBucket::open(self, config).await
    }

    /// A typed notification subject. See [`Topic`].
    pub fn topic<T>(&self, subject: impl Into<String>) -> Topic<T>
    where
        T: Serialize + DeserializeOwned,
    {
        Topic::new(self, subject)
    }

    /// The underlying client, for what this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub(crate) fn backoff_policy(&self) -> BackoffPolicy {
        self.backoff
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("state", &self.connection_state())
            .finish_non_exhaustive()
    }
}

pub(crate) async fn wait_until_connected(
    state: &mut watch::Receiver<ConnectionState>,
) -> Result<(), ConnectionClosed> {
    let reached = state
        .wait_for(|state| matches!(state, ConnectionState::Connected | ConnectionState::Closed))
        .await
        .map_err(|_| ConnectionClosed)?;
    match *reached {
        ConnectionState::Connected => Ok(()),
        _ => Err(ConnectionClosed),
    }
}

/// Turns async-nats' connection events into [`ConnectionState`] transitions
/// and log lines. Events arrive in order from a single task.
fn record_event(state: &watch::Sender<ConnectionState>, url: &str, client: &str, event: Event) {
    let next = match event {
        Event::Connected => ConnectionState::Connected,
        Event::Disconnected => ConnectionState::Disconnected,
        Event::Closed => ConnectionState::Closed,
        Event::LameDuckMode => {
            warn!(
                url,
                client, "bus server entered lame duck mode and will shut down soon"
            );
            return;
        }
        Event::Draining => {
            info!(url, client, "bus connection draining");
            return;
        }
        Event::SlowConsumer(subscription) => {
            warn!(
                url,
                client, subscription, "bus subscriber too slow; messages were dropped"
            );
            return;
        }
        Event::ServerError(error) => {
            warn!(url, client, %error, "bus server reported an error");
            return;
        }
        Event::ClientError(error) => {
            warn!(url, client, %error, "bus connection attempt failed; retrying with backoff");
            return;
        }
    };
    state.send_if_modified(|current| {
        if *current == next {
            return false;
        }
        match (*current, next) {
            (ConnectionState::Connecting, ConnectionState::Connected) => {
                info!(url, client, "connected to the bus")
            }
            (_, ConnectionState::Connected) => info!(url, client, "reconnected to the bus"),
            (_, ConnectionState::Disconnected) => {
                warn!(
                    url,
                    client, "lost the bus connection; reconnecting with backoff"
                )
            }
            (_, ConnectionState::Closed) => warn!(url, client, "bus connection closed"),
            (_, ConnectionState::Connecting) => {}
        }
        *current = next;
        true
    });
}
