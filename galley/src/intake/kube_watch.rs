//! The thin layer between the API server and [`KubernetesIntake`]: one
//! kube-runtime watcher per Istio kind (over `DynamicObject`, retrying with
//! its default backoff) sends its events to one task, which publishes the
//! judged objects through the same [`Publisher`] as `--config-dir` once
//! every kind has been listed, and (with `PILOT_ENABLE_ANALYSIS`) writes
//! each object's verdict to its `status`.
//!
//! One served version per kind is watched, the first Istio lists (`v1`
//! for most networking and security kinds, `v1alpha3` for EnvoyFilter,
//! `v1beta1` for ProxyConfig, `v1` for Telemetry): the API server converts
//! objects stored under any served version to the one asked for (Istio's
//! CRDs use `conversion: None`, the objects being identical across
//! versions), so one watch sees every object of the kind whichever version
//! it was written in. Not tested against an API server (none runs here):
//! the logic it drives is [`KubernetesIntake`]'s and [`super::status`]'s.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use mesh_config::Kind;
use service_runtime::Readiness;
use tokio::sync::mpsc;

use super::kubernetes::{KubernetesIntake, WatchEvent};
use super::status::{StatusWriter, patched_status, status_patch};
use super::{Buckets, Publisher};

/// Pause before retrying a failed publish or status write.
const RETRY: Duration = Duration::from_secs(1);

/// The API resource galley watches `kind` under: its first served version.
pub fn api_resource(kind: Kind) -> ApiResource {
    let info = kind.info();
    let version = info.versions[0];
    ApiResource {
        group: info.group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{}/{version}", info.group),
        kind: info.kind.to_owned(),
        plural: info.plural.to_owned(),
    }
}

/// A watcher event as the intake takes it: the object as JSON, with the
/// `apiVersion` and `kind` it was listed under when the server left them out.
pub fn watch_event(resource: &ApiResource, event: Event<DynamicObject>) -> WatchEvent {
    let json = |object: DynamicObject| {
        let mut value = serde_json::to_value(object).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields
                .entry("apiVersion")
                .or_insert_with(|| resource.api_version.clone().into());
            fields
                .entry("kind")
                .or_insert_with(|| resource.kind.clone().into());
        }
        value
    };
    match event {
        Event::Init => WatchEvent::Init,
        Event::InitApply(object) => WatchEvent::InitApply(json(object)),
        Event::InitDone => WatchEvent::InitDone,
        Event::Apply(object) => WatchEvent::Apply(json(object)),
        Event::Delete(object) => WatchEvent::Delete(json(object)),
    }
}

/// What the Kubernetes intake does besides publishing.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubernetesIntakeSettings {
    /// Write each verdict to the object's `status` (Istio's
    /// `PILOT_ENABLE_ANALYSIS`).
    pub write_status: bool,
}

/// Watches every Istio kind and keeps the buckets (and, if enabled, the
/// objects' statuses) in step until `stop` resolves. `ready` turns ready
/// on the first publish after every kind was listed.
pub async fn run(
    client: Client,
    buckets: Buckets,
    settings: KubernetesIntakeSettings,
    ready: Readiness,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut publisher = Publisher::new(buckets, "k8s:").await?;
    let (events, mut received) = mpsc::channel::<(Kind, WatchEvent)>(1024);
    let mut watches = tokio::task::JoinSet::new();
    for &kind in Kind::ALL {
        watches.spawn(follow(client.clone(), kind, events.clone()));
    }
    drop(events);
    let writer = settings.write_status.then(|| StatusWriter::new(client));
    let mut intake = KubernetesIntake::new(Kind::ALL.iter().copied());
    let mut unpublished = false;
    let mut statuses_pending = false;
    let mut published_once = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = received.recv() => {
                let Some((kind, event)) = event else { return Ok(()) };
                unpublished |= intake.apply(kind, event);
                // Take what else has arrived before publishing once.
                while let Ok((kind, event)) = received.try_recv() {
                    unpublished |= intake.apply(kind, event);
                }
                statuses_pending = true;
            }
            () = tokio::time::sleep(RETRY), if unpublished || statuses_pending => {}
            () = &mut stop => return Ok(()),
        }
        if !intake.synced() {
            let waiting: Vec<&str> = intake.unlisted().iter().map(|k| k.info().kind).collect();
            ready.set(
                false,
                &format!("waiting for the first list of {}", waiting.join(", ")),
            );
            continue;
        }
        if unpublished {
            match publisher.publish(&intake.documents()).await {
                Ok((written, rejected)) => {
                    unpublished = false;
                    tracing::info!(
                        resources = publisher.published().len(),
                        rejected,
                        written,
                        "Kubernetes config published"
                    );
                    if !published_once {
                        published_once = true;
                        ready.set_ready("publishing the Istio resources of the cluster");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot publish the Kubernetes config; retrying");
                }
            }
        }
        statuses_pending = match &writer {
            Some(writer) => !write_statuses(writer, &mut intake).await,
            None => false,
        };
    }
}

/// Writes every status that differs from its verdict; false when a write
/// failed (retried later).
pub async fn write_statuses(writer: &StatusWriter, intake: &mut KubernetesIntake) -> bool {
    let patches: Vec<_> = intake
        .objects()
        .filter_map(|(kind, key, observed)| {
            let patch = status_patch(&observed.target, &observed.document.judged)?;
            Some((kind, key.clone(), observed.target.clone(), patch))
        })
        .collect();
    let mut all_written = true;
    for (kind, key, target, patch) in patches {
        match writer.write(&api_resource(kind), &target, &patch).await {
            Ok(()) => intake.set_status(kind, &key, patched_status(&target.status, &patch)),
            // Gone meanwhile: its Delete event is on its way.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(%key, %error, "cannot write the verdict to the status; retrying");
                all_written = false;
            }
        }
    }
    all_written
}

/// Follows one kind in every namespace, forever (the watcher retries with
/// its default backoff, relisting when it must).
async fn follow(client: Client, kind: Kind, events: mpsc::Sender<(Kind, WatchEvent)>) {
    let resource = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if events
                    .send((kind, watch_event(&resource, event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(kind = resource.kind, %error, "watch failed; retrying with backoff");
            }
        }
    }
}
