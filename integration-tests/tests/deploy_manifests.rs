//! The Kubernetes manifests in `deploy/kubernetes/`: the base and every
//! overlay render with `kubectl kustomize`, every rendered object is valid
//! for a current Kubernetes release (`kubernetes-validate --strict`), the
//! CRDs are the ones the config model generates, the RBAC grants exactly the
//! API calls listed in `deploy/kubernetes/api-calls.yaml`, and the
//! deployments keep the promises the README makes (fail-open webhooks that
//! skip system namespaces, locked-down containers, probes on the real health
//! endpoints, one registry and tag, services reached by their Service names).
//!
//! Needs `kubectl` (1.32+, with kustomize 5; `KUBECTL` overrides the one on
//! PATH) and kubernetes-validate (`scripts/install-tools.sh`, or
//! `KUBERNETES_VALIDATE_BIN`). Without them the tests fail, saying how to
//! install them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mesh_config::{Kind, crd};
use serde_json::Value;

/// The Kubernetes release the manifests are validated against: the newest
/// the installed kubernetes-validate has schemas for.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The control plane's namespace; the services' defaults name it.
const NAMESPACE: &str = "istio-system";

/// The control-plane Deployments, each with its own ServiceAccount and RBAC.
const SERVICES: [&str; 4] = ["pilot", "citadel", "galley", "injector"];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubernetes_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

// ---------------------------------------------------------------------------
// Tools

fn kubectl() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let works = Command::new(&path)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "kubectl ({}) is not installed or does not run: install kubectl 1.32 or newer \
         (https://kubernetes.io/docs/tasks/tools/; it carries kustomize 5), or set KUBECTL \
         to its path. Debian's kubernetes-client is too old for these manifests.",
        path.display()
    );
    path
}

/// kubernetes-validate from `KUBERNETES_VALIDATE_BIN`, else the one
/// `scripts/install-tools.sh` installs (as injector/tests/golden.rs finds it).
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/kubernetes-validate"));
    assert!(
        path.exists(),
        "kubernetes-validate is not installed at {}: run scripts/install-tools.sh \
         (or `make tools`; it installs PyPI kubernetes-validate into .tools/), or set \
         KUBERNETES_VALIDATE_BIN to its path",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------
// Rendering

/// One kustomization, rendered.
struct Rendered {
    /// `base`, or `overlays/<name>`.
    name: String,
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let kind = kind.to_string();
        self.objects
            .iter()
            .filter(move |o| o["kind"] == kind.as_str())
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|o| o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name))
    }

    fn is_overlay(&self, overlay: &str) -> bool {
        self.name == format!("overlays/{overlay}")
    }
}

/// The base and every overlay under `deploy/kubernetes/overlays/`, found by
/// listing the directory.
fn kustomizations() -> Vec<String> {
    let mut names = vec!["base".to_string()];
    let overlays = kubernetes_dir().join("overlays");
    let mut found: Vec<String> = std::fs::read_dir(&overlays)
        .unwrap_or_else(|e| panic!("{}: {e}", overlays.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("kustomization.yaml").exists())
        .map(|path| format!("overlays/{}", path.file_name().unwrap().to_string_lossy()))
        .collect();
    found.sort();
    names.extend(found);
    names
}

fn render(kubectl: &Path, name: &str) -> Rendered {
    let dir = kubernetes_dir().join(name);
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {} kustomize: {e}", kubectl.display()));
    assert!(
        output.status.success(),
        "`kubectl kustomize {}` failed ({}):\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).expect("kustomize writes UTF-8");
    let objects = documents(&yaml)
        .into_iter()
        .map(|doc| {
            serde_yaml_ng::from_str::<Value>(&doc)
                .unwrap_or_else(|e| panic!("{name}: unreadable document: {e}\n{doc}"))
        })
        .filter(|v| !v.is_null())
        .collect();
    Rendered {
        name: name.to_string(),
        yaml,
        objects,
    }
}

/// A YAML stream split at its `---` lines.
fn documents(stream: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in stream.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let current = docs.last_mut().unwrap();
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Every kustomization rendered once for all tests.
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let kubectl = kubectl();
        kustomizations()
            .iter()
            .map(|name| render(&kubectl, name))
            .collect()
    })
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| str_of(v).to_string()).collect())
        .unwrap_or_default()
}

fn api_group(object: &Value) -> &str {
    str_of(&object["apiVersion"])
        .rsplit_once('/')
        .map_or("", |(group, _)| group)
}

fn label(object: &Value) -> String {
    format!(
        "{} {}/{}",
        str_of(&object["kind"]),
        str_of(&object["metadata"]["namespace"]),
        str_of(&object["metadata"]["name"])
    )
}

/// Deployments and StatefulSets: what runs.
fn workloads(rendered: &Rendered) -> Vec<&Value> {
    rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .collect()
}

fn containers(workload: &Value) -> Vec<&Value> {
    let spec = &workload["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| spec[*key].as_array())
        .flatten()
        .collect()
}

// ---------------------------------------------------------------------------
// (a) rendering

#[test]
fn every_kustomization_renders() {
    let names: Vec<&str> = rendered().iter().map(|r| r.name.as_str()).collect();
    for expected in ["base", "overlays/dev", "overlays/ha"] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for rendered in rendered() {
        let mut seen = BTreeSet::new();
        for object in &rendered.objects {
            assert!(
                seen.insert(label(object)),
                "{}: {} twice",
                rendered.name,
                label(object)
            );
            let namespaced = !matches!(
                str_of(&object["kind"]),
                "Namespace"
                    | "CustomResourceDefinition"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "MutatingWebhookConfiguration"
                    | "ValidatingWebhookConfiguration"
            );
            if namespaced {
                assert_eq!(
                    object["metadata"]["namespace"],
                    NAMESPACE,
                    "{}: {} is not in {NAMESPACE}",
                    rendered.name,
                    label(object)
                );
            }
        }
        rendered.get("Namespace", NAMESPACE);
        for service in SERVICES {
            rendered.get("Deployment", service);
            rendered.get("Service", service);
            rendered.get("ServiceAccount", service);
        }
        let nats = rendered.get("StatefulSet", "nats");
        assert!(
            nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
                .is_string(),
            "{}: NATS has no volume for JetStream",
            rendered.name
        );
        let headless = rendered.get("Service", "nats");
        assert_eq!(headless["spec"]["clusterIP"], "None", "{}", rendered.name);
        assert_eq!(nats["spec"]["serviceName"], "nats", "{}", rendered.name);
        eprintln!(
            "{}: {} objects rendered",
            rendered.name,
            rendered.objects.len()
        );
    }
}

// ---------------------------------------------------------------------------
// (b) Kubernetes' schema

/// Istio's kinds have no schema in kubernetes-validate (the CRDs that
/// define them are validated); every other object must validate.
fn has_kubernetes_schema(object: &Value) -> bool {
    !api_group(object).ends_with(".istio.io")
}

fn validate(validator: &Path, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(validator)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // --quiet prints only problems: an ERROR, or a WARN that a document
    // could not be checked at all.
    let clean = output.status.success() && output.stdout.is_empty();
    (clean, report)
}

#[test]
fn every_rendered_object_is_valid_for_kubernetes() {
    let validator = kubernetes_validate();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-manifests-schema");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The validator itself must refuse what the API server would, or a
    // clean run proves nothing.
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n\
         spec: {replicas: 1, selector: {matchLabels: {a: b}}, unknownField: 1,\n\
         template: {metadata: {labels: {a: b}}, spec: {containers: [{name: x, image: x}]}}}\n",
    )
    .unwrap();
    let (clean, _) = validate(&validator, std::slice::from_ref(&broken));
    assert!(
        !clean,
        "kubernetes-validate --strict accepted an unknown field"
    );

    let mut files = Vec::new();
    for rendered in rendered() {
        let (checked, skipped): (Vec<&Value>, Vec<&Value>) = rendered
            .objects
            .iter()
            .partition(|o| has_kubernetes_schema(o));
        let yaml: Vec<String> = checked
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect();
        let file = dir.join(format!("{}.yaml", rendered.name.replace('/', "-")));
        std::fs::write(&file, yaml.join("---\n")).unwrap();
        eprintln!(
            "{}: validating {} objects against Kubernetes {KUBERNETES_VERSION} ({} of Istio's kinds skipped)",
            rendered.name,
            checked.len(),
            skipped.len()
        );
        files.push(file);
    }
    let (clean, report) = validate(&validator, &files);
    assert!(
        clean,
        "kubernetes-validate {KUBERNETES_VERSION} (--strict) refused rendered manifests:\n{report}"
    );
}

// ---------------------------------------------------------------------------
// (c) CRDs

#[test]
fn rendered_crds_are_the_ones_the_config_model_generates() {
    let generated: BTreeMap<String, Value> = Kind::ALL
        .iter()
        .map(|kind| {
            let crd = crd::custom_resource_definition(*kind);
            (str_of(&crd["metadata"]["name"]).to_string(), crd)
        })
        .collect();
    for rendered in rendered() {
        let in_manifests: BTreeMap<String, &Value> = rendered
            .of_kind("CustomResourceDefinition")
            .map(|crd| (str_of(&crd["metadata"]["name"]).to_string(), crd))
            .collect();
        let expected_names: Vec<&String> = generated.keys().collect();
        let names: Vec<&String> = in_manifests.keys().collect();
        assert_eq!(
            names, expected_names,
            "{}: the CRDs in the manifests are not the config model's kinds (run `make crds`)",
            rendered.name
        );
        let stale: Vec<&String> = generated
            .iter()
            .filter(|(name, crd)| in_manifests[*name] != *crd)
            .map(|(name, _)| name)
            .collect();
        assert!(
            stale.is_empty(),
            "{}: CRDs differ from what mesh-config generates (run `make crds`): {stale:?}",
            rendered.name
        );
    }
}

// ---------------------------------------------------------------------------
// (d) RBAC least privilege

/// One permission: a verb on a resource, cluster-wide or in the control
/// plane's namespace, on any object (`None`) or one named object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    service_account: String,
    api_group: String,
    resource: String,
    verb: String,
    scope: String,
    resource_name: Option<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} {}/{} ({}{})",
            self.service_account,
            self.verb,
            if self.api_group.is_empty() {
                "core"
            } else {
                &self.api_group
            },
            self.resource,
            self.scope,
            self.resource_name
                .as_ref()
                .map(|n| format!(", name {n}"))
                .unwrap_or_default()
        )
    }
}

fn expand(
    service_account: &str,
    scope: &str,
    rule: &Value,
    group_key: &str,
    resource_key: &str,
) -> Vec<Grant> {
    let groups = match &rule[group_key] {
        Value::String(group) => vec![group.clone()],
        other => strings(other),
    };
    let resources = match &rule[resource_key] {
        Value::String(resource) => vec![resource.clone()],
        other => strings(other),
    };
    let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
        names if names.is_empty() => vec![None],
        names => names.into_iter().map(Some).collect(),
    };
    let mut grants = Vec::new();
    for group in &groups {
        for resource in &resources {
            for verb in strings(&rule["verbs"]) {
                for name in &names {
                    grants.push(Grant {
                        service_account: service_account.to_string(),
                        api_group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                        scope: scope.to_string(),
                        resource_name: name.clone(),
                    });
                }
            }
        }
    }
    grants
}

/// The API calls each service makes, from `deploy/kubernetes/api-calls.yaml`.
fn listed_calls() -> BTreeSet<Grant> {
    let path = kubernetes_dir().join("api-calls.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let list: Value = serde_yaml_ng::from_str(&text).unwrap();
    let accounts = list["serviceAccounts"]
        .as_object()
        .expect("api-calls.yaml: serviceAccounts is a map");
    let mut calls = BTreeSet::new();
    for (account, entries) in accounts {
        for entry in entries.as_array().expect("a list of calls") {
            let scope = str_of(&entry["scope"]);
            assert!(
                scope == "cluster" || scope == "namespace",
                "api-calls.yaml: {account}: scope must be cluster or namespace: {entry}"
            );
            for grant in expand(account, scope, entry, "apiGroup", "resource") {
                assert!(
                    calls.insert(grant.clone()),
                    "api-calls.yaml lists {grant} twice"
                );
            }
        }
    }
    calls
}

/// Everything the rendered RBAC grants, per service account, after checking
/// that no rule uses a wildcard or anything beyond resource verbs.
fn granted(rendered: &Rendered) -> BTreeSet<Grant> {
    let mut problems = Vec::new();
    for role in rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
    {
        if !role["aggregationRule"].is_null() {
            problems.push(format!("{} aggregates other roles", label(role)));
        }
        for rule in role["rules"].as_array().into_iter().flatten() {
            if !rule["nonResourceURLs"].is_null() {
                problems.push(format!("{}: nonResourceURLs {}", label(role), rule));
            }
            for key in ["apiGroups", "resources", "verbs", "resourceNames"] {
                if strings(&rule[key]).iter().any(|v| v.contains('*')) {
                    problems.push(format!("{}: wildcard in {key}: {rule}", label(role)));
                }
            }
            for verb in strings(&rule["verbs"]) {
                if matches!(verb.as_str(), "escalate" | "bind" | "impersonate") {
                    problems.push(format!("{}: verb {verb}", label(role)));
                }
            }
        }
    }

    let mut grants = BTreeSet::new();
    for binding in rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let role_kind = str_of(&binding["roleRef"]["kind"]);
        let role_name = str_of(&binding["roleRef"]["name"]);
        let Some(role) = rendered.find(role_kind, role_name) else {
            problems.push(format!(
                "{} binds {role_kind} {role_name}, which the manifests do not define",
                label(binding)
            ));
            continue;
        };
        let scope = if binding["kind"] == "ClusterRoleBinding" {
            "cluster"
        } else {
            if binding["metadata"]["namespace"] != NAMESPACE {
                problems.push(format!("{} is outside {NAMESPACE}", label(binding)));
            }
            "namespace"
        };
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            if subject["kind"] != "ServiceAccount" || subject["namespace"] != NAMESPACE {
                problems.push(format!(
                    "{} grants to {subject}, not a ServiceAccount of {NAMESPACE}",
                    label(binding)
                ));
                continue;
            }
            for rule in role["rules"].as_array().into_iter().flatten() {
                grants.extend(expand(
                    str_of(&subject["name"]),
                    scope,
                    rule,
                    "apiGroups",
                    "resources",
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}: RBAC problems:\n{}",
        rendered.name,
        problems.join("\n")
    );
    grants
}

#[test]
fn rbac_grants_exactly_the_api_calls_each_service_makes() {
    let listed = listed_calls();
    let accounts: BTreeSet<&str> = listed.iter().map(|g| g.service_account.as_str()).collect();
    assert_eq!(
        accounts,
        BTreeSet::from(SERVICES),
        "api-calls.yaml must list every control-plane service account"
    );
    for rendered in rendered() {
        let granted = granted(rendered);
        let missing: Vec<String> = listed.difference(&granted).map(|g| g.to_string()).collect();
        let extra: Vec<String> = granted.difference(&listed).map(|g| g.to_string()).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: RBAC does not match deploy/kubernetes/api-calls.yaml\n\
             calls not granted:\n  {}\ngrants beyond the listed calls:\n  {}",
            rendered.name,
            missing.join("\n  "),
            extra.join("\n  ")
        );
        // Each Deployment runs as its own account.
        for service in SERVICES {
            let deployment = rendered.get("Deployment", service);
            assert_eq!(
                deployment["spec"]["template"]["spec"]["serviceAccountName"], service,
                "{}: {service} runs as another account",
                rendered.name
            );
        }
        eprintln!(
            "{}: {} grants, exactly the listed calls",
            rendered.name,
            granted.len()
        );
    }
}

/// pilot and galley read every Istio kind the config model knows, so a new
/// kind cannot be forgotten in RBAC.
#[test]
fn galley_follows_every_istio_kind_and_may_write_its_status() {
    // galley is the intake: it follows every kind with a watcher (a list,
    // then a watch) and writes its verdicts as a merge patch of the status
    // subresource. pilot gets Istio's configuration from the bus.
    let listed = listed_calls();
    let grant = |account: &str, group: &str, resource: String, verb: &str| Grant {
        service_account: account.into(),
        api_group: group.into(),
        resource,
        verb: verb.into(),
        scope: "cluster".into(),
        resource_name: None,
    };
    for kind in Kind::ALL {
        let info = kind.info();
        for verb in ["list", "watch"] {
            let wanted = grant("galley", info.group, info.plural.into(), verb);
            assert!(listed.contains(&wanted), "api-calls.yaml lacks {wanted}");
        }
        let status = grant(
            "galley",
            info.group,
            format!("{}/status", info.plural),
            "patch",
        );
        assert!(listed.contains(&status), "api-calls.yaml lacks {status}");
    }
}

#[test]
fn the_list_covers_every_call_of_the_leader_jobs_each_service_runs() {
    use kube_singleton::{API_CALLS, Job, Scope};
    // Which elected jobs each service runs (its main wires them).
    let jobs = [
        ("galley", [Job::Election, Job::ValidatingWebhook]),
        ("injector", [Job::Election, Job::MutatingWebhook]),
        ("citadel", [Job::Election, Job::RootCert]),
    ];
    let listed = listed_calls();
    for (account, account_jobs) in jobs {
        for call in API_CALLS.iter().filter(|c| account_jobs.contains(&c.job)) {
            let scope = match call.scope {
                Scope::ControlPlaneNamespace => "namespace",
                Scope::Cluster | Scope::AllNamespaces => "cluster",
            };
            for verb in call.verbs {
                // Listed by name or not: the job only touches its own objects.
                let covered = listed.iter().any(|g| {
                    g.service_account == account
                        && g.api_group == call.api_group
                        && g.resource == call.resource
                        && g.verb == *verb
                        && g.scope == scope
                });
                assert!(
                    covered,
                    "api-calls.yaml: {account} lacks {verb} {}/{} ({scope}) for its {:?} job",
                    call.api_group, call.resource, call.job
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Webhooks

#[test]
fn webhooks_start_fail_open_and_skip_system_namespaces() {
    for rendered in rendered() {
        for (kind, name, service, path) in [
            (
                "MutatingWebhookConfiguration",
                "istio-sidecar-injector",
                "injector",
                "/inject",
            ),
            (
                "ValidatingWebhookConfiguration",
                "istio-validator-istio-system",
                "galley",
                "/validate",
            ),
        ] {
            let configuration = rendered.get(kind, name);
            let webhooks = configuration["webhooks"].as_array().unwrap();
            assert!(!webhooks.is_empty());
            for webhook in webhooks {
                let what = format!("{}: {kind} {name} {}", rendered.name, webhook["name"]);
                assert_eq!(webhook["failurePolicy"], "Ignore", "{what}: not fail-open");
                assert_eq!(webhook["sideEffects"], "None", "{what}");
                let client = &webhook["clientConfig"]["service"];
                assert_eq!(client["name"], service, "{what}");
                assert_eq!(client["namespace"], NAMESPACE, "{what}");
                assert_eq!(client["path"], path, "{what}");
                let port = client["port"].as_i64().unwrap_or(443);
                service_port_reaches(rendered, service, port, "https-webhook", &what);
                let excluded = webhook["namespaceSelector"]["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| {
                        e["key"] == "kubernetes.io/metadata.name"
                            && e["operator"] == "NotIn"
                            && strings(&e["values"]).contains(&"kube-system".to_string())
                            && strings(&e["values"]).contains(&NAMESPACE.to_string())
                    });
                assert!(
                    excluded,
                    "{what}: namespaceSelector does not exclude kube-system and {NAMESPACE}"
                );
            }
        }
        // Istio's injection labels select namespaces and pods.
        let injector = rendered.get("MutatingWebhookConfiguration", "istio-sidecar-injector");
        let text = injector.to_string();
        for key in ["istio-injection", "istio.io/rev", "sidecar.istio.io/inject"] {
            assert!(
                text.contains(key),
                "{}: injector ignores {key}",
                rendered.name
            );
        }
    }
}

/// The Service `service` has `port`, and it leads to the named container
/// port of the Deployment of the same name.
fn service_port_reaches(rendered: &Rendered, service: &str, port: i64, target: &str, what: &str) {
    let svc = rendered.get("Service", service);
    let entry = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("{what}: Service {service} has no port {port}"));
    let target_port = &entry["targetPort"];
    let workload = rendered
        .find("Deployment", service)
        .or_else(|| rendered.find("StatefulSet", service))
        .unwrap_or_else(|| panic!("{what}: nothing runs behind Service {service}"));
    let declared = containers(workload).iter().any(|c| {
        c["ports"].as_array().into_iter().flatten().any(|p| {
            (target_port.is_string() && p["name"] == *target_port)
                || (target_port.is_number() && p["containerPort"] == *target_port)
        })
    });
    assert!(
        declared,
        "{what}: Service {service} port {port} targets {target_port}, which {service} does not declare"
    );
    if !target.is_empty() {
        assert_eq!(
            *target_port, target,
            "{what}: Service {service} port {port}"
        );
    }
}

// ---------------------------------------------------------------------------
// Workloads

#[test]
fn containers_are_locked_down_with_resources_and_probes() {
    for rendered in rendered() {
        for workload in workloads(rendered) {
            let what = format!("{}: {}", rendered.name, label(workload));
            let pod = &workload["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{what}"
            );
            assert_ne!(pod["hostNetwork"], true, "{what}");
            for container in containers(workload) {
                let what = format!("{what} container {}", container["name"]);
                let security = &container["securityContext"];
                assert_eq!(security["runAsNonRoot"], true, "{what}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
                assert!(
                    security["capabilities"]["add"].is_null(),
                    "{what}: adds capabilities"
                );
                assert_eq!(
                    security["seccompProfile"]["type"], "RuntimeDefault",
                    "{what}"
                );
                assert_ne!(security["privileged"], true, "{what}");
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            container["resources"][bound][resource].is_string(),
                            "{what}: no {bound}.{resource}"
                        );
                    }
                }
                assert!(
                    !container["readinessProbe"].is_null() && !container["livenessProbe"].is_null(),
                    "{what}: needs readiness and liveness probes"
                );
                let image = str_of(&container["image"]);
                assert!(
                    image.contains(':') && !image.ends_with(":latest"),
                    "{what}: image {image} has no pinned tag"
                );
            }
        }
        // The control plane's probes are service-runtime's endpoints on the
        // HTTP port (15014).
        for service in SERVICES {
            let deployment = rendered.get("Deployment", service);
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            let what = format!("{}: {service}", rendered.name);
            let http_port = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["containerPort"] == 15014)
                .unwrap_or_else(|| panic!("{what}: no container port 15014"));
            for (probe, path) in [
                ("readinessProbe", "/healthz/ready"),
                ("livenessProbe", "/healthz/live"),
            ] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{what}: {probe}");
                assert!(
                    get["port"] == 15014 || get["port"] == http_port["name"],
                    "{what}: {probe} is not on the HTTP port"
                );
            }
            assert!(
                strings(&container["args"]).contains(&"--http-addr=0.0.0.0:15014".to_string()),
                "{what}: HTTP server not on 15014"
            );
        }
    }
}

/// Every image of the control plane and the proxy the injector adds come
/// from one registry and carry one tag.
#[test]
fn images_share_one_registry_and_tag_with_the_injected_proxy() {
    for rendered in rendered() {
        let mut prefixes = BTreeSet::new();
        for service in SERVICES {
            let deployment = rendered.get("Deployment", service);
            let image = str_of(&deployment["spec"]["template"]["spec"]["containers"][0]["image"]);
            let (name, tag) = image.rsplit_once(':').unwrap_or((image, ""));
            let registry = name
                .strip_suffix(&format!("/{service}"))
                .unwrap_or_else(|| panic!("{}: {service} runs image {image}", rendered.name));
            prefixes.insert((registry.to_string(), tag.to_string()));
        }
        assert_eq!(
            prefixes.len(),
            1,
            "{}: images from several registries or tags: {prefixes:?}",
            rendered.name
        );
        let (registry, tag) = prefixes.into_iter().next().unwrap();
        let config_map = rendered
            .of_kind("ConfigMap")
            .find(|c| str_of(&c["metadata"]["name"]).starts_with("istio-sidecar-injector"))
            .unwrap_or_else(|| panic!("{}: no istio-sidecar-injector ConfigMap", rendered.name));
        let config = injector::InjectorConfig::from_yaml(str_of(&config_map["data"]["config"]))
            .unwrap_or_else(|e| panic!("{}: injector config: {e}", rendered.name));
        assert_eq!(
            config.proxy_image(),
            format!("{registry}/agent:{tag}"),
            "{}: the injected proxy's image (values.global.hub/tag) differs from the control plane's",
            rendered.name
        );
        // The injector mounts that ConfigMap and reads it.
        let injector = rendered.get("Deployment", "injector");
        let mounted = injector["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == config_map["metadata"]["name"]);
        assert!(
            mounted,
            "{}: the injector does not mount its config",
            rendered.name
        );
    }
}

/// Services reach each other only by Service name and documented port: every
/// address in a container's arguments names a Service of the manifests that
/// has that port.
#[test]
fn services_reach_each_other_by_service_name_and_port() {
    let documented: BTreeMap<&str, &[i64]> = BTreeMap::from([
        ("pilot", &[15010, 15012, 15014][..]),
        ("citadel", &[15012, 15014][..]),
        ("galley", &[443, 15014][..]),
        ("injector", &[443, 15014][..]),
        ("nats", &[4222, 6222, 8222][..]),
    ]);
    for rendered in rendered() {
        for (service, ports) in &documented {
            let svc = rendered.get("Service", service);
            let declared: Vec<i64> = svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["port"].as_i64())
                .collect();
            assert_eq!(
                declared, *ports,
                "{}: Service {service} ports",
                rendered.name
            );
            for port in *ports {
                service_port_reaches(rendered, service, *port, "", &rendered.name);
            }
        }
        let suffix = format!(".{NAMESPACE}.svc");
        let mut addresses = 0;
        for workload in workloads(rendered) {
            for container in containers(workload) {
                for arg in strings(&container["args"]) {
                    let Some((flag, value)) = arg.split_once('=') else {
                        continue;
                    };
                    if !matches!(flag, "--nats-url" | "--ca-address") {
                        continue;
                    }
                    for address in value.split(',') {
                        let host_port = address.trim_start_matches("nats://");
                        let (host, port) = host_port.rsplit_once(':').unwrap();
                        let service = host.strip_suffix(&suffix).unwrap_or_else(|| {
                            panic!(
                                "{}: {arg}: not a Service name in {NAMESPACE}",
                                rendered.name
                            )
                        });
                        let port: i64 = port.parse().unwrap();
                        assert!(
                            documented.get(service).is_some_and(|p| p.contains(&port)),
                            "{}: {arg}: not a documented Service port",
                            rendered.name
                        );
                        addresses += 1;
                    }
                }
            }
        }
        assert!(
            addresses >= SERVICES.len(),
            "{}: no addresses found",
            rendered.name
        );
        // The injected proxies find citadel and pilot the same way.
        let config_map = rendered
            .of_kind("ConfigMap")
            .find(|c| str_of(&c["metadata"]["name"]).starts_with("istio-sidecar-injector"))
            .unwrap();
        let config: Value = serde_yaml_ng::from_str(str_of(&config_map["data"]["config"])).unwrap();
        assert_eq!(
            config["values"]["global"]["caAddress"],
            format!("citadel{suffix}:15012"),
            "{}",
            rendered.name
        );
        assert_eq!(
            config["meshConfig"]["defaultConfig"]["discoveryAddress"],
            format!("pilot{suffix}:15012"),
            "{}",
            rendered.name
        );
    }
}

// ---------------------------------------------------------------------------
// Scaling and disruption

#[test]
fn pilot_scales_and_no_budget_blocks_a_drain() {
    for rendered in rendered() {
        for pdb in rendered.of_kind("PodDisruptionBudget") {
            let what = format!("{}: {}", rendered.name, label(pdb));
            assert!(
                pdb["spec"]["minAvailable"].is_null(),
                "{what}: minAvailable can block a drain"
            );
            let max = &pdb["spec"]["maxUnavailable"];
            assert!(
                max.as_i64().is_some_and(|n| n >= 1) || max.as_str().is_some_and(|s| s != "0%"),
                "{what}: maxUnavailable must let one pod go"
            );
        }
        rendered.get("PodDisruptionBudget", "pilot");
        let pilot = rendered.get("Deployment", "pilot");
        let replicas = pilot["spec"]["replicas"].as_i64().unwrap_or(1);
        if let Some(hpa) = rendered.find("HorizontalPodAutoscaler", "pilot") {
            let what = format!("{}: pilot HPA", rendered.name);
            assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{what}");
            assert_eq!(
                hpa["spec"]["scaleTargetRef"]["kind"], "Deployment",
                "{what}"
            );
            assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "pilot", "{what}");
            let metric = &hpa["spec"]["metrics"][0];
            assert_eq!(metric["resource"]["name"], "cpu", "{what}");
            let min = hpa["spec"]["minReplicas"].as_i64().unwrap();
            assert!(
                min <= hpa["spec"]["maxReplicas"].as_i64().unwrap(),
                "{what}"
            );
            assert_eq!(
                replicas, min,
                "{}: pilot replicas vs HPA minimum",
                rendered.name
            );
        } else {
            assert!(
                !rendered.is_overlay("ha"),
                "the ha overlay autoscales pilot"
            );
        }
        if rendered.is_overlay("dev") {
            for workload in workloads(rendered) {
                assert_eq!(workload["spec"]["replicas"], 1, "dev: {}", label(workload));
            }
        }
        if rendered.is_overlay("ha") {
            assert_eq!(replicas, 3, "ha: pilot replicas");
            for service in ["citadel", "galley", "injector"] {
                let deployment = rendered.get("Deployment", service);
                assert_eq!(deployment["spec"]["replicas"], 2, "ha: {service} replicas");
                rendered.get("PodDisruptionBudget", service);
            }
            for workload in workloads(rendered) {
                let spec = &workload["spec"]["template"]["spec"];
                assert!(
                    !spec["affinity"]["podAntiAffinity"].is_null()
                        && !spec["topologySpreadConstraints"].is_null(),
                    "ha: {} is not spread over nodes and zones",
                    label(workload)
                );
            }
            // Replicas of citadel share one CA: the plug-in Secret.
            let citadel = rendered.get("Deployment", "citadel");
            let ca_secret = citadel["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "cacerts");
            assert!(ca_secret, "ha: citadel replicas must share the cacerts CA");
            let nats = rendered.get("StatefulSet", "nats");
            assert_eq!(nats["spec"]["replicas"], 3, "ha: NATS cluster size");
            assert!(
                rendered
                    .yaml
                    .contains("nats://nats-2.nats.istio-system.svc:6222"),
                "ha: NATS servers do not route to each other"
            );
        }
    }
}
