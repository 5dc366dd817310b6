//! The real [`TokenReviewer`]: POSTs an `authentication.k8s.io/v1`
//! TokenReview to the Kubernetes API server, authenticated as citadel's own
//! service account, trusting only the cluster CA. Plain serde structs for
//! now; a later change brings the kube client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::token_review::{ReviewError, TokenReviewStatus, TokenReviewer};
use crate::http_client::{self, HttpClientError, MAX_RESPONSE_BYTES, TrustRoots, error_chain};

/// Where a pod finds its service-account token and the cluster CA.
pub const IN_CLUSTER_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const IN_CLUSTER_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

const TOKEN_REVIEWS_PATH: &str = "apis/authentication.k8s.io/v1/tokenreviews";
/// Bound on one review: a certificate request waits for it.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Why TokenReview is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiServerOrigin {
    Flag,
    InCluster,
}

impl fmt::Display for ApiServerOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--kube-api-server",
            Self::InCluster => "in cluster (KUBERNETES_SERVICE_HOST)",
        })
    }
}

/// The API server to ask: `flag` when given, else the one a pod's
/// environment names (`env` looks variables up; injected for tests), else
/// none, and TokenReview is off.
pub fn in_cluster_api_server(
    flag: Option<&reqwest::Url>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(reqwest::Url, ApiServerOrigin)>, String> {
    if let Some(url) = flag {
        if url.scheme() != "https" {
            return Err(format!(
                "--kube-api-server {url}: must be https (citadel sends its own token)"
            ));
        }
        return Ok(Some((url.clone(), ApiServerOrigin::Flag)));
    }
    let Some(host) = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    // An IPv6 service address needs brackets in a URL.
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let text = format!("https://{host}:{port}");
    reqwest::Url::parse(&text)
        .map(|url| Some((url, ApiServerOrigin::InCluster)))
        .map_err(|error| {
            format!("KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT give {text:?}: {error}")
        })
}

#[derive(Debug, Clone)]
pub struct KubeApiConfig {
    pub api_server: reqwest::Url,
    /// citadel's own service-account token; re-read for every review since
    /// projected tokens rotate.
    pub token_file: PathBuf,
    /// PEM CA certificates trusted for the API server, and only those.
    pub ca_file: PathBuf,
    pub timeout: Duration,
}

impl KubeApiConfig {
    pub fn new(api_server: reqwest::Url, token_file: PathBuf, ca_file: PathBuf) -> Self {
        Self {
            api_server,
            token_file,
            ca_file,
            timeout: REVIEW_TIMEOUT,
        }
    }
}

pub struct KubeApiTokenReviewer {
    endpoint: reqwest::Url,
    token_file: PathBuf,
    client: reqwest::Client,
}

impl KubeApiTokenReviewer {
    pub fn new(config: &KubeApiConfig) -> Result<Self, HttpClientError> {
        let roots = TrustRoots {
            native: false,
            ca_file: Some(&config.ca_file),
        };
        Ok(Self {
            endpoint: endpoint(&config.api_server),
            token_file: config.token_file.clone(),
            client: http_client::client(roots, config.timeout)?,
        })
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    async fn caller_token(&self) -> Result<String, ReviewError> {
        let failed = |reason: String| ReviewError::CallerToken {
            path: self.token_file.display().to_string(),
            reason,
        };
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(failed("the file is empty".into()));
        }
        Ok(token.to_owned())
    }
}

/// `<api-server>/apis/authentication.k8s.io/v1/tokenreviews`, keeping any
/// path prefix the API server URL has (e.g. behind a proxy).
fn endpoint(api_server: &reqwest::Url) -> reqwest::Url {
    let mut url = api_server.clone();
    let path = format!(
        "{}/{TOKEN_REVIEWS_PATH}",
        api_server.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenReviewRequest<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: TokenReviewSpec<'a>,
}

#[derive(Serialize)]
struct TokenReviewSpec<'a> {
    token: &'a str,
    audiences: &'a [String],
}

#[derive(Deserialize)]
struct TokenReviewResponse {
    status: Option<TokenReviewStatus>,
}

/// The API server's error body (a `Status` object); only its message.
#[derive(Deserialize)]
struct ApiStatus {
    #[serde(default)]
    message: String,
}

#[tonic::async_trait]
impl TokenReviewer for KubeApiTokenReviewer {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ReviewError> {
        let request = TokenReviewRequest {
            api_version: "authentication.k8s.io/v1",
            kind: "TokenReview",
            spec: TokenReviewSpec { token, audiences },
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(self.caller_token().await?)
            .json(&request)
            .send()
            .await
            .map_err(|error| ReviewError::Request {
                url: self.endpoint.to_string(),
                reason: error_chain(&error),
            })?;
        let status = response.status();
        let body = http_client::read_bounded(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(ReviewError::Response)?;
        if !status.is_success() {
            return Err(ReviewError::Status {
                status: status.as_u16(),
                reason: error_reason(&body),
            });
        }
        serde_json::from_slice::<TokenReviewResponse>(&body)
            .map_err(|error| ReviewError::Response(error.to_string()))?
            .status
            .ok_or_else(|| ReviewError::Response("no status".into()))
    }
}

/// The message of an API server error, or the start of whatever it sent.
fn error_reason(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiStatus>(body) {
        Ok(status) if !status.message.is_empty() => status.message,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(200) {
                Some((cut, _)) => format!("{}...", &text[..cut]),
                None if text.is_empty() => "(empty body)".into(),
                None => text.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn api_server_from_flag_or_pod_environment() {
        let flag: reqwest::Url = "https://api.example:6443".parse().unwrap();
        let (url, origin) = in_cluster_api_server(Some(&flag), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (url.as_str(), origin),
            ("https://api.example:6443/", ApiServerOrigin::Flag)
        );

        assert_eq!(in_cluster_api_server(None, env(&[])).unwrap(), None);

        let pod = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ]);
        let (url, origin) = in_cluster_api_server(None, pod).unwrap().unwrap();
        assert_eq!(
            (url.as_str(), origin),
            ("https://10.96.0.1/", ApiServerOrigin::InCluster)
        );

        let ipv6 = env(&[
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
        ]);
        let (url, _) = in_cluster_api_server(None, ipv6).unwrap().unwrap();
        assert_eq!(url.as_str(), "https://[fd00::1]:6443/");

        let plain: reqwest::Url = "http://api.example".parse().unwrap();
        let error = in_cluster_api_server(Some(&plain), env(&[])).unwrap_err();
        assert!(error.contains("must be https"), "{error}");
    }

    #[test]
    fn endpoint_keeps_a_path_prefix() {
        let url = |text: &str| endpoint(&text.parse().unwrap()).to_string();
        assert_eq!(
            url("https://10.96.0.1"),
            "https://10.96.0.1/apis/authentication.k8s.io/v1/tokenreviews"
        );
        assert_eq!(
            url("https://proxy.example/cluster-a/"),
            "https://proxy.example/cluster-a/apis/authentication.k8s.io/v1/tokenreviews"
        );
    }

    #[test]
    fn api_server_errors_keep_their_message() {
        let status = br#"{"kind":"Status","message":"tokenreviews is forbidden","reason":"Forbidden","code":403}"#;
        assert_eq!(error_reason(status), "tokenreviews is forbidden");
        assert_eq!(error_reason(b"  "), "(empty body)");
        assert!(error_reason("x".repeat(500).as_bytes()).ends_with("..."));
    }
}
