//! The one version of the whole control plane. Every service reports it (flag,
//! `/version`, the `istio_build` metric) so mixed versions are easy to spot.

/// The release of Trireme this binary belongs to.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Istio release whose APIs and proxy behaviour this version follows; proxies
/// report their own in `ISTIO_VERSION` node metadata.
pub const ISTIO_COMPAT_VERSION: &str = "1.28";
