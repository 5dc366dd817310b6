//! pilot driving a real Envoy gateway (issue 3's acceptance): each test
//! starts its own pilot over a config directory, an Envoy whose bootstrap
//! points at it (proxy type `router`, labels `istio: ingressgateway`) and
//! HTTP backends registered through ServiceEntry + WorkloadEntry, then checks
//! real traffic. Every test runs once with state-of-the-world and once with
//! delta xDS.
//!
//! Needs the workspace binaries (`cargo build --bins`) and Envoy
//! (`scripts/install-tools.sh`). `TRIREME_TEST_LOGS=1` shows pilot's and
//! Envoy's output live; otherwise a failing test prints their log tails.

mod bookinfo;
mod mesh;
mod nack;
mod scenarios;

use std::time::Duration;

use integration_tests::{
    backend::Backend,
    config_dir::ConfigDir,
    envoy::{Envoy, ProxyIdentity, XdsApi},
    eventually, free_port,
    istio_yaml::{documents, gateway, service_entry, workload_entry},
    pilot::Pilot,
};

#[test]
fn gateway_traffic_sotw() {
    scenarios::run_all(XdsApi::Sotw);
}

#[test]
fn gateway_traffic_delta() {
    scenarios::run_all(XdsApi::Delta);
}

#[test]
fn nack_is_visible_and_last_good_config_serves_sotw() {
    nack::rejected_config_is_visible_and_last_good_config_keeps_serving(XdsApi::Sotw);
}

#[test]
fn nack_is_visible_and_last_good_config_serves_delta() {
    nack::rejected_config_is_visible_and_last_good_config_keeps_serving(XdsApi::Delta);
}

#[test]
fn bookinfo_samples_sotw() {
    bookinfo::serve_every_sample(XdsApi::Sotw);
}

#[test]
fn bookinfo_samples_delta() {
    bookinfo::serve_every_sample(XdsApi::Delta);
}

const TYPE_URLS: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
];

/// The proxy is visible in pilot's metrics and `/debug/syncz` with every
/// type ACKed, and `/debug/config_dump` shows what it was sent.
#[test]
fn proxy_status_is_visible_in_pilot() {
    for api in [XdsApi::Sotw, XdsApi::Delta] {
        let backend = Backend::start("v1");
        let config = ConfigDir::new();
        let port = free_port();
        config.write(
            "mesh.yaml",
            &documents(&[
                gateway("gw", "default", port),
                service_entry("app", "default", "app.example.internal", 80, "app"),
                workload_entry("app-v1", "default", "app", "v1", backend.port()),
            ]),
        );
        let pilot = Pilot::start(config.path());
        let envoy = Envoy::start(
            ProxyIdentity::ingress_gateway(&format!("status-{api:?}").to_lowercase()),
            api,
            pilot.xds_addr.port(),
        );
        envoy.wait_for_listener(&format!("0.0.0.0_{port}"), Duration::from_secs(30));
        assert!(
            envoy.connected_to_control_plane(),
            "{api:?}: Envoy's ADS stream is up"
        );

        let node = envoy.node_id();
        eventually(
            &format!("{api:?}: pilot_xds = 1"),
            Duration::from_secs(5),
            || (pilot.metrics().value("pilot_xds", &[]) == 1.0).then_some(()),
        );
        let status = eventually(
            &format!("{api:?}: /debug/syncz to show {node} with every type ACKed"),
            Duration::from_secs(10),
            || {
                let status = pilot.sync_status(&node)?;
                TYPE_URLS
                    .iter()
                    .all(|url| {
                        let t = &status["types"][*url];
                        !t["sent_version"].is_null()
                            && t["sent_version"] == t["acked_version"]
                            && t["last_nack"].is_null()
                    })
                    .then_some(status)
            },
        );
        for url in TYPE_URLS {
            assert!(
                status["types"][url]["sent_nonce"].is_string(),
                "{api:?}: syncz {url} has a sent_nonce: {status}"
            );
        }
        let dump = pilot.config_dump(&node);
        assert!(
            dump.to_string().contains(&format!("0.0.0.0_{port}")),
            "{api:?}: pilot's config_dump for {node} shows the gateway listener: {dump}"
        );
        assert!(
            envoy.rejections().is_empty(),
            "{api:?}: {:?}",
            envoy.rejections()
        );
    }
}
