//! A small client for Envoy's admin API on loopback: readiness, drain and
//! stats.

use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct AdminClient {
    pub port: u16,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(port: u16, http: reqwest::Client) -> Self {
        Self { port, http }
    }

    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path).await
    }

    pub async fn post(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("POST", path).await
    }

    async fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
        let response = self
            .http
            .request(method, url)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(std::io::Error::other)?;
        Ok((status, body))
    }

    /// Counters and gauges matching `filter` (a regex, as admin takes it).
    pub async fn stats(&self, filter: &str) -> std::io::Result<BTreeMap<String, u64>> {
        let (_, body) = self.get(&format!("/stats?filter={filter}")).await?;
        Ok(parse_stats(&body))
    }

    /// Open downstream connections over all listeners.
    pub async fn active_downstream_connections(&self) -> std::io::Result<u64> {
        let stats = self.stats("^server.total_connections$").await?;
        Ok(stats.get("server.total_connections").copied().unwrap_or(0))
    }

    /// Whether Envoy is live and has received listeners and clusters once,
    /// with the reason when it is not.
    pub async fn config_ready(&self) -> Result<(), String> {
        let stats = self
            .stats("^(server.state|listener_manager.workers_started|cluster_manager.cds.update_success|listener_manager.lds.update_success)$")
            .await
            .map_err(|error| format!("Envoy admin not answering: {error}"))?;
        let stat = |name: &str| stats.get(name).copied();
        if stat("server.state") != Some(0) {
            return Err("Envoy is not live yet".into());
        }
        if stat("cluster_manager.cds.update_success").unwrap_or(0) == 0 {
            return Err("Envoy has not received clusters (CDS) yet".into());
        }
        if stat("listener_manager.lds.update_success").unwrap_or(0) == 0 {
            return Err("Envoy has not received listeners (LDS) yet".into());
        }
        if stat("listener_manager.workers_started") != Some(1) {
            return Err("Envoy's workers have not started".into());
        }
        Ok(())
    }
}

/// Envoy's plain `name: value` stats lines; histograms are skipped.
fn parse_stats(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numeric_stats_only() {
        let stats = parse_stats("server.state: 0\ncluster.x.upstream_rq_time: P0(nan,1)\n");
        assert_eq!(stats.get("server.state"), Some(&0));
        assert_eq!(stats.len(), 1, "histograms are not numbers");
    }
}
