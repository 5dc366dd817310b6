//! The four xDS types a sidecar follows, in the order Envoy applies them.

use std::fmt;
use std::str::FromStr;

/// One xDS resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdsType {
    Cds,
    Eds,
    Lds,
    Rds,
}

impl XdsType {
    /// Envoy's order: clusters, their endpoints, listeners, their routes.
    pub const ALL: [XdsType; 4] = [XdsType::Cds, XdsType::Eds, XdsType::Lds, XdsType::Rds];

    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cds => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            XdsType::Eds => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            XdsType::Lds => "type.googleapis.com/envoy.config.listener.v3.Listener",
            XdsType::Rds => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// `cds`, `eds`, `lds` or `rds`: JSON keys, query values and dump file names.
    pub fn short_name(self) -> &'static str {
        match self {
            XdsType::Cds => "cds",
            XdsType::Eds => "eds",
            XdsType::Lds => "lds",
            XdsType::Rds => "rds",
        }
    }

    /// Position in [`XdsType::ALL`], for per-type arrays and bit masks.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn bit(self) -> u8 {
        1 << self.index()
    }
}

impl fmt::Display for XdsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for XdsType {
    type Err = String;

    fn from_str(s: &str) -> Result<XdsType, String> {
        XdsType::ALL
            .into_iter()
            .find(|t| t.short_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown xDS type {s:?}: expected cds, eds, lds or rds"))
    }
}
