//! The push pipeline: config updates are debounced (Istio's
//! `PILOT_DEBOUNCE_AFTER` quiet period, capped by `PILOT_DEBOUNCE_MAX`), turned
//! into the next push context, and published to every stream at once.

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
}

impl Default for DebounceSettings {
    fn default() -> Self {
        Self {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
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
        let Some(latest) = settle(first, &mut updates, debounce, started, &shutdown).await else {
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

/// Takes updates until none arrived for `debounce.after`, or `debounce.max`
/// passed since `started`; returns the newest.
async fn settle(
    mut latest: ConfigSet,
    updates: &mut mpsc::Receiver<ConfigSet>,
    debounce: DebounceSettings,
    started: Instant,
    shutdown: &CancellationToken,
) -> Option<ConfigSet> {
    loop {
        let remaining = debounce.max.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Some(latest);
        }
        let quiet = debounce.after.min(remaining);
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => latest = update,
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
    async fn a_steady_stream_still_pushes_after_the_maximum() {
        let (tx, rx) = mpsc::channel(16);
        let (publisher, contexts) = empty_publisher();
        let shutdown = CancellationToken::new();
        let debounce = DebounceSettings {
            after: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        tokio::spawn(run(
            rx,
            publisher,
            MeshSettings::default(),
            debounce,
            XdsMetrics::unregistered(),
            shutdown.clone(),
        ));
        let started = tokio::time::Instant::now();
        while contexts.borrow().version == 0 {
            tx.send(ConfigSet::default()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1200),
            "{waited:?}"
        );
        shutdown.cancel();
    }
}
