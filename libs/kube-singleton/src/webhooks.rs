//! Keeping the webhook configurations current: every entry's
//! `clientConfig.caBundle`, and the validating webhook's switch from
//! `failurePolicy: Ignore` to `Fail` once a probe proved it answers (Istio's
//! order: caBundle first, so the API server can reach the webhook at all;
//! then the probe; then `Fail`).
//!
//! Writes are strategic-merge patches keyed by webhook name (other entries and
//! fields stay as they are) that carry the `resourceVersion` that was read, so
//! a concurrent change makes the patch fail with 409 instead of clobbering it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Error;
use crate::lease::LeaderHandle;

/// Istio's (default revision) MutatingWebhookConfiguration.
pub const SIDECAR_INJECTOR_WEBHOOK: &str = "istio-sidecar-injector";

/// Istio's MutatingWebhookConfiguration for `revision`.
pub fn injector_webhook_name(revision: &str) -> String {
    if revision.is_empty() || revision == "default" {
        SIDECAR_INJECTOR_WEBHOOK.to_string()
    } else {
        format!("{SIDECAR_INJECTOR_WEBHOOK}-{revision}")
    }
}

/// Istio's ValidatingWebhookConfiguration for `revision` installed in
/// `namespace`: `istio-validator-istio-system`, `istio-validator-canary-istio-system`.
pub fn validator_webhook_name(revision: &str, namespace: &str) -> String {
    if revision.is_empty() || revision == "default" {
        format!("istio-validator-{namespace}")
    } else {
        format!("istio-validator-{revision}-{namespace}")
    }
}

pub const FAIL: &str = "Fail";

/// Which kind of webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    Mutating,
    Validating,
}

/// One webhook entry, as far as this crate cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEntry {
    pub name: String,
    pub ca_bundle: Option<Vec<u8>>,
    pub failure_policy: Option<String>,
}

/// A webhook configuration reduced to what is compared and patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookState {
    pub resource_version: Option<String>,
    pub entries: Vec<WebhookEntry>,
}

/// The same reading of both kinds of webhook configuration (their webhook
/// types differ but share the fields read here).
macro_rules! webhook_state_from {
    ($configuration:ty) => {
        impl From<&$configuration> for WebhookState {
            fn from(c: &$configuration) -> Self {
                Self {
                    resource_version: c.metadata.resource_version.clone(),
                    entries: c
                        .webhooks
                        .iter()
                        .flatten()
                        .map(|w| WebhookEntry {
                            name: w.name.clone(),
                            ca_bundle: w.client_config.ca_bundle.clone().map(|b| b.0),
                            failure_policy: w.failure_policy.clone(),
                        })
                        .collect(),
                }
            }
        }
    };
}

webhook_state_from!(MutatingWebhookConfiguration);
webhook_state_from!(ValidatingWebhookConfiguration);

fn with_resource_version(state: &WebhookState, webhooks: Vec<Value>) -> Value {
    let mut patch = json!({ "webhooks": webhooks });
    if let Some(rv) = &state.resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

/// The patch that sets `bundle` as every entry's caBundle, or `None` when
/// every entry already has it (or there are no entries).
pub fn ca_bundle_patch(state: &WebhookState, bundle: &[u8]) -> Option<Value> {
    let encoded = serde_json::to_value(ByteString(bundle.to_vec())).ok()?;
    let changed: Vec<Value> = state
        .entries
        .iter()
        .filter(|e| e.ca_bundle.as_deref() != Some(bundle))
        .map(|e| json!({ "name": e.name, "clientConfig": { "caBundle": encoded } }))
        .collect();
    (!changed.is_empty()).then(|| with_resource_version(state, changed))
}

/// The patch that sets `failurePolicy: Fail` on every entry not already
/// `Fail`, or `None` when all are.
pub fn fail_closed_patch(state: &WebhookState) -> Option<Value> {
    let changed: Vec<Value> = state
        .entries
        .iter()
        .filter(|e| e.failure_policy.as_deref() != Some(FAIL))
        .map(|e| json!({ "name": e.name, "failurePolicy": FAIL }))
        .collect();
    (!changed.is_empty()).then(|| with_resource_version(state, changed))
}

/// Reads and patches one webhook configuration.
#[derive(Clone)]
pub struct WebhookConfigApi {
    client: kube::Client,
    kind: WebhookKind,
    name: String,
}

impl WebhookConfigApi {
    pub fn new(client: kube::Client, kind: WebhookKind, name: impl Into<String>) -> Self {
        Self {
            client,
            kind,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration's state, `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<WebhookState>, Error> {
        Ok(match self.kind {
            WebhookKind::Mutating => Api::<MutatingWebhookConfiguration>::all(self.client.clone())
                .get_opt(&self.name)
                .await?
                .as_ref()
                .map(WebhookState::from),
            WebhookKind::Validating => {
                Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                    .get_opt(&self.name)
                    .await?
                    .as_ref()
                    .map(WebhookState::from)
            }
        })
    }

    /// Applies a strategic-merge patch; returns the state after it.
    pub async fn patch(&self, patch: Value) -> Result<WebhookState, Error> {
        let params = PatchParams::default();
        let patch = Patch::Strategic(patch);
        Ok(match self.kind {
            WebhookKind::Mutating => WebhookState::from(
                &Api::<MutatingWebhookConfiguration>::all(self.client.clone())
                    .patch(&self.name, &params, &patch)
                    .await?,
            ),
            WebhookKind::Validating => WebhookState::from(
                &Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                    .patch(&self.name, &params, &patch)
                    .await?,
            ),
        })
    }
}

/// What a caBundle sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaBundleSync {
    /// The configuration does not exist (not installed yet): nothing to do.
    Missing,
    Unchanged(WebhookState),
    Patched(WebhookState),
}

/// Sets `bundle` as every entry's caBundle, patching only when one differs.
/// Writes nothing unless `leader` leads.
pub async fn sync_ca_bundle(
    api: &WebhookConfigApi,
    leader: &LeaderHandle,
    bundle: &[u8],
) -> Result<CaBundleSync, Error> {
    let Some(state) = api.get().await? else {
        return Ok(CaBundleSync::Missing);
    };
    let Some(patch) = ca_bundle_patch(&state, bundle) else {
        return Ok(CaBundleSync::Unchanged(state));
    };
    if !leader.is_leader() {
        return Err(Error::NotLeader);
    }
    tracing::info!(webhook = %api.name(), "patching caBundle");
    Ok(CaBundleSync::Patched(api.patch(patch).await?))
}

/// A check that the validating webhook answers: typically a dry-run create of
/// an invalid Istio object, which must come back rejected by the webhook.
/// `Ok(())` when it was rejected as expected.
pub trait WebhookProbe: Send + Sync {
    fn probe(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

impl<F, Fut> WebhookProbe for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn probe(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self())
    }
}

/// Where the validating webhook stands after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationState {
    /// The configuration does not exist.
    Missing,
    /// The probe failed: the webhook stays as it was (fail-open).
    ProbeFailed(String),
    /// Every entry is `Fail` (now, or already).
    FailClosed,
}

/// Istio's order for the validating webhook: caBundle, then (if any entry is
/// not yet `Fail`) the probe, then `failurePolicy: Fail`.
pub async fn reconcile_validating(
    api: &WebhookConfigApi,
    leader: &LeaderHandle,
    bundle: &[u8],
    probe: &dyn WebhookProbe,
) -> Result<ValidationState, Error> {
    let state = match sync_ca_bundle(api, leader, bundle).await? {
        CaBundleSync::Missing => return Ok(ValidationState::Missing),
        CaBundleSync::Unchanged(s) | CaBundleSync::Patched(s) => s,
    };
    let Some(patch) = fail_closed_patch(&state) else {
        return Ok(ValidationState::FailClosed);
    };
    if let Err(why) = probe.probe().await {
        tracing::info!(webhook = %api.name(), %why, "webhook probe failed; staying fail-open");
        return Ok(ValidationState::ProbeFailed(why));
    }
    if !leader.is_leader() {
        return Err(Error::NotLeader);
    }
    tracing::info!(webhook = %api.name(), "webhook answered the probe; switching to failurePolicy Fail");
    api.patch(patch).await?;
    Ok(ValidationState::FailClosed)
}

/// The webhook singleton: keeps caBundles current on the given
/// configurations and (with a probe) closes the validating ones.
pub struct WebhookPatcher {
    pub client: kube::Client,
    pub leader: LeaderHandle,
    /// The PEM trust bundle; empty while unknown (nothing is patched).
    pub bundle: watch::Receiver<String>,
    pub mutating: Vec<String>,
    pub validating: Vec<String>,
    /// Without a probe the validating webhooks keep their failurePolicy.
    pub probe: Option<Arc<dyn WebhookProbe>>,
    /// Retry after an error or a failed probe.
    pub retry: Duration,
    /// Re-check everything this often (repairs drift by other writers).
    pub resync: Duration,
}

impl WebhookPatcher {
    /// Runs forever, doing work only while leading (see
    /// [`run_while_leading`](crate::lease::run_while_leading)).
    pub async fn run(self) {
        let leader = self.leader.clone();
        let this = Arc::new(tokio::sync::Mutex::new(self));
        crate::lease::run_while_leading(leader, || {
            let this = this.clone();
            async move { this.lock().await.run_leading().await }
        })
        .await;
    }

    /// One term's work: reconcile now, then on every bundle change, retry or resync.
    pub async fn run_leading(&mut self) {
        loop {
            let bundle = self.bundle.borrow_and_update().clone();
            let settled = self.reconcile_once(bundle.as_bytes()).await;
            let wait = if settled { self.resync } else { self.retry };
            tokio::select! {
                changed = self.bundle.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reconciles every configuration once; `false` when something must be retried.
    pub async fn reconcile_once(&self, bundle: &[u8]) -> bool {
        if bundle.is_empty() || !self.leader.is_leader() {
            return true;
        }
        let mut settled = true;
        for name in &self.mutating {
            let api = WebhookConfigApi::new(self.client.clone(), WebhookKind::Mutating, name);
            if let Err(e) = sync_ca_bundle(&api, &self.leader, bundle).await {
                tracing::warn!(webhook = %name, error = %e, "caBundle sync failed");
                settled = false;
            }
        }
        for name in &self.validating {
            let api = WebhookConfigApi::new(self.client.clone(), WebhookKind::Validating, name);
            let result = match &self.probe {
                Some(probe) => reconcile_validating(&api, &self.leader, bundle, probe.as_ref())
                    .await
                    .map(|s| !matches!(s, ValidationState::ProbeFailed(_))),
                None => sync_ca_bundle(&api, &self.leader, bundle)
                    .await
                    .map(|_| true),
            };
            match result {
                Ok(ok) => settled &= ok,
                Err(e) => {
                    tracing::warn!(webhook = %name, error = %e, "validating webhook reconcile failed");
                    settled = false;
                }
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

    fn state(entries: &[Entry<'_>]) -> WebhookState {
        WebhookState {
            resource_version: Some("7".into()),
            entries: entries
                .iter()
                .map(|(n, ca, fp)| WebhookEntry {
                    name: n.to_string(),
                    ca_bundle: ca.map(<[u8]>::to_vec),
                    failure_policy: fp.map(str::to_string),
                })
                .collect(),
        }
    }

    #[test]
    fn names_follow_istio() {
        assert_eq!(injector_webhook_name(""), "istio-sidecar-injector");
        assert_eq!(
            injector_webhook_name("canary"),
            "istio-sidecar-injector-canary"
        );
        assert_eq!(
            validator_webhook_name("default", "istio-system"),
            "istio-validator-istio-system"
        );
        assert_eq!(
            validator_webhook_name("canary", "istio-system"),
            "istio-validator-canary-istio-system"
        );
    }

    #[test]
    fn ca_bundle_patch_only_for_differing_entries() {
        let s = state(&[
            ("a", Some(b"new"), None),
            ("b", Some(b"old"), None),
            ("c", None, None),
        ]);
        let patch = ca_bundle_patch(&s, b"new").unwrap();
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "7"},
                "webhooks": [
                    {"name": "b", "clientConfig": {"caBundle": "bmV3"}},
                    {"name": "c", "clientConfig": {"caBundle": "bmV3"}},
                ]
            })
        );
        let same = state(&[("a", Some(b"new"), None)]);
        assert_eq!(ca_bundle_patch(&same, b"new"), None);
        assert_eq!(ca_bundle_patch(&state(&[]), b"new"), None);
    }

    #[test]
    fn fail_closed_patch_only_for_open_entries() {
        let s = state(&[
            ("a", None, Some("Ignore")),
            ("b", None, Some("Fail")),
            ("c", None, None),
        ]);
        assert_eq!(
            fail_closed_patch(&s).unwrap()["webhooks"],
            json!([
                {"name": "a", "failurePolicy": "Fail"},
                {"name": "c", "failurePolicy": "Fail"},
            ])
        );
        assert_eq!(
            fail_closed_patch(&state(&[("b", None, Some("Fail"))])),
            None
        );
    }
}
