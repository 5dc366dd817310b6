//! One incremental SDS stream (`DeltaSecrets`, Envoy's `api_type:
//! DELTA_GRPC`): requests subscribe and unsubscribe names; responses carry
//! only the secrets whose version the client does not have yet, each with
//! its own version.
//!
//! Unlike state of the world, a delta request is never ignored for a stale
//! nonce: its subscription changes apply whatever response it answers.

use std::collections::{BTreeMap, BTreeSet};

use tonic::Status;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::resources::{SECRET_TYPE_URL, SecretSnapshot};
use super::stream::{StreamProtocol, UnknownNames, check_type_url};

#[derive(Debug, Default)]
pub struct DeltaStream {
    started: bool,
    subscribed: BTreeSet<String>,
    /// Version of each secret the client holds or has been sent. A rejected
    /// version stays here, so it is not sent again.
    client_versions: BTreeMap<String, String>,
    responses: u64,
    unknown: UnknownNames,
}

impl DeltaStream {
    pub fn on_request(
        &mut self,
        request: &DeltaDiscoveryRequest,
        snapshot: Option<&SecretSnapshot>,
    ) -> Result<Option<DeltaDiscoveryResponse>, Status> {
        check_type_url(&request.type_url)?;
        if !self.started {
            // What a reconnecting Envoy already holds need not be resent.
            self.client_versions
                .extend(request.initial_resource_versions.clone());
            self.started = true;
        }
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                Some(error) => tracing::warn!(
                    nonce = %request.response_nonce,
                    error = %error.message,
                    "Envoy rejected the secrets"
                ),
                None => {
                    tracing::debug!(nonce = %request.response_nonce, "Envoy accepted the secrets")
                }
            }
        }
        for name in &request.resource_names_unsubscribe {
            self.subscribed.remove(name);
            self.client_versions.remove(name);
        }
        self.subscribed
            .extend(request.resource_names_subscribe.iter().cloned());
        Ok(snapshot.and_then(|snapshot| self.push_if_due(snapshot)))
    }

    pub fn on_snapshot(&mut self, snapshot: &SecretSnapshot) -> Option<DeltaDiscoveryResponse> {
        self.push_if_due(snapshot)
    }

    fn push_if_due(&mut self, snapshot: &SecretSnapshot) -> Option<DeltaDiscoveryResponse> {
        let mut resources = Vec::new();
        for name in &self.subscribed {
            let Some(secret) = snapshot.get(name) else {
                self.unknown.warn_once(name);
                continue;
            };
            if self.client_versions.get(name) == Some(&secret.version) {
                continue;
            }
            self.client_versions
                .insert(name.clone(), secret.version.clone());
            resources.push(Resource {
                name: name.clone(),
                version: secret.version.clone(),
                resource: Some(secret.packed.clone()),
                ..Default::default()
            });
        }
        if resources.is_empty() {
            return None;
        }
        self.responses += 1;
        let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
        tracing::info!(version = %snapshot.version, ?names, "pushing secrets");
        Some(DeltaDiscoveryResponse {
            system_version_info: snapshot.version.clone(),
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            nonce: self.responses.to_string(),
            ..Default::default()
        })
    }
}

impl StreamProtocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn node_id(request: &DeltaDiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|node| node.id.as_str())
    }

    fn on_request(
        &mut self,
        request: &DeltaDiscoveryRequest,
        snapshot: Option<&SecretSnapshot>,
    ) -> Result<Option<DeltaDiscoveryResponse>, Status> {
        DeltaStream::on_request(self, request, snapshot)
    }

    fn on_snapshot(&mut self, snapshot: &SecretSnapshot) -> Option<DeltaDiscoveryResponse> {
        DeltaStream::on_snapshot(self, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use workload_identity::testing::TestCa;

    use super::*;
    use crate::sds::resources::{ROOT_CA, WORKLOAD_CERTIFICATE};

    const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

    fn subscribe(names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: SECRET_TYPE_URL.to_owned(),
            resource_names_subscribe: names.iter().map(|name| name.to_string()).collect(),
            ..Default::default()
        }
    }

    fn ack(nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: SECRET_TYPE_URL.to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn sent(response: &DeltaDiscoveryResponse) -> Vec<(&str, &str)> {
        response
            .resources
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect()
    }

    #[test]
    fn sends_each_subscribed_secret_with_its_own_version() {
        let ca = TestCa::new();
        let current = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        let response = stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE, ROOT_CA]), Some(&current))
            .unwrap()
            .unwrap();
        assert_eq!(
            sent(&response),
            [
                (ROOT_CA, current.get(ROOT_CA).unwrap().version.as_str()),
                (WORKLOAD_CERTIFICATE, current.version.as_str()),
            ]
        );
        assert_eq!(
            stream
                .on_request(&ack(&response.nonce), Some(&current))
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_renewal_under_the_same_root_sends_only_the_certificate() {
        let ca = TestCa::new();
        let first = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let second = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE, ROOT_CA]), Some(&first))
            .unwrap();
        let pushed = stream.on_snapshot(&second).unwrap();
        assert_eq!(
            sent(&pushed),
            [(WORKLOAD_CERTIFICATE, second.version.as_str())]
        );
        assert_eq!(stream.on_snapshot(&second), None);
    }

    #[test]
    fn a_reconnecting_client_is_not_sent_what_it_has() {
        let ca = TestCa::new();
        let current = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        let request = DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([(
                ROOT_CA.to_owned(),
                current.get(ROOT_CA).unwrap().version.clone(),
            )]),
            ..subscribe(&[WORKLOAD_CERTIFICATE, ROOT_CA])
        };
        let response = stream
            .on_request(&request, Some(&current))
            .unwrap()
            .unwrap();
        assert_eq!(
            sent(&response),
            [(WORKLOAD_CERTIFICATE, current.version.as_str())]
        );
    }

    #[test]
    fn subscriptions_apply_whatever_nonce_they_carry() {
        let ca = TestCa::new();
        let current = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE]), Some(&current))
            .unwrap();
        let late = DeltaDiscoveryRequest {
            response_nonce: "an-old-nonce".into(),
            ..subscribe(&[ROOT_CA])
        };
        let response = stream.on_request(&late, Some(&current)).unwrap().unwrap();
        assert_eq!(sent(&response)[0].0, ROOT_CA);
    }

    #[test]
    fn unsubscribed_secrets_are_not_pushed_and_resubscribing_sends_again() {
        let ca = TestCa::new();
        let first = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let second = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE]), Some(&first))
            .unwrap();
        let unsubscribe = DeltaDiscoveryRequest {
            resource_names_unsubscribe: vec![WORKLOAD_CERTIFICATE.to_owned()],
            ..ack("1")
        };
        assert_eq!(stream.on_request(&unsubscribe, Some(&first)).unwrap(), None);
        assert_eq!(stream.on_snapshot(&second), None);
        let again = stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE]), Some(&second))
            .unwrap()
            .unwrap();
        assert_eq!(
            sent(&again),
            [(WORKLOAD_CERTIFICATE, second.version.as_str())]
        );
    }

    #[test]
    fn a_rejected_version_is_not_resent() {
        let ca = TestCa::new();
        let current = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let mut stream = DeltaStream::default();
        let response = stream
            .on_request(&subscribe(&[WORKLOAD_CERTIFICATE]), Some(&current))
            .unwrap()
            .unwrap();
        let nack = DeltaDiscoveryRequest {
            error_detail: Some(trireme_proto::envoy::pb::google::rpc::Status {
                code: 3,
                message: "bad key".into(),
                details: Vec::new(),
            }),
            ..ack(&response.nonce)
        };
        assert_eq!(stream.on_request(&nack, Some(&current)).unwrap(), None);
    }
}
