//! TCP and TLS driver: accepts connections, cuts each byte stream into SIP messages and
//! keep-alives, and writes what the drive loop sends back on the same connection.
//!
//! SIP over TLS (`--sip-tls`) is the same stream once the handshake is done; handshakes run in
//! their own tasks, bounded by a timeout, so a silent client never holds up the accept loop.
//!
//! Each connection is a flow with its own number (from a counter shared with WebSockets). Its reader task announces it to the drive
//! loop ([`Inbound::Connected`], with the sending half of a bounded queue that a writer task
//! drains) and reports its end ([`Inbound::Closed`]). Keep-alive pings (RFC 5626 §3.5.1) are
//! answered here without bothering the drive loop. A stream that can no longer be delimited
//! (a message over 64 KiB, an unreadable `Content-Length`) is closed.

use crate::core::Inbound;
use bytes::Bytes;
use kubepbx_api::Transport;
use kubepbx_sip::flow::{Flow, FlowId};
use kubepbx_sip::framing::{Frame, PONG, StreamDecoder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Messages queued for one connection before it counts as congested.
pub(crate) const SEND_QUEUE: usize = 256;
/// A connection that sends nothing (not even a keep-alive) for this long is closed. Phones
/// re-register or ping well within it; it only reaps dead peers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Accepts connections until `shutdown`.
pub(crate) async fn run(
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    ids: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, remote)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                tasks.spawn(connection(
                    stream,
                    Flow {
                        transport: Transport::Tcp,
                        id,
                        remote,
                    },
                    inbound.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a SIP TCP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts SIP over TLS connections until `shutdown`; each is a flow once its handshake is
/// done.
pub(crate) async fn run_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    inbound: mpsc::Sender<Inbound>,
    ids: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a SIP TLS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (inbound, ids, shutdown) = (inbound.clone(), Arc::clone(&ids), shutdown.clone());
        tasks.spawn(async move {
            let handshake =
                tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "SIP TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "SIP TLS handshake timed out");
                        return;
                    }
                },
            };
            let flow = Flow {
                transport: Transport::Tls,
                id: ids.fetch_add(1, Ordering::Relaxed),
                remote,
            };
            connection(tls, flow, inbound, shutdown).await;
        });
    }
}

async fn connection<S>(
    stream: S,
    flow: Flow,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (id, remote): (FlowId, SocketAddr) = (flow.id, flow.remote);
    let transport = flow.transport.as_str();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
    // Only the drive loop holds a strong sender: when it drops it (congestion), the writer
    // sees the queue end and the connection closes. Pongs go through a weak one.
    let pongs = tx.downgrade();
    if inbound.send(Inbound::Connected { id, tx }).await.is_err() {
        return;
    }
    tracing::debug!(%remote, id, transport, "SIP stream connection opened");
    let write = async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let read = async {
        let mut decoder = StreamDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut buf)).await {
                Err(_) => return "idle timeout",
                Ok(Err(_)) => return "read error",
                Ok(Ok(0)) => return "closed by peer",
                Ok(Ok(n)) => n,
            };
            decoder.extend(&buf[..n]);
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(Frame::Message(bytes))) => {
                        if inbound
                            .send(crate::core::packet(flow, bytes))
                            .await
                            .is_err()
                        {
                            return "shutting down";
                        }
                    }
                    Ok(Some(Frame::Ping)) => {
                        let sent = pongs
                            .upgrade()
                            .is_some_and(|tx| tx.try_send(Bytes::from_static(PONG)).is_ok());
                        if !sent {
                            return "send queue full or closed";
                        }
                    }
                    Ok(Some(Frame::Pong)) => {}
                    Err(e) => {
                        tracing::info!(%remote, transport, error = %e, "closing SIP stream connection");
                        return "framing error";
                    }
                }
            }
        }
    };
    let why = tokio::select! {
        _ = shutdown.cancelled() => "shutting down",
        why = read => why,
        // The drive loop dropped its sender (congested) and the queue drained.
        () = write => "write side closed",
    };
    tracing::debug!(%remote, id, transport, why, "SIP stream connection closed");
    let _ = inbound.send(Inbound::Closed { id }).await;
}
