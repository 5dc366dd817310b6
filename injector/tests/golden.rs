//! Golden tests of the sidecar injector through both of its doors:
//! `trireme kube-inject` ([`workloads::rewrite`]) and the admission webhook
//! ([`webhook::review`]).
//!
//! Each `tests/golden/inputs/NN-name.yaml` (run with
//! `NN-name.config.yaml` as the injector's config when there is one) is
//! injected and compared with `tests/golden/outputs/NN-name.yaml` and
//! `NN-name.explain.txt`; `UPDATE_GOLDEN=1` rewrites those instead, for
//! review in the diff. The same inputs then check what a user relies on:
//! the webhook's JSON Patch gives exactly the pod kube-inject prints,
//! injecting twice changes nothing, what is not injected passes through
//! untouched, and every workload written is valid for Kubernetes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use admission_webhook::admission::AdmissionReviewResponse;
use injector::workloads::{self, Rewritten, WorkloadReport};
use injector::{Injector, InjectorConfig, SidecarTemplate, webhook};
use serde_json::{Value, json};

/// The namespace kube-inject gives workloads that name none (its default).
const DEFAULT_NAMESPACE: &str = "default";

/// The Kubernetes release the outputs are validated against: the newest
/// the installed kubernetes-validate has schemas for (1.37 is released).
const KUBERNETES_VERSION: &str = "1.37.0";

/// Where each kind keeps its pod (template); the kinds kube-inject injects.
const WORKLOAD_KINDS: [(&str, &str); 8] = [
    ("Pod", ""),
    ("Deployment", "/spec/template"),
    ("StatefulSet", "/spec/template"),
    ("DaemonSet", "/spec/template"),
    ("ReplicaSet", "/spec/template"),
    ("ReplicationController", "/spec/template"),
    ("Job", "/spec/template"),
    ("CronJob", "/spec/jobTemplate/spec/template"),
];

// ---------------------------------------------------------------------------
// The cases

/// One golden input, injected.
struct Case {
    /// `NN-short-name`.
    name: String,
    number: u32,
    input: String,
    injector: Injector,
    rewritten: Rewritten,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every golden case, injected once and shared by the tests.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(load_cases)
}

fn load_cases() -> Vec<Case> {
    let inputs = golden_dir().join("inputs");
    let mut names: Vec<String> = std::fs::read_dir(&inputs)
        .unwrap_or_else(|e| panic!("reading {}: {e}", inputs.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|file| {
            let stem = file.strip_suffix(".yaml")?;
            (!stem.ends_with(".config")).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            };
            let number = name
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("input {name}.yaml is not named NN-short-name.yaml"));
            let input = read(&inputs.join(format!("{name}.yaml")));
            let config_path = inputs.join(format!("{name}.config.yaml"));
            let config = if config_path.exists() {
                InjectorConfig::from_yaml(&read(&config_path))
                    .unwrap_or_else(|e| panic!("{}: {e}", config_path.display()))
            } else {
                InjectorConfig::default()
            };
            let injector = Injector::new(config, SidecarTemplate::built_in());
            let rewritten = workloads::rewrite(&injector, &input, DEFAULT_NAMESPACE)
                .unwrap_or_else(|e| panic!("{name}: kube-inject failed: {e}"));
            Case {
                name,
                number,
                input,
                injector,
                rewritten,
            }
        })
        .collect()
}

/// `trireme kube-inject --explain`'s report of `reports`.
fn explain(reports: &[WorkloadReport]) -> String {
    let mut text = String::new();
    for report in reports {
        let verdict = if report.injected { "inject" } else { "skip  " };
        writeln!(text, "{verdict}  {}: {}", report.workload, report.reason).unwrap();
        for warning in &report.warnings {
            writeln!(text, "    warning: {warning}").unwrap();
        }
    }
    text
}

// ---------------------------------------------------------------------------
// Documents and workloads of a stream

/// One document of a YAML stream: its text (separator excluded) and value.
struct Document {
    text: String,
    value: Value,
}

/// A workload found in a stream, with its pod (template).
struct Workload {
    /// Index of its document in the stream.
    document: usize,
    kind: String,
    name: String,
    namespace: String,
    /// Where the pod (template) is in the object.
    pod_path: &'static str,
    /// The object (the Deployment, the Pod, ...).
    object: Value,
}

impl Workload {
    fn pod(&self) -> &Value {
        self.object
            .pointer(self.pod_path)
            .expect("found at this path")
    }

    /// As kube-inject names it in its reports.
    fn label(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// `---`, or `--- # comment`: where kube-inject splits a stream.
fn is_separator(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| {
        rest.is_empty() || rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#')
    })
}

/// The documents of `stream`, split at `---` lines.
fn documents(stream: &str) -> Vec<Document> {
    let mut texts = vec![String::new()];
    for line in stream.split_inclusive('\n') {
        if is_separator(line.trim_end()) {
            texts.push(String::new());
        } else {
            texts.last_mut().expect("never empty").push_str(line);
        }
    }
    texts
        .into_iter()
        .map(|text| {
            let value =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"));
            Document { text, value }
        })
        .collect()
}

fn kind_of(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn is_list(object: &Value) -> bool {
    kind_of(object).ends_with("List") && object.get("items").is_some()
}

/// The objects of a document: itself, or a List's items.
fn objects(document: &Value) -> Vec<&Value> {
    match document.get("items").and_then(Value::as_array) {
        Some(items) if is_list(document) => items.iter().collect(),
        _ => vec![document],
    }
}

/// The workloads of `documents`, in stream order (kube-inject's report order).
fn workloads_of(documents: &[Document]) -> Vec<Workload> {
    let mut found = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        for object in objects(&document.value) {
            let kind = kind_of(object);
            let Some((_, pod_path)) = WORKLOAD_KINDS.iter().find(|(k, _)| *k == kind) else {
                continue;
            };
            let metadata = |key: &str| {
                object
                    .pointer(&format!("/metadata/{key}"))
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
            };
            found.push(Workload {
                document: index,
                kind: kind.to_string(),
                name: metadata("name").unwrap_or("(unnamed)").to_string(),
                namespace: metadata("namespace")
                    .unwrap_or(DEFAULT_NAMESPACE)
                    .to_string(),
                pod_path,
                object: object.clone(),
            });
        }
    }
    found
}

/// The Namespaces a stream defines: kube-inject reads their labels as the
/// API server's webhook selectors would.
fn defined_namespaces(documents: &[Document]) -> BTreeSet<String> {
    documents
        .iter()
        .flat_map(|d| objects(&d.value))
        .filter(|object| kind_of(object) == "Namespace")
        .filter_map(|object| {
            object
                .pointer("/metadata/name")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// A workload of a case: before and after kube-inject, with its report.
struct Outcome<'a> {
    case: &'a Case,
    before: Workload,
    after: Workload,
    report: &'a WorkloadReport,
    /// Its namespace is defined in the stream, so the API server's
    /// selectors (not the webhook) would take part in the decision.
    namespace_in_stream: bool,
}

impl Outcome<'_> {
    fn label(&self) -> String {
        format!("{}: {}", self.case.name, self.report.workload)
    }
}

/// Every workload of every case, paired with its report.
fn outcomes() -> Vec<Outcome<'static>> {
    let mut all = Vec::new();
    for case in cases() {
        let input = documents(&case.input);
        let output = documents(&case.rewritten.yaml);
        let before = workloads_of(&input);
        let after = workloads_of(&output);
        let reports = &case.rewritten.reports;
        assert_eq!(
            before.iter().map(Workload::label).collect::<Vec<_>>(),
            reports
                .iter()
                .map(|r| r.workload.clone())
                .collect::<Vec<_>>(),
            "{}: kube-inject reports one line per workload, in order",
            case.name
        );
        assert_eq!(after.len(), before.len(), "{}: workloads kept", case.name);
        let namespaces = defined_namespaces(&input);
        for ((before, after), report) in before.into_iter().zip(after).zip(reports) {
            all.push(Outcome {
                case,
                namespace_in_stream: namespaces.contains(&before.namespace),
                before,
                after,
                report,
            });
        }
    }
    all
}

// ---------------------------------------------------------------------------
// The webhook

/// The pod a workload's controller creates from its template, as the API
/// server sends it to the webhook: the template's metadata and spec, with
/// the owner the webhook derives the workload name from (kube-inject is
/// given the workload's name). Controllers add labels too (a Deployment's
/// `pod-template-hash`); those are left out, as kube-inject cannot see them.
fn pod_as_created(kind: &str, name: &str, template: &Value) -> Value {
    if kind == "Pod" {
        return template.clone();
    }
    let owner = |api_version: &str, kind: &str, owner_name: &str| {
        json!([{
            "apiVersion": api_version,
            "kind": kind,
            "name": owner_name,
            "uid": "3f1c2a9e-5b7d-4c21-9a0e-2d6f8b1c4e70",
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    };
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let fields = metadata.as_object_mut().expect("metadata is an object");
    let mut set = |key: &str, value: Value| {
        fields.insert(key.to_string(), value);
    };
    match kind {
        "Deployment" => {
            // Its pods are owned by a ReplicaSet `<deployment>-<hash>` and
            // carry the `pod-template-hash` label the webhook strips it by;
            // that label would also land in the pod's labels, which
            // kube-inject cannot see, so here a generateName alone gives
            // the Deployment's name (`webhook_names_workloads_as_istio_does`
            // covers the owner).
            set("generateName", json!(format!("{name}-")));
        }
        "StatefulSet" => {
            set("name", json!(format!("{name}-0")));
            set("ownerReferences", owner("apps/v1", "StatefulSet", name));
        }
        "DaemonSet" | "ReplicaSet" => {
            set("generateName", json!(format!("{name}-")));
            set("ownerReferences", owner("apps/v1", kind, name));
        }
        "ReplicationController" => {
            set("generateName", json!(format!("{name}-")));
            set("ownerReferences", owner("v1", kind, name));
        }
        "Job" => {
            set("generateName", json!(format!("{name}-")));
            set("ownerReferences", owner("batch/v1", "Job", name));
        }
        "CronJob" => {
            // Its pods are owned by a Job named `<cronjob>-<minutes>`, which
            // the webhook does not trace back to the CronJob (see
            // `webhook_names_workloads_as_istio_does`); a generateName
            // alone gives the CronJob's name.
            set("generateName", json!(format!("{name}-")));
        }
        other => panic!("no controller for {other}"),
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// An AdmissionReview of `api_version` for the creation of `pod`.
fn admission_review(api_version: &str, uid: &str, namespace: &str, pod: &Value) -> Vec<u8> {
    let group_version =
        |field: &str, value: &str| json!({"group": "", "version": "v1", field: value});
    serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": group_version("kind", "Pod"),
            "resource": group_version("resource", "pods"),
            "requestKind": group_version("kind", "Pod"),
            "requestResource": group_version("resource", "pods"),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }))
    .expect("JSON")
}

/// What the webhook answered for a pod.
#[derive(Debug)]
struct Answer {
    allowed: bool,
    /// The pod with the answer's JSON Patch applied, when there was one.
    patched: Option<Value>,
    warnings: Vec<String>,
    /// The denial's message.
    message: Option<String>,
}

/// Sends `pod`'s creation in `namespace` to the webhook and applies its patch.
fn ask_webhook(injector: &Injector, api_version: &str, namespace: &str, pod: &Value) -> Answer {
    let uid = "d2a41b8c-7e35-4f0a-b9c6-1e8f3a5d7c20";
    let body = admission_review(api_version, uid, namespace, pod);
    let reviewed = webhook::review(injector, &body).expect("a well-formed AdmissionReview");
    // What goes on the wire, read back as the API server would.
    let wire: AdmissionReviewResponse =
        serde_json::from_slice(&serde_json::to_vec(&reviewed.answer).unwrap()).unwrap();
    assert_eq!(
        wire.api_version, api_version,
        "answered in the request's version"
    );
    assert_eq!(wire.kind, "AdmissionReview");
    let response = wire.response;
    assert_eq!(response.uid, uid, "the answer echoes the request's uid");
    let patched = response.patch_json().map(|decoded| {
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let patch: json_patch::Patch =
            serde_json::from_slice(&decoded.expect("base64")).expect("an RFC 6902 patch");
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod sent");
        patched
    });
    Answer {
        allowed: response.allowed,
        patched,
        warnings: response.warnings,
        message: response.status.map(|s| s.message),
    }
}

/// A few cases speak the older AdmissionReview v1beta1, which the API
/// server still sends when a webhook configuration asks for it.
fn review_version(case: &Case) -> &'static str {
    if case.number.is_multiple_of(4) {
        "admission.k8s.io/v1beta1"
    } else {
        "admission.k8s.io/v1"
    }
}

// ---------------------------------------------------------------------------
// Golden files

fn update_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares `actual` with the file at `path` (or writes it with
/// `UPDATE_GOLDEN=1`), noting a difference in `failures`.
fn check_golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if update_golden() {
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let Ok(expected) = std::fs::read_to_string(path) else {
        failures.push(format!("{} is missing", path.display()));
        return;
    };
    if expected == actual {
        return;
    }
    let first_difference = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    let line = |text: &str| {
        text.lines()
            .nth(first_difference)
            .unwrap_or("(end of file)")
            .to_string()
    };
    failures.push(format!(
        "{} differs from line {}:\n  expected: {}\n  actual:   {}",
        path.display(),
        first_difference + 1,
        line(&expected),
        line(actual),
    ));
}

#[test]
fn kube_inject_output_and_explanation_match_the_golden_files() {
    let outputs = golden_dir().join("outputs");
    let mut failures = Vec::new();
    let mut expected_files = BTreeSet::new();
    for case in cases() {
        let yaml = format!("{}.yaml", case.name);
        let explanation = format!("{}.explain.txt", case.name);
        check_golden(&outputs.join(&yaml), &case.rewritten.yaml, &mut failures);
        check_golden(
            &outputs.join(&explanation),
            &explain(&case.rewritten.reports),
            &mut failures,
        );
        expected_files.extend([yaml, explanation]);
    }
    // An output whose input is gone would be checked by nothing.
    for entry in std::fs::read_dir(&outputs).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected_files.contains(&file) {
            if update_golden() {
                std::fs::remove_file(outputs.join(&file)).unwrap();
            } else {
                failures.push(format!("outputs/{file} has no input"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ; review the change and run with UPDATE_GOLDEN=1 to accept it:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn inputs_exercise_every_annotation_label_and_setting_the_injector_reads() {
    use injector::annotations as a;
    use injector::policy as p;
    let read_by_injector = [
        a::PROXY_CPU,
        a::PROXY_CPU_LIMIT,
        a::PROXY_MEMORY,
        a::PROXY_MEMORY_LIMIT,
        a::PROXY_IMAGE,
        a::LOG_LEVEL,
        a::AGENT_LOG_LEVEL,
        a::INTERCEPTION_MODE,
        a::REWRITE_APP_PROBERS,
        a::NATIVE_SIDECAR,
        a::PROXY_CONFIG,
        a::INCLUDE_INBOUND_PORTS,
        a::EXCLUDE_INBOUND_PORTS,
        a::INCLUDE_OUTBOUND_IP_RANGES,
        a::EXCLUDE_OUTBOUND_IP_RANGES,
        a::INCLUDE_OUTBOUND_PORTS,
        a::EXCLUDE_OUTBOUND_PORTS,
        a::STATUS_PORT,
        a::READINESS_INITIAL_DELAY,
        a::READINESS_PERIOD,
        a::READINESS_FAILURE_THRESHOLD,
        a::MERGE_METRICS,
        a::TEMPLATES,
        p::INJECT_LABEL,
        p::STATUS_ANNOTATION,
        p::NAMESPACE_INJECTION_LABEL,
        p::REVISION_LABEL,
        "holdApplicationUntilProxyStarts",
        "prometheus.io/scrape",
        "prometheus.io/port",
        "prometheus.io/path",
        "app.kubernetes.io/name",
        "app.kubernetes.io/version",
        "service.istio.io/canonical-name",
        "service.istio.io/canonical-revision",
        "hostNetwork: true",
        "namespace: kube-system",
        "namespace: istio-system",
        // The injector config.
        "policy: disabled",
        "neverInjectSelector",
        "alwaysInjectSelector",
        "injectedAnnotations",
        "hub:",
        "tag:",
        "nativeSidecar: true",
    ];
    let inputs = golden_dir().join("inputs");
    let all_text: String = std::fs::read_dir(&inputs)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let missing: Vec<&str> = read_by_injector
        .into_iter()
        .filter(|key| !all_text.contains(key))
        .collect();
    assert!(missing.is_empty(), "no golden input uses {missing:?}");
    let kinds: BTreeSet<String> = outcomes().iter().map(|o| o.before.kind.clone()).collect();
    assert_eq!(
        kinds.len(),
        WORKLOAD_KINDS.len(),
        "every workload kind has a case: {kinds:?}"
    );
    assert!(cases().len() >= 32, "only {} golden cases", cases().len());
}

// ---------------------------------------------------------------------------
// The webhook agrees with kube-inject

#[test]
fn webhook_patch_gives_exactly_the_kube_inject_pod() {
    let mut checked = 0;
    for outcome in outcomes().iter().filter(|o| o.report.injected) {
        let case = outcome.case;
        let (kind, name) = (&outcome.before.kind, &outcome.before.name);
        let sent = pod_as_created(kind, name, outcome.before.pod());
        let expected = pod_as_created(kind, name, outcome.after.pod());
        let answer = ask_webhook(
            &case.injector,
            review_version(case),
            &outcome.before.namespace,
            &sent,
        );
        let label = outcome.label();
        assert!(answer.allowed, "{label}: denied: {:?}", answer.message);
        let patched = answer
            .patched
            .unwrap_or_else(|| panic!("{label}: allowed without a patch"));
        assert_json_eq(&label, &patched, &expected);
        assert_eq!(
            answer.warnings, outcome.report.warnings,
            "{label}: the webhook warns as kube-inject does"
        );
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} injected workloads checked");
}

#[test]
fn injecting_again_changes_nothing() {
    for case in cases() {
        let again = workloads::rewrite(&case.injector, &case.rewritten.yaml, DEFAULT_NAMESPACE)
            .unwrap_or_else(|e| panic!("{}: kube-inject of its own output failed: {e}", case.name));
        assert!(
            again.yaml == case.rewritten.yaml,
            "{}: kube-inject of its output changed it",
            case.name
        );
        for (first, second) in case.rewritten.reports.iter().zip(&again.reports) {
            if first.injected {
                assert!(
                    !second.injected && second.reason.starts_with("already injected"),
                    "{}: {} injected twice: {}",
                    case.name,
                    second.workload,
                    second.reason
                );
            } else {
                assert_eq!(
                    second, first,
                    "{}: a skipped workload, skipped again",
                    case.name
                );
            }
        }
    }
    for outcome in outcomes().iter().filter(|o| o.report.injected) {
        let case = outcome.case;
        let injected = pod_as_created(
            &outcome.after.kind,
            &outcome.after.name,
            outcome.after.pod(),
        );
        let answer = ask_webhook(
            &case.injector,
            review_version(case),
            &outcome.after.namespace,
            &injected,
        );
        let label = outcome.label();
        assert!(
            answer.allowed,
            "{label}: injected pod denied: {:?}",
            answer.message
        );
        assert!(
            answer.patched.is_none(),
            "{label}: an injected pod was patched again"
        );
    }
}

#[test]
fn what_is_not_injected_passes_through_untouched() {
    let outcomes = outcomes();
    for case in cases() {
        let input = documents(&case.input);
        let output = documents(&case.rewritten.yaml);
        assert_eq!(input.len(), output.len(), "{}: documents kept", case.name);
        let changed: BTreeSet<usize> = outcomes
            .iter()
            .filter(|o| std::ptr::eq(o.case, case) && o.report.injected)
            .map(|o| o.before.document)
            .collect();
        for (index, (before, after)) in input.iter().zip(&output).enumerate() {
            if !changed.contains(&index) {
                assert!(
                    before.text == after.text,
                    "{}: document {} (nothing injected) was not written back byte for byte:\n{}\n---- became\n{}",
                    case.name,
                    index + 1,
                    before.text,
                    after.text
                );
            }
        }
    }
    for outcome in &outcomes {
        let label = outcome.label();
        if outcome.report.injected {
            // Around an injected pod template the object is left as it was.
            let mut restored = outcome.after.object.clone();
            *restored.pointer_mut(outcome.after.pod_path).unwrap() = outcome.before.pod().clone();
            assert_json_eq(
                &format!("{label} outside its pod template"),
                &restored,
                &outcome.before.object,
            );
            continue;
        }
        assert_json_eq(&label, &outcome.after.object, &outcome.before.object);
        if outcome.namespace_in_stream {
            // Skipped by the namespace's labels: in a cluster the API
            // server's selectors would not call the webhook at all.
            continue;
        }
        let (kind, name) = (&outcome.before.kind, &outcome.before.name);
        let pod = pod_as_created(kind, name, outcome.before.pod());
        let answer = ask_webhook(
            &outcome.case.injector,
            review_version(outcome.case),
            &outcome.before.namespace,
            &pod,
        );
        assert!(answer.allowed, "{label}: denied: {:?}", answer.message);
        assert!(
            answer.patched.is_none(),
            "{label}: skipped by kube-inject, patched by the webhook"
        );
    }
}

/// Asserts `actual == expected`, naming the first differing JSON pointer.
fn assert_json_eq(label: &str, actual: &Value, expected: &Value) {
    if actual == expected {
        return;
    }
    let patch = json_patch::diff(expected, actual);
    panic!(
        "{label}: differs from the expected pod; the changes from expected to actual:\n{}",
        serde_json::to_string_pretty(&patch).unwrap()
    );
}

// ---------------------------------------------------------------------------
// Inputs that cannot be injected

#[test]
fn bad_inputs_are_refused_naming_the_annotation_or_field() {
    let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
    let pod_yaml = |annotations: &str, container: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  annotations: {annotations}\n\
             spec:\n  containers:\n  - {container}\n"
        )
    };
    let plain = "{name: web, image: registry.example/web:1}";
    let bad = [
        (
            pod_yaml("{sidecar.istio.io/proxyCPU: lots}", plain),
            vec![
                "sidecar.istio.io/proxyCPU",
                "\"lots\" is not a Kubernetes quantity",
            ],
        ),
        (
            pod_yaml("{sidecar.istio.io/interceptionMode: TPROXY}", plain),
            vec![
                "sidecar.istio.io/interceptionMode",
                "TPROXY is not supported",
            ],
        ),
        (
            pod_yaml(
                "{}",
                "{name: web, image: registry.example/web:1, readinessProbe: {httpGet: {path: /ready, port: admin}}}",
            ),
            vec![
                "spec.containers[0].readinessProbe.httpGet.port",
                "no port named \"admin\"",
            ],
        ),
    ];
    for (yaml, expected) in bad {
        // After a Service, so the error must say which document.
        let stream = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n---\n{yaml}");
        let error = workloads::rewrite(&injector, &stream, DEFAULT_NAMESPACE)
            .expect_err("refused")
            .to_string();
        assert!(error.starts_with("document 2: Pod shop/web: "), "{error}");
        for part in &expected {
            assert!(
                error.contains(part),
                "kube-inject's error {error:?} does not say {part:?}"
            );
        }
        let pod: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let answer = ask_webhook(&injector, "admission.k8s.io/v1", "shop", &pod);
        assert!(!answer.allowed && answer.patched.is_none(), "{answer:?}");
        let message = answer.message.unwrap_or_default();
        for part in &expected {
            assert!(
                message.contains(part),
                "the webhook's denial {message:?} does not say {part:?}"
            );
        }
    }
    let error =
        InjectorConfig::from_yaml("values:\n  global:\n    proxy:\n      statusPort: high\n")
            .expect_err("a port must be a number");
    assert!(
        error.starts_with("values.global.proxy.statusPort: "),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes' schema

/// kubernetes-validate from `KUBERNETES_VALIDATE_BIN`, else the one
/// `scripts/install-tools.sh` installs.
fn kubernetes_validate() -> Option<PathBuf> {
    let path = std::env::var_os("KUBERNETES_VALIDATE_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubernetes-validate")
        });
    path.exists().then_some(path)
}

#[test]
fn every_workload_written_is_valid_for_kubernetes() {
    let Some(validator) = kubernetes_validate() else {
        let note = "kubernetes-validate is not installed (scripts/install-tools.sh, or set KUBERNETES_VALIDATE_BIN)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{note}");
        eprintln!("note: {note}; skipping the schema check");
        return;
    };
    // One file per case holding its workload documents as kube-inject
    // wrote them. kubernetes-validate has no schema for `kind: List` (it
    // would only warn), so a List's workloads are written out one by one.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("injector-golden-schema");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for case in cases() {
        let mut yaml = Vec::new();
        for document in documents(&case.rewritten.yaml) {
            if is_list(&document.value) {
                let items = workloads_of(std::slice::from_ref(&document));
                yaml.extend(
                    items
                        .iter()
                        .map(|w| serde_yaml_ng::to_string(&w.object).unwrap()),
                );
            } else if WORKLOAD_KINDS
                .iter()
                .any(|(kind, _)| *kind == kind_of(&document.value))
            {
                yaml.push(document.text);
            }
        }
        let file = dir.join(format!("{}.yaml", case.name));
        std::fs::write(&file, yaml.join("---\n")).unwrap();
        files.push(file);
    }
    let output = Command::new(&validator)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // --quiet prints only problems: an ERROR, or a WARN that a document
    // could not be checked at all.
    assert!(
        output.status.success() && stdout.trim().is_empty(),
        "kubernetes-validate {KUBERNETES_VERSION} (--strict) refused workloads ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Behaviours Istio users rely on that the golden cases do not show.

/// The injected pod template of the one workload in `yaml`, by kube-inject
/// with the default config.
fn kube_inject_one(yaml: &str) -> (String, Value) {
    let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
    let rewritten = workloads::rewrite(&injector, yaml, DEFAULT_NAMESPACE)
        .unwrap_or_else(|e| panic!("kube-inject failed: {e}"));
    let workloads = workloads_of(&documents(&rewritten.yaml));
    let [workload] = workloads.as_slice() else {
        panic!("one workload expected");
    };
    let pod = workload.pod().clone();
    (rewritten.yaml, pod)
}

/// A Deployment `web` in `shop` whose pod template has `annotations` (a
/// flow mapping) and `containers` (YAML list items at six spaces).
fn deployment(annotations: &str, containers: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata:\n      \
         labels: {{app: web}}\n      annotations: {annotations}\n    spec:\n      containers:\n{containers}"
    )
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn webhook_names_workloads_as_istio_does() {
    let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
    let workload_name = |owner_api: &str, owner_kind: &str, owner: &str, generate_name: &str| {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": generate_name,
                "ownerReferences": [{"apiVersion": owner_api, "kind": owner_kind, "name": owner,
                    "uid": "1", "controller": true}],
            },
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        });
        let answer = ask_webhook(&injector, "admission.k8s.io/v1", "shop", &pod);
        let patched = answer.patched.expect("injected");
        let env = patched
            .pointer("/spec/containers/1/env")
            .and_then(Value::as_array)
            .unwrap();
        env.iter()
            .find(|e| e["name"] == "ISTIO_META_WORKLOAD_NAME")
            .and_then(|e| e["value"].as_str())
            .unwrap()
            .to_string()
    };
    // A CronJob's Job is named `<cronjob>-<scheduled minutes>`; Istio names
    // the workload after the CronJob, as kube-inject does.
    assert_eq!(
        workload_name(
            "batch/v1",
            "Job",
            "nightly-report-29000000",
            "nightly-report-29000000-"
        ),
        "nightly-report"
    );
    // Only a Deployment's ReplicaSet (pods labelled pod-template-hash) loses
    // its hash; a ReplicaSet of its own keeps its whole name.
    assert_eq!(
        workload_name(
            "apps/v1",
            "ReplicaSet",
            "legacy-frontend",
            "legacy-frontend-"
        ),
        "legacy-frontend"
    );
}

#[test]
fn kube_inject_quotes_strings_kubectl_would_read_as_booleans() {
    // kubectl and the API server read YAML 1.1: an unquoted `on` is true,
    // and `kubectl apply` refuses a boolean where a string belongs.
    let input = deployment(
        "{}",
        "      - name: web\n        image: registry.example/web:1\n        \
         env:\n        - {name: VERBOSE, value: \"yes\"}\n        - {name: CACHE, value: \"off\"}\n",
    )
    .replace("      labels: {app: web}", "      labels: {app: web, mesh: \"on\"}");
    let (yaml, _) = kube_inject_one(&input);
    let unquoted: Vec<&str> = yaml
        .lines()
        .map(str::trim)
        .filter(|line| matches!(line.rsplit_once(": "), Some((_, "yes" | "off" | "on"))))
        .collect();
    assert!(
        unquoted.is_empty(),
        "read as booleans by kubectl: {unquoted:?}"
    );
}

#[test]
fn agent_log_level_is_one_the_agent_understands() {
    // The agent's --log-level is a tracing filter: `warning` there is a
    // target name, and the agent then logs nothing at all.
    let agent_levels = ["trace", "debug", "info", "warn", "error", "off"];
    for level in ["warning", "critical"] {
        let yaml = deployment(
            &format!("{{sidecar.istio.io/agentLogLevel: {level}}}"),
            "      - {name: web, image: registry.example/web:1}\n",
        );
        let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
        match workloads::rewrite(&injector, &yaml, DEFAULT_NAMESPACE) {
            // Refusing it, naming the annotation, is fine too.
            Err(error) => assert!(error.to_string().contains("agentLogLevel"), "{error}"),
            Ok(_) => {
                let (_, pod) = kube_inject_one(&yaml);
                for list in ["initContainers", "containers"] {
                    for container in pod["spec"][list].as_array().unwrap() {
                        let args: Vec<&str> = container["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        if let Some(at) = args.iter().position(|a| *a == "--log-level") {
                            assert!(
                                agent_levels.contains(&args[at + 1]),
                                "{level}: {} gets --log-level {}",
                                container["name"],
                                args[at + 1]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn own_istio_proxy_image_auto_gets_the_injected_image() {
    // Istio's "customizing injection" example: `image: auto` stands for
    // the injector's image.
    let (_, pod) = kube_inject_one(&deployment(
        "{}",
        "      - {name: web, image: registry.example/web:1}\n      \
         - {name: istio-proxy, image: auto, resources: {limits: {memory: 4Gi}}}\n",
    ));
    let proxy = &pod["spec"]["containers"][1];
    assert_eq!(proxy["name"], "istio-proxy");
    assert_eq!(
        proxy["image"],
        InjectorConfig::default().proxy_image().as_str()
    );
    assert_eq!(proxy["resources"]["limits"]["memory"], "4Gi");
}

#[test]
fn own_istio_proxy_with_native_sidecar_is_not_duplicated() {
    // Container names must be unique across init and app containers: the
    // API server refuses the pod otherwise. Istio applies the pod's
    // istio-proxy fields to the native sidecar.
    let (_, pod) = kube_inject_one(&deployment(
        "{sidecar.istio.io/nativeSidecar: \"true\"}",
        "      - {name: web, image: registry.example/web:1}\n      \
         - {name: istio-proxy, resources: {limits: {memory: 4Gi}}}\n",
    ));
    assert_eq!(container_names(&pod, "containers"), ["web"]);
    assert_eq!(
        container_names(&pod, "initContainers"),
        ["istio-init", "istio-proxy"]
    );
    assert_eq!(
        pod["spec"]["initContainers"][1]["resources"]["limits"]["memory"],
        "4Gi"
    );
}

#[test]
fn own_istio_proxy_starts_first_when_holding_the_application() {
    // kubelet starts containers in order and waits for each postStart hook:
    // only a proxy placed first holds the app back.
    let (_, pod) = kube_inject_one(&deployment(
        "{proxy.istio.io/config: \"holdApplicationUntilProxyStarts: true\"}",
        "      - {name: web, image: registry.example/web:1}\n      \
         - {name: istio-proxy, resources: {limits: {memory: 4Gi}}}\n",
    ));
    assert_eq!(container_names(&pod, "containers"), ["istio-proxy", "web"]);
}
