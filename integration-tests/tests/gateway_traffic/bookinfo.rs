//! Istio's bookinfo networking samples, served one at a time to an Envoy
//! gateway: Envoy must accept every update and pilot must count no reject.
//!
//! The samples are read unchanged except for the two Gateway listener ports
//! (8080 and 80), moved to free ports so both xDS flavours can run at once.

use std::{path::PathBuf, time::Duration};

use integration_tests::{
    backend::Backend,
    config_dir::ConfigDir,
    envoy::{Envoy, ProxyIdentity, XdsApi},
    eventually, free_port,
    http_client::HttpRequest,
    istio_yaml::{documents, service_entry, workload_entry},
    pilot::Pilot,
    workspace_root,
};

const BASE_GATEWAY: &str = "bookinfo-gateway.yaml";
const BASE_RULES: &str = "destination-rule-all.yaml";
const SAMPLE_FILE: &str = "sample.yaml";

fn fixtures() -> PathBuf {
    workspace_root().join("libs/mesh-config/tests/fixtures/istio-bookinfo")
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `text` with the Gateway server port `from` changed to `to` (only lines
/// that are exactly `number: <from>`, so destination ports stay).
fn move_gateway_port(text: &str, from: u16, to: u16) -> String {
    let from = format!("number: {from}");
    text.lines()
        .map(|line| {
            if line.trim() == from {
                line.replace(&from, &format!("number: {to}"))
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The bookinfo services the samples name, as Kubernetes would have them
/// (`<name>.default.svc.cluster.local:9080`), plus cert-manager's solver;
/// productpage has one real endpoint.
fn services(productpage_port: u16) -> String {
    let mut docs = Vec::new();
    for app in ["productpage", "reviews", "ratings", "details"] {
        let host = format!("{app}.default.svc.cluster.local");
        docs.push(service_entry(app, "default", &host, 9080, app));
    }
    docs.push(workload_entry(
        "productpage-v1",
        "default",
        "productpage",
        "v1",
        productpage_port,
    ));
    docs.push(service_entry(
        "cert-manager-resolver",
        "istio-system",
        "cert-manager-resolver.istio-system.svc.cluster.local",
        8089,
        "cert-manager-resolver",
    ));
    documents(&docs)
}

fn sample_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("the bookinfo fixtures")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != BASE_GATEWAY && name != BASE_RULES)
        .collect();
    names.sort();
    names
}

struct Bookinfo {
    envoy: Envoy,
    pilot: Pilot,
    config: ConfigDir,
}

impl Bookinfo {
    /// Pushes pilot started, whatever triggered them.
    fn push_triggers(&self) -> f64 {
        self.pilot.metrics().value("pilot_push_triggers", &[])
    }

    fn pushes(&self) -> f64 {
        self.pilot.metrics().value("pilot_xds_pushes", &[])
    }

    /// Waits for pilot to start a push for the change just written (it
    /// reads the directory within about a second) and then to stop pushing.
    /// Envoy rejects an update as soon as it receives it, so its stats are
    /// final by then even if a cluster still warms.
    fn settle(&self, triggers_before: f64) {
        let triggered = eventually_or_not(Duration::from_secs(3), || {
            self.push_triggers() > triggers_before
        });
        assert!(
            triggered,
            "pilot started no push within 3s of a config change"
        );
        eventually("pilot to stop pushing", Duration::from_secs(15), || {
            let before = self.pushes();
            std::thread::sleep(Duration::from_millis(500));
            (self.pushes() == before).then_some(())
        });
    }

    /// What was rejected so far, by whom; empty when nothing was.
    fn rejections(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .envoy
            .rejections()
            .into_iter()
            .map(|(stat, value)| format!("Envoy {stat} = {value}"))
            .collect();
        let metrics = self.pilot.metrics();
        if !metrics.has("pilot_total_xds_rejects") {
            found.push("pilot exports no pilot_total_xds_rejects".into());
        }
        let rejects = metrics.value("pilot_total_xds_rejects", &[]);
        if rejects > 0.0 {
            found.push(format!("pilot_total_xds_rejects = {rejects}"));
        }
        found
    }

    /// The NACK texts pilot recorded for this proxy, if any.
    fn nacks(&self) -> Vec<String> {
        let Some(status) = self.pilot.sync_status(&self.envoy.node_id()) else {
            return Vec::new();
        };
        status["types"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, t)| !t["last_nack"].is_null())
            .map(|(type_url, t)| format!("{type_url}: {}", t["last_nack"]))
            .collect()
    }
}

/// Polls `check` every 50 ms for up to `limit`; whether it ever held.
fn eventually_or_not(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn serve_every_sample(api: XdsApi) {
    let productpage = Backend::start("productpage");
    let bookinfo_port = free_port();
    let certmanager_port = free_port();
    let config = ConfigDir::new();
    config.write("services.yaml", &services(productpage.port()));
    config.write(
        BASE_GATEWAY,
        &move_gateway_port(&read_fixture(BASE_GATEWAY), 8080, bookinfo_port),
    );
    config.write(BASE_RULES, &read_fixture(BASE_RULES));
    let pilot = Pilot::start(config.path());
    let pod = match api {
        XdsApi::Sotw => "bookinfo-gateway-sotw",
        XdsApi::Delta => "bookinfo-gateway-delta",
    };
    let envoy = Envoy::start(
        ProxyIdentity::ingress_gateway(pod),
        api,
        pilot.xds_addr.port(),
    );
    let bookinfo = Bookinfo {
        envoy,
        pilot,
        config,
    };
    bookinfo
        .envoy
        .wait_for_listener(&format!("0.0.0.0_{bookinfo_port}"), Duration::from_secs(30));
    bookinfo.envoy.wait_live(Duration::from_secs(20));
    eventually(
        "bookinfo's gateway to route /productpage",
        Duration::from_secs(10),
        || {
            HttpRequest::get("/productpage")
                .send(([127, 0, 0, 1], bookinfo_port).into())
                .ok()
                .filter(|r| r.status == 200 && r.body == "productpage")
        },
    );

    let mut failures = Vec::new();
    let mut check = |step: &str| {
        let rejections = bookinfo.rejections();
        if !rejections.is_empty() {
            failures.push(format!(
                "{step}: {rejections:?} (NACKs: {:?})",
                bookinfo.nacks()
            ));
        }
    };
    check("gateway + destination-rule-all");

    for sample in sample_names() {
        let mut text = read_fixture(&sample);
        if sample == "certmanager-gateway.yaml" {
            text = move_gateway_port(&text, 80, certmanager_port);
        }
        // The destination-rule samples redefine the rules of
        // destination-rule-all (same names): serve them instead of it.
        let replaces_rules = sample.starts_with("destination-rule");
        let triggers = bookinfo.push_triggers();
        if replaces_rules {
            bookinfo.config.remove(BASE_RULES);
        }
        bookinfo.config.write(SAMPLE_FILE, &text);
        bookinfo.settle(triggers);
        if sample == "certmanager-gateway.yaml" {
            bookinfo.envoy.wait_for_listener(
                &format!("0.0.0.0_{certmanager_port}"),
                Duration::from_secs(10),
            );
        }
        check(&sample);
        eprintln!("[{api:?}] bookinfo sample {sample} served");
        let triggers = bookinfo.push_triggers();
        bookinfo.config.remove(SAMPLE_FILE);
        if replaces_rules {
            bookinfo.config.write(BASE_RULES, &read_fixture(BASE_RULES));
        }
        bookinfo.settle(triggers);
    }
    check("after every sample");
    let response = HttpRequest::get("/productpage")
        .send(([127, 0, 0, 1], bookinfo_port).into())
        .expect("the gateway still answers");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "productpage")
    );
    assert!(
        failures.is_empty(),
        "rejections over {api:?} xDS:\n{}",
        failures.join("\n")
    );
}
