//! HTTPS for the webhook: the serving certificate and key come from files
//! (in Kubernetes, a mounted Secret), which are read again whenever their
//! contents change. A pair that cannot be used (unreadable, mismatched, half
//! written) leaves the previous one in service and is logged. Connections
//! come through service-runtime's shared TLS accept loop, so each one is
//! handshaken with the certificate current when it arrives.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use service_runtime::tls_incoming::{TlsConnection, tls_incoming};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Where the serving certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate being served: its leaf (what clients see) and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCert {
    pub leaf: CertificateDer<'static>,
    /// Hex, colon-separated, as `openssl x509 -serial` shows it.
    pub serial: String,
    /// What a webhook configuration's `caBundle` must hold for API servers
    /// to trust it (PEM): see [`ca_bundle`].
    pub ca_bundle: String,
}

/// The `caBundle` for a webhook serving `chain` (PEM, leaf first): the
/// certificates after the leaf (its issuers), or the leaf itself when it
/// is alone (self-signed). Empty without any certificate.
pub fn ca_bundle(chain: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let certificates: Vec<String> = chain
        .match_indices(BEGIN)
        .filter_map(|(start, _)| {
            let end = chain[start..].find(END)? + start + END.len();
            Some(format!("{}\n", &chain[start..end]))
        })
        .collect();
    match certificates.split_first() {
        Some((leaf, [])) => leaf.clone(),
        Some((_, issuers)) => issuers.concat(),
        None => String::new(),
    }
}

/// The `caBundle` of the certificate being served, as it changes (empty
/// until there is one): what a leader patches into its webhook
/// configuration, without reading the files again.
pub fn follow_ca_bundle(
    mut serving: watch::Receiver<Option<ServingCert>>,
) -> watch::Receiver<String> {
    let current = |serving: &Option<ServingCert>| {
        serving
            .as_ref()
            .map(|cert| cert.ca_bundle.clone())
            .unwrap_or_default()
    };
    let (publish, bundle) = watch::channel(current(&serving.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = serving.changed() => if changed.is_err() { return },
                () = publish.closed() => return,
            }
            let new = current(&serving.borrow_and_update());
            publish.send_if_modified(|bundle| {
                let changed = *bundle != new;
                *bundle = new;
                changed
            });
        }
    });
    bundle
}

/// Why a certificate and key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate: {reason}")]
    Chain { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: the leaf certificate cannot be parsed: {reason}")]
    Leaf { path: PathBuf, reason: String },
    #[error("certificate and key cannot be served together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS settings to serve with, as they change.
#[derive(Clone)]
pub struct TlsSettings {
    pub acceptors: watch::Receiver<Option<TlsAcceptor>>,
    pub serving: watch::Receiver<Option<ServingCert>>,
}

/// Server settings for the pair in `cert_pem`/`key_pem` (read from `files`,
/// named in errors): TLS 1.2 and 1.3, HTTP/1.1.
pub fn server_config(
    files: &CertFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(rustls::ServerConfig, ServingCert), CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertError::Chain {
            path: files.cert.clone(),
            reason: error.to_string(),
        })?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(CertError::Chain {
            path: files.cert.clone(),
            reason: "the file holds no certificate".into(),
        });
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| CertError::Key {
        path: files.key.clone(),
        reason: error.to_string(),
    })?;
    let serial = serial_of(&leaf).map_err(|reason| CertError::Leaf {
        path: files.cert.clone(),
        reason,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Checks that the key belongs to the leaf.
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ca_bundle = ca_bundle(&String::from_utf8_lossy(cert_pem));
    Ok((
        config,
        ServingCert {
            leaf,
            serial,
            ca_bundle,
        },
    ))
}

fn serial_of(leaf: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|error| error.to_string())?;
    Ok(cert.raw_serial_as_string())
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `files` now and again every `poll` while anyone holds the returned
/// settings. Contents are compared, not timestamps, so a Secret update
/// through a symlink swap is seen as well as a file rewritten in place.
pub fn watch_cert_files(files: CertFiles, poll: Duration) -> TlsSettings {
    let (publish_acceptor, acceptors) = watch::channel::<Option<TlsAcceptor>>(None);
    let (publish_serving, serving) = watch::channel::<Option<ServingCert>>(None);
    tokio::spawn(async move {
        let mut last_seen: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut missing_logged = false;
        loop {
            let contents = read(&files.cert).and_then(|cert| Ok((cert, read(&files.key)?)));
            match contents {
                Err(error) => {
                    // Files still to be mounted, or briefly gone in a swap.
                    if !missing_logged {
                        let serving = publish_serving.borrow().as_ref().map(|s| s.serial.clone());
                        tracing::error!(%error, ?serving, "webhook certificate files unreadable; serving the previous certificate, if any");
                        missing_logged = true;
                    }
                }
                Ok(contents) if last_seen.as_ref() != Some(&contents) => {
                    missing_logged = false;
                    match server_config(&files, &contents.0, &contents.1) {
                        Ok((config, cert)) => {
                            tracing::info!(serial = %cert.serial, cert = %files.cert.display(), "webhook serving certificate in use");
                            publish_acceptor
                                .send_replace(Some(TlsAcceptor::from(Arc::new(config))));
                            publish_serving.send_replace(Some(cert));
                        }
                        Err(error) => {
                            let serving =
                                publish_serving.borrow().as_ref().map(|s| s.serial.clone());
                            tracing::error!(%error, ?serving, "cannot serve the new webhook certificate; keeping the previous one");
                        }
                    }
                    last_seen = Some(contents);
                }
                Ok(_) => missing_logged = false,
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = publish_acceptor.closed() => return,
            }
        }
    });
    TlsSettings { acceptors, serving }
}

/// Whether the webhook has a certificate to serve with, for readiness.
pub fn describe_serving(serving: &Option<ServingCert>) -> String {
    match serving {
        Some(cert) => format!("serving certificate {}", cert.serial),
        None => "no usable serving certificate yet".to_string(),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    acceptors: watch::Receiver<Option<TlsAcceptor>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let (incoming, accept_task) = tls_incoming(listener, acceptors);
    let served = axum::serve(
        TlsConnections {
            incoming,
            local_addr,
        },
        router,
    )
    .with_graceful_shutdown(shutdown)
    .await;
    accept_task.abort();
    served
}

/// Handshaken connections, as axum's listener.
struct TlsConnections {
    incoming: ReceiverStream<TlsConnection>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsConnections {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (stream, peer);
                }
                Some(Err(error)) => tracing::debug!(%error, "TLS connection failed"),
                // The accept loop only ends when aborted, after serving.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn the_ca_bundle_is_the_issuers_or_a_self_signed_leaf() {
        assert_eq!(ca_bundle(&cert("leaf")), cert("leaf"));
        assert_eq!(
            ca_bundle(&format!("{}{}{}", cert("leaf"), cert("int"), cert("root"))),
            format!("{}{}", cert("int"), cert("root"))
        );
        assert_eq!(ca_bundle("no certificate"), "");
        assert_eq!(
            ca_bundle(&format!(
                "{}-----BEGIN CERTIFICATE-----\ntruncated",
                cert("leaf")
            )),
            cert("leaf")
        );
    }

    #[tokio::test]
    async fn the_followed_bundle_changes_with_the_served_certificate() {
        let serving = |bundle: &str| {
            Some(ServingCert {
                leaf: CertificateDer::from(vec![1]),
                serial: "01".into(),
                ca_bundle: bundle.into(),
            })
        };
        let (publish, receiver) = watch::channel(None);
        let mut bundle = follow_ca_bundle(receiver);
        assert_eq!(*bundle.borrow_and_update(), "", "nothing served yet");
        publish.send_replace(serving("CA1"));
        bundle.changed().await.unwrap();
        assert_eq!(*bundle.borrow_and_update(), "CA1");
        publish.send_replace(serving("CA2"));
        bundle.changed().await.unwrap();
        assert_eq!(*bundle.borrow_and_update(), "CA2");
    }
}
