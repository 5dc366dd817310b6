//! Semantic validation of Istio resources: the verdicts of istiod's validating
//! webhook and of the CEL rules in Istio's CRD schemas, applied to documents
//! that have already parsed strictly.
//!
//! [`validate`] walks one resource and reports every problem at once, each
//! with the field path it is about. Errors make the resource invalid;
//! warnings are settings Istio accepts but warns about (deprecated fields,
//! rules that can never match, ...).

use std::fmt;

use crate::AnyResource;

mod authorization_policy;
mod destination_rule;
mod durations;
mod envoy_filter;
mod export_to;
mod gateway;
mod hosts;
mod http;
mod http_route;
mod metadata;
mod names;
mod path;
mod peer_authentication;
mod ports;
mod proxy_config;
mod regex;
mod request_authentication;
mod selectors;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;
mod workload_entry;

use path::Path;

/// One problem, at a field path such as `spec.http[0].route[1].weight`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything found in one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Report {
    /// A resource with warnings only is valid.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validates one resource, reporting every error and warning.
pub fn validate(resource: &AnyResource) -> Report {
    let mut v = Checker::new(resource.metadata().namespace.clone());
    metadata::validate(&mut v, resource);
    let spec = Path::root("spec");
    match resource {
        AnyResource::VirtualService(r) => virtual_service::validate(&mut v, &spec, &r.spec),
        AnyResource::DestinationRule(r) => destination_rule::validate(&mut v, &spec, &r.spec),
        AnyResource::Gateway(r) => gateway::validate(&mut v, &spec, &r.spec),
        AnyResource::ServiceEntry(r) => service_entry::validate(&mut v, &spec, &r.spec),
        AnyResource::WorkloadEntry(r) => workload_entry::validate_entry(&mut v, &spec, &r.spec),
        AnyResource::WorkloadGroup(r) => workload_entry::validate_group(&mut v, &spec, &r.spec),
        AnyResource::Sidecar(r) => sidecar::validate(&mut v, &spec, &r.spec),
        AnyResource::EnvoyFilter(r) => envoy_filter::validate(&mut v, &spec, &r.spec),
        AnyResource::ProxyConfig(r) => proxy_config::validate(&mut v, &spec, &r.spec),
        AnyResource::PeerAuthentication(r) => peer_authentication::validate(&mut v, &spec, &r.spec),
        AnyResource::AuthorizationPolicy(r) => {
            authorization_policy::validate(&mut v, &spec, &r.spec)
        }
        AnyResource::RequestAuthentication(r) => {
            request_authentication::validate(&mut v, &spec, &r.spec)
        }
        AnyResource::Telemetry(r) => telemetry::validate(&mut v, &spec, &r.spec),
    }
    v.report
}

/// Collects findings while a validator walks a resource.
pub(crate) struct Checker {
    report: Report,
    /// The resource's namespace, when the document names one (`exportTo: .`
    /// and Sidecar `./host` resolve against it).
    namespace: Option<String>,
}

impl Checker {
    fn new(namespace: Option<String>) -> Checker {
        Checker {
            report: Report::default(),
            namespace,
        }
    }

    pub fn error(&mut self, at: &Path, message: impl Into<String>) {
        self.report.errors.push(Finding {
            path: at.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, at: &Path, message: impl Into<String>) {
        self.report.warnings.push(Finding {
            path: at.to_string(),
            message: message.into(),
        });
    }

    /// Records the error of a failed check.
    pub fn check(&mut self, at: &Path, result: Result<(), String>) {
        if let Err(message) = result {
            self.error(at, message);
        }
    }

    /// Records an error unless `ok` holds.
    pub fn require(&mut self, at: &Path, ok: bool, message: impl Into<String>) {
        if !ok {
            self.error(at, message);
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|ns| !ns.is_empty())
    }
}

#[cfg(test)]
mod test_support;
