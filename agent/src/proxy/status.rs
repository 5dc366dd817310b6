//! The agent's status port (Istio's 15020), beside `/healthz/*` and
//! `/metrics`: application probes rewritten by the injector
//! (`/app-health/<container>/livez|readyz|startupz`, from
//! `ISTIO_KUBE_APP_PROBERS`), Prometheus metrics of agent, Envoy and app merged
//! at `/stats/prometheus`, and `/quitquitquit`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Notify;

use super::admin::AdminClient;

/// One rewritten probe, as Kubernetes describes it (the parts the agent runs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub grpc: Option<serde_json::Value>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default)]
    pub path: String,
    pub port: ProbePort,
    pub host: Option<String>,
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TcpSocketAction {
    pub port: ProbePort,
    pub host: Option<String>,
}

/// Kubernetes lets a probe port be a number or a name; the injector resolves
/// names to numbers, so only numbers are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProbePort {
    Number(u16),
    Name(String),
}

/// Probes by the path kubelet now calls, e.g. `/app-health/reviews/readyz`.
pub type AppProbers = BTreeMap<String, AppProbe>;

/// Parses `ISTIO_KUBE_APP_PROBERS`, naming the probe that is wrong.
pub fn parse_app_probers(json: &str) -> Result<AppProbers, String> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        format!(
            "ISTIO_KUBE_APP_PROBERS: {}: {}",
            error.path(),
            error.inner()
        )
    })
}

/// Where the app exposes its own metrics (Istio's `ISTIO_PROMETHEUS_ANNOTATIONS`,
/// the pod's original `prometheus.io/*` annotations).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppMetrics {
    pub scrape: Option<String>,
    pub path: Option<String>,
    pub port: Option<String>,
}

#[derive(Clone)]
struct StatusState {
    probers: Arc<AppProbers>,
    http: reqwest::Client,
    envoy_admin: AdminClient,
    app_metrics: Option<Arc<AppMetrics>>,
    /// The agent's own admin address, known once its server is bound.
    own_metrics_url: Arc<OnceLock<String>>,
    quit: Arc<Notify>,
}

/// The routes, and the handles the agent completes once it runs: where its
/// own `/metrics` is, and the notification `/quitquitquit` sends.
pub struct StatusRoutes {
    pub router: Router,
    pub own_metrics_url: Arc<OnceLock<String>>,
    pub quit: Arc<Notify>,
}

pub fn routes(
    probers: AppProbers,
    app_metrics: Option<AppMetrics>,
    envoy_admin: AdminClient,
    http: reqwest::Client,
) -> StatusRoutes {
    let state = StatusState {
        probers: Arc::new(probers),
        http,
        envoy_admin,
        app_metrics: app_metrics
            .filter(|metrics| metrics.scrape.as_deref() == Some("true"))
            .map(Arc::new),
        own_metrics_url: Arc::default(),
        quit: Arc::default(),
    };
    let handles = (state.own_metrics_url.clone(), state.quit.clone());
    let router = Router::new()
        .route("/app-health/{container}/{probe}", get(app_health))
        .route("/stats/prometheus", get(merged_metrics))
        .route("/quitquitquit", post(quit))
        .with_state(state);
    StatusRoutes {
        router,
        own_metrics_url: handles.0,
        quit: handles.1,
    }
}

const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

async fn app_health(
    State(state): State<StatusState>,
    Path((container, probe)): Path<(String, String)>,
) -> impl IntoResponse {
    let key = format!("/app-health/{container}/{probe}");
    let Some(prober) = state.probers.get(&key) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no probe registered for {key}\n"),
        );
    };
    let timeout = prober
        .timeout_seconds
        .map_or(DEFAULT_PROBE_TIMEOUT, Duration::from_secs);
    let outcome = match (&prober.http_get, &prober.tcp_socket, &prober.grpc) {
        (Some(http), _, _) => probe_http(&state.http, http, timeout).await,
        (None, Some(tcp), _) => probe_tcp(tcp, timeout).await,
        (None, None, Some(_)) => Err("gRPC probes are not supported by this agent yet".into()),
        (None, None, None) => Err(format!("probe {key} has no action")),
    };
    match outcome {
        Ok(status) => (status, String::new()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

fn port_number(port: &ProbePort) -> Result<u16, String> {
    match port {
        ProbePort::Number(number) => Ok(*number),
        ProbePort::Name(name) => name
            .parse()
            .map_err(|_| format!("named probe port {name:?} was not resolved by the injector")),
    }
}

/// The app answers on loopback: the capture rules leave 127.0.0.1 alone, so
/// the probe reaches the app directly, as kubelet's would have.
async fn probe_http(
    http: &reqwest::Client,
    action: &HttpGetAction,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let scheme = action
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_lowercase();
    let host = action.host.as_deref().unwrap_or("127.0.0.1");
    let port = port_number(&action.port)?;
    let path = if action.path.starts_with('/') {
        action.path.clone()
    } else {
        format!("/{}", action.path)
    };
    let mut request = http
        .get(format!("{scheme}://{host}:{port}{path}"))
        .timeout(timeout);
    for header in &action.http_headers {
        request = request.header(&header.name, &header.value);
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    // Kubernetes counts 200-399 as success; answer with the app's own code.
    if status.is_success() || status.is_redirection() {
        Ok(StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK))
    } else {
        Err(format!("app answered {status}"))
    }
}

async fn probe_tcp(action: &TcpSocketAction, timeout: Duration) -> Result<StatusCode, String> {
    let host = action.host.as_deref().unwrap_or("127.0.0.1");
    let port = port_number(&action.port)?;
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(StatusCode::OK),
        Ok(Err(error)) => Err(format!("connecting to {host}:{port}: {error}")),
        Err(_) => Err(format!("connecting to {host}:{port} timed out")),
    }
}

/// Agent, Envoy and app metrics in one scrape; a source that does not answer
/// is left out rather than failing the whole page.
async fn merged_metrics(State(state): State<StatusState>) -> impl IntoResponse {
    let mut page = String::new();
    if let Some(url) = state.own_metrics_url.get() {
        page.push_str(&fetch_text(&state.http, url).await.unwrap_or_default());
    }
    match state.envoy_admin.get("/stats/prometheus").await {
        Ok((200, body)) => page.push_str(&body),
        Ok((status, _)) => tracing::debug!(status, "Envoy stats not available"),
        Err(error) => tracing::debug!(%error, "Envoy stats not available"),
    }
    if let Some(app) = &state.app_metrics {
        let port = app.port.as_deref().unwrap_or("80");
        let path = app.path.as_deref().unwrap_or("/metrics");
        let url = format!("http://127.0.0.1:{port}{path}");
        page.push_str(&fetch_text(&state.http, &url).await.unwrap_or_default());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
}

async fn fetch_text(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let mut text = response.text().await.ok()?;
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    Some(text)
}

async fn quit(State(state): State<StatusState>) -> impl IntoResponse {
    tracing::info!("/quitquitquit: stopping");
    state.quit.notify_one();
    "stopping\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istio_app_probers() {
        let probers = parse_app_probers(
            r#"{"/app-health/reviews/livez":{"httpGet":{"path":"/health","port":9080,"scheme":"HTTP","httpHeaders":[{"name":"x","value":"y"}]},"timeoutSeconds":3},
                "/app-health/reviews/readyz":{"tcpSocket":{"port":9080}}}"#,
        )
        .unwrap();
        let live = &probers["/app-health/reviews/livez"];
        assert_eq!(live.http_get.as_ref().unwrap().path, "/health");
        assert_eq!(live.timeout_seconds, Some(3));
        assert!(probers["/app-health/reviews/readyz"].tcp_socket.is_some());
        let error =
            parse_app_probers(r#"{"/app-health/a/livez":{"httpGet":{"port":[]}}}"#).unwrap_err();
        assert!(error.contains("httpGet"), "{error}");
    }
}
