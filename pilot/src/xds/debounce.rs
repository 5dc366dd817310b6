//! The push pipeline: config updates are debounced (Istio's
//! `PILOT_DEBOUNCE_AFTER` quiet period, capped by `PILOT_DEBOUNCE_MAX`), turned
//! into the next push context, and published to every stream at once.
//!
//! A burst that only moves endpoints is capped much sooner (`endpoint_max`):
//! under steady pod churn the quiet period never comes, and waiting the full
//! `PILOT_DEBOUNCE_MAX` would hold every endpoint change for seconds, while
//! an endpoint push is cheap (EDS only, encoded once per cluster).

use std::sync::Arc;
use std::time::Duration;

// Tokio's clock, so tests can run the timings on paused time.
use tokio::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::metrics::XdsMetrics;
use super::push_context::{PushContext, PushTrigger};
use crate::model::{ConfigSet, MeshSettings, MeshSnapshot};

/// Debounce timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceSettings {
    /// Push once no change arrived for this long.
    pub after: Duration,
    /// ... but never wait longer than this after the first change.
    pub max: Duration,
    /// ... nor longer than this while the burst only changed endpoints.
    pub endpoint_max: Duration,
    /// Whether endpoint-only bursts are debounced at all (Istio's
    /// `PILOT_ENABLE_EDS_DEBOUNCE`); when off they are pushed at once.
    pub eds_debounce: bool,
}

impl Default for DebounceSettings {
    fn default() -> Self {
        Self {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            endpoint_max: Duration::from_millis(100),
            eds_debounce: true,
        }
    }
}

impl DebounceSettings {
    /// The longest a burst may wait, given whether it only moved endpoints.
    fn cap(&self, endpoints_only: bool) -> Duration {
        match (endpoints_only, self.eds_debounce) {
            (false, _) => self.max,
            (true, true) => self.endpoint_max.min(self.max),
            (true, false) => Duration::ZERO,
        }
    }
}

/// Publishes a new push context for each settled burst of config updates.
/// Ends when the update channel closes or on shutdown.
pub async fn run(
    mut updates: mpsc::Receiver<ConfigSet>,
    publisher: watch::Sender<Arc<PushContext>>,
    settings: MeshSettings,
    debounce: DebounceSettings,
    metrics: XdsMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            update = updates.recv() => match update {
                Some(update) => update,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let started = Instant::now();
        let pushed = publisher.borrow().snapshot.config.clone();
        let Some(latest) = settle(first, &pushed, &mut updates, debounce, started, &shutdown).await
        else {
            return;
        };
        metrics
            .debounce_time
            .observe(started.elapsed().as_secs_f64());
        let snapshot = MeshSnapshot::from_config(latest, settings.clone());
        let previous = publisher.borrow().clone();
        let context = PushContext::next(&previous, snapshot, started.into_std());
        if context.trigger == PushTrigger::Endpoints(Default::default()) {
            tracing::debug!("config reloaded without changes; no push");
            continue;
        }
        metrics.record_trigger(context.trigger.label());
        tracing::info!(
            version = context.version,
            trigger = context.trigger.label(),
            services = context.snapshot.services.len(),
            "pushing"
        );
        publisher.send_replace(Arc::new(context));
    }
}

/// Takes updates until none arrived for `debounce.after`, or the burst's cap
/// passed since `started`; returns the newest. The cap is `debounce.max`
/// unless everything so far differs from `pushed` only in endpoints.
async fn settle(
    mut latest: ConfigSet,
    pushed: &ConfigSet,
    updates: &mut mpsc::Receiver<ConfigSet>,
    debounce: DebounceSettings,
    started: Instant,
    shutdown: &CancellationToken,
) -> Option<ConfigSet> {
    let mut endpoints_only = latest.differs_only_in_endpoints(pushed);
    loop {
        let remaining = debounce
            .cap(endpoints_only)
            .saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Some(latest);
        }
        let quiet = debounce.after.min(remaining);
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => {
                    endpoints_only = endpoints_only && update.differs_only_in_endpoints(pushed);
                    latest = update;
                }
                None => return Some(latest),
            },
            _ = tokio::time::sleep(quiet) => return Some(latest),
            _ = shutdown.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_publisher() -> (
        watch::Sender<Arc<PushContext>>,
        watch::Receiver<Arc<PushContext>>,
    ) {
        watch::channel(Arc::new(PushContext::empty()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_becomes_one_push() {
        let (tx, rx) = mpsc::channel(16);
        let (publisher, mut contexts) = empty_publisher();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            rx,
            publisher,
            MeshSettings::default(),
            DebounceSettings::default(),
            XdsMetrics::unregistered(),
            shutdown.clone(),
        ));
        for _ in 0..5 {
            tx.send(ConfigSet::default()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        contexts.changed().await.unwrap();
        assert_eq!(
            contexts.borrow().version,
            1,
            "five updates 50 ms apart make one push"
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_routing_changes_still_pushes_after_the_maximum() {
        let debounce = DebounceSettings {
            max: Duration::from_secs(1),
            ..DebounceSettings::default()
        };
        let waited = churn_until_pushed(debounce, |step| {
            config(&format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v, namespace: ns}}\nspec: {{hosts: [a], http: [{{timeout: {}s, route: [{{destination: {{host: a}}}}]}}]}}\n",
                step + 1
            ))
        })
        .await;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "{waited:?}"
        );
    }

    fn config(yaml: &str) -> ConfigSet {
        let resources = mesh_config::parse_all("test.yaml", yaml).expect("test config parses");
        ConfigSet::from_resources(resources.into_iter().map(|r| r.resource))
    }

    fn workload_at(address: &str) -> ConfigSet {
        config(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w, namespace: ns}}\nspec: {{address: {address}, labels: {{app: a}}}}\n"
        ))
    }

    /// Sends `update()` every 25 ms (40 a second) until a push is published;
    /// returns how long that took.
    async fn churn_until_pushed(
        debounce: DebounceSettings,
        mut update: impl FnMut(u32) -> ConfigSet,
    ) -> Duration {
        let (tx, rx) = mpsc::channel(16);
        let (publisher, contexts) = empty_publisher();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            rx,
            publisher,
            MeshSettings::default(),
            debounce,
            XdsMetrics::unregistered(),
            shutdown.clone(),
        ));
        let started = tokio::time::Instant::now();
        let mut step = 0;
        while contexts.borrow().version == 0 {
            tx.send(update(step)).await.unwrap();
            step += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        shutdown.cancel();
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn steady_endpoint_churn_is_pushed_within_the_endpoint_cap() {
        let waited = churn_until_pushed(DebounceSettings::default(), |step| {
            workload_at(&format!("10.0.0.{}", step % 250))
        })
        .await;
        assert!(waited <= Duration::from_millis(150), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_with_a_routing_change_waits_for_the_full_maximum() {
        let debounce = DebounceSettings {
            max: Duration::from_secs(1),
            ..DebounceSettings::default()
        };
        let waited = churn_until_pushed(debounce, |step| {
            let mut update = workload_at(&format!("10.0.0.{}", step % 250));
            if step == 1 {
                // A DestinationRule appears mid-burst: the burst is no longer
                // endpoint-only, though later updates drop it again.
                update.destination_rules = config(
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec: {host: a.ns.svc.cluster.local}\n",
                )
                .destination_rules;
            }
            update
        })
        .await;
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_eds_debounce_an_endpoint_change_is_pushed_at_once() {
        let debounce = DebounceSettings {
            eds_debounce: false,
            ..DebounceSettings::default()
        };
        let waited =
            churn_until_pushed(debounce, |step| workload_at(&format!("10.0.0.{step}"))).await;
        assert!(waited <= Duration::from_millis(25), "{waited:?}");
    }
}
