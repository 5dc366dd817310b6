//! Trireme's sidecar injector: decides which pods get the mesh's proxy and
//! adds it, from a template the operator can replace.
//!
//! - [`policy`]: who is injected (namespace and pod labels, selectors, policy);
//! - [`annotations`]: the `sidecar.istio.io/*` and related annotations;
//! - [`template`]: the sidecar template and the values it receives;
//! - [`merge`], [`probes`]: putting the rendered parts into the pod;
//! - [`inject`]: one injection, start to end;
//! - [`patch`]: the webhook's JSON Patch;
//! - [`workloads`]: `trireme kube-inject` over multi-document YAML, written
//!   back by [`yaml_out`] so that kubectl reads it as meant;
//! - [`webhook`]: the mutating admission webhook `POST /inject`;
//! - [`ca_bundle`]: the `caBundle` its elected replica writes into the
//!   webhook configuration (`--kubernetes`).

pub mod annotations;
pub mod ca_bundle;
pub mod config;
pub mod inject;
pub mod merge;
pub mod patch;
pub mod pod;
pub mod policy;
pub mod probes;
pub mod selector;
pub mod template;
pub mod webhook;
pub mod workloads;
pub mod yaml_out;

pub use config::InjectorConfig;
pub use inject::{InjectError, Injection, Injector, Target};
pub use template::SidecarTemplate;
