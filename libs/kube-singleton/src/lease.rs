//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! * A replica acquires the Lease when it is absent (create), released (empty
//!   holder) or expired (update carrying the `resourceVersion` it read, so the
//!   API server's optimistic concurrency picks one winner: a `409 Conflict`
//!   means someone else won).
//! * Expiry is judged the way client-go judges it: by how long *this* replica
//!   has seen the same record unchanged on its own monotonic clock, never by
//!   comparing another node's `renewTime` with the local wall clock, so clock
//!   skew between nodes cannot make two leaders.
//! * The leader renews every `retry_period`; when it cannot renew for
//!   `renew_deadline` (shorter than the lease duration), or sees another holder,
//!   it stops leading at once, then goes back to trying to acquire.
//!
//! Time: the elector sleeps and measures with [`tokio::time`], so tests run it
//! under paused time; the wall-clock stamps written into the Lease come from a
//! [`Clock`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;

/// Istio's lease for the job that writes `istio-ca-root-cert` into namespaces.
pub const NAMESPACE_CONTROLLER: &str = "istio-namespace-controller-election";
/// Istio's lease for the validating webhook's caBundle and failurePolicy.
pub const VALIDATION_CONTROLLER: &str = "istio-validation-controller-election";
/// Trireme's lease for the injector's MutatingWebhookConfiguration caBundle.
/// (istiod patches it from every replica; with a separate injector service we
/// elect one writer, under a name in Istio's pattern.)
pub const INJECTION_WEBHOOK_CONTROLLER: &str = "istio-injection-webhook-controller-election";

/// The Lease name for `base` in `revision`: the bare name for the default
/// revision (empty or `default`, so it is the very lock istiod uses), else
/// `<base>-<revision>`, so each revision elects its own writer.
pub fn lease_name(base: &str, revision: &str) -> String {
    if revision.is_empty() || revision == "default" {
        base.to_string()
    } else {
        format!("{base}-{revision}")
    }
}

/// Source of the wall-clock stamps written into `acquireTime`/`renewTime`.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Wall time that advances with tokio's clock (and so stands still, or jumps,
/// under `tokio::time::pause`): for tests.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: Timestamp,
    at: Instant,
}

impl TokioClock {
    pub fn new(wall: Timestamp) -> Self {
        Self {
            wall,
            at: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.at.elapsed()).unwrap_or(SignedDuration::MAX);
        self.wall.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

/// Settings of one election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Namespace of the Lease (the control plane's own).
    pub namespace: String,
    /// Lease name, see [`lease_name`].
    pub lease_name: String,
    /// This replica's identity: its pod name.
    pub identity: String,
    /// How long a lease is valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The leader gives up when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Istio's timing: a 30 s lease, a 15 s renew deadline; renewal every 5 s.
    pub fn new(
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(15),
            retry_period: Duration::from_secs(5),
        }
    }

    /// client-go's checks: lease duration > renew deadline > retry period > 0,
    /// whole seconds of lease, a non-empty identity and name.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.identity.is_empty() {
            return bad("identity (pod name) is empty");
        }
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return bad("lease name or namespace is empty");
        }
        if self.lease_duration.as_secs() < 1 {
            return bad("lease duration must be at least 1s");
        }
        if self.lease_duration <= self.renew_deadline {
            return bad("lease duration must be greater than the renew deadline");
        }
        if self.renew_deadline <= self.retry_period {
            return bad("renew deadline must be greater than the retry period");
        }
        if self.retry_period.is_zero() {
            return bad("retry period must be positive");
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The part of a Lease that changes when anyone acquires or renews it.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    lease_duration_seconds: Option<i32>,
    lease_transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            lease_duration_seconds: spec.lease_duration_seconds,
            lease_transitions: spec.lease_transitions,
        }
    }
}

/// What one acquire-or-renew attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease now.
    Leading,
    /// Another replica holds a live lease (`holder`), or won the race to
    /// create or update it (`holder` may then be unknown).
    Follower { holder: Option<String> },
}

/// The API-calling half of the election: one Lease, read and written.
pub struct LeaseLock {
    api: Api<Lease>,
    config: ElectionConfig,
    clock: Arc<dyn Clock>,
    observed: Option<(Record, Instant)>,
}

impl LeaseLock {
    pub fn new(client: kube::Client, config: ElectionConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            observed: None,
        }
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    fn observe(&mut self, record: Record) {
        match &self.observed {
            Some((seen, _)) if *seen == record => {}
            _ => self.observed = Some((record, Instant::now())),
        }
    }

    /// True when the observed record has stood unchanged for its lease duration.
    fn observed_expired(&self) -> bool {
        let Some((record, since)) = &self.observed else {
            return true;
        };
        let secs = record
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .unwrap_or(self.config.lease_seconds());
        since.elapsed() >= Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    fn stamp(&self) -> MicroTime {
        MicroTime(self.clock.now())
    }

    /// One step of client-go's `tryAcquireOrRenew`: GET the lease; create it
    /// when absent; renew it when ours; take it over when released or expired.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, Error> {
        let now = self.stamp();
        let name = self.config.lease_name.clone();
        let me = self.config.identity.clone();
        let Some(current) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.config.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(Record::of(&created));
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Attempt::Follower { holder: None })
                }
                Err(e) => Err(e.into()),
            };
        };

        let record = Record::of(&current);
        self.observe(record.clone());
        let ours = record.holder.as_deref() == Some(me.as_str());
        if !ours && record.holder.is_some() && !self.observed_expired() {
            return Ok(Attempt::Follower {
                holder: record.holder,
            });
        }

        let mut next = current.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(record.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(self.config.lease_seconds());
        spec.renew_time = Some(now);
        // `next` keeps the resourceVersion we read: the update is conditional on it.
        match self.api.replace(&name, &PostParams::default(), &next).await {
            Ok(updated) => {
                self.observe(Record::of(&updated));
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Follower {
                holder: record.holder.filter(|h| *h != self.config.identity),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up if we hold it (client-go's `ReleaseOnCancel`), so
    /// another replica takes over without waiting for expiry.
    pub async fn release(&mut self) -> Result<(), Error> {
        let name = self.config.lease_name.clone();
        let Some(mut current) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        if Record::of(&current).holder.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let now = self.stamp();
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now);
        self.api
            .replace(&name, &PostParams::default(), &current)
            .await?;
        self.observed = None;
        Ok(())
    }
}

/// Read side of an election: whether this replica leads now, and changes.
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    rx: watch::Receiver<bool>,
    /// Keeps a fixed handle's sender alive so `changed()` pends instead of failing.
    _fixed: Option<Arc<watch::Sender<bool>>>,
}

impl LeaderHandle {
    /// A handle that never leads, or always does: for callers that run
    /// without election (a single replica, local mode) and for tests.
    pub fn fixed(leading: bool) -> Self {
        let (tx, rx) = watch::channel(leading);
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver of leadership changes (`true` = leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Waits until leadership equals `leading`; `false` when the elector has gone.
    pub async fn wait_for(&self, leading: bool) -> bool {
        let mut rx = self.rx.clone();
        rx.wait_for(|l| *l == leading).await.is_ok()
    }
}

/// Runs an election: acquire, renew while leading, step down on loss, repeat.
pub struct LeaderElector {
    lock: LeaseLock,
    tx: watch::Sender<bool>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: ElectionConfig) -> Result<Self, Error> {
        Self::with_clock(client, config, Arc::new(SystemClock))
    }

    pub fn with_clock(
        client: kube::Client,
        config: ElectionConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let (tx, _) = watch::channel(false);
        Ok(Self {
            lock: LeaseLock::new(client, config, clock),
            tx,
        })
    }

    pub fn handle(&self) -> LeaderHandle {
        LeaderHandle {
            rx: self.tx.subscribe(),
            _fixed: None,
        }
    }

    /// Runs until `shutdown` completes; then releases the lease if held.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let cfg = self.lock.config().clone();
        loop {
            // Follower: try every retry period until we hold the lease.
            loop {
                let attempt =
                    tokio::time::timeout(cfg.renew_deadline, self.lock.try_acquire_or_renew())
                        .await;
                match attempt {
                    Ok(Ok(Attempt::Leading)) => break,
                    Ok(Ok(Attempt::Follower { holder })) => {
                        tracing::debug!(lease = %cfg.lease_name, ?holder, "not leading");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %cfg.lease_name, error = %e, "lease acquire failed")
                    }
                    Err(_) => tracing::warn!(lease = %cfg.lease_name, "lease acquire timed out"),
                }
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(cfg.retry_period) => {}
                }
            }
            tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "started leading");
            self.tx.send_replace(true);

            // Leader: renew every retry period; give up past the renew deadline.
            let mut renewed = Instant::now();
            let reason = loop {
                tokio::select! {
                    () = &mut shutdown => {
                        self.tx.send_replace(false);
                        let release = tokio::time::timeout(cfg.retry_period, self.lock.release()).await;
                        if !matches!(release, Ok(Ok(()))) {
                            tracing::warn!(lease = %cfg.lease_name, "lease release failed");
                        }
                        return;
                    }
                    () = tokio::time::sleep(cfg.retry_period) => {}
                }
                let left = cfg.renew_deadline.saturating_sub(renewed.elapsed());
                match tokio::time::timeout(left, self.lock.try_acquire_or_renew()).await {
                    Ok(Ok(Attempt::Leading)) => renewed = Instant::now(),
                    Ok(Ok(Attempt::Follower { holder })) => {
                        break format!("lease taken by {holder:?}");
                    }
                    Ok(Err(e)) if renewed.elapsed() < cfg.renew_deadline => {
                        tracing::warn!(lease = %cfg.lease_name, error = %e, "lease renew failed");
                    }
                    Ok(Err(e)) => break format!("renew deadline passed: {e}"),
                    Err(_) => break "renew deadline passed".to_string(),
                }
            };
            self.tx.send_replace(false);
            tracing::warn!(lease = %cfg.lease_name, %reason, "stopped leading");
        }
    }

    /// Spawns [`run`](Self::run) and returns the handle with the task.
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (LeaderHandle, tokio::task::JoinHandle<()>) {
        let handle = self.handle();
        (handle, tokio::spawn(self.run(shutdown)))
    }
}

/// Runs `job` only while `leader` leads: starts it on gaining leadership and
/// drops (cancels) it on losing it; restarts it on the next term. Returns
/// when the elector has gone.
pub async fn run_while_leading<F, Fut>(leader: LeaderHandle, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        if !leader.wait_for(true).await {
            return;
        }
        tokio::select! {
            () = job() => {
                // The job ended by itself; wait out this term before restarting.
                if !leader.wait_for(false).await {
                    return;
                }
            }
            alive = leader.wait_for(false) => {
                if !alive {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_follow_istio() {
        assert_eq!(
            lease_name(NAMESPACE_CONTROLLER, ""),
            "istio-namespace-controller-election"
        );
        assert_eq!(
            lease_name(VALIDATION_CONTROLLER, "default"),
            "istio-validation-controller-election"
        );
        assert_eq!(
            lease_name(VALIDATION_CONTROLLER, "canary"),
            "istio-validation-controller-election-canary"
        );
    }

    #[test]
    fn config_validation() {
        let ok = ElectionConfig::new("istio-system", "l", "pod-a");
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.renew_deadline = bad.lease_duration;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.retry_period = bad.renew_deadline;
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.identity.clear();
        assert!(bad.validate().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = Timestamp::from_second(1_000_000).unwrap();
        let clock = TokioClock::new(start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Timestamp::from_second(1_000_090).unwrap());
    }
}
