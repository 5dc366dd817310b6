//! A three-pod sidecar mesh with a real citadel, a real pilot and real
//! Envoys: a client app calls a service of two servers (v1 and v2) in
//! plain HTTP; the sidecars speak mTLS with citadel's certificates; pilot's
//! VirtualService split and PeerAuthentication apply.
//!
//! The same mesh runs two ways ([`Interception`]): without root, every pod
//! its own loopback address and the client calling its sidecar's egress
//! listener (mode NONE); or as root, every pod its own network namespace
//! with `agent init`'s iptables capture, the client calling the service's
//! virtual IP as an app that knows nothing of the mesh would. The
//! scenarios in [`scenarios`] run on either.

pub mod scenarios;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::agent::{Agent, AgentWorkload};
use crate::backend::Backend;
use crate::config_dir::ConfigDir;
use crate::free_port;
use crate::http_client::HttpRequest;
use crate::netns::PodNetwork;
use crate::pilot::Pilot;
use crate::workload::CaFixture;

/// How the client app's traffic reaches its sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interception {
    /// No capture: the app calls the sidecar's egress listener (no root).
    None,
    /// iptables REDIRECT in network namespaces (root).
    Redirect,
}

pub const HOST: &str = "server.shop.svc.cluster.local";
/// The service's virtual IP, what the client app dials under capture.
const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LOOPBACK_CLIENT: &str = "127.0.0.30";
const LOOPBACK_SERVERS: [&str; 2] = ["127.0.0.31", "127.0.0.32"];
const PODS: [&str; 4] = ["client", "server-v1", "server-v2", "outsider"];

/// The ports of one mesh: the service port the client dials and the
/// servers' port (the app's port under capture; the sidecar's inbound
/// listener, in front of an app port of its own, without).
#[derive(Debug, Clone, Copy)]
struct Ports {
    service: u16,
    inbound: u16,
    app: u16,
}

/// One plain-HTTP request as the client app (or an outsider) makes it:
/// cheap to clone into a traffic thread.
#[derive(Debug, Clone)]
pub struct Caller {
    netns: Option<String>,
    to: SocketAddr,
    host: Option<&'static str>,
}

impl Caller {
    /// GET `/`: the status and the body (which names the server).
    pub fn call(&self) -> std::io::Result<(u16, String)> {
        let (to, host) = (self.to, self.host);
        let request = move || {
            let mut request = HttpRequest::get("/").timeout(Duration::from_secs(5));
            if let Some(host) = host {
                request = request.header("host", host);
            }
            request
                .send(to)
                .map(|response| (response.status, response.body))
        };
        match &self.netns {
            Some(netns) => crate::netns::enter(netns, request),
            None => request(),
        }
    }

    /// Whether one call was served with 200.
    pub fn served(&self) -> bool {
        matches!(self.call(), Ok((200, _)))
    }
}

/// One mesh at a time: each runs a citadel, a pilot and three Envoys, and
/// several at once on two cores starve each other into timeouts.
static ONE_MESH_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// citadel, pilot, the two server apps and three agents with their Envoys.
/// Fields drop in order: processes before the namespaces they live in.
pub struct Mesh {
    interception: Interception,
    ports: Ports,
    pub config: ConfigDir,
    pub pilot: Option<Pilot>,
    pub apps: [Backend; 2],
    pub servers: [Agent; 2],
    pub client: Agent,
    pub ca: CaFixture,
    network: Option<PodNetwork>,
    _root: tempfile::TempDir,
    // Last, so it is released after everything above has stopped.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Mesh {
    /// Starts the mesh under STRICT mTLS, every agent with `agent_args`;
    /// returns once every sidecar is ready.
    pub fn start(interception: Interception, agent_args: &[&str]) -> Mesh {
        // A test that failed while holding the lock poisons it; the next may
        // still run.
        let turn = ONE_MESH_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let network = (interception == Interception::Redirect).then(|| PodNetwork::create(&PODS));
        let ports = match interception {
            Interception::None => Ports {
                service: free_port(),
                inbound: free_port(),
                app: free_port(),
            },
            Interception::Redirect => Ports {
                service: 80,
                inbound: 8080,
                app: 8080,
            },
        };
        let control_plane_ip = network
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, PodNetwork::gateway);
        let config = ConfigDir::new();
        let pilot = Pilot::start_on(
            config.path(),
            (control_plane_ip, free_port()).into(),
            (control_plane_ip, free_port()).into(),
        );
        let ca = CaFixture::start_on(control_plane_ip.into(), "shop", "client");
        let root = tempfile::tempdir().unwrap();
        let mut mesh = MeshParts {
            interception,
            ports,
            network,
            pilot,
            ca,
            root,
        };
        config.write("mesh.yaml", &mesh.config_yaml("STRICT"));
        let apps = [0, 1].map(|i| mesh.start_app(i));
        let servers = [
            mesh.start_agent("server-v1", "server", "app=server,version=v1", agent_args),
            mesh.start_agent("server-v2", "server", "app=server,version=v2", agent_args),
        ];
        let client = mesh.start_agent("client", "client", "app=client,version=v1", agent_args);
        let MeshParts {
            network,
            pilot,
            ca,
            root,
            ..
        } = mesh;
        Mesh {
            interception,
            ports,
            config,
            pilot: Some(pilot),
            apps,
            servers,
            client,
            ca,
            network,
            _root: root,
            _turn: turn,
        }
    }

    pub fn interception(&self) -> Interception {
        self.interception
    }

    /// The mesh's config with PeerAuthentication mode `mtls_mode`.
    pub fn config_yaml(&self, mtls_mode: &str) -> String {
        config_yaml(
            self.interception,
            &self.ports,
            &self.server_ips(),
            mtls_mode,
        )
    }

    fn server_ips(&self) -> [String; 2] {
        server_ips(self.network.as_ref())
    }

    /// The client app, calling the service in plain HTTP.
    pub fn client_app(&self) -> Caller {
        match &self.network {
            None => Caller {
                netns: None,
                to: format!("{LOOPBACK_CLIENT}:{}", self.ports.service)
                    .parse()
                    .unwrap(),
                host: Some(HOST),
            },
            Some(network) => Caller {
                netns: Some(network.pod("client").name().to_owned()),
                to: (SERVICE_VIP, self.ports.service).into(),
                host: None,
            },
        }
    }

    /// A caller without a sidecar, straight to server v1's port in plain
    /// text: from the host, or from a pod of its own under capture.
    pub fn outsider(&self) -> Caller {
        let server: Ipv4Addr = self.server_ips()[0].parse().unwrap();
        Caller {
            netns: self
                .network
                .as_ref()
                .map(|network| network.pod("outsider").name().to_owned()),
            to: (server, self.ports.inbound).into(),
            host: Some(HOST),
        }
    }

    /// pilot, which a scenario may have killed and replaced.
    pub fn pilot(&self) -> &Pilot {
        self.pilot.as_ref().expect("pilot is running")
    }

    /// The address server `index` (0: v1, 1: v2) has in the mesh.
    pub fn server_ip(&self, index: usize) -> String {
        self.server_ips()[index].clone()
    }
}

/// What [`Mesh::start`] has made before the workloads start.
struct MeshParts {
    interception: Interception,
    ports: Ports,
    network: Option<PodNetwork>,
    pilot: Pilot,
    ca: CaFixture,
    root: tempfile::TempDir,
}

impl MeshParts {
    fn config_yaml(&self, mtls_mode: &str) -> String {
        config_yaml(
            self.interception,
            &self.ports,
            &server_ips(self.network.as_ref()),
            mtls_mode,
        )
    }

    /// Server `index`'s app, answering with its version.
    fn start_app(&self, index: usize) -> Backend {
        let version = ["v1", "v2"][index];
        match &self.network {
            None => {
                let addr = format!("{}:{}", LOOPBACK_SERVERS[index], self.ports.app);
                Backend::start_on(version, addr.parse().unwrap())
            }
            Some(network) => {
                let pod = network.pod(PODS[index + 1]);
                Backend::start_in_netns(version, pod.name(), self.ports.app)
            }
        }
    }

    fn start_agent(
        &mut self,
        pod: &str,
        service_account: &str,
        labels: &str,
        extra_args: &[&str],
    ) -> Agent {
        let ip = match &self.network {
            Some(network) => network.ip(pod).to_string(),
            None if pod == "client" => LOOPBACK_CLIENT.to_owned(),
            None => LOOPBACK_SERVERS[usize::from(pod == "server-v2")].to_owned(),
        };
        let workload = AgentWorkload {
            pod,
            namespace: "shop",
            ip: &ip,
            service_account,
            labels,
        };
        let root = self.root.path().join(pod);
        let pilot_xds = self.pilot.xds_addr;
        let mut agent = match &self.network {
            None => Agent::start(&root, &workload, pilot_xds, &self.ca, extra_args),
            Some(network) => Agent::start_in_pod(
                network, pod, &root, &workload, pilot_xds, &self.ca, extra_args,
            ),
        };
        agent.wait_ready(Duration::from_secs(60));
        agent
    }
}

fn server_ips(network: Option<&PodNetwork>) -> [String; 2] {
    match network {
        None => LOOPBACK_SERVERS.map(str::to_owned),
        Some(network) => ["server-v1", "server-v2"].map(|pod| network.ip(pod).to_string()),
    }
}

/// The service (a ServiceEntry with a virtual IP, its two servers as
/// WorkloadEntries), v1/v2 subsets, a 90/10 split and the namespace's
/// PeerAuthentication. Without capture, Sidecars bind the client's egress
/// listener to its address and point the servers' inbound port at their
/// apps.
fn config_yaml(
    interception: Interception,
    ports: &Ports,
    server_ips: &[String; 2],
    mtls_mode: &str,
) -> String {
    let Ports {
        service,
        inbound,
        app,
    } = *ports;
    let [v1, v2] = server_ips;
    // Under capture the service also answers on the app's own port, so the
    // servers' sidecars have an outbound listener on the port their
    // inbound traffic arrives at (as bookinfo's 9080 does).
    let app_port_too = match interception {
        Interception::Redirect => {
            format!("\n  - {{ number: {app}, name: http-app, protocol: HTTP, targetPort: {app} }}")
        }
        Interception::None => String::new(),
    };
    let mut yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: server, namespace: shop }}
spec:
  hosts: [{HOST}]
  addresses: [{SERVICE_VIP}]
  location: MESH_INTERNAL
  ports:
  - {{ number: {service}, name: http, protocol: HTTP, targetPort: {inbound} }}{app_port_too}
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
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: shop }}
spec:
  mtls: {{ mode: {mtls_mode} }}
"#
    );
    if interception == Interception::None {
        yaml.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{ name: client, namespace: shop }}
spec:
  workloadSelector: {{ labels: {{ app: client }} }}
  egress:
  - port: {{ number: {service}, protocol: HTTP, name: http }}
    bind: {LOOPBACK_CLIENT}
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
"#
        ));
    }
    yaml
}

/// `config` without the YAML documents that contain any of `markers`.
pub fn without(config: &str, markers: &[&str]) -> String {
    config
        .split("\n---\n")
        .filter(|document| !markers.iter().any(|marker| document.contains(marker)))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The serial of the workload certificate an Envoy holds (admin `/certs`).
pub fn held_serial(agent: &Agent) -> Option<String> {
    let (_, certs) = agent.envoy_admin("/certs").ok()?;
    let certs: serde_json::Value = serde_json::from_str(&certs).ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|entry| entry["cert_chain"].as_array().into_iter().flatten())
        .find(|cert| cert["subject_alt_names"].to_string().contains("spiffe://"))
        .and_then(|cert| cert["serial_number"].as_str().map(str::to_owned))
}
