//! Istio config for meshes of a given shape (issue 8): the services,
//! endpoints, routing and scoping a benchmark scenario runs pilot against,
//! and the churn it applies while proxies watch.
//!
//! Every service `svc-<i>` lives in `ns-<i % K>` as a ServiceEntry
//! (MESH_INTERNAL, STATIC, HTTP port 80) whose `workloadSelector` picks its
//! WorkloadEntries `svc-<i>-<j>`, so one endpoint changing is one
//! WorkloadEntry changing, as one pod would in Kubernetes. Optionally each
//! service has a DestinationRule with subsets v1/v2 and a VirtualService
//! splitting 90/10; each namespace a Sidecar limiting egress to `./*` and
//! `istio-system/*` (Istio's recommended per-namespace scoping); and a
//! Gateway in `istio-system` with VirtualServices bound to it.
//!
//! Names and addresses are deterministic, so a load tool can compute which
//! proxy sits at which WorkloadEntry ([`MeshShape::workloads`]).
//!
//! Output goes either to a directory (one YAML file per namespace, for
//! `--config-dir`, [`MeshShape::write_dir`]) or straight into the config
//! bucket as galley writes it ([`MeshShape::publish`], [`ConfigBus`]):
//! galley's own key, validation, value encoding and bucket settings are used,
//! not copies of them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::bail;
use event_bus::Bus;
use galley::intake::reconcile::{Judged, ScannedDocument};
use galley::intake::{Buckets, Publisher, directory::judge};
use mesh_config::store::key_of;
use mesh_config::{AnyResource, resource_from_json};
use serde_json::{Value, json};

/// The namespace of the Gateway (and the root of Istio's config).
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// The name of the one Gateway that gateway-bound VirtualServices name.
pub const GATEWAY_NAME: &str = "ingressgateway";
/// How mesh-gen's resources are marked on the bus (the verdicts' source,
/// as galley marks its own `dir:` and `k8s:`): a galley publishing a
/// directory or Kubernetes never deletes them, and a later publish of
/// another shape deletes only the keys mesh-gen wrote before.
pub const SOURCE_PREFIX: &str = "mesh-gen:";
/// The cluster domain every service host ends with.
const DOMAIN: &str = "svc.cluster.local";

/// The shape of a generated mesh. The generators assume a shape that
/// passes [`MeshShape::check`] (they divide by the counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshShape {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub namespaces: usize,
    /// A VirtualService per service splitting its traffic 90/10.
    pub virtual_services: bool,
    /// A DestinationRule per service with subsets v1 and v2.
    pub destination_rules: bool,
    /// A Sidecar per namespace limiting egress to `./*` and
    /// `istio-system/*`.
    pub sidecar_scoping: bool,
    /// VirtualServices `gw-<g>` for hosts `gw-<g>.example.com`, bound to one
    /// Gateway, each routing to service `g % services`.
    pub gateway_hosts: usize,
}

/// One WorkloadEntry as generated: where a simulated sidecar would sit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `svc-<i>-<j>`.
    pub name: String,
    pub namespace: String,
    /// The service it is an endpoint of, `svc-<i>`.
    pub service: String,
    pub address: String,
    /// `app: svc-<i>`, `version: v1|v2`.
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
}

impl MeshShape {
    /// Istio's reference mesh (issue 8's S1): 1000 services x 2 endpoints in
    /// 50 namespaces, each with a VirtualService and a DestinationRule,
    /// scoped per namespace.
    pub fn reference() -> MeshShape {
        MeshShape {
            services: 1000,
            endpoints_per_service: 2,
            namespaces: 50,
            virtual_services: true,
            destination_rules: true,
            sidecar_scoping: true,
            gateway_hosts: 0,
        }
    }

    /// One service with two endpoints in one namespace, nothing else: the
    /// smallest mesh a proxy can be configured with.
    pub fn single_service() -> MeshShape {
        MeshShape {
            services: 1,
            endpoints_per_service: 2,
            namespaces: 1,
            virtual_services: false,
            destination_rules: false,
            sidecar_scoping: false,
            gateway_hosts: 0,
        }
    }

    /// Why this shape cannot be generated, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.services == 0 || self.namespaces == 0 || self.endpoints_per_service == 0 {
            return Err("a mesh needs at least one service, endpoint and namespace".into());
        }
        if self.services * self.endpoints_per_service >= ADDRESSES {
            return Err(format!("at most {ADDRESSES} endpoints have addresses"));
        }
        Ok(())
    }

    /// Every resource of the mesh, service by service.
    pub fn resources(&self) -> Vec<AnyResource> {
        let mut resources = Vec::new();
        if self.gateway_hosts > 0 {
            resources.push(self.gateway());
        }
        if self.sidecar_scoping {
            resources.extend((0..self.namespaces.min(self.services)).map(namespace_sidecar));
        }
        for service in 0..self.services {
            resources.extend(self.service_resources(service));
        }
        resources
            .extend((0..self.gateway_hosts).map(|host| self.gateway_virtual_service(host, None)));
        resources
    }

    /// The WorkloadEntries as first generated (before any churn).
    pub fn workloads(&self) -> Vec<Workload> {
        (0..self.services)
            .flat_map(|service| {
                (0..self.endpoints_per_service)
                    .map(move |endpoint| self.workload(service, endpoint))
            })
            .collect()
    }

    /// Churn step `step`: one WorkloadEntry moved to a new address, round
    /// robin over services (step `s` moves an endpoint of service
    /// `s % services`), as a pod replaced by another would.
    pub fn endpoint_churn(&self, step: u64) -> AnyResource {
        let (service, round) = round_robin(step, self.services);
        let endpoint = (round % self.endpoints_per_service as u64) as usize;
        let mut workload = self.workload(service, endpoint);
        workload.address = churn_address(step);
        workload_entry(&workload)
    }

    /// Edit `step`: one VirtualService with new weights, round robin over the
    /// services' VirtualServices (the gateway-bound ones when there are none);
    /// consecutive edits of the same one always differ. `None` when the mesh
    /// has no VirtualService.
    pub fn virtual_service_edit(&self, step: u64) -> Option<AnyResource> {
        if self.virtual_services {
            let (service, round) = round_robin(step, self.services);
            Some(self.virtual_service(service, Some(round)))
        } else if self.gateway_hosts > 0 {
            let (host, round) = round_robin(step, self.gateway_hosts);
            Some(self.gateway_virtual_service(host, Some(round)))
        } else {
            None
        }
    }

    /// Writes the mesh to `dir` (created if missing), one YAML file per
    /// namespace, for pilot's or galley's `--config-dir`.
    pub fn write_dir(&self, dir: &Path) -> io::Result<ConfigDir> {
        ConfigDir::create(dir, self.resources())
    }

    /// Publishes the mesh to the config bucket as galley would: judged by
    /// galley, written only where it differs, with a verdict per resource;
    /// what mesh-gen published before and this shape lacks is deleted.
    pub async fn publish(&self, bus: &Bus) -> anyhow::Result<Published> {
        let buckets = Buckets::open(bus).await?;
        let mut publisher = Publisher::new(buckets.clone(), SOURCE_PREFIX).await?;
        let scan: Vec<ScannedDocument> = self.resources().iter().map(scanned).collect();
        let (written, rejected) = publisher.publish(&scan).await?;
        if rejected > 0 {
            bail!("galley rejected {rejected} generated resources (a generator bug)");
        }
        let status = buckets.config.status().await?;
        Ok(Published {
            resources: scan.len(),
            written,
            revision: status.last_revision,
        })
    }

    fn service_resources(&self, service: usize) -> Vec<AnyResource> {
        let mut resources = vec![self.service_entry(service)];
        resources.extend(
            (0..self.endpoints_per_service)
                .map(|endpoint| workload_entry(&self.workload(service, endpoint))),
        );
        if self.destination_rules {
            resources.push(self.destination_rule(service));
        }
        if self.virtual_services {
            resources.push(self.virtual_service(service, None));
        }
        resources
    }

    fn namespace_of(&self, service: usize) -> String {
        format!("ns-{}", service % self.namespaces)
    }

    fn host(&self, service: usize) -> String {
        format!("svc-{service}.{}.{DOMAIN}", self.namespace_of(service))
    }

    fn workload(&self, service: usize, endpoint: usize) -> Workload {
        let version = if endpoint.is_multiple_of(2) {
            "v1"
        } else {
            "v2"
        };
        Workload {
            name: format!("svc-{service}-{endpoint}"),
            namespace: self.namespace_of(service),
            service: format!("svc-{service}"),
            address: endpoint_address(service * self.endpoints_per_service + endpoint),
            labels: BTreeMap::from([
                ("app".to_owned(), format!("svc-{service}")),
                ("version".to_owned(), version.to_owned()),
            ]),
            service_account: format!("svc-{service}"),
        }
    }

    fn service_entry(&self, service: usize) -> AnyResource {
        resource(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": format!("svc-{service}"), "namespace": self.namespace_of(service)},
            "spec": {
                "hosts": [self.host(service)],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "workloadSelector": {"labels": {"app": format!("svc-{service}")}},
            },
        }))
    }

    fn destination_rule(&self, service: usize) -> AnyResource {
        resource(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": format!("svc-{service}"), "namespace": self.namespace_of(service)},
            "spec": {
                "host": self.host(service),
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        }))
    }

    /// Service `service`'s VirtualService; `round` is the edit round (none
    /// for the generated one).
    fn virtual_service(&self, service: usize, round: Option<u64>) -> AnyResource {
        resource(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": format!("svc-{service}"), "namespace": self.namespace_of(service)},
            "spec": {
                "hosts": [self.host(service)],
                "http": [self.split_route(service, round)],
            },
        }))
    }

    /// Gateway host `host`'s VirtualService, in its service's namespace.
    fn gateway_virtual_service(&self, host: usize, round: Option<u64>) -> AnyResource {
        let service = host % self.services;
        resource(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": format!("gw-{host}"), "namespace": self.namespace_of(service)},
            "spec": {
                "hosts": [format!("gw-{host}.example.com")],
                "gateways": [format!("{GATEWAY_NAMESPACE}/{GATEWAY_NAME}")],
                "http": [self.split_route(service, round)],
            },
        }))
    }

    /// An HTTP route splitting `service`'s traffic between subsets v1 and v2
    /// (90/10 as generated, other weights per edit round). Without
    /// DestinationRules there are no subsets: the split is then between the
    /// service and the next one in its namespace, or, for a service alone in
    /// its namespace, one destination whose timeout the edits change.
    fn split_route(&self, service: usize, round: Option<u64>) -> Value {
        let canary = canary_weight(round);
        let destination = |host: String, subset: Option<&str>| match subset {
            Some(subset) => json!({"host": host, "subset": subset}),
            None => json!({"host": host}),
        };
        let (stable, canary_destination) = if self.destination_rules {
            (
                destination(self.host(service), Some("v1")),
                destination(self.host(service), Some("v2")),
            )
        } else {
            match self.namespace_neighbour(service) {
                Some(next) => (
                    destination(self.host(service), None),
                    destination(self.host(next), None),
                ),
                None => {
                    return json!({
                        "route": [{"destination": destination(self.host(service), None)}],
                        "timeout": format!("{canary}s"),
                    });
                }
            }
        };
        json!({"route": [
            {"destination": stable, "weight": 100 - canary},
            {"destination": canary_destination, "weight": canary},
        ]})
    }

    /// The next service in `service`'s namespace (wrapping), if it has
    /// another.
    fn namespace_neighbour(&self, service: usize) -> Option<usize> {
        let next = service + self.namespaces;
        let next = if next < self.services {
            next
        } else {
            service % self.namespaces
        };
        (next != service).then_some(next)
    }

    fn gateway(&self) -> AnyResource {
        resource(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [{
                    "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": ["*/*.example.com"],
                }],
            },
        }))
    }
}

/// The per-namespace Sidecar of `ns-<namespace>`.
fn namespace_sidecar(namespace: usize) -> AnyResource {
    resource(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": format!("ns-{namespace}")},
        "spec": {"egress": [{"hosts": ["./*", format!("{GATEWAY_NAMESPACE}/*")]}]},
    }))
}

fn workload_entry(workload: &Workload) -> AnyResource {
    resource(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": workload.name, "namespace": workload.namespace},
        "spec": {
            "address": workload.address,
            "labels": workload.labels,
            "serviceAccount": workload.service_account,
        },
    }))
}

/// Step `step` of a round robin over `count` items: the item and the round.
fn round_robin(step: u64, count: usize) -> (usize, u64) {
    let count = count as u64;
    ((step % count) as usize, step / count)
}

/// The v2 (canary) weight of a split: 10 as generated, then 20, 30, ... 90
/// and round again, so consecutive edits of one route always differ.
fn canary_weight(round: Option<u64>) -> u64 {
    round.map_or(10, |round| 20 + 10 * (round % 8))
}

/// How many distinct endpoint addresses there are (10.0.0.1 up).
const ADDRESSES: usize = 1 << 24;

/// Endpoint `index`'s address in 10.0.0.0/8, from 10.0.0.1.
fn endpoint_address(index: usize) -> String {
    let n = index + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// Churn step `step`'s address in 172.16.0.0/12, outside the generated
/// ones; it repeats after about a million steps.
fn churn_address(step: u64) -> String {
    let n = step % ((1 << 20) - 1) + 1;
    format!("172.{}.{}.{}", 16 + (n >> 16), (n >> 8) & 255, n & 255)
}

/// A generated resource read back as pilot and galley read one: strictly.
fn resource(value: Value) -> AnyResource {
    resource_from_json(&value)
        .unwrap_or_else(|error| panic!("a generated resource does not parse: {error}: {value}"))
}

/// `resource` as galley's intake sees a document: judged by galley.
fn scanned(resource: &AnyResource) -> ScannedDocument {
    let judged = judge(resource);
    let key = key_of(resource);
    ScannedDocument {
        file: format!("{SOURCE_PREFIX}{key}"),
        document: 1,
        source: format!("{SOURCE_PREFIX}{key}"),
        judged,
    }
}

/// What [`MeshShape::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub resources: usize,
    /// Keys written or deleted (unchanged ones are not rewritten).
    pub written: usize,
    /// The config bucket's revision afterwards: pilot's config version once
    /// it has read everything.
    pub revision: u64,
}

/// The config bucket, open for single changes (churn).
#[derive(Clone)]
pub struct ConfigBus {
    buckets: Buckets,
}

impl ConfigBus {
    /// Opens (or creates) galley's buckets with galley's settings.
    pub async fn open(bus: &Bus) -> anyhow::Result<ConfigBus> {
        Ok(ConfigBus {
            buckets: Buckets::open(bus).await?,
        })
    }

    /// Writes `resource` under its key as galley writes an accepted edit,
    /// and returns the new revision (pilot's next config version). The
    /// verdict is left as it is: galley does not rewrite a verdict that
    /// only its timestamp would change, and churn only edits resources
    /// [`MeshShape::publish`] gave an accepting verdict.
    pub async fn put(&self, resource: &AnyResource) -> anyhow::Result<u64> {
        match judge(resource) {
            Judged::Accepted { key, resource, .. } => {
                Ok(self.buckets.config.put(&key, &resource).await?)
            }
            Judged::Rejected { key, errors, .. } => {
                bail!("galley would reject {key}: {}", errors.join("; "))
            }
            Judged::Unreadable { error } => bail!("galley cannot read the resource: {error}"),
        }
    }
}

/// Writes one changed resource to the config bucket (opening the buckets
/// for it; hold a [`ConfigBus`] to write many).
pub async fn put(bus: &Bus, resource: &AnyResource) -> anyhow::Result<u64> {
    ConfigBus::open(bus).await?.put(resource).await
}

/// A config directory written by [`MeshShape::write_dir`], kept so single
/// resources can be changed in it.
#[derive(Debug)]
pub struct ConfigDir {
    dir: PathBuf,
    /// Per file name (`<namespace>.yaml`), its resources by key.
    files: BTreeMap<String, BTreeMap<String, AnyResource>>,
}

impl ConfigDir {
    fn create(dir: &Path, resources: Vec<AnyResource>) -> io::Result<ConfigDir> {
        std::fs::create_dir_all(dir)?;
        let mut config = ConfigDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        };
        for resource in resources {
            config.insert(resource);
        }
        for file in config.files.keys() {
            config.write_file(file)?;
        }
        Ok(config)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file names written, one per namespace.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Bytes of YAML in the directory's files.
    pub fn total_bytes(&self) -> io::Result<u64> {
        self.files
            .keys()
            .map(|file| Ok(std::fs::metadata(self.dir.join(file))?.len()))
            .sum()
    }

    /// Replaces the resource with `resource`'s key (or adds it) and rewrites
    /// its namespace's file, atomically: a watcher never reads half a file.
    pub fn put(&mut self, resource: AnyResource) -> io::Result<()> {
        let file = self.insert(resource);
        self.write_file(&file)
    }

    /// Adds `resource` to its file's set; returns the file name.
    fn insert(&mut self, resource: AnyResource) -> String {
        let file = format!("{}.yaml", namespace_name(&resource));
        self.files
            .entry(file.clone())
            .or_default()
            .insert(key_of(&resource), resource);
        file
    }

    /// Writes `file` through a hidden temporary file (pilot and galley skip
    /// hidden files) renamed over it.
    fn write_file(&self, file: &str) -> io::Result<()> {
        let resources = self
            .files
            .get(file)
            .map(BTreeMap::values)
            .into_iter()
            .flatten();
        let text = to_yaml(resources)?;
        let temporary = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, self.dir.join(file))
    }
}

fn namespace_name(resource: &AnyResource) -> &str {
    resource
        .metadata()
        .namespace
        .as_deref()
        .unwrap_or(mesh_config::store::DEFAULT_NAMESPACE)
}

/// `resources` as a multi-document YAML stream.
pub fn to_yaml<'a>(resources: impl IntoIterator<Item = &'a AnyResource>) -> io::Result<String> {
    let mut text = String::new();
    for resource in resources {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(resource).map_err(io::Error::other)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
