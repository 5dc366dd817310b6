//! `agent proxy` as a process, with a real Envoy, in interception mode NONE
//! (no root needed): every port its own, so several can share a host.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::http_client::HttpRequest;
use crate::workload::CaFixture;
use crate::{Process, binary, eventually, free_port, http_get, log_tail, tool};

/// The ports of one agent and its Envoy.
#[derive(Debug, Clone, Copy)]
pub struct AgentPorts {
    pub status: u16,
    pub admin: u16,
    pub stats: u16,
    pub readiness: u16,
}

impl AgentPorts {
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

fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    HttpRequest::get(path)
        .timeout(Duration::from_secs(5))
        .send(([127, 0, 0, 1], port).into())
        .map(|response| (response.status, response.body))
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
        let log = root.join("agent.log");
        mount_pod_secrets(root, workload, ca);
        let mut command = Command::new(binary("agent"));
        command
            .args([
                "proxy",
                "sidecar",
                "--control-plane-auth-policy",
                auth_policy,
            ])
            .args(["--discovery-address", &pilot_xds.to_string()])
            .arg("--root-dir")
            .arg(root)
            .arg("--envoy-bin")
            .arg(tool("ENVOY_BIN", "envoy"))
            .args(["--interception-mode", "NONE"])
            .args([
                "--pod-name",
                workload.pod,
                "--pod-namespace",
                workload.namespace,
            ])
            .args([
                "--instance-ip",
                workload.ip,
                "--service-account",
                workload.service_account,
            ])
            .args(["--labels", workload.labels])
            .args(["--status-port", &ports.status.to_string()])
            .args(["--admin-port", &ports.admin.to_string()])
            .args(["--stats-port", &ports.stats.to_string()])
            .args(["--readiness-port", &ports.readiness.to_string()])
            .args(["--termination-drain-duration", "1s"])
            .args([
                "--ca-address",
                &format!("localhost:{}", ca.citadel.grpc_addr.port()),
            ])
            .args(extra_args)
            .env_remove("PROXY_CONFIG")
            .env_remove("ISTIOD_SAN");
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
        }
    }

    /// Waits until Envoy's readiness port (answered by the agent through
    /// Envoy) says ready.
    pub fn wait_ready(&mut self, limit: Duration) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.ports.readiness).into();
        let log = self.log.clone();
        let process = &mut self.process;
        eventually("the proxy to be ready on its readiness port", limit, || {
            if let Some(status) = process.exited() {
                panic!("agent exited with {status}:\n{}", log_tail(&log, 40));
            }
            http_get(addr, "/healthz/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
    }

    pub fn envoy_admin(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.ports.admin, path)
    }

    pub fn status(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.ports.status, path)
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
