//! One state-of-the-world SDS stream (`StreamSecrets`), as Envoy drives it
//! with `api_type: GRPC`: every request names all the secrets it wants; each
//! response carries a version and a nonce, which the next request echoes
//! (ACK), with `error_detail` when Envoy rejected it (NACK).
//!
//! A pure state machine: the stream driver feeds it requests and new
//! snapshots and sends what it returns.

use std::collections::BTreeSet;

use tonic::Status;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};

use super::resources::{SECRET_TYPE_URL, SecretSnapshot};
use super::stream::{StreamProtocol, UnknownNames, check_type_url};

/// What was last sent on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    nonce: String,
    version: String,
    names: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct SotwStream {
    subscribed: BTreeSet<String>,
    sent: Option<Sent>,
    /// Version Envoy last accepted, for logs.
    acked: Option<String>,
    responses: u64,
    unknown: UnknownNames,
}

impl SotwStream {
    /// Takes one request; returns a response when Envoy wants something it
    /// does not have yet.
    pub fn on_request(
        &mut self,
        request: &DiscoveryRequest,
        snapshot: Option<&SecretSnapshot>,
    ) -> Result<Option<DiscoveryResponse>, Status> {
        check_type_url(&request.type_url)?;
        if !request.response_nonce.is_empty() {
            let Some(sent) = self
                .sent
                .as_ref()
                .filter(|s| s.nonce == request.response_nonce)
            else {
                // Answers a response that a newer one has replaced: Envoy
                // will answer the newer one too, so this carries nothing.
                tracing::debug!(nonce = %request.response_nonce, "stale nonce ignored");
                return Ok(None);
            };
            match &request.error_detail {
                Some(error) => tracing::warn!(
                    version = %sent.version,
                    error = %error.message,
                    "Envoy rejected the secrets"
                ),
                None => {
                    tracing::debug!(version = %sent.version, "Envoy accepted the secrets");
                    self.acked = Some(sent.version.clone());
                }
            }
        }
        self.subscribed = request.resource_names.iter().cloned().collect();
        Ok(snapshot.and_then(|snapshot| self.push_if_due(snapshot)))
    }

    /// A new identity: returns the push for it, if anything is subscribed.
    pub fn on_snapshot(&mut self, snapshot: &SecretSnapshot) -> Option<DiscoveryResponse> {
        self.push_if_due(snapshot)
    }

    /// The version Envoy last accepted.
    pub fn acked_version(&self) -> Option<&str> {
        self.acked.as_deref()
    }

    fn push_if_due(&mut self, snapshot: &SecretSnapshot) -> Option<DiscoveryResponse> {
        if self.subscribed.is_empty() {
            return None;
        }
        // After a NACK nothing changed, so nothing is resent: the same
        // secrets would be rejected again. The next identity is pushed.
        if self
            .sent
            .as_ref()
            .is_some_and(|sent| sent.version == snapshot.version && sent.names == self.subscribed)
        {
            return None;
        }
        let resources: Vec<_> = self
            .subscribed
            .iter()
            .filter_map(|name| match snapshot.get(name) {
                Some(resource) => Some(resource.packed.clone()),
                None => {
                    self.unknown.warn_once(name);
                    None
                }
            })
            .collect();
        if resources.is_empty() {
            return None;
        }
        self.responses += 1;
        let sent = Sent {
            nonce: self.responses.to_string(),
            version: snapshot.version.clone(),
            names: self.subscribed.clone(),
        };
        tracing::info!(version = %sent.version, names = ?sent.names, "pushing secrets");
        let response = DiscoveryResponse {
            version_info: sent.version.clone(),
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            nonce: sent.nonce.clone(),
            ..Default::default()
        };
        self.sent = Some(sent);
        Some(response)
    }
}

impl StreamProtocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn node_id(request: &DiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|node| node.id.as_str())
    }

    fn on_request(
        &mut self,
        request: &DiscoveryRequest,
        snapshot: Option<&SecretSnapshot>,
    ) -> Result<Option<DiscoveryResponse>, Status> {
        SotwStream::on_request(self, request, snapshot)
    }

    fn on_snapshot(&mut self, snapshot: &SecretSnapshot) -> Option<DiscoveryResponse> {
        SotwStream::on_snapshot(self, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trireme_proto::envoy::pb::google::rpc::Status as RpcStatus;
    use workload_identity::testing::TestCa;

    use super::*;
    use crate::sds::resources::{ROOT_CA, WORKLOAD_CERTIFICATE};

    const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

    fn snapshot(ca: &TestCa) -> SecretSnapshot {
        SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)))
    }

    fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.to_owned(),
            resource_names: names.iter().map(|name| name.to_string()).collect(),
            type_url: SECRET_TYPE_URL.to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn nack(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad certificate".into(),
                details: Vec::new(),
            }),
            ..request(names, version, nonce)
        }
    }

    fn names_in(response: &DiscoveryResponse, snapshot: &SecretSnapshot) -> Vec<&'static str> {
        snapshot
            .names()
            .filter(|name| {
                let packed = &snapshot.get(name).unwrap().packed;
                response.resources.contains(packed)
            })
            .collect()
    }

    #[test]
    fn answers_the_first_request_and_stays_quiet_on_its_ack() {
        let ca = TestCa::new();
        let current = snapshot(&ca);
        let mut stream = SotwStream::default();
        let response = stream
            .on_request(&request(&[WORKLOAD_CERTIFICATE], "", ""), Some(&current))
            .unwrap()
            .expect("a response");
        assert_eq!(response.version_info, current.version);
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        assert!(!response.nonce.is_empty());
        assert_eq!(names_in(&response, &current), [WORKLOAD_CERTIFICATE]);

        let ack = request(&[WORKLOAD_CERTIFICATE], &current.version, &response.nonce);
        assert_eq!(stream.on_request(&ack, Some(&current)).unwrap(), None);
        assert_eq!(stream.acked_version(), Some(current.version.as_str()));
    }

    #[test]
    fn waits_for_the_first_certificate_then_pushes_it() {
        let ca = TestCa::new();
        let mut stream = SotwStream::default();
        let first = request(&[WORKLOAD_CERTIFICATE, ROOT_CA], "", "");
        assert_eq!(stream.on_request(&first, None).unwrap(), None);
        let current = snapshot(&ca);
        let response = stream.on_snapshot(&current).expect("pushed on arrival");
        assert_eq!(
            names_in(&response, &current),
            [ROOT_CA, WORKLOAD_CERTIFICATE]
        );
    }

    #[test]
    fn pushes_each_new_identity_with_a_new_version_and_nonce() {
        let ca = TestCa::new();
        let (first, second) = (snapshot(&ca), snapshot(&ca));
        let mut stream = SotwStream::default();
        let names = [WORKLOAD_CERTIFICATE, ROOT_CA];
        let initial = stream
            .on_request(&request(&names, "", ""), Some(&first))
            .unwrap()
            .unwrap();
        stream
            .on_request(
                &request(&names, &first.version, &initial.nonce),
                Some(&first),
            )
            .unwrap();
        let pushed = stream.on_snapshot(&second).expect("a push");
        assert_eq!(pushed.version_info, second.version);
        assert_ne!(pushed.nonce, initial.nonce);
        assert_eq!(names_in(&pushed, &second).len(), 2);
        // The same identity again is not a change.
        assert_eq!(stream.on_snapshot(&second), None);
    }

    #[test]
    fn a_nack_is_not_answered_with_the_same_secrets() {
        let ca = TestCa::new();
        let (first, second) = (snapshot(&ca), snapshot(&ca));
        let mut stream = SotwStream::default();
        let names = [WORKLOAD_CERTIFICATE];
        let response = stream
            .on_request(&request(&names, "", ""), Some(&first))
            .unwrap()
            .unwrap();
        let rejected = nack(&names, "", &response.nonce);
        assert_eq!(stream.on_request(&rejected, Some(&first)).unwrap(), None);
        assert_eq!(stream.acked_version(), None);
        // The next identity is still pushed.
        assert!(stream.on_snapshot(&second).is_some());
    }

    #[test]
    fn a_stale_nonce_is_ignored() {
        let ca = TestCa::new();
        let (first, second) = (snapshot(&ca), snapshot(&ca));
        let mut stream = SotwStream::default();
        let names = [WORKLOAD_CERTIFICATE];
        let old = stream
            .on_request(&request(&names, "", ""), Some(&first))
            .unwrap()
            .unwrap();
        let new = stream.on_snapshot(&second).unwrap();
        // Envoy's ACK of the first response crosses the second push.
        let late_ack = request(&names, &first.version, &old.nonce);
        assert_eq!(stream.on_request(&late_ack, Some(&second)).unwrap(), None);
        assert_eq!(stream.acked_version(), None);
        let ack = request(&names, &second.version, &new.nonce);
        assert_eq!(stream.on_request(&ack, Some(&second)).unwrap(), None);
        assert_eq!(stream.acked_version(), Some(second.version.as_str()));
    }

    #[test]
    fn a_new_subscription_is_answered_at_the_same_version() {
        let ca = TestCa::new();
        let current = snapshot(&ca);
        let mut stream = SotwStream::default();
        let response = stream
            .on_request(&request(&[WORKLOAD_CERTIFICATE], "", ""), Some(&current))
            .unwrap()
            .unwrap();
        let both = request(
            &[WORKLOAD_CERTIFICATE, ROOT_CA],
            &current.version,
            &response.nonce,
        );
        let again = stream.on_request(&both, Some(&current)).unwrap().unwrap();
        assert_eq!(names_in(&again, &current), [ROOT_CA, WORKLOAD_CERTIFICATE]);
    }

    #[test]
    fn unknown_names_are_left_out() {
        let ca = TestCa::new();
        let current = snapshot(&ca);
        let mut stream = SotwStream::default();
        let only_unknown = request(&["file-cert:/etc/certs/cert.pem"], "", "");
        assert_eq!(
            stream.on_request(&only_unknown, Some(&current)).unwrap(),
            None
        );
        let mixed = request(&["file-cert:/etc/certs/cert.pem", ROOT_CA], "", "");
        let response = stream.on_request(&mixed, Some(&current)).unwrap().unwrap();
        assert_eq!(names_in(&response, &current), [ROOT_CA]);
    }

    #[test]
    fn refuses_other_resource_types() {
        let mut stream = SotwStream::default();
        let wrong = DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..request(&[WORKLOAD_CERTIFICATE], "", "")
        };
        let status = stream.on_request(&wrong, None).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
