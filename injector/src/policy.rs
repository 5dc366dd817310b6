//! Who gets injected, with Istio's precedence:
//!
//! 1. never a `hostNetwork` pod (its capture rules would be the node's), nor
//!    one already injected, nor one in a Kubernetes system namespace or the
//!    control plane's own (unless configured);
//! 2. the namespace, when its labels are known (in a cluster the API server
//!    applies them through the webhook configuration's selectors; here they
//!    come from a Namespace beside the workload): `istio-injection=disabled`
//!    stops everything; `istio-injection=enabled` or `istio.io/rev=<this
//!    revision>` enables the namespace; otherwise only a pod labelled
//!    `sidecar.istio.io/inject=true` or `istio.io/rev=<this revision>` is
//!    considered;
//! 3. the pod: label `sidecar.istio.io/inject` (or the legacy annotation of
//!    that name) says yes or no; failing that `neverInjectSelector`, then
//!    `alwaysInjectSelector`; failing that the config's `policy`.
//!
//! Every decision carries the reason, which `trireme kube-inject --explain`
//! prints and the webhook logs.

use crate::config::{InjectionPolicy, InjectorConfig};
use crate::pod::PodMeta;
use crate::selector::Labels;

pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
pub const NAMESPACE_INJECTION_LABEL: &str = "istio-injection";
pub const REVISION_LABEL: &str = "istio.io/rev";
const DEFAULT_REVISION: &str = "default";

/// Namespaces Istio never injects.
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Whether to inject, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub inject: bool,
    pub reason: String,
}

impl Decision {
    fn inject(reason: impl Into<String>) -> Self {
        Self {
            inject: true,
            reason: reason.into(),
        }
    }

    fn skip(reason: impl Into<String>) -> Self {
        Self {
            inject: false,
            reason: reason.into(),
        }
    }
}

/// Decides for the pod described by `pod`, in `namespace` (its labels when
/// known).
pub fn decide(
    config: &InjectorConfig,
    pod: &PodMeta,
    namespace: &str,
    namespace_labels: Option<&Labels>,
) -> Decision {
    if let Some(skip) = never_injected(config, pod, namespace) {
        return skip;
    }
    let namespace_note = match namespace_labels {
        Some(labels) => match namespace_selects(config, pod, namespace, labels) {
            Ok(note) => Some(note),
            Err(skip) => return skip,
        },
        None => None,
    };
    let decision = pod_decides(config, pod);
    match namespace_note {
        Some(note) if decision.inject => Decision::inject(format!("{note}; {}", decision.reason)),
        _ => decision,
    }
}

fn never_injected(config: &InjectorConfig, pod: &PodMeta, namespace: &str) -> Option<Decision> {
    if pod.host_network {
        return Some(Decision::skip(
            "the pod uses the host's network (hostNetwork: true); it is never injected",
        ));
    }
    if pod.annotations.contains_key(STATUS_ANNOTATION) {
        return Some(Decision::skip(format!(
            "already injected ({STATUS_ANNOTATION} is set)"
        )));
    }
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Some(Decision::skip(format!(
            "namespace {namespace} is a Kubernetes system namespace; it is never injected"
        )));
    }
    let values = &config.values;
    if namespace == values.global.istio_namespace
        && !values
            .sidecar_injector_webhook
            .inject_control_plane_namespace
    {
        return Some(Decision::skip(format!(
            "namespace {namespace} is the control plane's own \
             (sidecarInjectorWebhook.injectControlPlaneNamespace is false)"
        )));
    }
    None
}

/// The webhook configuration's namespace and object selectors, as Istio
/// writes them: `Ok` with a note when the pod gets to the injector at all.
fn namespace_selects(
    config: &InjectorConfig,
    pod: &PodMeta,
    namespace: &str,
    namespace_labels: &Labels,
) -> Result<String, Decision> {
    let revision = config.revision();
    let pod_says_no = pod.labels.get(INJECT_LABEL).map(String::as_str) == Some("false");
    match namespace_labels
        .get(NAMESPACE_INJECTION_LABEL)
        .map(String::as_str)
    {
        Some("disabled") => {
            return Err(Decision::skip(format!(
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}=disabled"
            )));
        }
        // Only the default revision answers `istio-injection=enabled`, so
        // that two revisions never both inject a pod.
        Some("enabled") if revision != DEFAULT_REVISION => {
            return Err(Decision::skip(format!(
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}=enabled, which the \
                 {DEFAULT_REVISION} revision serves; this injector is revision {revision}"
            )));
        }
        Some("enabled") if pod_says_no => return Err(pod_label_false()),
        Some("enabled") => {
            return Ok(format!(
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}=enabled"
            ));
        }
        Some(other) => {
            return Err(Decision::skip(format!(
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}={other}, \
                 which is neither enabled nor disabled"
            )));
        }
        None => {}
    }
    if let Some(namespace_revision) = namespace_labels.get(REVISION_LABEL) {
        if namespace_revision != revision {
            return Err(Decision::skip(format!(
                "namespace {namespace} has {REVISION_LABEL}={namespace_revision}, \
                 another revision than this injector's ({revision})"
            )));
        }
        if pod_says_no {
            return Err(pod_label_false());
        }
        return Ok(format!(
            "namespace {namespace} has {REVISION_LABEL}={revision}"
        ));
    }
    if let Some(pod_revision) = pod.labels.get(REVISION_LABEL) {
        if pod_revision != revision {
            return Err(Decision::skip(format!(
                "the pod's {REVISION_LABEL}={pod_revision} names another revision \
                 than this injector's ({revision})"
            )));
        }
        if pod_says_no {
            return Err(pod_label_false());
        }
        return Ok(format!("the pod has {REVISION_LABEL}={revision}"));
    }
    if pod.labels.get(INJECT_LABEL).map(String::as_str) == Some("true")
        && revision == DEFAULT_REVISION
    {
        return Ok(format!("namespace {namespace} has no injection label"));
    }
    if config
        .values
        .sidecar_injector_webhook
        .enable_namespaces_by_default
        && !pod_says_no
    {
        return Ok(format!(
            "namespace {namespace} has no injection label and \
             sidecarInjectorWebhook.enableNamespacesByDefault is true"
        ));
    }
    Err(Decision::skip(format!(
        "namespace {namespace} has neither {NAMESPACE_INJECTION_LABEL}=enabled nor \
         {REVISION_LABEL}={revision}, and the pod has no {INJECT_LABEL}=true label"
    )))
}

fn pod_label_false() -> Decision {
    Decision::skip(format!("the pod has the label {INJECT_LABEL}=false"))
}

/// Istio's own check inside the injector: the pod's label, then its legacy
/// annotation, then the selectors, then the policy.
fn pod_decides(config: &InjectorConfig, pod: &PodMeta) -> Decision {
    let explicit = pod
        .labels
        .get(INJECT_LABEL)
        .map(|value| (value, "label"))
        .or_else(|| {
            pod.annotations
                .get(INJECT_LABEL)
                .map(|value| (value, "annotation"))
        });
    if let Some((value, source)) = explicit {
        return match value.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => {
                Decision::inject(format!("the pod has the {source} {INJECT_LABEL}={value}"))
            }
            _ => Decision::skip(format!("the pod has the {source} {INJECT_LABEL}={value}")),
        };
    }
    if let Some(index) = config
        .never_inject_selector
        .iter()
        .position(|selector| selector.matches(&pod.labels))
    {
        return Decision::skip(format!(
            "the pod's labels match neverInjectSelector[{index}]"
        ));
    }
    if let Some(index) = config
        .always_inject_selector
        .iter()
        .position(|selector| selector.matches(&pod.labels))
    {
        return Decision::inject(format!(
            "the pod's labels match alwaysInjectSelector[{index}]"
        ));
    }
    match config.policy {
        InjectionPolicy::Enabled => Decision::inject(format!(
            "no {INJECT_LABEL} label or annotation on the pod, and the injection policy is enabled"
        )),
        InjectionPolicy::Disabled => Decision::skip(format!(
            "the injection policy is disabled and the pod does not opt in \
             ({INJECT_LABEL}=true)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(pod_labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            labels: labels(pod_labels),
            annotations: labels(annotations),
            host_network: false,
        }
    }

    fn decide_in(pod: &PodMeta, namespace_labels: Option<&[(&str, &str)]>) -> Decision {
        let namespace_labels = namespace_labels.map(labels);
        decide(
            &InjectorConfig::default(),
            pod,
            "shop",
            namespace_labels.as_ref(),
        )
    }

    #[test]
    fn namespace_disabled_beats_a_pod_that_opts_in() {
        let opted_in = pod(&[(INJECT_LABEL, "true")], &[]);
        let decision = decide_in(&opted_in, Some(&[(NAMESPACE_INJECTION_LABEL, "disabled")]));
        assert!(!decision.inject);
        assert!(
            decision.reason.contains("istio-injection=disabled"),
            "{decision:?}"
        );
    }

    #[test]
    fn enabled_namespace_injects_unless_the_pod_label_says_false() {
        let enabled = [(NAMESPACE_INJECTION_LABEL, "enabled")];
        assert!(decide_in(&pod(&[], &[]), Some(&enabled)).inject);
        assert!(!decide_in(&pod(&[(INJECT_LABEL, "false")], &[]), Some(&enabled)).inject);
        // The legacy annotation is read inside the injector, with the same effect.
        assert!(!decide_in(&pod(&[], &[(INJECT_LABEL, "false")]), Some(&enabled)).inject);
    }

    #[test]
    fn revision_labels_select_only_this_revision() {
        assert!(decide_in(&pod(&[], &[]), Some(&[(REVISION_LABEL, "default")])).inject);
        let other = decide_in(&pod(&[], &[]), Some(&[(REVISION_LABEL, "canary")]));
        assert!(
            !other.inject && other.reason.contains("canary"),
            "{other:?}"
        );
        assert!(decide_in(&pod(&[(REVISION_LABEL, "default")], &[]), Some(&[])).inject);
        assert!(!decide_in(&pod(&[(REVISION_LABEL, "canary")], &[]), Some(&[])).inject);
    }

    #[test]
    fn only_the_default_revision_answers_istio_injection_enabled() {
        let mut canary = InjectorConfig::default();
        canary.values.revision = "canary".into();
        let enabled = labels(&[(NAMESPACE_INJECTION_LABEL, "enabled")]);
        let decision = decide(&canary, &pod(&[], &[]), "shop", Some(&enabled));
        assert!(
            !decision.inject && decision.reason.contains("revision canary"),
            "{decision:?}"
        );
        let by_revision = labels(&[(REVISION_LABEL, "canary")]);
        assert!(decide(&canary, &pod(&[], &[]), "shop", Some(&by_revision)).inject);
        let opted_in = pod(&[(INJECT_LABEL, "true")], &[]);
        assert!(!decide(&canary, &opted_in, "shop", Some(&Labels::new())).inject);
    }

    #[test]
    fn unlabelled_namespace_needs_the_pod_label_not_the_annotation() {
        assert!(decide_in(&pod(&[(INJECT_LABEL, "true")], &[]), Some(&[])).inject);
        assert!(!decide_in(&pod(&[], &[(INJECT_LABEL, "true")]), Some(&[])).inject);
        assert!(!decide_in(&pod(&[], &[]), Some(&[])).inject);
    }

    #[test]
    fn without_namespace_labels_the_pod_and_policy_decide() {
        assert!(decide_in(&pod(&[], &[]), None).inject);
        assert!(!decide_in(&pod(&[(INJECT_LABEL, "no")], &[]), None).inject);
        // The label wins over the legacy annotation.
        let both = pod(&[(INJECT_LABEL, "yes")], &[(INJECT_LABEL, "false")]);
        assert!(decide_in(&both, None).inject);
        let disabled = InjectorConfig {
            policy: InjectionPolicy::Disabled,
            ..InjectorConfig::default()
        };
        assert!(!decide(&disabled, &pod(&[], &[]), "shop", None).inject);
        assert!(decide(&disabled, &pod(&[], &[(INJECT_LABEL, "on")]), "shop", None).inject);
    }

    #[test]
    fn never_selector_is_checked_before_always_and_explicit_wins_over_both() {
        let mut config = InjectorConfig {
            policy: InjectionPolicy::Disabled,
            ..InjectorConfig::default()
        };
        let selecting = |key: &str| LabelSelector {
            match_labels: labels(&[(key, "yes")]),
            ..LabelSelector::default()
        };
        config.never_inject_selector = vec![selecting("batch")];
        config.always_inject_selector = vec![selecting("batch"), selecting("web")];
        let batch = pod(&[("batch", "yes")], &[]);
        let decision = decide(&config, &batch, "shop", None);
        assert!(!decision.inject);
        assert!(decision.reason.contains("neverInjectSelector[0]"));
        assert!(decide(&config, &pod(&[("web", "yes")], &[]), "shop", None).inject);
        let explicit = pod(&[("batch", "yes"), (INJECT_LABEL, "true")], &[]);
        assert!(decide(&config, &explicit, "shop", None).inject);
    }

    #[test]
    fn host_network_injected_and_system_pods_are_never_injected() {
        let mut host = pod(&[(INJECT_LABEL, "true")], &[]);
        host.host_network = true;
        assert!(!decide_in(&host, None).reason.is_empty());
        assert!(!decide_in(&host, None).inject);
        let injected = pod(&[], &[(STATUS_ANNOTATION, "{}")]);
        assert!(!decide_in(&injected, None).inject);
        let config = InjectorConfig::default();
        assert!(!decide(&config, &pod(&[], &[]), "kube-system", None).inject);
        assert!(!decide(&config, &pod(&[], &[]), "istio-system", None).inject);
        let mut asked = InjectorConfig::default();
        asked
            .values
            .sidecar_injector_webhook
            .inject_control_plane_namespace = true;
        assert!(decide(&asked, &pod(&[], &[]), "istio-system", None).inject);
    }
}
