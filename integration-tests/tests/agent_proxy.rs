//! `agent proxy sidecar` with a real Envoy and a real pilot, interception
//! mode NONE (no root): the agent writes the bootstrap, starts Envoy, carries
//! its xDS to pilot, answers readiness through Envoy's port, survives a
//! pilot SIGKILL without Envoy noticing, and stops cleanly on /quitquitquit.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::agent::{Agent, AgentWorkload};
use integration_tests::config_dir::ConfigDir;
use integration_tests::pilot::Pilot;
use integration_tests::workload::CaFixture;
use integration_tests::{eventually, http_client::HttpRequest};

const CATALOG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: catalog, namespace: shop }
spec:
  hosts: [catalog.shop.svc.cluster.local]
  addresses: [10.10.0.1]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.21 }]
"#;

const ORDERS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: orders, namespace: shop }
spec:
  hosts: [orders.shop.svc.cluster.local]
  addresses: [10.10.0.2]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.22 }]
"#;

fn client() -> AgentWorkload<'static> {
    AgentWorkload {
        pod: "client-1",
        namespace: "shop",
        ip: "127.0.0.20",
        service_account: "client",
        labels: "app=client,version=v1",
    }
}

fn has_cluster(agent: &Agent, cluster: &str) -> bool {
    agent
        .envoy_admin("/clusters")
        .is_ok_and(|(_, body)| body.contains(cluster))
}

#[test]
fn the_agent_runs_envoy_against_pilot_and_rides_out_a_pilot_restart() {
    let config = ConfigDir::new();
    config.write("catalog.yaml", CATALOG);
    let pilot = Pilot::start(config.path());
    let (xds_addr, http_addr): (SocketAddr, SocketAddr) = (pilot.xds_addr, pilot.http_addr);
    let ca = CaFixture::start("shop", "client");
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(root.path(), &client(), xds_addr, &ca, &[]);
    agent.wait_ready(Duration::from_secs(30));

    // The bootstrap says who the proxy is, and pilot sees it in sync.
    let bootstrap =
        std::fs::read_to_string(root.path().join("etc/istio/proxy/envoy-rev.json")).unwrap();
    assert!(bootstrap.contains(&agent.node_id), "{bootstrap}");
    eventually(
        "pilot to see the sidecar in sync",
        Duration::from_secs(10),
        || pilot.in_sync(&agent.node_id).then_some(()),
    );
    assert!(has_cluster(
        &agent,
        "outbound|80||catalog.shop.svc.cluster.local"
    ));
    assert_eq!(agent.envoy_stat("control_plane.connected_state"), Some(1));

    // pilot dies without closing anything; Envoy's stream (to the agent)
    // stays up, and a config change after the restart still arrives.
    pilot.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.envoy_stat("control_plane.connected_state"),
        Some(1),
        "Envoy's xDS stream is to the agent, which keeps it open"
    );
    config.write("orders.yaml", ORDERS);
    let pilot = Pilot::start_on(config.path(), xds_addr, http_addr);
    eventually(
        "the new cluster after pilot's restart",
        Duration::from_secs(20),
        || has_cluster(&agent, "outbound|80||orders.shop.svc.cluster.local").then_some(()),
    );
    assert_eq!(agent.envoy_stat("control_plane.connected_state"), Some(1));
    eventually(
        "pilot to see the sidecar again",
        Duration::from_secs(10),
        || pilot.in_sync(&agent.node_id).then_some(()),
    );

    // The status port merges the agent's and Envoy's metrics.
    let (code, metrics) = agent.status("/stats/prometheus").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("istio_build"), "agent metrics missing");
    assert!(
        metrics.contains("envoy_cluster_manager_active_clusters"),
        "Envoy metrics missing"
    );

    // /quitquitquit stops the agent, and Envoy with it.
    let status_addr: SocketAddr = ([127, 0, 0, 1], agent.ports.status).into();
    let response = HttpRequest::post("/quitquitquit")
        .send(status_addr)
        .unwrap();
    assert_eq!(response.status, 200);
    let exit = agent.process.wait_for_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}\n{}",
        agent.log_tail(30)
    );
    assert!(
        agent.envoy_admin("/ready").is_err(),
        "Envoy stopped with its agent"
    );
}

#[test]
fn envoy_is_restarted_when_it_dies() {
    let config = ConfigDir::new();
    config.write("catalog.yaml", CATALOG);
    let pilot = Pilot::start(config.path());
    let ca = CaFixture::start("shop", "client");
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(
        root.path(),
        &client(),
        pilot.xds_addr,
        &ca,
        &["--xds-mode", "sotw"],
    );
    agent.wait_ready(Duration::from_secs(30));
    let pid_before = agent.envoy_pid().expect("Envoy is running");

    // Kill Envoy behind the agent's back: the agent starts a new one.
    let pid = nix::unistd::Pid::from_raw(pid_before);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let pid_after = eventually("a new Envoy", Duration::from_secs(30), || {
        agent.envoy_pid().filter(|pid| *pid != pid_before)
    });
    assert_ne!(pid_after, pid_before);
    agent.wait_ready(Duration::from_secs(30));
    assert!(has_cluster(
        &agent,
        "outbound|80||catalog.shop.svc.cluster.local"
    ));
}

/// Limits the client's egress to the catalog host only.
const CLIENT_SIDECAR: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: client, namespace: shop }
spec:
  workloadSelector: { labels: { app: client } }
  egress:
  - hosts: ["./catalog.shop.svc.cluster.local"]
"#;

/// The names of the clusters pilot's `/debug/config_dump` shows for a proxy.
fn dumped_clusters(pilot: &Pilot, proxy_id: &str) -> Vec<String> {
    let dump = pilot.config_dump(proxy_id);
    dump["resources"]["cds"]
        .as_array()
        .map(|clusters| {
            clusters
                .iter()
                .filter_map(|cluster| cluster["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sidecar_resource_limiting_egress_cuts_the_clients_clusters() {
    let config = ConfigDir::new();
    config.write("catalog.yaml", CATALOG);
    config.write("orders.yaml", ORDERS);
    let pilot = Pilot::start(config.path());
    let ca = CaFixture::start("shop", "client");
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(root.path(), &client(), pilot.xds_addr, &ca, &[]);
    agent.wait_ready(Duration::from_secs(30));
    let catalog = "outbound|80||catalog.shop.svc.cluster.local";
    let orders = "outbound|80||orders.shop.svc.cluster.local";
    let before = dumped_clusters(&pilot, &agent.node_id);
    assert!(before.iter().any(|c| c == orders), "{before:?}");

    config.write("sidecar.yaml", CLIENT_SIDECAR);
    eventually(
        "Envoy to lose the orders cluster",
        Duration::from_secs(20),
        || (!has_cluster(&agent, orders)).then_some(()),
    );
    let after = dumped_clusters(&pilot, &agent.node_id);
    let outbound: Vec<&String> = after
        .iter()
        .filter(|c| c.starts_with("outbound|"))
        .collect();
    assert!(
        outbound
            .iter()
            .all(|c| c.ends_with("catalog.shop.svc.cluster.local")),
        "only the catalog host is left: {after:?}"
    );
    assert!(after.iter().any(|c| c == catalog), "{after:?}");
    for always in ["PassthroughCluster", "BlackHoleCluster"] {
        assert!(
            after.iter().any(|c| c == always),
            "{always} missing: {after:?}"
        );
    }
    assert!(has_cluster(&agent, catalog));
}
