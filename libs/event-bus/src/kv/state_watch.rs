//! Following a bucket as "the whole current state, then every change".
//!
//! This is how a new or restarted replica catches up and then stays current,
//! so it has to hold up under reconnects, server restarts and a bucket that
//! was recreated, without ever handing out a change twice or skipping one.
//!
//! How:
//! - The initial state comes from a consumer delivering the last message per
//!   key. It is collected in full before anything is handed out, so deleted
//!   keys and superseded values (which a consumer recreated half-way may
//!   replay) never show. A consumer that starts with nothing pending means an
//!   empty bucket, and `Synced` follows at once.
//! - After that, the same consumer delivers every change in revision order.
//!   Whenever it fails, ends, or the connection comes back after a drop, a new
//!   consumer starts at the last revision handed out + 1; anything at or below
//!   it is dropped, so nothing is replayed. This is exact because a delete
//!   leaves a marker in the stream until the key is written again.
//! - Where that does not hold, the whole state is loaded again instead and
//!   handed out as the difference from what was handed out before (deletes
//!   for keys that are gone, puts for keys whose revision changed; nothing for
//!   the rest). That is the case when the bucket was deleted and created
//!   again (its creation time changed, or its revisions went backwards, e.g. a
//!   server that lost its storage: resuming by number would skip changes),
//!   and in buckets with a `max_age`, whose expiry markers expire too, so an
//!   absence longer than that would miss expiries.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    pin::Pin,
    sync::atomic::Ordering,
    task::{Context, Poll},
    time::Duration,
};

use async_nats::{
    Client,
    datetime::DateTime,
    jetstream::{
        self,
        consumer::{DeliverPolicy, ReplayPolicy, push},
        kv::{Operation, Store},
        stream,
    },
};
use futures::{Stream, StreamExt, stream::BoxStream};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    BoxError, Bus,
    backoff::Backoff,
    connection::{ConnectionClosed, ConnectionState, wait_until_connected},
    error_chain::ErrorChain,
    kv::codec::{self, InvalidEntry},
};

/// If the initial state stops arriving for this long, start it over. It can
/// only stall when values expire between the consumer counting them and
/// delivering them, so the count of what is left never reaches zero.
const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One step in a bucket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent<T> {
    /// `key` now holds `value`.
    Put {
        key: String,
        value: T,
        revision: u64,
    },
    /// `key` was deleted (or expired).
    Delete { key: String, revision: u64 },
    /// Everything before this event is the bucket's state as of `revision`;
    /// everything after is a live change. Sent exactly once per watch, also
    /// for an empty bucket.
    Synced { revision: u64 },
}

/// The stream returned by [`KvBucket::watch_state`](crate::KvBucket::watch_state).
///
/// Yields the current value of every key (in revision order, deleted keys
/// left out), then [`StateEvent::Synced`], then every change in revision
/// order. It never ends on its own: connection losses, server restarts and
/// failed consumers are retried with backoff and resumed where they stopped.
/// It ends only when the bus connection is closed.
///
/// A value that does not decode yields an [`InvalidEntry`] error instead of a
/// `Put`, and the stream goes on; the key still counts as present, so a later
/// delete of it is reported.
///
/// If the bucket is deleted and created again on the server, the watch
/// reloads it and hands out the difference as ordinary changes, carrying the
/// new bucket's revisions (which start over from 1).
///
/// Nothing happens until it is polled; it holds no task of its own.
pub struct StateWatch<T> {
    events: BoxStream<'static, Result<StateEvent<T>, InvalidEntry>>,
}

impl<T> Stream for StateWatch<T> {
    type Item = Result<StateEvent<T>, InvalidEntry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

impl<T> std::fmt::Debug for StateWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWatch").finish_non_exhaustive()
    }
}

pub(crate) fn watch_state<T>(bus: Bus, store: Store) -> StateWatch<T>
where
    T: DeserializeOwned + Send + 'static,
{
    let watcher = StateWatcher::new(bus, store);
    let events = futures::stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next().await?;
        Some((event, watcher))
    });
    StateWatch {
        events: events.boxed(),
    }
}

type Item<T> = Result<StateEvent<T>, InvalidEntry>;

/// The current state being collected, before any of it is handed out.
struct Snapshot<T> {
    entries: BTreeMap<String, SnapshotEntry<T>>,
    /// Highest revision seen while collecting.
    revision: u64,
}

struct SnapshotEntry<T> {
    revision: u64,
    value: Result<T, InvalidEntry>,
}

impl<T> Snapshot<T> {
    fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
            revision: 0,
        }
    }
}

enum Phase<T> {
    Snapshot(Snapshot<T>),
    Live,
}

/// What interrupted waiting for the next message.
#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack for one call; boxing would allocate per message"
)]
enum Wake {
    Message(jetstream::Message),
    /// The consumer is unusable or stale; start a new one.
    Restart,
    ConnectionClosed,
}

struct StateWatcher<T> {
    bucket: String,
    store: Store,
    client: Client,
    connection: watch::Receiver<ConnectionState>,
    backoff: Backoff,
    phase: Phase<T>,
    messages: Option<push::Ordered>,
    /// Events ready to hand out, oldest first.
    ready: VecDeque<Item<T>>,
    /// Highest revision handed out (or skipped as irrelevant); live consumers
    /// resume right after it.
    last_revision: u64,
    /// Keys whose latest handed-out change is a put (decodable or not), with
    /// its revision: a delete is reported only for those, and a reload is
    /// handed out as the difference from them.
    present: HashMap<String, u64>,
    synced_sent: bool,
    /// Creation time of the stream being followed, to notice it was replaced.
    stream_created: Option<DateTime>,
    /// The client's connect count when the current consumer was created; a
    /// higher count means the connection dropped and came back since.
    connects_at_start: u64,
}

impl<T> StateWatcher<T>
where
    T: DeserializeOwned,
{
    fn new(bus: Bus, store: Store) -> Self {
        Self {
            bucket: store.name.clone(),
            client: bus.client().clone(),
            connection: bus.watch_connection(),
            backoff: Backoff::new(bus.backoff_policy()),
            store,
            phase: Phase::Snapshot(Snapshot::empty()),
            messages: None,
            ready: VecDeque::new(),
            last_revision: 0,
            present: HashMap::new(),
            synced_sent: false,
            stream_created: None,
            connects_at_start: 0,
        }
    }

    /// The next event, or `None` once the connection is closed for good.
    async fn next(&mut self) -> Option<Item<T>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.messages.is_none() {
                self.establish().await.ok()?;
                continue;
            }
            match self.wake().await {
                Wake::Message(message) => self.handle(message),
                Wake::Restart => self.messages = None,
                Wake::ConnectionClosed => return None,
            }
        }
    }

    /// Starts a consumer where the watch stands, retrying with backoff.
    async fn establish(&mut self) -> Result<(), ConnectionClosed> {
        loop {
            wait_until_connected(&mut self.connection).await?;
            match self.start_consumer().await {
                Ok(()) => {
                    self.backoff.reset();
                    return Ok(());
                }
                Err(error) => {
                    let retry_in = self.backoff.next_delay();
                    warn!(
                        bucket = %self.bucket,
                        error = %ErrorChain(error.as_ref()),
                        ?retry_in,
                        "cannot start watching the bucket; retrying"
                    );
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }

    async fn start_consumer(&mut self) -> Result<(), BoxError> {
        self.connects_at_start = self.client.statistics().connects.load(Ordering::Relaxed);

        let info = self.store.stream.get_info().await?;
        self.reload_if_resuming_is_unsafe(&info);

        let deliver_policy = match &mut self.phase {
            Phase::Snapshot(snapshot) => {
                // A new consumer delivers the whole state again.
                *snapshot = Snapshot::empty();
                DeliverPolicy::LastPerSubject
            }
            Phase::Live => DeliverPolicy::ByStartSequence {
                start_sequence: self.last_revision + 1,
            },
        };
        let consumer = self
            .store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some(format!("state watch of bucket {}", self.bucket)),
                filter_subject: format!("{}>", self.store.prefix),
                deliver_policy,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await?;
        let pending = consumer.cached_info().num_pending;
        self.messages = Some(consumer.messages().await?);
        debug!(bucket = %self.bucket, ?deliver_policy, pending, "bucket watch consumer started");

        if pending == 0
            && let Phase::Snapshot(snapshot) = &mut self.phase
        {
            // Nothing to deliver: the bucket is empty (or holds only expired
            // values). Anything written since `info` was fetched would have
            // made `pending` non-zero, so its last revision is the state's.
            snapshot.revision = info.state.last_sequence;
            self.finish_snapshot();
        }
        Ok(())
    }

    /// Switches to reloading the whole state where resuming after the last
    /// revision could miss changes (see the module documentation).
    fn reload_if_resuming_is_unsafe(&mut self, info: &stream::Info) {
        let replaced = self.stream_created.is_some_and(|seen| seen != info.created)
            || info.state.last_sequence < self.last_revision;
        self.stream_created = Some(info.created);
        if replaced {
            warn!(
                bucket = %self.bucket,
                last_seen_revision = self.last_revision,
                server_last_revision = info.state.last_sequence,
                "bucket was recreated on the server; reloading its whole state"
            );
            // Revisions of the old bucket mean nothing in the new one: every
            // current key is handed out again.
            self.present.values_mut().for_each(|revision| *revision = 0);
            self.last_revision = 0;
            self.phase = Phase::Snapshot(Snapshot::empty());
        } else if matches!(self.phase, Phase::Live) && !info.config.max_age.is_zero() {
            debug!(bucket = %self.bucket, "values expire in this bucket; reloading instead of resuming");
            self.phase = Phase::Snapshot(Snapshot::empty());
        }
    }

    /// Waits for the next message, or for a reason to start a new consumer.
    async fn wake(&mut self) -> Wake {
        let Some(messages) = self.messages.as_mut() else {
            return Wake::Restart;
        };
        let collecting = matches!(self.phase, Phase::Snapshot(_));
        let bucket = &self.bucket;
        tokio::select! {
            message = messages.next() => match message {
                Some(Ok(message)) => Wake::Message(message),
                Some(Err(error)) => {
                    warn!(bucket = %bucket, error = %ErrorChain(&error), "bucket watch failed; resuming");
                    Wake::Restart
                }
                None => {
                    warn!(bucket = %bucket, "bucket watch ended; resuming");
                    Wake::Restart
                }
            },
            reconnected = reconnected(&mut self.connection, &self.client, self.connects_at_start) => {
                match reconnected {
                    // async-nats would recreate the consumer by itself, but
                    // without checking the stream is still the same one.
                    Ok(()) => {
                        info!(bucket = %bucket, "bus reconnected; resuming the bucket watch");
                        Wake::Restart
                    }
                    Err(ConnectionClosed) => Wake::ConnectionClosed,
                }
            },
            () = tokio::time::sleep(SNAPSHOT_STALL_TIMEOUT), if collecting => {
                warn!(bucket = %bucket, "bucket state stopped arriving; starting over");
                Wake::Restart
            },
        }
    }

    fn handle(&mut self, message: jetstream::Message) {
        let (revision, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(error) => {
                warn!(bucket = %self.bucket, error = %ErrorChain(error.as_ref()), "skipping a bucket message without metadata");
                return;
            }
        };
        let Some(key) = message.subject.strip_prefix(self.store.prefix.as_str()) else {
            warn!(bucket = %self.bucket, subject = %message.subject, "skipping a message outside the bucket");
            return;
        };
        let change = change_of(&message);

        match &mut self.phase {
            Phase::Snapshot(snapshot) => {
                snapshot.revision = snapshot.revision.max(revision);
                match change {
                    Operation::Put => {
                        let value = codec::decode(&self.bucket, key, revision, &message.payload);
                        snapshot
                            .entries
                            .insert(key.to_owned(), SnapshotEntry { revision, value });
                    }
                    Operation::Delete | Operation::Purge => {
                        snapshot.entries.remove(key);
                    }
                }
                if pending == 0 {
                    self.finish_snapshot();
                }
            }
            Phase::Live => {
                if revision <= self.last_revision {
                    debug!(bucket = %self.bucket, revision, "skipping a change already handed out");
                    return;
                }
                self.last_revision = revision;
                match change {
                    Operation::Put => {
                        self.present.insert(key.to_owned(), revision);
                        let value = codec::decode(&self.bucket, key, revision, &message.payload);
                        self.ready.push_back(value.map(|value| StateEvent::Put {
                            key: key.to_owned(),
                            value,
                            revision,
                        }));
                    }
                    Operation::Delete | Operation::Purge => {
                        if self.present.remove(key).is_some() {
                            self.ready.push_back(Ok(StateEvent::Delete {
                                key: key.to_owned(),
                                revision,
                            }));
                        }
                    }
                }
            }
        }
    }

    /// Hands out the collected state as the difference from what was handed
    /// out before (on the first load: everything) and goes live.
    fn finish_snapshot(&mut self) {
        let Phase::Snapshot(snapshot) = std::mem::replace(&mut self.phase, Phase::Live) else {
            return;
        };
        let revision = snapshot.revision;
        self.last_revision = revision;
        let keys = snapshot.entries.len();

        let mut gone: Vec<String> = self
            .present
            .keys()
            .filter(|key| !snapshot.entries.contains_key(*key))
            .cloned()
            .collect();
        gone.sort();
        let mut changes = gone.len();
        for key in gone {
            self.present.remove(&key);
            self.ready
                .push_back(Ok(StateEvent::Delete { key, revision }));
        }

        let mut changed: Vec<_> = snapshot
            .entries
            .into_iter()
            .filter(|(key, entry)| self.present.get(key) != Some(&entry.revision))
            .collect();
        changed.sort_by_key(|(_, entry)| entry.revision);
        changes += changed.len();
        for (key, entry) in changed {
            let revision = entry.revision;
            self.present.insert(key.clone(), revision);
            self.ready
                .push_back(entry.value.map(|value| StateEvent::Put {
                    key,
                    value,
                    revision,
                }));
        }

        if !self.synced_sent {
            self.synced_sent = true;
            self.ready.push_back(Ok(StateEvent::Synced { revision }));
        }
        info!(bucket = %self.bucket, keys, changes, revision, "bucket state loaded; following changes");
    }
}

/// Resolves once the connection has dropped and come back since the consumer
/// started (counted by the client's connects, which a pair of quick state
/// flips cannot hide), or fails if it is closed for good.
async fn reconnected(
    connection: &mut watch::Receiver<ConnectionState>,
    client: &Client,
    connects_at_start: u64,
) -> Result<(), ConnectionClosed> {
    loop {
        let state = *connection.borrow_and_update();
        match state {
            ConnectionState::Closed => return Err(ConnectionClosed),
            ConnectionState::Connected
                if client.statistics().connects.load(Ordering::Relaxed) > connects_at_start =>
            {
                return Ok(());
            }
            _ => {}
        }
        connection.changed().await.map_err(|_| ConnectionClosed)?;
    }
}

/// What a bucket message does to its key.
///
/// Deletes and purges carry a `KV-Operation` header; markers the server
/// writes itself (a value expired, or was removed) carry `Nats-Marker-Reason`
/// and an empty payload, and remove the key just the same.
fn change_of(message: &async_nats::Message) -> Operation {
    let Some(headers) = &message.headers else {
        return Operation::Put;
    };
    if let Some(operation) = headers.get("KV-Operation") {
        return match operation.as_str() {
            "DEL" => Operation::Delete,
            "PURGE" => Operation::Purge,
            _ => Operation::Put,
        };
    }
    if headers.get("Nats-Marker-Reason").is_some() {
        return Operation::Purge;
    }
    Operation::Put
}
