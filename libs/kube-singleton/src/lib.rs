//! Singleton work for a control plane of separate, replicated services: done
//! by exactly one replica per revision, the one holding a Kubernetes Lease.
//!
//! * [`lease`]: leader election on a `coordination.k8s.io/v1` Lease
//!   ([`LeaderElector`], [`LeaderHandle::is_leader`], [`run_while_leading`]).
//! * [`webhooks`]: the webhook configurations' `caBundle`, and the validating
//!   webhook's `failurePolicy: Ignore` -> `Fail` after a successful probe.
//! * [`root_cert`]: the `istio-ca-root-cert` ConfigMap in every namespace.
//!
//! Which service runs which job, under which Lease (Istio's names):
//!
//! | job | Lease | service |
//! |---|---|---|
//! | [`WebhookPatcher`] on `istio-validator-<ns>` (caBundle, probe, Fail) | [`VALIDATION_CONTROLLER`] | galley |
//! | [`WebhookPatcher`] on `istio-sidecar-injector` (caBundle) | [`INJECTION_WEBHOOK_CONTROLLER`] | injector |
//! | [`RootCertPublisher`] | [`NAMESPACE_CONTROLLER`] | citadel |
//!
//! Every Kubernetes API call this crate makes is listed in [`API_CALLS`].

pub mod connect;
pub mod lease;
pub mod root_cert;
pub mod webhooks;

pub use connect::{ConnectError, client};
pub use lease::{
    Attempt, Clock, ElectionConfig, INJECTION_WEBHOOK_CONTROLLER, LeaderElector, LeaderHandle,
    LeaseLock, NAMESPACE_CONTROLLER, SystemClock, TokioClock, VALIDATION_CONTROLLER, lease_name,
    run_while_leading,
};
pub use root_cert::{
    ConfigMapAction, NamespaceEvent, NamespaceSet, ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY,
    RootCertPublisher, ensure_root_cert, watch_namespaces,
};
pub use webhooks::{
    CaBundleSync, ValidationState, WebhookConfigApi, WebhookKind, WebhookPatcher, WebhookProbe,
    injector_webhook_name, reconcile_validating, sync_ca_bundle, validator_webhook_name,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A write was about to be made by a replica that does not lead.
    #[error("not the leader")]
    NotLeader,
    #[error("invalid election config: {0}")]
    Config(String),
}

/// Where an API call applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In the control plane's own namespace (a Role there suffices).
    ControlPlaneNamespace,
    /// Cluster-scoped resource (ClusterRole).
    Cluster,
    /// A namespaced resource in every namespace (ClusterRole).
    AllNamespaces,
}

/// Which job makes the call, so each service's RBAC grants only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Leader election (every service that runs any job below).
    Election,
    /// caBundle of the MutatingWebhookConfiguration (injector).
    MutatingWebhook,
    /// caBundle and failurePolicy of the ValidatingWebhookConfiguration (galley).
    ValidatingWebhook,
    /// `istio-ca-root-cert` in every namespace (citadel).
    RootCert,
}

/// One (apiGroup, resource, verbs, scope) this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    pub job: Job,
    /// `""` is the core group.
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// The only object names touched, where the call is by name (empty: any;
    /// `list`/`watch`/`create` cannot be limited by name in RBAC).
    pub resource_names: &'static [&'static str],
}

/// Every Kubernetes API call made by this crate. The webhook probe is the
/// caller's (it typically dry-run creates an invalid Istio object) and is not
/// listed. Lease names carry a `-<revision>` suffix for non-default revisions,
/// and webhook names differ per revision, so `resource_names` lists the
/// default revision's.
pub const API_CALLS: &[ApiCall] = &[
    ApiCall {
        job: Job::Election,
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::ControlPlaneNamespace,
        resource_names: &[],
    },
    ApiCall {
        job: Job::MutatingWebhook,
        api_group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        resource_names: &[webhooks::SIDECAR_INJECTOR_WEBHOOK],
    },
    ApiCall {
        job: Job::ValidatingWebhook,
        api_group: "admissionregistration.k8s.io",
        resource: "validatingwebhookconfigurations",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        resource_names: &["istio-validator-istio-system"],
    },
    ApiCall {
        job: Job::RootCert,
        api_group: "",
        resource: "configmaps",
        verbs: &["get", "create", "patch"],
        scope: Scope::AllNamespaces,
        resource_names: &[],
    },
    ApiCall {
        job: Job::RootCert,
        api_group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_calls_have_no_wildcards() {
        for call in API_CALLS {
            assert!(!call.verbs.is_empty());
            assert!(call.verbs.iter().all(|v| *v != "*"), "{call:?}");
            assert_ne!(call.resource, "*");
        }
    }
}
