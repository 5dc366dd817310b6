//! An injected pod spec run as a node would run it, in a pod's network
//! namespace ([`crate::netns::PodNetwork`]): a container is its image's
//! entrypoint (the `agent` binary) with exactly the container's `args`,
//! exactly its `env` (downward-API `fieldRef`s resolved from the pod's
//! [`PodFacts`]) plus what a container runtime adds, as the user and with
//! the capabilities of its `securityContext`; its volume mounts are laid
//! out under a directory standing in for the container's filesystem.
//!
//! What this cannot reproduce faithfully (a `command`, `$(VAR)`
//! expansion, a `subPath`, a privileged container, a volume or `fieldRef`
//! kind it does not know) fails loudly, so that a template a cluster would
//! run differently cannot pass here by accident.

use std::collections::BTreeMap;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::netns::{NetNs, set_mode};

/// The PATH of the image (what a container runtime sets from the image's
/// config; the agent finds `iptables-restore` through it).
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities containerd gives a container unless its
/// `securityContext` drops or adds some.
const RUNTIME_DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// What Kubernetes knows of a running pod and hands out through the
/// downward API.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub pod_ip: String,
    pub service_account: String,
    pub host_ip: String,
    pub node_name: String,
}

impl PodFacts {
    /// The facts of a pod created from `pod` (a pod or pod template, whose
    /// `spec.serviceAccountName` it takes) as `name` in `namespace`, given
    /// the addresses and node the scheduler and network gave it.
    pub fn of(
        pod: &Value,
        name: &str,
        namespace: &str,
        pod_ip: &str,
        host_ip: &str,
        node_name: &str,
    ) -> PodFacts {
        let service_account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|key| pod["spec"][key].as_str())
            .unwrap_or("default");
        PodFacts {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            pod_ip: pod_ip.to_owned(),
            service_account: service_account.to_owned(),
            host_ip: host_ip.to_owned(),
            node_name: node_name.to_owned(),
        }
    }

    /// A `fieldRef.fieldPath`'s value.
    pub fn field(&self, path: &str) -> &str {
        match path {
            "metadata.name" => &self.name,
            "metadata.namespace" => &self.namespace,
            "status.podIP" => &self.pod_ip,
            "spec.serviceAccountName" => &self.service_account,
            "status.hostIP" => &self.host_ip,
            "spec.nodeName" => &self.node_name,
            other => panic!("fieldRef {other:?} is not emulated"),
        }
    }
}

/// Container `name` of `pod`'s `list` (`containers` or `initContainers`).
pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("the pod has no {list} entry named {name}:\n{pod:#}"))
}

fn no_expansion(what: &str, text: &str) {
    assert!(
        !text.contains("$("),
        "{what} {text:?} uses $(VAR) expansion, which this harness does not emulate"
    );
}

/// The container's `args`; it must not set `command` (the image's
/// entrypoint is what runs).
pub fn args(container: &Value) -> Vec<String> {
    assert!(
        container.get("command").is_none_or(Value::is_null),
        "container {} replaces the image's entrypoint with `command`",
        container["name"]
    );
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|arg| {
            let arg = arg
                .as_str()
                .unwrap_or_else(|| panic!("argument {arg} is not a string"));
            no_expansion("argument", arg);
            arg.to_owned()
        })
        .collect()
}

/// The container's `env` as the kubelet hands it to the runtime: plain
/// values as written, `fieldRef`s resolved from `facts`, in order (a later
/// entry of the same name wins).
pub fn env(container: &Value, facts: &PodFacts) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = entry["name"]
                .as_str()
                .unwrap_or_else(|| panic!("env entry without a name: {entry}"));
            let value = match (&entry["value"], &entry["valueFrom"]) {
                (Value::String(value), Value::Null) => {
                    no_expansion(name, value);
                    value.clone()
                }
                (Value::Null, Value::Null) => String::new(),
                (Value::Null, from) => match from["fieldRef"]["fieldPath"].as_str() {
                    Some(path) => facts.field(path).to_owned(),
                    None => panic!("{name}: valueFrom {from} is not emulated"),
                },
                _ => panic!("{name}: neither a string value nor a valueFrom: {entry}"),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// What a container's `securityContext` makes of its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityContext {
    pub uid: u32,
    pub gid: u32,
    /// Bounding set, upper case without `CAP_`.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub read_only_root_filesystem: bool,
}

impl SecurityContext {
    /// The container's, with the runtime's defaults (root, containerd's
    /// capabilities) where it says nothing.
    pub fn of(container: &Value) -> SecurityContext {
        let context = &container["securityContext"];
        assert!(
            context["privileged"] != true,
            "privileged containers are not emulated"
        );
        let id = |key: &str| {
            context[key]
                .as_u64()
                .map(|id| u32::try_from(id).expect("a uid/gid"))
        };
        let uid = id("runAsUser").unwrap_or(0);
        let gid = id("runAsGroup").unwrap_or(0);
        assert!(
            !(context["runAsNonRoot"] == true && uid == 0),
            "the kubelet refuses runAsNonRoot with uid 0 ({})",
            container["name"]
        );
        let names = |list: &str| -> Vec<String> {
            context["capabilities"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|cap| {
                    let cap = cap.as_str().expect("a capability name");
                    cap.trim_start_matches("CAP_").to_ascii_uppercase()
                })
                .collect()
        };
        let drop = names("drop");
        let mut capabilities: Vec<String> = if drop.iter().any(|cap| cap == "ALL") {
            Vec::new()
        } else {
            RUNTIME_DEFAULT_CAPS
                .iter()
                .map(|cap| cap.to_string())
                .filter(|cap| !drop.contains(cap))
                .collect()
        };
        for cap in names("add") {
            if !capabilities.contains(&cap) {
                capabilities.push(cap);
            }
        }
        SecurityContext {
            uid,
            gid,
            capabilities,
            no_new_privs: context["allowPrivilegeEscalation"] == false,
            read_only_root_filesystem: context["readOnlyRootFilesystem"] == true,
        }
    }

    /// `setpriv`'s arguments for this context (before the program).
    pub fn setpriv_args(&self) -> Vec<String> {
        let mut bounding = String::from("-all");
        for cap in &self.capabilities {
            bounding.push_str(&format!(",+{}", cap.to_ascii_lowercase()));
        }
        let mut args = vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".to_owned(),
            "--inh-caps=-all".to_owned(),
            format!("--bounding-set={bounding}"),
        ];
        if self.no_new_privs {
            args.push("--no-new-privs".to_owned());
        }
        args
    }
}

/// The whole environment a container runtime gives `container`'s
/// process: the runtime's own (`PATH` from the image, `HOSTNAME`), then
/// exactly the container's [`env`], then `runtime_env`: what this node
/// provides differently from a real one, which must not override anything
/// the container sets.
pub fn container_env(
    container: &Value,
    facts: &PodFacts,
    runtime_env: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut all = vec![
        ("PATH".to_owned(), IMAGE_PATH.to_owned()),
        ("HOSTNAME".to_owned(), facts.name.clone()),
    ];
    let own = env(container, facts);
    for (name, _) in runtime_env {
        assert!(
            !own.iter().any(|(set, _)| set == name),
            "the container sets {name} itself; the runtime must not change it"
        );
    }
    all.extend(own);
    all.extend(
        runtime_env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    all
}

/// The command that runs `container` in `netns` as a container runtime
/// would: `entrypoint` (the image's) with the container's args, as its
/// [`SecurityContext`], with exactly [`container_env`].
pub fn container_command(
    netns: &NetNs,
    entrypoint: &Path,
    container: &Value,
    facts: &PodFacts,
    runtime_env: &[(&str, &str)],
) -> Command {
    let context = SecurityContext::of(container);
    let mut command = netns.command("setpriv");
    command
        .args(context.setpriv_args())
        .arg(entrypoint)
        .args(args(container))
        .env_clear()
        .envs(container_env(container, facts, runtime_env));
    command
}

/// What the volumes of an injected pod are filled from.
#[derive(Debug, Clone, Default)]
pub struct VolumeSources {
    /// Projected service-account tokens by audience.
    pub tokens: BTreeMap<String, String>,
    /// ConfigMaps by name: their files by key.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Lays out `container`'s volume mounts under `root`, which stands in for
/// the container's filesystem, as the kubelet would fill them: `emptyDir`
/// a directory anyone may write (0777), `configMap` files, projected
/// service-account tokens owned by the container's user (0600), a
/// `downwardAPI` volume's labels and annotations in the kubelet's format.
/// Everything else under `root` belongs to root and cannot be written by
/// a non-root container, as under `readOnlyRootFilesystem`. Returns each
/// mount's path under `root` by volume name.
pub fn mount_volumes(
    pod: &Value,
    container: &Value,
    root: &Path,
    sources: &VolumeSources,
) -> BTreeMap<String, PathBuf> {
    let context = SecurityContext::of(container);
    std::fs::create_dir_all(root).unwrap();
    open_the_way(root);
    let mut mounts = BTreeMap::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().expect("a volume mount's name");
        let path = mount["mountPath"].as_str().expect("a mount path");
        assert!(
            mount.get("subPath").is_none(),
            "subPath mounts are not emulated ({name})"
        );
        let volume = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|volume| volume["name"] == name)
            .unwrap_or_else(|| panic!("volume mount {name} has no volume in the pod"));
        let dir = root.join(path.trim_start_matches('/'));
        make_dirs(root, &dir);
        fill_volume(pod, volume, &dir, &context, sources);
        mounts.insert(name.to_owned(), dir);
    }
    if !context.read_only_root_filesystem {
        chown(root, Some(context.uid), Some(context.gid)).unwrap();
    }
    mounts
}

fn fill_volume(
    pod: &Value,
    volume: &Value,
    dir: &Path,
    context: &SecurityContext,
    sources: &VolumeSources,
) {
    let name = &volume["name"];
    if volume.get("emptyDir").is_some() {
        set_mode(dir, 0o777);
    } else if let Some(config_map) = volume.get("configMap") {
        let map_name = config_map["name"].as_str().expect("a ConfigMap's name");
        let files = sources
            .config_maps
            .get(map_name)
            .unwrap_or_else(|| panic!("no ConfigMap {map_name} for volume {name}"));
        for (key, contents) in files {
            write_file(&dir.join(key), contents, 0o644);
        }
    } else if let Some(projected) = volume.get("projected") {
        for source in projected["sources"].as_array().into_iter().flatten() {
            let token = &source["serviceAccountToken"];
            let (Some(audience), Some(path)) = (token["audience"].as_str(), token["path"].as_str())
            else {
                panic!("projected source {source} of volume {name} is not emulated");
            };
            let jwt = sources
                .tokens
                .get(audience)
                .unwrap_or_else(|| panic!("no token for audience {audience:?} (volume {name})"));
            let file = dir.join(path);
            write_file(&file, jwt, 0o600);
            chown(&file, Some(context.uid), Some(context.gid)).unwrap();
        }
    } else if let Some(downward) = volume.get("downwardAPI") {
        for item in downward["items"].as_array().into_iter().flatten() {
            let field = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
            let map = match field {
                "metadata.labels" => &pod["metadata"]["labels"],
                "metadata.annotations" => &pod["metadata"]["annotations"],
                other => panic!("downwardAPI field {other:?} is not emulated"),
            };
            let text: String = map
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| format!("{key}={}\n", Value::String(string(value))))
                .collect();
            let path = item["path"].as_str().expect("a downwardAPI item's path");
            write_file(&dir.join(path), &text, 0o644);
        }
    } else {
        panic!("volume {volume} is not emulated");
    }
}

fn string(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Creates `dir` and the missing directories between `root` and it, owned
/// by root and readable by all.
fn make_dirs(root: &Path, dir: &Path) {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|path| path.starts_with(root) && !path.exists()) {
        missing.push(path.to_owned());
        at = path.parent();
    }
    std::fs::create_dir_all(dir).unwrap();
    for path in missing {
        set_mode(&path, 0o755);
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    set_mode(path, mode);
}

/// Lets any user reach `root` from the temporary directory it is in.
fn open_the_way(root: &Path) {
    let temp = std::env::temp_dir();
    let mut dir = Some(root);
    while let Some(path) = dir.filter(|path| path.starts_with(&temp) && *path != temp) {
        set_mode(path, 0o755);
        dir = path.parent();
    }
}

/// The port of the container's `probe` (`readinessProbe`, ...) `httpGet`,
/// and its path.
pub fn http_probe(container: &Value, probe: &str) -> (u16, String) {
    let get = &container[probe]["httpGet"];
    let port = get["port"]
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| {
            panic!(
                "{probe} of {} has no numeric httpGet port",
                container["name"]
            )
        });
    let path = get["path"].as_str().unwrap_or("/").to_owned();
    (port, path)
}

/// The value following `flag` in `args`.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}
