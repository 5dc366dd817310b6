//! Envoy's secret discovery service (SDS) over a Unix domain socket, where
//! Istio's agent serves it: `default` is the workload's certificate and key,
//! `ROOTCA` its trust bundle. Both come from a
//! [`workload_identity::CertificateManager`]; every renewal is pushed on the
//! open streams, so Envoy swaps certificates without dropping a connection.
//!
//! ```no_run
//! # async fn run(manager: workload_identity::CertificateManager,
//! #              registry: &mut prometheus_client::registry::Registry) -> Result<(), agent::sds::SdsError> {
//! use agent::sds::{SdsServer, socket_path};
//!
//! agent::sds::metrics::register(registry, manager.subscribe());
//! let server = SdsServer::start(socket_path("/".as_ref()), manager.subscribe())?;
//! // ... Envoy's bootstrap points cluster `sds-grpc` at server.socket_path() ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod delta;
pub mod metrics;
pub mod resources;
pub mod service;
pub mod sotw;
mod stream;

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use workload_identity::IdentityReceiver;

pub use resources::{ROOT_CA, SECRET_TYPE_URL, WORKLOAD_CERTIFICATE};
pub use service::SecretDiscovery;

/// Where Istio's agent serves SDS, relative to the root directory (`/` in a
/// pod; Envoy's bootstrap names the same path).
pub const WORKLOAD_SOCKET: &str = "var/run/secrets/workload-spiffe-uds/socket";

/// Only the agent and Envoy, its child under the same user, use the socket.
const SOCKET_MODE: u32 = 0o600;
const SOCKET_DIR_MODE: u32 = 0o750;

/// The SDS socket under `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(WORKLOAD_SOCKET)
}

#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    #[error("creating the SDS socket directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("another process serves the SDS socket {}; not taking it over", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; not removing it", .0.display())]
    NotASocket(PathBuf),
    #[error("removing the stale SDS socket {}: {source}", path.display())]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("listening on the SDS socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

/// The SDS server; stops (ending every stream) on [`SdsServer::shutdown`] or
/// when dropped.
#[derive(Debug)]
pub struct SdsServer {
    socket: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SdsServer {
    /// Binds `socket` (creating its directory, replacing a stale socket file)
    /// and serves `identities` on it, on the current Tokio runtime.
    pub fn start(socket: PathBuf, identities: IdentityReceiver) -> Result<Self, SdsError> {
        let listener = bind(&socket)?;
        let shutdown = CancellationToken::new();
        let service = SecretDiscovery::new(identities, shutdown.clone()).into_server();
        let stop = shutdown.clone();
        let span = tracing::info_span!("sds", socket = %socket.display());
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(listener),
                        stop.cancelled_owned(),
                    )
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "SDS server failed");
                }
            },
            span,
        ));
        tracing::info!(socket = %socket.display(), "serving SDS");
        Ok(Self {
            socket,
            shutdown,
            task: Some(task),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Ends every stream, waits for the server to stop and removes the
    /// socket file.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SdsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn bind(socket: &Path) -> Result<UnixListener, SdsError> {
    if let Some(dir) = socket.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(SOCKET_DIR_MODE)
            .create(dir)
            .map_err(|source| SdsError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    remove_stale(socket)?;
    let bind_error = |source| SdsError::Bind {
        path: socket.to_owned(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(bind_error)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(bind_error)?;
    Ok(listener)
}

/// A socket file left by an agent that died is removed; one that still
/// answers, or a file that is not a socket, is left alone.
fn remove_stale(socket: &Path) -> Result<(), SdsError> {
    let metadata = match std::fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SdsError::RemoveStale {
                path: socket.to_owned(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(SdsError::NotASocket(socket.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(SdsError::InUse(socket.to_owned()));
    }
    tracing::info!(socket = %socket.display(), "removing a stale SDS socket");
    std::fs::remove_file(socket).map_err(|source| SdsError::RemoveStale {
        path: socket.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
