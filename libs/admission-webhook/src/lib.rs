//! What Trireme's admission webhooks (galley's validating one, the
//! injector's mutating one) share:
//!
//! - [`admission`]: Kubernetes' `AdmissionReview` types, v1 and v1beta1,
//!   with JSON Patch responses;
//! - [`tls`]: HTTPS with a serving certificate reloaded from files;
//! - [`args`]: the flags that place and secure a webhook.

pub mod admission;
pub mod args;
pub mod tls;

pub use args::{HttpsArgs, OptionalAddr};
