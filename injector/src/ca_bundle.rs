//! A `caBundle` given as a file of its own (`--webhook-ca-bundle`, e.g. the
//! `ca.crt` of a cert-manager Secret), for the injector's leader to write
//! into its webhook configuration. Without one, the bundle follows the
//! served certificate (`admission_webhook::tls::follow_ca_bundle`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// The file's PEM certificates; empty when unreadable or without one (the
/// patcher then waits rather than writing nothing).
fn read_bundle(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .ok()
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
        .unwrap_or_default()
}

/// Reads `path` now and every `poll` while the receiver is held.
pub fn watch_bundle_file(path: PathBuf, poll: Duration) -> watch::Receiver<String> {
    let (tx, rx) = watch::channel(read_bundle(&path));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = tx.closed() => return,
            }
            let bundle = read_bundle(&path);
            tx.send_if_modified(|current| {
                let changed = *current != bundle;
                if changed {
                    tracing::info!(file = %path.display(), empty = bundle.is_empty(), "webhook caBundle file changed");
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
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[tokio::test(start_paused = true)]
    async fn the_bundle_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let mut bundle = watch_bundle_file(ca.clone(), Duration::from_secs(5));
        assert_eq!(*bundle.borrow_and_update(), "", "nothing mounted yet");
        std::fs::write(&ca, cert("CA1")).unwrap();
        bundle.changed().await.unwrap();
        assert_eq!(*bundle.borrow_and_update(), cert("CA1"));
        std::fs::write(&ca, format!("{}{}", cert("CA2"), cert("ROOT"))).unwrap();
        bundle.changed().await.unwrap();
        assert_eq!(
            *bundle.borrow_and_update(),
            format!("{}{}", cert("CA2"), cert("ROOT")),
            "a file bundle is used whole"
        );
    }
}
