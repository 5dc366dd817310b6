//! The checks shared by the libFuzzer target and the stable driver: every
//! input is a request body for the webhook (the same `review` the HTTP
//! handler calls), and, when it is text, a YAML file for mesh-config.

use galley::webhook::admission::{AdmissionReviewResponse, API_VERSION_V1, API_VERSION_V1BETA1};
use galley::webhook::{Outcome, review};

/// Nothing may panic; every answer echoes its request and is consistent
/// with its outcome.
pub fn check_admission(data: &[u8]) {
    match review(data) {
        Err(refusal) => assert!(!refusal.to_string().is_empty()),
        Ok(reviewed) => {
            let answer = &reviewed.answer;
            assert!([API_VERSION_V1, API_VERSION_V1BETA1].contains(&answer.api_version.as_str()));
            assert_eq!(answer.response.uid, reviewed.request.uid);
            let should_allow = matches!(
                reviewed.outcome,
                Outcome::Passed | Outcome::UnknownKind | Outcome::UnsupportedOperation
            );
            assert_eq!(answer.response.allowed, should_allow, "{:?}", reviewed.outcome);
            if !answer.response.allowed {
                let status = answer.response.status.as_ref().expect("a denial has a status");
                assert_eq!(status.code, 400);
                assert!(!status.message.is_empty());
            }
            let written = serde_json::to_vec(answer).expect("answers serialize");
            let read: AdmissionReviewResponse =
                serde_json::from_slice(&written).expect("answers read back");
            assert_eq!(&read, answer);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for result in mesh_config::parse_documents("fuzz.yaml", text) {
            if let Err(error) = result {
                assert!(!error.to_string().is_empty());
            }
        }
    }
}
