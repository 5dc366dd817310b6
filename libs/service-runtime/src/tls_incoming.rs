//! Incoming TLS connections for a tonic server whose TLS settings change at
//! run time (a renewed certificate, a new trust bundle): each connection is
//! handshaken with the settings current when it arrives, and handed to the
//! server only once the handshake has completed. Peer certificates reach
//! tonic's `Request::peer_certs` through `TlsStream<TcpStream>`.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A client that has not finished its handshake by then is dropped, so slow
/// or stuck peers cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type TlsConnection = Result<TlsStream<TcpStream>, std::io::Error>;

/// Accepts on `listener` until the returned task is aborted. `acceptors`
/// holds the current settings; while it holds `None` (no certificate yet),
/// handshakes wait for one, up to the handshake timeout.
pub fn tls_incoming(
    listener: TcpListener,
    acceptors: watch::Receiver<Option<TlsAcceptor>>,
) -> (ReceiverStream<TlsConnection>, JoinHandle<()>) {
    let (connections, incoming) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(listener, acceptors, connections));
    (ReceiverStream::new(incoming), task)
}

async fn accept_loop(
    listener: TcpListener,
    acceptors: watch::Receiver<Option<TlsAcceptor>>,
    connections: mpsc::Sender<TlsConnection>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without it each small gRPC answer waits for the peer's delayed
        // ACK: about 40 ms per call, whatever the load.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
        }
        let mut acceptors = acceptors.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let handshake = async {
                let acceptor = acceptors
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| std::io::Error::other("no TLS settings"))?
                    .clone()
                    .expect("waited for Some");
                acceptor.accept(tcp).await
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    let _ = connections.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
