//! `agent proxy` as a process, with a real Envoy: in interception mode NONE
//! (no root needed), every port its own so several can share a host; or
//! in a pod's network namespace with `agent init`'s capture rules (root).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::http_client::HttpRequest;
use crate::injected_pod::{self, PodFacts, VolumeSources};
use crate::netns::PodNetwork;
use crate::workload::CaFixture;
use crate::{Process, binary, eventually, free_port, log_tail, tool};

/// The ports of one agent and its Envoy.
#[derive(Debug, Clone, Copy)]
pub struct AgentPorts {
    pub status: u16,
    pub admin: u16,
    pub stats: u16,
    pub readiness: u16,
}

impl AgentPorts {
    /// Istio's: status 15020, admin 15000, stats 15090, readiness 15021.
    pub const ISTIO: AgentPorts = AgentPorts {
        status: 15020,
        admin: 15000,
        stats: 15090,
        readiness: 15021,
    };

    pub fn free() -> AgentPorts {
        AgentPorts {
            status: free_port(),
            admin: free_port(),
            stats: free_port(),
            readiness: free_port(),
        }
    }
}

/// A running `agent proxy sidecar`, killed when dropped.
pub struct Agent {
    pub process: Process,
    pub ports: AgentPorts,
    pub node_id: String,
    root: std::path::PathBuf,
    log: std::path::PathBuf,
    /// The pod's network namespace, where its ports are; none when the
    /// agent shares the host's network.
    netns: Option<String>,
}

/// What Kubernetes mounts into an injected pod: the projected token and
/// the `istio-ca-root-cert` ConfigMap, at Istio's paths.
fn mount_pod_secrets(root: &Path, workload: &AgentWorkload<'_>, ca: &CaFixture) {
    let token = root.join("var/run/secrets/tokens/istio-token");
    let root_cert = root.join("var/run/secrets/istio/root-cert.pem");
    for file in [&token, &root_cert] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    }
    let jwt = ca
        .issuer
        .token(workload.namespace, workload.service_account);
    std::fs::write(token, jwt).unwrap();
    std::fs::write(root_cert, ca.citadel.root_cert_pem()).unwrap();
}

/// GET `path` from `127.0.0.1:port`, inside `netns` when given.
fn get(netns: Option<&str>, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let path = path.to_owned();
    let request = move || {
        HttpRequest::get(&path)
            .timeout(Duration::from_secs(5))
            .send(([127, 0, 0, 1], port).into())
            .map(|response| (response.status, response.body))
    };
    match netns {
        Some(netns) => crate::netns::enter(netns, request),
        None => request(),
    }
}

/// The `agent proxy sidecar` arguments every placement shares: who the
/// workload is, where pilot is, and the agent's ports.
fn proxy_args(
    workload: &AgentWorkload<'_>,
    pilot_xds: SocketAddr,
    auth_policy: &str,
    ports: &AgentPorts,
) -> Vec<String> {
    let pairs = [
        ("--control-plane-auth-policy", auth_policy.to_owned()),
        ("--discovery-address", pilot_xds.to_string()),
        ("--pod-name", workload.pod.to_owned()),
        ("--pod-namespace", workload.namespace.to_owned()),
        ("--instance-ip", workload.ip.to_owned()),
        ("--service-account", workload.service_account.to_owned()),
        ("--labels", workload.labels.to_owned()),
        ("--status-port", ports.status.to_string()),
        ("--admin-port", ports.admin.to_string()),
        ("--stats-port", ports.stats.to_string()),
        ("--readiness-port", ports.readiness.to_string()),
        ("--termination-drain-duration", "1s".to_owned()),
    ];
    let mut args = vec!["proxy".to_owned(), "sidecar".to_owned()];
    for (flag, value) in pairs {
        args.extend([flag.to_owned(), value]);
    }
    args
}

/// Gives the pod's files to the proxy user (uid and gid 1337), as the
/// kubelet's fsGroup does, and opens the way to them.
fn hand_to_proxy_user(root: &Path) {
    crate::netns::run("chown", &["-R", "1337:1337", &root.to_string_lossy()]);
    let temp = std::env::temp_dir();
    let mut dir = root.parent();
    while let Some(parent) = dir.filter(|dir| dir.starts_with(&temp) && *dir != temp) {
        crate::netns::set_mode(parent, 0o755);
        dir = parent.parent();
    }
}

/// Who the workload is.
pub struct AgentWorkload<'a> {
    pub pod: &'a str,
    pub namespace: &'a str,
    pub ip: &'a str,
    pub service_account: &'a str,
    pub labels: &'a str,
}

impl Agent {
    /// Starts the agent with plain-text xDS to `pilot_xds`, certificates
    /// from `ca`'s citadel (a token for the workload and the root mounted
    /// under `root`, where a pod has them), and `extra_args`; returns once
    /// the process is up (not ready).
    pub fn start(
        root: &Path,
        workload: &AgentWorkload<'_>,
        pilot_xds: SocketAddr,
        ca: &CaFixture,
        extra_args: &[&str],
    ) -> Agent {
        Self::spawn(root, workload, pilot_xds, "NONE", ca, extra_args)
    }

    /// Like [`Agent::start`], with xDS over mutual TLS to `pilot_tls` (the
    /// workload certificate as client identity).
    pub fn start_mtls(
        root: &Path,
        workload: &AgentWorkload<'_>,
        pilot_tls: SocketAddr,
        ca: &CaFixture,
        extra_args: &[&str],
    ) -> Agent {
        Self::spawn(root, workload, pilot_tls, "MUTUAL_TLS", ca, extra_args)
    }

    fn spawn(
        root: &Path,
        workload: &AgentWorkload<'_>,
        pilot_xds: SocketAddr,
        auth_policy: &str,
        ca: &CaFixture,
        extra_args: &[&str],
    ) -> Agent {
        let ports = AgentPorts::free();
        let mut command = Command::new(binary("agent"));
        command.args(proxy_args(workload, pilot_xds, auth_policy, &ports));
        command
            .arg("--root-dir")
            .arg(root)
            .arg("--envoy-bin")
            .arg(tool("ENVOY_BIN", "envoy"))
            .args(["--interception-mode", "NONE"])
            .args([
                "--ca-address",
                &format!("localhost:{}", ca.citadel.grpc_addr.port()),
            ])
            .args(extra_args);
        Self::launch(root, workload, ca, command, ports, None)
    }

    /// Starts a pod's sidecar as Istio's injected containers do, in the
    /// pod's network namespace: `agent init` writes the capture rules (as
    /// root, the init container), then `agent proxy sidecar` runs as the
    /// proxy user 1337 on Istio's standard ports, its Envoy intercepting
    /// the app's traffic. pilot (plain text) and `ca`'s citadel must listen
    /// on the network's gateway.
    pub fn start_in_pod(
        network: &PodNetwork,
        pod: &str,
        root: &Path,
        workload: &AgentWorkload<'_>,
        pilot_xds: SocketAddr,
        ca: &CaFixture,
        extra_args: &[&str],
    ) -> Agent {
        let netns = network.pod(pod);
        let agent = network.runnable_by_anyone(&binary("agent"));
        let init = netns.exec(&agent, &["init"]);
        assert!(
            init.status.success(),
            "agent init in {pod}: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let ports = AgentPorts::ISTIO;
        let mut command = netns.command("setpriv");
        command
            .args(["--reuid=1337", "--regid=1337", "--clear-groups"])
            .arg(&agent)
            .args(proxy_args(workload, pilot_xds, "NONE", &ports))
            .arg("--root-dir")
            .arg(root)
            .arg("--envoy-bin")
            .arg(network.runnable_by_anyone(&tool("ENVOY_BIN", "envoy")))
            .args(["--interception-mode", "REDIRECT"])
            .args(["--ca-address", &ca.citadel.grpc_addr.to_string()])
            .args(["--ca-server-name", "localhost"])
            .args(extra_args);
        Self::launch(
            root,
            workload,
            ca,
            command,
            ports,
            Some(netns.name().to_owned()),
        )
    }

    /// Starts an injected pod's sidecar from the pod spec alone, as a node
    /// runs it ([`crate::injected_pod`]), in pod `pod` of `network`: the
    /// `istio-init` container run to completion, then the volume mounts of
    /// `istio-proxy` laid out under `root` (the proxy's filesystem, filled
    /// from `volumes`) and `istio-proxy` started with exactly its args and
    /// environment plus `runtime_env`. The image's entrypoint is the
    /// workspace's `agent`. Returns once the proxy process is up (not ready);
    /// its log is `root` with the extension `.log`.
    pub fn start_injected(
        network: &PodNetwork,
        pod: &str,
        spec: &serde_json::Value,
        facts: &PodFacts,
        root: &Path,
        volumes: &VolumeSources,
        runtime_env: &[(&str, &str)],
    ) -> Agent {
        let netns = network.pod(pod);
        let agent = network.runnable_by_anyone(&binary("agent"));
        let init = injected_pod::container(spec, "initContainers", "istio-init");
        assert!(
            init["volumeMounts"].is_null(),
            "istio-init's volume mounts are not laid out"
        );
        let output = injected_pod::container_command(netns, &agent, init, facts, &[])
            .output()
            .expect("running istio-init");
        assert!(
            output.status.success(),
            "istio-init in {pod}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let proxy = injected_pod::container(spec, "containers", "istio-proxy");
        injected_pod::mount_volumes(spec, proxy, root, volumes);
        let args = injected_pod::args(proxy);
        let status = injected_pod::flag_value(&args, "--status-port")
            .map_or(AgentPorts::ISTIO.status, |port| {
                port.parse().expect("a status port")
            });
        let ports = AgentPorts {
            status,
            readiness: injected_pod::http_probe(proxy, "readinessProbe").0,
            ..AgentPorts::ISTIO
        };
        let command = injected_pod::container_command(netns, &agent, proxy, facts, runtime_env);
        let log = root.with_extension("log");
        let process = Process::spawn_logged("agent", command, &log);
        Agent {
            process,
            ports,
            node_id: format!(
                "sidecar~{}~{}.{}~{}.svc.cluster.local",
                facts.pod_ip, facts.name, facts.namespace, facts.namespace
            ),
            root: root.to_owned(),
            log,
            netns: Some(netns.name().to_owned()),
        }
    }

    /// Mounts the pod's secrets under `root` and starts `command`.
    fn launch(
        root: &Path,
        workload: &AgentWorkload<'_>,
        ca: &CaFixture,
        mut command: Command,
        ports: AgentPorts,
        netns: Option<String>,
    ) -> Agent {
        mount_pod_secrets(root, workload, ca);
        if netns.is_some() {
            hand_to_proxy_user(root);
        }
        command.env_remove("PROXY_CONFIG").env_remove("ISTIOD_SAN");
        let log = root.join("agent.log");
        let process = Process::spawn_logged("agent", command, &log);
        let node_id = format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            workload.ip, workload.pod, workload.namespace, workload.namespace
        );
        Agent {
            process,
            ports,
            node_id,
            root: root.to_owned(),
            log,
            netns,
        }
    }

    /// Waits until Envoy's readiness port (answered by the agent through
    /// Envoy) says ready.
    pub fn wait_ready(&mut self, limit: Duration) {
        let log = self.log.clone();
        let (netns, port) = (self.netns.clone(), self.ports.readiness);
        let process = &mut self.process;
        eventually("the proxy to be ready on its readiness port", limit, || {
            if let Some(status) = process.exited() {
                panic!("agent exited with {status}:\n{}", log_tail(&log, 40));
            }
            get(netns.as_deref(), port, "/healthz/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
    }

    pub fn envoy_admin(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.netns.as_deref(), self.ports.admin, path)
    }

    pub fn status(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.netns.as_deref(), self.ports.status, path)
    }

    /// The pid of the Envoy this agent started: the process whose command
    /// line names this agent's bootstrap.
    pub fn envoy_pid(&self) -> Option<i32> {
        let bootstrap = self.root.join("etc/istio/proxy/envoy-rev.json");
        let bootstrap = bootstrap.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline);
                let is_envoy = cmdline.split('\0').any(|arg| arg == bootstrap);
                is_envoy.then_some(pid)
            })
    }

    /// One Envoy stat, e.g. `control_plane.connected_state`.
    pub fn envoy_stat(&self, name: &str) -> Option<u64> {
        let (_, body) = self.envoy_admin(&format!("/stats?filter=^{name}$")).ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log tail ---\n{}", self.log_tail(60));
        }
    }
}
