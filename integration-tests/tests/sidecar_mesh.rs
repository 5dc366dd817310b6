//! A sidecar mesh without root (interception mode NONE): a client app calls
//! its sidecar's egress listener in plain HTTP; the client and server
//! sidecars speak mTLS with certificates from a real citadel; pilot's
//! VirtualService split and PeerAuthentication apply. Every workload has its
//! own loopback address (127.0.0.3x), as pods have their own IPs.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::agent::{Agent, AgentWorkload};
use integration_tests::backend::Backend;
use integration_tests::config_dir::ConfigDir;
use integration_tests::http_client::HttpRequest;
use integration_tests::pilot::Pilot;
use integration_tests::workload::CaFixture;
use integration_tests::{eventually, free_port};

const CLIENT_IP: &str = "127.0.0.30";
const SERVER_IPS: [&str; 2] = ["127.0.0.31", "127.0.0.32"];
const HOST: &str = "server.shop.svc.cluster.local";

/// Ports chosen per run: the service port (the client's egress listener
/// binds it), the servers' inbound port and their apps' port.
struct Ports {
    service: u16,
    inbound: u16,
    app: u16,
}

fn mesh_config(ports: &Ports, mtls_mode: &str) -> String {
    let Ports {
        service,
        inbound,
        app,
    } = ports;
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: server, namespace: shop }}
spec:
  hosts: [{HOST}]
  addresses: [10.10.0.5]
  location: MESH_INTERNAL
  ports: [{{ number: {service}, name: http, protocol: HTTP, targetPort: {inbound} }}]
  resolution: STATIC
  workloadSelector: {{ labels: {{ app: server }} }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: server-v1, namespace: shop }}
spec:
  address: {v1}
  serviceAccount: server
  labels: {{ app: server, version: v1, security.istio.io/tlsMode: istio }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: server-v2, namespace: shop }}
spec:
  address: {v2}
  serviceAccount: server
  labels: {{ app: server, version: v2, security.istio.io/tlsMode: istio }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: server, namespace: shop }}
spec:
  host: {HOST}
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: server, namespace: shop }}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - {{ destination: {{ host: {HOST}, subset: v1 }}, weight: 90 }}
    - {{ destination: {{ host: {HOST}, subset: v2 }}, weight: 10 }}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{ name: client, namespace: shop }}
spec:
  workloadSelector: {{ labels: {{ app: client }} }}
  egress:
  - port: {{ number: {service}, protocol: HTTP, name: http }}
    bind: {CLIENT_IP}
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{ name: server, namespace: shop }}
spec:
  workloadSelector: {{ labels: {{ app: server }} }}
  ingress:
  - port: {{ number: {inbound}, protocol: HTTP, name: http }}
    defaultEndpoint: 0.0.0.0:{app}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: shop }}
spec:
  mtls: {{ mode: {mtls_mode} }}
"#,
        v1 = SERVER_IPS[0],
        v2 = SERVER_IPS[1],
    )
}

#[allow(clippy::too_many_arguments)] // one call site, every value named there
fn start_agent(
    root: &std::path::Path,
    pod: &str,
    ip: &str,
    service_account: &str,
    labels: &str,
    pilot: &Pilot,
    ca: &CaFixture,
    extra_args: &[&str],
) -> Agent {
    let workload = AgentWorkload {
        pod,
        namespace: "shop",
        ip,
        service_account,
        labels,
    };
    let mut agent = Agent::start(&root.join(pod), &workload, pilot.xds_addr, ca, extra_args);
    agent.wait_ready(Duration::from_secs(60));
    agent
}

fn call_server(egress: SocketAddr) -> std::io::Result<(u16, String)> {
    HttpRequest::get("/")
        .header("host", HOST)
        .timeout(Duration::from_secs(5))
        .send(egress)
        .map(|response| (response.status, response.body))
}

/// One mesh at a time: each runs a citadel, a pilot and three Envoys, and
/// several at once on two cores starve each other into timeouts.
static ONE_MESH_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// citadel, pilot, the two server apps and three agents with their Envoys.
struct Mesh {
    ports: Ports,
    config: ConfigDir,
    pilot: Pilot,
    apps: [Backend; 2],
    servers: [Agent; 2],
    client: Agent,
    egress: SocketAddr,
    ca: CaFixture,
    _root: tempfile::TempDir,
    // Last, so it is released after everything above has stopped.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Mesh {
    fn start(agent_args: &[&str]) -> Mesh {
        // A test that failed while holding the lock poisons it; the next may
        // still run.
        let turn = ONE_MESH_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ports = Ports {
            service: free_port(),
            inbound: free_port(),
            app: free_port(),
        };
        let config = ConfigDir::new();
        config.write("mesh.yaml", &mesh_config(&ports, "STRICT"));
        let pilot = Pilot::start(config.path());
        let ca = CaFixture::start("shop", "client");
        let apps = [0, 1].map(|i| {
            let addr = format!("{}:{}", SERVER_IPS[i], ports.app).parse().unwrap();
            Backend::start_on(["v1", "v2"][i], addr)
        });
        let root = tempfile::tempdir().unwrap();
        let start = |pod: &str, ip: &str, sa: &str, labels: &str| {
            start_agent(root.path(), pod, ip, sa, labels, &pilot, &ca, agent_args)
        };
        let servers = [
            start(
                "server-v1",
                SERVER_IPS[0],
                "server",
                "app=server,version=v1",
            ),
            start(
                "server-v2",
                SERVER_IPS[1],
                "server",
                "app=server,version=v2",
            ),
        ];
        let client = start("client-1", CLIENT_IP, "client", "app=client,version=v1");
        let egress = format!("{CLIENT_IP}:{}", ports.service).parse().unwrap();
        Mesh {
            ports,
            config,
            pilot,
            apps,
            servers,
            client,
            egress,
            ca,
            _root: root,
            _turn: turn,
        }
    }
}

#[test]
fn plain_http_from_the_app_becomes_mtls_between_sidecars_and_follows_the_split() {
    let Mesh {
        ports,
        config,
        pilot,
        apps,
        servers: _servers,
        client: _client,
        egress,
        ca: _ca,
        _root,
        _turn,
    } = Mesh::start(&[]);

    eventually(
        "a first answer through both sidecars",
        Duration::from_secs(30),
        || {
            call_server(egress)
                .ok()
                .filter(|(status, _)| *status == 200)
        },
    );
    let (mut v1, mut v2, mut failed) = (0, 0, 0);
    for _ in 0..1000 {
        match call_server(egress) {
            Ok((200, body)) if body.contains("v1") => v1 += 1,
            Ok((200, body)) if body.contains("v2") => v2 += 1,
            _ => failed += 1,
        }
    }
    eprintln!("1000 requests through the client sidecar: v1 {v1}, v2 {v2}, failed {failed}");
    assert_eq!(failed, 0, "v1 {v1}, v2 {v2}");
    assert!(
        (850..=950).contains(&v1),
        "90/10 split within 5 points: v1 {v1}, v2 {v2}"
    );

    // The server app sees who called: the client's SPIFFE ID, proved by mTLS.
    let seen = apps[0].requests();
    let xfcc = seen
        .last()
        .and_then(|request| request.header("x-forwarded-client-cert"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/client"),
        "XFCC: {xfcc:?}"
    );

    // STRICT: plain text straight to a server sidecar is refused...
    let inbound: SocketAddr = format!("{}:{}", SERVER_IPS[0], ports.inbound)
        .parse()
        .unwrap();
    let served = matches!(call_server(inbound), Ok((200, _)));
    assert!(
        !served,
        "a plain-text caller without a sidecar must not be served under STRICT"
    );
    // ...and served once the namespace is PERMISSIVE.
    config.write("mesh.yaml", &mesh_config(&ports, "PERMISSIVE"));
    eventually(
        "PERMISSIVE to serve plain text",
        Duration::from_secs(20),
        || {
            call_server(inbound)
                .ok()
                .filter(|(status, _)| *status == 200)
        },
    );

    // pilot SIGKILLed and restarted under traffic: no request fails (the
    // data plane keeps its config), and a change made after the restart,
    // all traffic to v2, takes effect.
    let (xds_addr, http_addr) = (pilot.xds_addr, pilot.http_addr);
    let traffic = std::thread::spawn(move || {
        let mut failed = 0;
        for _ in 0..300 {
            if !matches!(call_server(egress), Ok((200, _))) {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        failed
    });
    std::thread::sleep(Duration::from_millis(300));
    pilot.kill();
    std::thread::sleep(Duration::from_millis(500));
    let pilot = Pilot::start_on(config.path(), xds_addr, http_addr);
    let failed = traffic.join().unwrap();
    assert_eq!(failed, 0, "requests failed while pilot was down and back");
    config.write(
        "mesh.yaml",
        &mesh_config(&ports, "PERMISSIVE")
            .replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    );
    eventually(
        "all traffic on v2 after pilot's restart",
        Duration::from_secs(20),
        || {
            let bodies: Vec<String> = (0..20)
                .filter_map(|_| call_server(egress).ok().map(|(_, body)| body))
                .collect();
            bodies.iter().all(|body| body.contains("v2")).then_some(())
        },
    );
    drop(pilot);
}

/// The serial of the workload certificate an Envoy holds (admin `/certs`).
fn held_serial(agent: &Agent) -> Option<String> {
    let (_, certs) = agent.envoy_admin("/certs").ok()?;
    let certs: serde_json::Value = serde_json::from_str(&certs).ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|entry| entry["cert_chain"].as_array().into_iter().flatten())
        .find(|cert| cert["subject_alt_names"].to_string().contains("spiffe://"))
        .and_then(|cert| cert["serial_number"].as_str().map(str::to_owned))
}

#[test]
fn certificates_rotate_under_steady_traffic_without_a_failed_request() {
    // An 8 s lifetime renews every ~4 s, Istio's half-life rule.
    let mesh = Mesh::start(&["--secret-ttl", "8s"]);
    eventually("a first answer", Duration::from_secs(30), || {
        call_server(mesh.egress)
            .ok()
            .filter(|(status, _)| *status == 200)
    });
    let started = std::time::Instant::now();
    let (mut serials, mut requests, mut failed) = (Vec::new(), 0, 0);
    while started.elapsed() < Duration::from_secs(14) {
        for _ in 0..10 {
            requests += 1;
            if !matches!(call_server(mesh.egress), Ok((200, _))) {
                failed += 1;
            }
        }
        if let Some(serial) = held_serial(&mesh.client)
            && serials.last() != Some(&serial)
        {
            serials.push(serial);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{requests} requests, {failed} failed, client certificates held: {}",
        serials.len()
    );
    assert_eq!(failed, 0, "out of {requests}");
    assert!(
        serials.len() >= 3,
        "at least two rotations reached Envoy: {serials:?}"
    );
}

/// `config` without the YAML documents that contain any of `markers`.
fn without(config: &str, markers: &[&str]) -> String {
    config
        .split("\n---\n")
        .filter(|document| !markers.iter().any(|marker| document.contains(marker)))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn taking_a_server_out_loses_no_client_request() {
    let mesh = Mesh::start(&[]);
    // No VirtualService: the client balances over both servers.
    let all = without(
        &mesh_config(&mesh.ports, "STRICT"),
        &["kind: VirtualService"],
    );
    mesh.config.write("mesh.yaml", &all);
    eventually("both servers answering", Duration::from_secs(30), || {
        let bodies: Vec<String> = (0..20)
            .filter_map(|_| call_server(mesh.egress).ok().map(|(_, body)| body))
            .collect();
        (bodies.iter().any(|b| b.contains("v1")) && bodies.iter().any(|b| b.contains("v2")))
            .then_some(())
    });

    let egress = mesh.egress;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let (mut served, mut failed) = (0, 0);
            // Steady traffic from before the removal until after the pod is gone.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match call_server(egress) {
                    Ok((200, _)) => served += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (served, failed)
        }
    });
    // As Kubernetes does it: the endpoint goes first, then the pod stops.
    std::thread::sleep(Duration::from_millis(200));
    mesh.config
        .write("mesh.yaml", &without(&all, &["name: server-v2,"]));
    eventually(
        "the client to stop sending to v2",
        Duration::from_secs(20),
        || {
            let (_, clusters) = mesh.client.envoy_admin("/clusters").ok()?;
            (!clusters.contains(&format!("{}:", SERVER_IPS[1]))).then_some(())
        },
    );
    let mut servers = mesh.servers;
    servers[1].process.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = servers[1].process.wait_for_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, failed) = traffic.join().unwrap();
    eprintln!("while server-v2 was taken out: {served} served, {failed} failed");
    assert_eq!(failed, 0, "{served} served");
}

#[test]
fn traffic_rides_out_a_citadel_outage_and_certificates_renew_when_it_is_back() {
    // A 12 s certificate renews at ~6 s, so whenever citadel goes away the
    // current one has at least ~6 s left: a 5 s outage makes renewals fail
    // and retry while it still holds.
    let mut mesh = Mesh::start(&["--secret-ttl", "12s"]);
    eventually("a first answer", Duration::from_secs(30), || {
        call_server(mesh.egress)
            .ok()
            .filter(|(status, _)| *status == 200)
    });
    let before = held_serial(&mesh.client).expect("the client's Envoy holds a certificate");
    mesh.ca.stop_citadel();
    let outage = std::time::Instant::now();
    let (mut requests, mut failed) = (0, 0);
    while outage.elapsed() < Duration::from_secs(5) {
        requests += 1;
        if !matches!(call_server(mesh.egress), Ok((200, _))) {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    mesh.ca.start_citadel("ca");
    let renewed = eventually(
        "a renewed certificate once citadel is back",
        Duration::from_secs(20),
        || held_serial(&mesh.client).filter(|serial| *serial != before),
    );
    eprintln!(
        "citadel away 5 s: {requests} requests, {failed} failed; certificate {before} -> {renewed}"
    );
    assert_eq!(failed, 0, "out of {requests} during the outage");
    assert!(matches!(call_server(mesh.egress), Ok((200, _))));
}
