//! Every binary answers `--help` and `--version`; every service serves its
//! metrics and health endpoints, is ready only when it can work, and exits 0
//! soon after SIGTERM.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{NatsServer, Process, binary, eventually, free_port, http_get, tool};
use nix::sys::signal::Signal;

/// Services whose readiness depends on the bus.
const BUS_SERVICES: [&str; 3] = ["citadel", "galley", "injector"];
const ALL_BINARIES: [&str; 6] = ["pilot", "citadel", "galley", "injector", "agent", "trireme"];

#[test]
fn every_binary_answers_help_and_version() {
    for name in ALL_BINARIES {
        let help = Command::new(binary(name)).arg("--help").output().unwrap();
        assert!(help.status.success(), "{name} --help failed");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("Usage:"), "{name} --help: {help}");

        let version = Command::new(binary(name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(version.status.success(), "{name} --version failed");
        let version = String::from_utf8_lossy(&version.stdout);
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "every binary reports the one control-plane version"
        );
    }
}

#[test]
fn flags_document_their_environment_variables() {
    let help = Command::new(binary("pilot"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for env in [
        "TRIREME_HTTP_ADDR",
        "TRIREME_XDS_ADDR",
        "TRIREME_XDS_TLS_ADDR",
        "TRIREME_CONFIG_DIR",
        "PILOT_DEBOUNCE_AFTER",
        "TRIREME_LOG_FORMAT",
    ] {
        assert!(help.contains(env), "pilot --help does not mention {env}");
    }
    let help = Command::new(binary("galley"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("TRIREME_NATS_URL"),
        "galley --help lacks TRIREME_NATS_URL"
    );
}

/// Starts a service with only its HTTP address moved to a free port (through
/// the environment, the fallback every flag has) and the bus at `nats_url`.
fn start_service(name: &str, nats_url: &str) -> (Process, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(binary(name));
    if name == "agent" {
        // Every port and file of its own; pilot and citadel unreachable, so
        // Envoy runs without config and the proxy is never ready.
        let root = std::env::temp_dir().join(format!("trireme-agent-{}", free_port()));
        command
            .args(["proxy", "sidecar", "--control-plane-auth-policy", "NONE"])
            .args([
                "--discovery-address",
                "127.0.0.1:1",
                "--ca-address",
                "127.0.0.1:1",
            ])
            .args(["--status-port", &addr.port().to_string()])
            .args(["--admin-port", &free_port().to_string()])
            .args(["--stats-port", &free_port().to_string()])
            .args(["--readiness-port", &free_port().to_string()])
            .args(["--termination-drain-duration", "1s"])
            .arg("--root-dir")
            .arg(root)
            .arg("--envoy-bin")
            .arg(tool("ENVOY_BIN", "envoy"));
    } else {
        command.env("TRIREME_HTTP_ADDR", addr.to_string());
    }
    if name == "galley" || name == "injector" {
        // No webhook certificate here: without one the webhook (and so the
        // service) would never be ready.
        command.env("TRIREME_WEBHOOK_ADDR", "none");
    }
    if name == "citadel" {
        // A free gRPC port and a CA directory of its own, never the defaults.
        let ca_dir = std::env::temp_dir().join(format!("trireme-citadel-{}", free_port()));
        command
            .env("TRIREME_GRPC_ADDR", "127.0.0.1:0")
            .env("TRIREME_CA_DIR", ca_dir);
    }
    command
        .env("TRIREME_NATS_URL", nats_url)
        .env("TRIREME_LOG_FORMAT", "json");
    let process = Process::spawn(name, command);
    eventually(
        &format!("{name} to serve /healthz/live"),
        Duration::from_secs(10),
        || {
            http_get(addr, "/healthz/live")
                .ok()
                .filter(|(code, _)| *code == 200)
        },
    );
    (process, addr)
}

fn stop_within_five_seconds(mut process: Process) {
    let name = process.name.clone();
    process.signal(Signal::SIGTERM);
    let started = Instant::now();
    let status = process
        .wait_for_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{name} still running 5 s after SIGTERM"));
    assert!(
        status.success(),
        "{name} exited with {status} after SIGTERM"
    );
    eprintln!("{name} stopped {:?} after SIGTERM", started.elapsed());
}

#[test]
fn control_plane_services_serve_metrics_and_turn_ready_with_the_bus() {
    let nats = NatsServer::start();
    for name in BUS_SERVICES {
        let (process, addr) = start_service(name, &nats.url());
        let ready = eventually(
            &format!("{name} to become ready"),
            Duration::from_secs(10),
            || {
                http_get(addr, "/healthz/ready")
                    .ok()
                    .filter(|(code, _)| *code == 200)
            },
        );
        assert!(
            ready.1.contains("[+] bus: connected"),
            "{name}: {}",
            ready.1
        );
        assert_serves_metrics_and_version(name, addr);
        stop_within_five_seconds(process);
    }
}

fn assert_serves_metrics_and_version(name: &str, addr: SocketAddr) {
    let (code, metrics) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let build = format!(
        "istio_build{{component=\"{name}\",tag=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        metrics.contains(&build),
        "{name} metrics lack {build}:\n{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"), "{name}");
    let (code, version) = http_get(addr, "/version").unwrap();
    assert_eq!(code, 200);
    assert!(version.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn pilot_is_ready_once_its_config_is_loaded() {
    let config_dir = tempfile::tempdir().unwrap();
    let xds_port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(binary("pilot"));
    command
        .env("TRIREME_HTTP_ADDR", addr.to_string())
        .env("TRIREME_XDS_ADDR", format!("127.0.0.1:{xds_port}"))
        // Without a citadel the TLS port would never be ready.
        .env("TRIREME_XDS_TLS_ADDR", "none")
        .env("TRIREME_CONFIG_DIR", config_dir.path());
    let process = Process::spawn("pilot", command);
    let ready = eventually("pilot to become ready", Duration::from_secs(10), || {
        http_get(addr, "/healthz/ready")
            .ok()
            .filter(|(code, _)| *code == 200)
    });
    assert!(ready.1.contains("[+] config: config loaded"), "{}", ready.1);
    assert_serves_metrics_and_version("pilot", addr);
    stop_within_five_seconds(process);
}

#[test]
fn services_are_not_ready_without_the_bus_and_recover_when_it_appears() {
    // Nothing listens here yet: the service must stay up, say why it is not
    // ready, and become ready once the bus exists.
    let nats_port = free_port();
    let (process, addr) = start_service("galley", &format!("nats://127.0.0.1:{nats_port}"));
    let (code, body) = http_get(addr, "/healthz/ready").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-] bus:"), "{body}");
    assert_eq!(http_get(addr, "/healthz/live").unwrap().0, 200);
    stop_within_five_seconds(process);
}

#[test]
fn agent_serves_health_and_is_not_ready_without_envoy() {
    let (process, addr) = start_service("agent", "nats://127.0.0.1:1");
    let (code, body) = http_get(addr, "/healthz/ready").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("[-] envoy:"), "{body}");
    let (code, metrics) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("istio_build{component=\"agent\""),
        "{metrics}"
    );
    stop_within_five_seconds(process);
}

#[test]
fn services_also_stop_cleanly_on_sigint() {
    let nats = NatsServer::start();
    let (process, _) = start_service("galley", &nats.url());
    let mut process = process;
    process.signal(Signal::SIGINT);
    let status = process
        .wait_for_exit(Duration::from_secs(5))
        .expect("exits after SIGINT");
    assert!(status.success());
}
