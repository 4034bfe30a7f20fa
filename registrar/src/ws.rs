//! SIP over WebSocket (RFC 7118): the `/ws` route of the HTTP server.
//!
//! A WebSocket is a flow like a TCP connection: its task announces it to the drive loop
//! (`Inbound::Connected`, with the sending half of a bounded queue), hands every frame over as
//! one SIP message (a frame carries exactly one message, so there is no stream framing), writes
//! what the loop queues for it as text frames, and reports its end (`Inbound::Closed`). Flow
//! numbers come from the same counter as TCP connections, so the two never collide.
//!
//! Rules at the upgrade (answered as problem documents, before any SIP):
//! - the client must offer the `sip` subprotocol (426 otherwise, naming it);
//! - when `--ws-allowed-origins` is set, the page's `Origin` must be one of them (403); by
//!   default any origin may connect, since digest authentication is what admits a phone.
//!
//! On the socket: a frame over 64 KiB closes it; a frame that is not a SIP message gets what a
//! UDP datagram would get (400 when it can be answered, otherwise it is dropped); a blank frame
//! (`CRLF CRLF`) is a keep-alive and is answered with `CRLF`. The server pings every
//! [`PING_EVERY`] so load balancers and Ingresses that cut idle connections keep it open, and a
//! socket that has been silent (no frame, no pong) for `IDLE_TIMEOUT` is closed.
//!
//! The flow's transport is `wss` when the connection came through the registrar's TLS port
//! ([`Secure`]) or through a proxy that says so (`X-Forwarded-Proto: https`, an Ingress
//! terminating TLS), `ws` otherwise.
//!
//! The flow's address (the source recorded for registrations and failures, and what a ban
//! applies to) is the TCP peer, or, when the peer is in `--trusted-proxies`, the client that
//! peer names in `X-Forwarded-For` or `Forwarded` ([`crate::forwarded`]). Once
//! `--trusted-proxies` is set, `X-Forwarded-Proto` is believed only from those proxies too.

use crate::core::Inbound;
use crate::forwarded::TrustedProxies;
use crate::http::{AppState, Problem};
use crate::tcp::SEND_QUEUE;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kubepbx_api::Transport;
use kubepbx_sip::flow::{Flow, FlowId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The largest frame (and message) accepted; a bigger one closes the socket.
pub const MAX_FRAME: usize = 64 * 1024;
/// How often the server pings an open socket.
pub const PING_EVERY: Duration = Duration::from_secs(25);
/// A socket that sends nothing (not even a pong) for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The SIP WebSocket subprotocol (RFC 7118 §4.1).
const SUBPROTOCOL: &str = "sip";

/// Marks requests that came through the registrar's own TLS listener (added as a request
/// extension by whoever serves it).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// What WebSocket flows need from the registrar: the way to the drive loop and flow numbers.
#[derive(Debug, Clone)]
pub(crate) struct StreamLink {
    pub inbound: mpsc::Sender<Inbound>,
    pub ids: Arc<AtomicU64>,
    pub shutdown: CancellationToken,
}

/// Who may open `/ws`, and whose forwarding headers name the client.
#[derive(Debug, Clone, Default)]
pub struct WsPolicy {
    /// Which page origins may connect (`--ws-allowed-origins`).
    pub origins: OriginPolicy,
    /// Which TCP peers are proxies whose headers are believed (`--trusted-proxies`).
    pub proxies: TrustedProxies,
}

/// Which page origins may open `/ws`.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Exact origins (`https://phone.example.com`); empty: any origin.
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// A policy admitting only `origins` (compared without a trailing `/`, case-insensitively);
    /// an empty list admits any origin.
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        OriginPolicy {
            allowed: origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// Whether a request with this `Origin` header (if any) may connect. Without an `Origin`
    /// (not a browser) the request is admitted only when any origin is.
    pub fn admits(&self, origin: Option<&str>) -> bool {
        if self.allowed.is_empty() {
            return true;
        }
        origin.is_some_and(|o| {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            self.allowed.contains(&o)
        })
    }
}

/// `GET /ws`: upgrades to a SIP WebSocket.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    secure: Option<axum::Extension<Secure>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offered {
        return Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "SIP over WebSocket needs the \"sip\" subprotocol (Sec-WebSocket-Protocol: sip)",
        )
        .into_response();
    }
    let policy = &state.ws_policy;
    let remote = policy.proxies.client(peer, &headers);
    if remote != peer {
        tracing::debug!(%remote, proxy = %peer, "SIP WebSocket through a trusted proxy");
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !policy.origins.admits(origin) {
        tracing::info!(%remote, origin = origin.unwrap_or("none"), "WebSocket from an origin not in --ws-allowed-origins refused");
        return Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "the page origin {} may not use this PBX; add it to --ws-allowed-origins",
                origin.unwrap_or("(none)")
            ),
        )
        .into_response();
    }
    let transport = if secure.is_some() || policy.proxies.forwarded_https(peer, &headers) {
        Transport::Wss
    } else {
        Transport::Ws
    };
    let link = state.registrar.streams.clone();
    ws.protocols([SUBPROTOCOL])
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| connection(socket, remote, transport, link))
}

async fn connection(
    mut socket: WebSocket,
    remote: SocketAddr,
    transport: Transport,
    link: StreamLink,
) {
    let id: FlowId = link.ids.fetch_add(1, Ordering::Relaxed);
    let flow = Flow {
        transport,
        id,
        remote,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
    if link
        .inbound
        .send(Inbound::Connected { id, tx })
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%remote, id, transport = transport.as_str(), "SIP WebSocket opened");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let why = loop {
        tokio::select! {
            () = link.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: Utf8Bytes::from_static("server shutting down"),
                }))).await;
                break "shutting down";
            }
            () = &mut idle => break "idle timeout",
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break "write error";
                }
            }
            out = rx.recv() => match out {
                Some(bytes) => {
                    if socket.send(frame(bytes)).await.is_err() {
                        break "write error";
                    }
                }
                // The drive loop dropped its sender: congested or the flow was closed.
                None => break "send queue closed",
            },
            frame = socket.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                let bytes = match frame {
                    None => break "closed by peer",
                    Some(Err(e)) => {
                        tracing::info!(%remote, error = %e, "closing SIP WebSocket");
                        break "read error or frame too large";
                    }
                    Some(Ok(Message::Text(text))) => Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(_))) => break "closed by peer",
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    if !bytes.is_empty() && socket.send(Message::Text(Utf8Bytes::from_static("\r\n"))).await.is_err() {
                        break "write error";
                    }
                    continue;
                }
                if link.inbound.send(crate::core::packet(flow, bytes)).await.is_err() {
                    break "shutting down";
                }
            }
        }
    };
    tracing::debug!(%remote, id, why, "SIP WebSocket closed");
    let _ = link.inbound.send(Inbound::Closed { id }).await;
}

/// A SIP message as a frame: text when it is UTF-8 (always, for what the registrar writes),
/// binary otherwise.
fn frame(bytes: Bytes) -> Message {
    // Cloning `Bytes` only counts a reference.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_by_default() {
        let p = OriginPolicy::new(Vec::new());
        assert!(p.admits(Some("https://evil.example")));
        assert!(p.admits(None));
    }

    #[test]
    fn listed_origins_only() {
        let p = OriginPolicy::new(["https://Phone.example.com/".to_owned(), " ".to_owned()]);
        assert!(p.admits(Some("https://phone.example.com")));
        assert!(!p.admits(Some("https://phone.example.com:8443")));
        assert!(!p.admits(Some("http://phone.example.com")));
        assert!(!p.admits(None));
    }
}
