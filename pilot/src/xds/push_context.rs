//! A push context: one published version of the mesh, with the caches that
//! make generation happen once per proxy view rather than once per proxy.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::model::{MeshSnapshot, ProxyScope};

use super::generator::{EncodedResource, ResourceSet};
use super::resource_type::ResourceType;

/// What caused a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTrigger {
    /// First load: everything is new.
    Initial,
    /// Config other than endpoints changed: every type is regenerated.
    Config,
    /// Only endpoints of these hosts changed: only EDS is regenerated.
    Endpoints(BTreeSet<String>),
}

impl PushTrigger {
    /// Label for `pilot_push_triggers{type}`.
    pub fn label(&self) -> &'static str {
        match self {
            PushTrigger::Initial => "initial",
            PushTrigger::Config => "config",
            PushTrigger::Endpoints(_) => "endpoint",
        }
    }
}

/// Cache of generated resources of one config version, keyed by resource type,
/// proxy view and (for routes) resource name. Shared across pushes that only
/// change endpoints.
pub type ViewCache = Mutex<HashMap<(ResourceType, String, String), Arc<ResourceSet>>>;

/// What each proxy view may see, computed once per config version and view
/// and shared by the view's clusters, listeners and routes.
pub type ScopeCache = Mutex<HashMap<String, Arc<ProxyScope>>>;

/// One version of the mesh as proxies are told it.
pub struct PushContext {
    /// Increases with every push.
    pub version: u64,
    /// Increases only when non-endpoint config changes.
    pub config_version: u64,
    pub snapshot: Arc<MeshSnapshot>,
    pub trigger: PushTrigger,
    /// When the first change behind this push arrived (for convergence time).
    pub changed_at: Instant,
    pub(crate) view_cache: Arc<ViewCache>,
    pub(crate) scope_cache: Arc<ScopeCache>,
    pub(crate) endpoint_cache: Mutex<HashMap<String, Arc<EncodedResource>>>,
}

impl PushContext {
    /// The context before any config has loaded: nothing to serve.
    pub fn empty() -> PushContext {
        PushContext {
            version: 0,
            config_version: 0,
            snapshot: Arc::new(MeshSnapshot::default()),
            trigger: PushTrigger::Initial,
            changed_at: Instant::now(),
            view_cache: Arc::default(),
            scope_cache: Arc::default(),
            endpoint_cache: Mutex::default(),
        }
    }

    /// The version proxies are told (delta's `system_version_info`): the
    /// bus revision the config came from, so every replica says the same;
    /// else this pilot's push count.
    pub fn system_version(&self) -> String {
        self.snapshot
            .config
            .revision
            .unwrap_or(self.version)
            .to_string()
    }

    /// The context that follows `previous` with `snapshot`: the view and
    /// scope caches are kept when only endpoints changed, so clusters,
    /// listeners and routes are not generated again.
    pub fn next(
        previous: &PushContext,
        snapshot: MeshSnapshot,
        changed_at: Instant,
    ) -> PushContext {
        let trigger = if previous.version == 0 {
            PushTrigger::Initial
        } else {
            classify_change(&previous.snapshot, &snapshot)
        };
        let endpoints_only = matches!(trigger, PushTrigger::Endpoints(_));
        PushContext {
            version: previous.version + 1,
            config_version: if endpoints_only {
                previous.config_version
            } else {
                previous.config_version + 1
            },
            snapshot: Arc::new(snapshot),
            trigger,
            changed_at,
            view_cache: if endpoints_only {
                previous.view_cache.clone()
            } else {
                Arc::default()
            },
            scope_cache: if endpoints_only {
                previous.scope_cache.clone()
            } else {
                Arc::default()
            },
            endpoint_cache: Mutex::default(),
        }
    }
}

/// Whether a new snapshot differs from the old only in endpoints, and if so
/// which hosts' endpoints changed.
fn classify_change(old: &MeshSnapshot, new: &MeshSnapshot) -> PushTrigger {
    let config_same = old.settings == new.settings
        && old.services == new.services
        && new.config.differs_only_in_endpoints(&old.config);
    if !config_same {
        return PushTrigger::Config;
    }
    let hosts: BTreeSet<String> = old
        .endpoints
        .keys()
        .chain(new.endpoints.keys())
        .filter(|host| old.endpoints.get(*host) != new.endpoints.get(*host))
        .cloned()
        .collect();
    PushTrigger::Endpoints(hosts)
}
