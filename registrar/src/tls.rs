//! TLS with `--tls-cert`/`--tls-key`: the HTTPS listener (`--https`: the same routes as plain
//! HTTP, so browsers reach the web phone and SIP over secure WebSocket (WSS) without an Ingress
//! in front), and the acceptor of SIP over TLS (`--sip-tls`, see `tcp.rs`).
//!
//! Handshakes run in their own tasks (bounded by `HANDSHAKE_TIMEOUT`) and finished streams
//! reach the HTTP server through a bounded queue, so a slow or silent client never holds up the
//! others. The certificate chain and key are PEM files (what cert-manager and most CAs hand
//! out); a file that cannot be used stops the start with an error naming it, and a renewed
//! certificate is served without a restart (see [`crate::certificate`]).

pub use crate::certificate::CertError;
use crate::certificate::ReloadingCert;
use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A client has this long to finish its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server.
const READY_QUEUE: usize = 128;

/// A TLS acceptor for a PEM certificate chain and key; HTTP/1.1 only (WebSockets upgrade over
/// it).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, CertError> {
    let mut config = server_config(cert, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS acceptor for SIP over TLS (RFC 3261 §26.3.1; no ALPN) with the same files.
pub fn sip_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, CertError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(cert, key)?)))
}

/// A server configuration presenting the certificate of the files, renewed when they change
/// ([`ReloadingCert`]).
fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert, key, Arc::clone(&provider))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Mismatch(e.to_string()))
        .map(|builder| {
            builder
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(resolver))
        })
}

/// Accepted, handshaken TLS connections for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` until `shutdown`, handshaking with `acceptor` in tasks on `tasks`.
    pub fn spawn(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let handshakes = tasks.clone();
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended (shutdown): wait for the server's own graceful stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
