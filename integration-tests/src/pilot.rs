//! pilot as a process: serving xDS from a watched config directory or from
//! galley's bucket on the bus, with its
//! HTTP endpoints (`/metrics`, `/debug/syncz`, `/debug/config_dump`) read
//! back for assertions.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::workload::CaFixture;
use crate::{Process, binary, eventually, free_port, http_client::HttpRequest, http_get, log_tail};

/// Where a pilot reads its config.
enum ConfigFrom<'a> {
    Dir(&'a Path),
    Bus(&'a str),
}

/// A running pilot; killed when dropped (printing its log tail if the test
/// is failing).
pub struct Pilot {
    pub xds_addr: SocketAddr,
    /// The mutual-TLS xDS port, when started with [`Pilot::start_with_tls`].
    pub xds_tls_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    process: Process,
    log_dir: tempfile::TempDir,
}

impl Pilot {
    /// Starts pilot on free loopback ports reading `config_dir`, and waits
    /// until `/healthz/ready` says the first config load is done.
    pub fn start(config_dir: &Path) -> Pilot {
        let xds_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self::start_on(config_dir, xds_addr, http_addr)
    }

    /// Like [`Pilot::start`] on given addresses: a restarted pilot comes
    /// back where its proxies expect it.
    pub fn start_on(config_dir: &Path, xds_addr: SocketAddr, http_addr: SocketAddr) -> Pilot {
        Self::spawn(ConfigFrom::Dir(config_dir), xds_addr, http_addr, None)
    }

    /// Starts pilot on free loopback ports reading galley's config bucket on
    /// the bus at `nats_url`; ready once the bucket's state has loaded.
    pub fn start_from_bus(nats_url: &str) -> Pilot {
        let xds_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self::spawn(ConfigFrom::Bus(nats_url), xds_addr, http_addr, None)
    }

    /// Like [`Pilot::start`], plus the mutual-TLS xDS port on a free port,
    /// with pilot's certificate (`istio-system/pilot`) from `ca`'s citadel;
    /// ready once that certificate has arrived.
    pub fn start_with_tls(config_dir: &Path, ca: &CaFixture) -> Pilot {
        let xds_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let tls_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self::spawn(
            ConfigFrom::Dir(config_dir),
            xds_addr,
            http_addr,
            Some((tls_addr, ca)),
        )
    }

    fn spawn(
        config: ConfigFrom<'_>,
        xds_addr: SocketAddr,
        http_addr: SocketAddr,
        tls: Option<(SocketAddr, &CaFixture)>,
    ) -> Pilot {
        let log_dir = tempfile::tempdir().expect("a temp dir for pilot's log");
        let log = log_dir.path().join("pilot.log");
        let mut command = Command::new(binary("pilot"));
        match config {
            ConfigFrom::Dir(dir) => command.arg("--config-dir").arg(dir),
            ConfigFrom::Bus(nats_url) => command.args(["--nats-url", nats_url]),
        };
        command
            .env_remove("TRIREME_CONFIG_DIR")
            .arg("--xds-addr")
            .arg(xds_addr.to_string())
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            );
        match tls {
            None => {
                // Tests run side by side: none may take the default 15012.
                command.args(["--xds-tls-addr", "none"]);
            }
            Some((tls_addr, ca)) => {
                // What a pilot pod has mounted: its own token and the root.
                let token = log_dir.path().join("istio-token");
                let root_cert = log_dir.path().join("root-cert.pem");
                std::fs::write(&token, ca.issuer.token("istio-system", "pilot")).unwrap();
                std::fs::write(&root_cert, ca.citadel.root_cert_pem()).unwrap();
                command
                    .args(["--xds-tls-addr", &tls_addr.to_string()])
                    .args([
                        "--ca-address",
                        &format!("localhost:{}", ca.citadel.grpc_addr.port()),
                    ])
                    .arg("--token-path")
                    .arg(&token)
                    .arg("--ca-root-cert")
                    .arg(&root_cert)
                    .args(["--pod-namespace", "istio-system"])
                    .args(["--service-account", "pilot"])
                    .args(["--trust-domain", "cluster.local"]);
            }
        }
        let mut process = Process::spawn_logged("pilot", command, &log);
        eventually("pilot /healthz/ready", Duration::from_secs(20), || {
            if let Some(status) = process.exited() {
                panic!("pilot exited with {status}:\n{}", log_tail(&log, 30));
            }
            http_get(http_addr, "/healthz/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        Pilot {
            xds_addr,
            xds_tls_addr: tls.map(|(addr, _)| addr),
            http_addr,
            process,
            log_dir,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        HttpRequest::get(path)
            .send(self.http_addr)
            .map(|response| (response.status, response.body))
            .unwrap_or_else(|e| panic!("pilot {path}: {e}"))
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "pilot /metrics: {body}");
        Metrics::parse(&body)
    }

    /// `/debug/syncz`: per proxy and type, what was sent and ACKed.
    pub fn syncz(&self) -> Value {
        let (status, body) = self.get("/debug/syncz");
        assert_eq!(status, 200, "pilot /debug/syncz: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("pilot /debug/syncz is not JSON ({e}): {body}"))
    }

    /// The `/debug/syncz` entry of `proxy_id`, if connected.
    pub fn sync_status(&self, proxy_id: &str) -> Option<Value> {
        self.syncz()
            .as_array()?
            .iter()
            .find(|entry| entry["proxy"] == proxy_id)
            .cloned()
    }

    /// Whether every type sent to `proxy_id` has been ACKed at the version
    /// sent (and at least one type was sent).
    pub fn in_sync(&self, proxy_id: &str) -> bool {
        let Some(status) = self.sync_status(proxy_id) else {
            return false;
        };
        let Some(types) = status["types"].as_object() else {
            return false;
        };
        !types.is_empty()
            && types
                .values()
                .all(|t| !t["sent_version"].is_null() && t["sent_version"] == t["acked_version"])
    }

    pub fn config_dump(&self, proxy_id: &str) -> Value {
        let (status, body) = self.get(&format!("/debug/config_dump?proxyID={proxy_id}"));
        assert_eq!(status, 200, "pilot config_dump: {body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_dir.path().join("pilot.log"), lines)
    }

    /// SIGKILL: pilot gets no chance to close its streams.
    pub fn kill(mut self) {
        self.process.kill();
    }
}

impl Drop for Pilot {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("--- pilot log tail ---\n{}", self.log_tail(60));
        }
    }
}

/// One scrape of Prometheus text.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// Whether a series called `name` (or `name_total`, as OpenMetrics names
    /// counters) exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| same_metric(&s.name, name))
    }

    /// Sum of the series called `name` (or `name_total`) whose labels include
    /// every pair of `labels`; 0 when none exists.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| same_metric(&s.name, name))
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|actual| actual == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// All series names, for failure messages.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.samples.iter().map(|s| s.name.clone()).collect();
        names.dedup();
        names
    }
}

fn same_metric(series: &str, name: &str) -> bool {
    series == name || series.strip_suffix("_total") == Some(name)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, rest) = if line.contains('{') {
        let close = line.rfind('}')?;
        (&line[..close + 1], &line[close + 1..])
    } else {
        line.split_once(' ')?
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_and_openmetrics_text() {
        let metrics = Metrics::parse(
            "# HELP pilot_xds_pushes Pushes.\n\
             # TYPE pilot_xds_pushes counter\n\
             pilot_xds_pushes_total{type=\"eds\"} 3\n\
             pilot_xds_pushes_total{type=\"cds\"} 2\n\
             pilot_xds 1\n\
             pilot_total_xds_rejects 0\n\
             odd{a=\"x,\\\"y\",b=\"z\"} 1.5 1700000000\n",
        );
        assert_eq!(metrics.value("pilot_xds_pushes", &[("type", "eds")]), 3.0);
        assert_eq!(metrics.value("pilot_xds_pushes", &[]), 5.0);
        assert_eq!(metrics.value("pilot_xds", &[]), 1.0);
        assert!(metrics.has("pilot_total_xds_rejects"));
        assert!(!metrics.has("pilot_xds_lds_reject"));
        assert_eq!(metrics.value("odd", &[("a", "x,\"y"), ("b", "z")]), 1.5);
    }
}
