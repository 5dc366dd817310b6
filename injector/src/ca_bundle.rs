//! The `caBundle` the injector's leader writes into its webhook
//! configuration: the CA that API servers should trust for the certificate
//! the webhook serves.
//!
//! Either a PEM file of its own (`--webhook-ca-bundle`, e.g. the `ca.crt` of
//! a cert-manager Secret), or, without one, the last certificate of the
//! served chain (`--webhook-cert`): the certificate itself when self-signed
//! (README's `openssl req -x509`), else the top of the chain.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// A PEM file used whole.
    File(PathBuf),
    /// The last certificate of the served chain file.
    TopOfChain(PathBuf),
}

impl BundleSource {
    /// The bundle now; empty when unreadable or without a certificate (the
    /// patcher then waits rather than writing nothing).
    pub fn read(&self) -> String {
        match self {
            Self::File(path) => std::fs::read_to_string(path)
                .ok()
                .filter(|pem| pem.contains(BEGIN))
                .unwrap_or_default(),
            Self::TopOfChain(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|pem| last_certificate(&pem))
                .unwrap_or_default(),
        }
    }
}

/// The last `CERTIFICATE` PEM block of `pem`, newline-terminated.
pub fn last_certificate(pem: &str) -> Option<String> {
    let start = pem.rfind(BEGIN)?;
    let end = start + pem[start..].find(END)? + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

/// Reads `source` now and every `poll` while the receiver is held.
pub fn watch_bundle(source: BundleSource, poll: Duration) -> watch::Receiver<String> {
    let (tx, rx) = watch::channel(source.read());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = tx.closed() => return,
            }
            let bundle = source.read();
            tx.send_if_modified(|current| {
                let changed = *current != bundle;
                if changed {
                    tracing::info!(empty = bundle.is_empty(), "webhook caBundle source changed");
                    *current = bundle;
                }
                changed
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(body: &str) -> String {
        format!("{BEGIN}\n{body}\n{END}\n")
    }

    #[test]
    fn top_of_chain_is_the_last_certificate() {
        let chain = format!("{}{}", cert("LEAF"), cert("INTERMEDIATE"));
        assert_eq!(last_certificate(&chain), Some(cert("INTERMEDIATE")));
        assert_eq!(last_certificate(&cert("SELF")), Some(cert("SELF")));
        assert_eq!(last_certificate("no pem here"), None);
        assert_eq!(last_certificate(&format!("{BEGIN}\ntruncated")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bundle_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let chain = dir.path().join("cert-chain.pem");
        let mut bundle = watch_bundle(
            BundleSource::TopOfChain(chain.clone()),
            Duration::from_secs(5),
        );
        assert_eq!(*bundle.borrow_and_update(), "", "nothing mounted yet");
        std::fs::write(&chain, format!("{}{}", cert("LEAF"), cert("CA1"))).unwrap();
        bundle.changed().await.unwrap();
        assert_eq!(*bundle.borrow_and_update(), cert("CA1"));
        std::fs::write(&chain, format!("{}{}", cert("LEAF2"), cert("CA2"))).unwrap();
        bundle.changed().await.unwrap();
        assert_eq!(*bundle.borrow_and_update(), cert("CA2"));

        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, cert("ROOT")).unwrap();
        assert_eq!(BundleSource::File(ca).read(), cert("ROOT"));
    }
}
