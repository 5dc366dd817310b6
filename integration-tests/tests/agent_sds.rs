//! The agent's SDS server feeding a real Envoy with certificates a real
//! citadel issued: Envoy terminates TLS with the workload certificate,
//! redacts its key, and swaps in each renewal on the open stream without a
//! restart. Both SDS flavours Envoy speaks are covered.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::sds::{SdsServer, socket_path};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use integration_tests::citadel::served_certificate_serial;
use integration_tests::http_client::HttpRequest;
use integration_tests::workload::CaFixture;
use integration_tests::{Process, eventually, free_port, log_tail, tool};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use workload_identity::{CaClient, CertificateManager, ManagerConfig, WorkloadIdentity};

const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
/// base64 of `[redacted]`, what Envoy's config dump shows for a private key.
const REDACTED: &str = "W3JlZGFjdGVkXQ==";

/// The agent's half in process: certificate manager and SDS server.
struct Agent {
    manager: CertificateManager,
    sds: Option<SdsServer>,
    metrics: Registry,
    runtime: tokio::runtime::Runtime,
}

impl Agent {
    fn start(fixture: &CaFixture, root: &Path, ttl: Duration) -> Agent {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _entered = runtime.enter();
        let ca = CaClient::new(fixture.client_config()).unwrap();
        let config = ManagerConfig {
            ttl,
            ..ManagerConfig::new(ID)
        };
        let manager = CertificateManager::start(config, ca).unwrap();
        let mut metrics = Registry::default();
        agent::sds::metrics::register(&mut metrics, manager.subscribe());
        let sds = SdsServer::start(socket_path(root), manager.subscribe()).unwrap();
        Agent {
            manager,
            sds: Some(sds),
            metrics,
            runtime,
        }
    }

    fn socket(&self) -> &Path {
        self.sds.as_ref().unwrap().socket_path()
    }

    fn current(&self) -> Arc<WorkloadIdentity> {
        self.manager.current().expect("a certificate")
    }

    fn scrape(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics).unwrap();
        text
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(sds) = self.sds.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), sds.shutdown()).await
            });
        }
    }
}

/// How Envoy's SDS subscriptions reach the agent, as Istio's bootstrap
/// writes it (`initial_fetch_timeout: 0s`: wait for the secret however long).
fn sds_config(api_type: &str) -> Value {
    json!({
        "api_config_source": {
            "api_type": api_type,
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": { "cluster_name": "sds-grpc" } }],
            "set_node_on_first_message_only": true
        },
        "initial_fetch_timeout": "0s",
        "resource_api_version": "V3"
    })
}

/// A static bootstrap: cluster `sds-grpc` on the agent's socket and a TLS
/// listener whose certificate (`default`) and roots (`ROOTCA`) come over SDS.
fn bootstrap(api_type: &str, socket: &Path, admin_port: u16, tls_port: u16) -> Value {
    let sds = sds_config(api_type);
    json!({
        "node": {
            "id": "sidecar~127.0.0.1~reviews-1.bookinfo~bookinfo.svc.cluster.local",
            "cluster": "reviews.bookinfo"
        },
        "admin": {
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } }
        },
        "static_resources": {
            "clusters": [{
                "name": "sds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": "sds-grpc",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "pipe": { "path": socket }
                    } } }] }]
                }
            }],
            "listeners": [{
                "name": "workload-tls",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": tls_port } },
                "filter_chains": [{
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {
                                "tls_certificate_sds_secret_configs": [
                                    { "name": "default", "sds_config": sds }
                                ],
                                "validation_context_sds_secret_config": {
                                    "name": "ROOTCA", "sds_config": sds
                                }
                            }
                        }
                    },
                    // An HTTP server answering 200 itself: the connection
                    // stays open until the client is done with it.
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "workload_tls",
                            "route_config": {
                                "virtual_hosts": [{
                                    "name": "all",
                                    "domains": ["*"],
                                    "routes": [{
                                        "match": { "prefix": "/" },
                                        "direct_response": { "status": 200, "body": { "inline_string": "ok\n" } }
                                    }]
                                }]
                            },
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                }
                            }]
                        }
                    }]
                }]
            }]
        }
    })
}

/// A real Envoy on a static bootstrap; killed when dropped, printing its log
/// tail if the test is failing.
struct Envoy {
    process: Process,
    admin: SocketAddr,
    tls: SocketAddr,
    dir: tempfile::TempDir,
}

impl Envoy {
    fn start(api_type: &str, socket: &Path) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let (admin_port, tls_port) = (free_port(), free_port());
        let config = bootstrap(api_type, socket, admin_port, tls_port);
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut command = Command::new(tool("ENVOY_BIN", "envoy"));
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l"])
            .arg(std::env::var("TRIREME_ENVOY_LOG_LEVEL").unwrap_or("warning".into()));
        let log = dir.path().join("envoy.log");
        let mut process = Process::spawn_logged("envoy", command, &log);
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        eventually("Envoy's admin API", Duration::from_secs(15), || {
            if let Some(status) = process.exited() {
                panic!("envoy exited with {status}:\n{}", log_tail(&log, 30));
            }
            std::net::TcpStream::connect(admin).ok()
        });
        Envoy {
            process,
            admin,
            tls: ([127, 0, 0, 1], tls_port).into(),
            dir,
        }
    }

    fn admin_json(&self, path: &str) -> Value {
        let response = HttpRequest::get(path)
            .send(self.admin)
            .unwrap_or_else(|e| panic!("Envoy admin {path}: {e}"));
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        serde_json::from_str(&response.body).expect("admin JSON")
    }

    /// The secrets Envoy holds, by name, as its config dump shows them.
    fn active_secrets(&self) -> Vec<Value> {
        let dump = self.admin_json("/config_dump?resource=dynamic_active_secrets");
        dump["configs"].as_array().cloned().unwrap_or_default()
    }

    fn active_secret(&self, name: &str) -> Option<Value> {
        self.active_secrets()
            .into_iter()
            .find(|secret| secret["name"] == name)
    }

    /// (serial, URI SANs) of each leaf Envoy serves, from admin `/certs`.
    fn served_leaves(&self) -> Vec<(String, Vec<String>)> {
        let certs = self.admin_json("/certs");
        certs["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|context| context["cert_chain"].as_array()?.first().cloned())
            .map(|leaf| {
                let serial = normalise_serial(leaf["serial_number"].as_str().unwrap_or(""));
                let uris = leaf["subject_alt_names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|san| san["uri"].as_str().map(str::to_owned))
                    .collect();
                (serial, uris)
            })
            .collect()
    }

    fn stat(&self, name: &str) -> Option<u64> {
        let response = HttpRequest::get(&format!("/stats?filter=^{name}$"))
            .send(self.admin)
            .ok()?;
        response
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
    }

    fn alive(&mut self) -> bool {
        self.process.exited().is_none()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log tail ---\n{}",
                log_tail(&self.dir.path().join("envoy.log"), 40)
            );
        }
    }
}

/// One TLS connection to Envoy kept open (`openssl s_client`), on which
/// HTTP/1.1 requests are sent one after another.
struct OpenConnection {
    process: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl OpenConnection {
    fn open(addr: SocketAddr) -> OpenConnection {
        let mut process = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is installed");
        let stdin = process.stdin.take().unwrap();
        let stdout = process.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        OpenConnection {
            process,
            stdin,
            lines,
        }
    }

    /// Sends a GET and waits for Envoy's `ok` body on the same connection.
    fn get_ok(&mut self) -> Result<(), String> {
        use std::io::Write;
        self.stdin
            .write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            .map_err(|e| format!("writing: {e}"))?;
        self.stdin.flush().map_err(|e| format!("flushing: {e}"))?;
        loop {
            match self.lines.recv_timeout(Duration::from_secs(5)) {
                Ok(line) if line.trim() == "ok" => return Ok(()),
                Ok(_) => continue,
                Err(error) => return Err(format!("no answer on the connection: {error}")),
            }
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Serials compared the way both sides may print them: lowercase, no colons,
/// no leading zeros.
fn normalise_serial(serial: &str) -> String {
    serial
        .trim()
        .trim_start_matches("serial=")
        .replace(':', "")
        .to_lowercase()
        .trim_start_matches('0')
        .to_owned()
}

fn inline_text(data_source: &Value) -> String {
    let encoded = data_source["inline_bytes"].as_str().expect("inline bytes");
    String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap()
}

/// Waits until Envoy's active `default` secret is `identity`'s; returns it.
fn wait_for_envoy_to_hold(envoy: &Envoy, identity: &WorkloadIdentity) -> Value {
    eventually(
        &format!("Envoy to hold certificate {}", identity.serial()),
        Duration::from_secs(15),
        || {
            envoy
                .active_secret("default")
                .filter(|secret| secret["version_info"] == identity.serial())
        },
    )
}

fn check_envoy_serves(envoy: &Envoy, agent: &Agent) {
    let identity = agent.current();
    let secret = wait_for_envoy_to_hold(envoy, &identity);
    let tls = &secret["secret"]["tls_certificate"];
    assert_eq!(inline_text(&tls["certificate_chain"]), identity.chain_pem());

    // The key never shows in the config dump: Envoy redacts it.
    assert_eq!(tls["private_key"]["inline_bytes"], REDACTED, "{tls}");
    let whole_dump = envoy.admin_json("/config_dump?include_eds").to_string();
    let key_pem = identity.private_key().pem();
    assert!(!whole_dump.contains(&STANDARD.encode(key_pem)));
    for line in key_pem.lines().filter(|line| !line.starts_with("-----")) {
        assert!(
            !whole_dump.contains(line),
            "key material in the config dump"
        );
    }

    let roots = envoy.active_secret("ROOTCA").expect("ROOTCA");
    let trusted = inline_text(&roots["secret"]["validation_context"]["trusted_ca"]);
    assert_eq!(trusted, identity.trust_bundle_pem());

    let leaves = eventually("/certs to list the leaf", Duration::from_secs(5), || {
        let leaves = envoy.served_leaves();
        leaves
            .iter()
            .any(|(serial, _)| *serial == identity.serial())
            .then_some(leaves)
    });
    let (_, uris) = leaves
        .iter()
        .find(|(serial, _)| *serial == identity.serial())
        .unwrap();
    assert_eq!(uris, &[ID.to_owned()]);
}

#[test]
fn envoy_serves_the_workload_certificate_and_takes_each_renewal_without_a_restart() {
    let fixture = CaFixture::start("bookinfo", "reviews");
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(&fixture, root.path(), Duration::from_secs(4));
    let mut envoy = Envoy::start("GRPC", agent.socket());
    let first = agent
        .runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), agent.manager.ready()).await
        })
        .expect("a certificate");

    check_envoy_serves(&envoy, &agent);
    let on_the_wire = eventually("a TLS handshake", Duration::from_secs(5), || {
        Some(normalise_serial(&served_certificate_serial(envoy.tls))).filter(|s| !s.is_empty())
    });
    assert_eq!(on_the_wire, first.serial(), "the handshake presents it");
    let expiry = agent.scrape();
    let left: f64 = expiry
        .lines()
        .find(|line| line.starts_with("istio_agent_cert_expiry_seconds{resource_name=\"default\"}"))
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no expiry gauge in:\n{expiry}"));
    assert!((0.0..=4.0).contains(&left), "{left}");

    let mut connection = OpenConnection::open(envoy.tls);
    connection.get_ok().expect("a request before the renewals");

    // 4 s certificates renew every ~2 s; watch Envoy for ~7 s.
    let started = Instant::now();
    let mut held = BTreeSet::from([first.serial().to_owned()]);
    let mut changes = Vec::new();
    while started.elapsed() < Duration::from_secs(7) {
        if let Some(secret) = envoy.active_secret("default") {
            let version = secret["version_info"].as_str().unwrap_or("").to_owned();
            if held.insert(version.clone()) {
                changes.push((started.elapsed(), version));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("Envoy took renewals at {changes:?}");
    assert!(changes.len() >= 2, "renewals in 7 s: {changes:?}");
    assert!(envoy.alive(), "Envoy was not restarted");
    connection
        .get_ok()
        .expect("the connection opened before the renewals still works");
    check_envoy_serves(&envoy, &agent);
    // Renewals keep coming every ~2 s, so the one served now may be newer
    // than the last one watched above; it must not be the first.
    let served_now = normalise_serial(&served_certificate_serial(envoy.tls));
    assert_ne!(
        served_now,
        normalise_serial(first.serial()),
        "handshakes use a renewed certificate"
    );
    let rejected = envoy.stat("sds.default.update_rejected").unwrap_or(0);
    let accepted = envoy.stat("sds.default.update_success").unwrap_or(0);
    eprintln!("sds.default.update_success={accepted} update_rejected={rejected}");
    assert_eq!(rejected, 0);
    assert!(accepted >= 3, "{accepted}");
}

#[test]
fn envoy_on_delta_sds_gets_the_certificate_and_its_renewal() {
    let fixture = CaFixture::start("bookinfo", "reviews");
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(&fixture, root.path(), Duration::from_secs(4));
    let envoy = Envoy::start("DELTA_GRPC", agent.socket());
    let first = agent
        .runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), agent.manager.ready()).await
        })
        .expect("a certificate");
    check_envoy_serves(&envoy, &agent);

    let renewed = eventually("a renewal", Duration::from_secs(6), || {
        agent
            .manager
            .current()
            .filter(|identity| identity.serial() != first.serial())
    });
    wait_for_envoy_to_hold(&envoy, &renewed);
    assert_eq!(envoy.stat("sds.default.update_rejected").unwrap_or(0), 0);
}
