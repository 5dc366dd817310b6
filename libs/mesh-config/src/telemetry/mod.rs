//! `telemetry.istio.io` kinds (served as v1 and v1alpha1).

pub mod telemetry;

pub use telemetry::Telemetry;
