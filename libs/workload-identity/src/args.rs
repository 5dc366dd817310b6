//! Command-line flags for a workload that holds a certificate, with Istio's
//! environment variable names as fallbacks where Istio has one. Flatten
//! [`IdentityArgs`] into a binary's own arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use service_runtime::args::parse_duration;

use crate::ca_client::CaClientConfig;
use crate::keys::{KeyType, RsaKeySize};
use crate::manager::ManagerConfig;
use crate::schedule::{BackoffPolicy, RotationPolicy};

/// The key algorithm flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA of `--workload-rsa-key-size` bits.
    Rsa,
}

#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// citadel's gRPC TLS address, host:port.
    #[arg(
        long,
        env = "CA_ADDR",
        default_value = "citadel.istio-system.svc:15012"
    )]
    pub ca_address: String,

    /// PEM file of the root(s) that vouch for citadel's serving certificate
    /// (Istio mounts the `istio-ca-root-cert` ConfigMap here). Re-read at
    /// every renewal; its roots join the workload's trust bundle.
    #[arg(
        long,
        env = "TRIREME_CA_ROOT_CERT",
        default_value = "./var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root_cert: PathBuf,

    /// Name to check citadel's certificate against, when the address's host
    /// is not in it (e.g. an IP address).
    #[arg(long, env = "TRIREME_CA_SERVER_NAME")]
    pub ca_server_name: Option<String>,

    /// The bearer token proving the workload's identity to citadel (a
    /// projected service-account token or a JWT); re-read at every request.
    #[arg(
        long,
        env = "TRIREME_TOKEN_PATH",
        default_value = "./var/run/secrets/tokens/istio-token"
    )]
    pub token_path: PathBuf,

    /// Requested certificate lifetime, e.g. `24h`, `1h30m`, `90s`.
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    pub secret_ttl: Duration,

    /// Share of the lifetime left when the certificate is renewed.
    #[arg(long, env = "SECRET_GRACE_PERIOD_RATIO", default_value_t = 0.5)]
    pub secret_grace_period_ratio: f64,

    /// Largest random shift of that share, either way.
    #[arg(long, env = "SECRET_GRACE_PERIOD_RATIO_JITTER", default_value_t = 0.01)]
    pub secret_grace_period_ratio_jitter: f64,

    /// Key algorithm of the workload certificate.
    #[arg(
        long,
        env = "TRIREME_WORKLOAD_KEY_TYPE",
        value_enum,
        default_value = "ecdsa"
    )]
    pub workload_key_type: KeyAlgorithm,

    /// RSA key size when `--workload-key-type rsa`: 2048, 3072 or 4096.
    #[arg(long, env = "WORKLOAD_RSA_KEY_SIZE", default_value = "2048")]
    pub workload_rsa_key_size: RsaKeySize,
}

impl IdentityArgs {
    pub fn ca_client_config(&self) -> CaClientConfig {
        CaClientConfig {
            address: self.ca_address.clone(),
            root_cert: self.ca_root_cert.clone(),
            token_path: self.token_path.clone(),
            server_name: self.ca_server_name.clone(),
            timeout: CaClientConfig::DEFAULT_TIMEOUT,
        }
    }

    pub fn manager_config(&self, spiffe_id: impl Into<String>) -> ManagerConfig {
        ManagerConfig {
            spiffe_id: spiffe_id.into(),
            key_type: match self.workload_key_type {
                KeyAlgorithm::Ecdsa => KeyType::EcdsaP256,
                KeyAlgorithm::Rsa => KeyType::Rsa(self.workload_rsa_key_size),
            },
            ttl: self.secret_ttl,
            rotation: RotationPolicy {
                grace_period_ratio: self.secret_grace_period_ratio,
                grace_period_ratio_jitter: self.secret_grace_period_ratio_jitter,
            },
            backoff: BackoffPolicy::DEFAULT,
        }
    }
}

/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        identity: IdentityArgs,
    }

    #[test]
    fn defaults_match_istio() {
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        let manager = cli
            .identity
            .manager_config("spiffe://cluster.local/ns/a/sa/b");
        assert_eq!(manager.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(manager.rotation, RotationPolicy::DEFAULT);
        assert_eq!(manager.key_type, KeyType::EcdsaP256);
        let client = cli.identity.ca_client_config();
        assert_eq!(client.address, "citadel.istio-system.svc:15012");
        assert_eq!(
            client.token_path,
            PathBuf::from("./var/run/secrets/tokens/istio-token")
        );
    }

    #[test]
    fn flags_choose_an_rsa_key_and_a_short_ttl() {
        let cli = Cli::try_parse_from([
            "agent",
            "--workload-key-type",
            "rsa",
            "--workload-rsa-key-size",
            "3072",
            "--secret-ttl",
            "1h",
            "--secret-grace-period-ratio",
            "0.25",
        ])
        .unwrap();
        let manager = cli
            .identity
            .manager_config("spiffe://cluster.local/ns/a/sa/b");
        assert_eq!(manager.key_type, KeyType::Rsa(RsaKeySize::Bits3072));
        assert_eq!(manager.ttl, Duration::from_secs(3600));
        assert_eq!(manager.rotation.grace_period_ratio, 0.25);
    }

    #[test]
    fn builds_the_workload_spiffe_id() {
        assert_eq!(
            spiffe_id("cluster.local", "bookinfo", "reviews"),
            "spiffe://cluster.local/ns/bookinfo/sa/reviews"
        );
    }
}
