//! A config Envoy refuses (a regex RE2 cannot compile, which pilot passes on
//! unchecked until galley validates it) is NACKed: pilot shows Envoy's error
//! text in `/debug/syncz` and counts it, and the gateway keeps serving its
//! last good config.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::{
    backend::Backend,
    config_dir::ConfigDir,
    envoy::{Envoy, ProxyIdentity, XdsApi},
    eventually, free_port,
    http_client::HttpRequest,
    istio_yaml::{documents, gateway, service_entry, workload_entry},
    pilot::Pilot,
};

const ROUTES_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn virtual_service(uri_match: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - match:
    - uri:
        {uri_match}
    route:
    - destination:
        host: app.example.internal
"
    )
}

pub fn rejected_config_is_visible_and_last_good_config_keeps_serving(api: XdsApi) {
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
    config.write("vs.yaml", &virtual_service("prefix: /"));
    let pilot = Pilot::start(config.path());
    let envoy = Envoy::start(
        ProxyIdentity::ingress_gateway(&format!("nack-{api:?}").to_lowercase()),
        api,
        pilot.xds_addr.port(),
    );
    envoy.wait_for_listener(&format!("0.0.0.0_{port}"), Duration::from_secs(30));
    let gateway_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let served = || {
        HttpRequest::get("/hello")
            .send(gateway_addr)
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("v1"))
    };
    eventually(
        &format!("{api:?}: traffic through the gateway"),
        Duration::from_secs(10),
        served,
    );

    // Lookbehind is valid Istio YAML but not RE2: Envoy must refuse the routes.
    config.write("vs.yaml", &virtual_service("regex: \"(?<=a)b\""));
    let node = envoy.node_id();
    let nack = eventually(
        &format!("{api:?}: the RDS NACK in /debug/syncz"),
        Duration::from_secs(10),
        || {
            let status = pilot.sync_status(&node)?;
            let nack = status["types"][ROUTES_TYPE]["last_nack"].clone();
            (!nack.is_null()).then_some(nack)
        },
    );
    let error = nack["error"].as_str().unwrap_or_default();
    eprintln!("{api:?}: Envoy rejected the routes: {error}");
    assert!(
        !error.is_empty(),
        "{api:?}: Envoy's error text is kept: {nack}"
    );
    assert!(
        pilot
            .metrics()
            .value("pilot_total_xds_rejects", &[("type", "rds")])
            >= 1.0,
        "{api:?}: the reject is counted"
    );
    assert!(
        served().is_some(),
        "{api:?}: the gateway still serves its last accepted routes after the NACK"
    );
}
