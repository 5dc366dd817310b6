//! The checks shared by the libFuzzer target and the stable driver: every
//! input is a request body for the injection webhook (the same `review` the
//! HTTP handler calls) and, when it is text, a YAML stream for `trireme
//! kube-inject` (`workloads::rewrite`).

use std::sync::LazyLock;

use injector::webhook::{Outcome, Reviewed, review};
use injector::workloads::rewrite;
use injector::{Injection, Injector, InjectorConfig, SidecarTemplate, Target};

/// Built once: compiling the template per input would drown the checks.
static INJECTOR: LazyLock<Injector> =
    LazyLock::new(|| Injector::new(InjectorConfig::default(), SidecarTemplate::built_in()));

/// Nothing may panic; every answer echoes its uid and agrees with its
/// outcome; a patch applies to the request's object and leaves a pod that
/// is not injected again; a stream with nothing injected is written back
/// byte for byte.
pub fn check_inject(data: &[u8]) {
    check_review(&INJECTOR, data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_rewrite(&INJECTOR, text);
    }
}

fn check_review(injector: &Injector, body: &[u8]) {
    match review(injector, body) {
        Err(refusal) => assert!(!refusal.to_string().is_empty()),
        Ok(reviewed) => check_answer(injector, &reviewed),
    }
}

fn check_answer(injector: &Injector, reviewed: &Reviewed) {
    let answer = &reviewed.answer;
    let response = &answer.response;
    assert!(
        ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"].contains(&answer.api_version.as_str())
    );
    assert_eq!(response.uid, reviewed.request.uid);
    match &reviewed.outcome {
        Outcome::Injected => {
            assert!(response.allowed);
            assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
            check_patch(injector, reviewed);
        }
        Outcome::Skipped(reason) => {
            assert!(response.allowed && response.patch.is_none(), "{reason}");
        }
        Outcome::Failed(reason) => {
            assert!(!response.allowed && response.patch.is_none(), "{reason}");
            let status = response.status.as_ref().expect("a denial has a status");
            assert_eq!(status.code, 400);
            assert!(!status.message.is_empty());
        }
    }
    // What the handler writes, the API server can read back.
    let written = serde_json::to_vec(answer).expect("answers serialize");
    let read: serde_json::Value = serde_json::from_slice(&written).expect("answers read back");
    assert_eq!(
        read["response"]["uid"].as_str(),
        Some(response.uid.as_str())
    );
}

/// The patch applies to the object sent, and the result counts as injected
/// (the API server may call the webhook again, e.g. on reinvocation).
fn check_patch(injector: &Injector, reviewed: &Reviewed) {
    let request = &reviewed.request;
    let text = reviewed
        .answer
        .response
        .patch_json()
        .expect("an injected answer carries a patch")
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&text).expect("the patch is a JSON Patch");
    let mut pod = request
        .object
        .clone()
        .expect("only a present object is injected");
    if let Err(error) = json_patch::patch(&mut pod, &patch) {
        panic!("the patch does not apply to the request's object: {error}");
    }
    let target = Target {
        namespace: Some(request.namespace.clone()).filter(|ns| !ns.is_empty()),
        ..Target::default()
    };
    match injector.inject(&pod, &target) {
        Ok(Injection::Skipped { .. }) => {}
        other => panic!("the patched pod would be injected again: {other:?}"),
    }
}

fn check_rewrite(injector: &Injector, text: &str) {
    let rewritten = match rewrite(injector, text, "default") {
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
        Ok(rewritten) => rewritten,
    };
    if rewritten.reports.iter().all(|report| !report.injected) {
        assert_eq!(
            rewritten.yaml, text,
            "nothing injected, yet the stream changed"
        );
        return;
    }
    // The output is a stream kube-inject reads again, finding nothing to do.
    let again = rewrite(injector, &rewritten.yaml, "default")
        .unwrap_or_else(|error| panic!("the rewritten stream does not read back: {error}"));
    if let Some(report) = again.reports.iter().find(|report| report.injected) {
        panic!("{} injected twice", report.workload);
    }
}
