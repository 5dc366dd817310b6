//! The flags every webhook takes: where it listens and which certificate
//! files it serves. Defaults are Istio's (port 15017, the `istio-dns`
//! certificate mount).

use std::path::PathBuf;
use std::time::Duration;

pub use service_runtime::args::OptionalAddr;
use service_runtime::args::{parse_duration, parse_optional_addr};

use crate::tls::CertFiles;

#[derive(Debug, Clone, clap::Args)]
pub struct HttpsArgs {
    /// Address of the webhook's HTTPS server, or `none` to run without it.
    #[arg(long = "webhook-addr", env = "TRIREME_WEBHOOK_ADDR", default_value = "0.0.0.0:15017", value_parser = parse_optional_addr)]
    pub addr: OptionalAddr,

    /// PEM certificate chain the webhook serves (leaf first). Read again
    /// whenever it changes.
    #[arg(
        long = "webhook-cert",
        env = "TRIREME_WEBHOOK_CERT",
        default_value = "/var/run/secrets/istio-dns/cert-chain.pem"
    )]
    pub cert: PathBuf,

    /// PEM private key of the webhook's certificate.
    #[arg(
        long = "webhook-key",
        env = "TRIREME_WEBHOOK_KEY",
        default_value = "/var/run/secrets/istio-dns/key.pem"
    )]
    pub key: PathBuf,

    /// How often the certificate files are checked for changes.
    #[arg(long = "webhook-cert-poll-interval", env = "TRIREME_WEBHOOK_CERT_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_poll_interval: Duration,
}

impl HttpsArgs {
    pub fn cert_files(&self) -> CertFiles {
        CertFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        https: HttpsArgs,
    }

    #[test]
    fn defaults_follow_istio() {
        let args = Args::try_parse_from(["webhook"]).unwrap().https;
        assert_eq!(args.addr.0, Some(([0, 0, 0, 0], 15017).into()));
        assert_eq!(
            args.cert,
            PathBuf::from("/var/run/secrets/istio-dns/cert-chain.pem")
        );
        assert_eq!(args.cert_poll_interval, Duration::from_secs(5));
        let args = Args::try_parse_from(["webhook", "--webhook-addr", "none"])
            .unwrap()
            .https;
        assert_eq!(args.addr.0, None);
        assert!(Args::try_parse_from(["webhook", "--webhook-addr", "15017"]).is_err());
    }
}
