//! UDP driver: reads datagrams from the SIP socket and queues them for the drive loop.
//!
//! Sending happens in the drive loop itself (on the same socket, without waiting: a response
//! the socket's send buffer has no room for is dropped and counted, like one the network
//! loses, and the phone's retransmission gets it again), so this task only reads. The socket
//! is registered for reading only ([`Socket`]): registered for writing too, it would wake a
//! parked runtime worker after every datagram sent.
//! The queue is bounded: when the drive loop falls behind, this task waits and the kernel's
//! socket buffer absorbs (and, beyond it, drops) the excess — the same overload behaviour as
//! any UDP server, without unbounded memory.

use crate::core::Inbound;
use bytes::Bytes;
use kubepbx_media::udp::Socket;
use kubepbx_sip::flow::Flow;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest datagram read; anything longer is cut and then rejected as too large by the parser.
const RECV_BUFFER: usize = 65_536;

/// Reads datagrams until `shutdown` or until the drive loop is gone. `internal`: the socket
/// is the one other replicas send to (`--internal`).
pub(crate) async fn run(
    socket: Arc<Socket>,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
    internal: bool,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, remote)) => {
                let flow = if internal {
                    Flow::internal(remote)
                } else {
                    Flow::udp(remote)
                };
                let packet = crate::core::packet(flow, Bytes::copy_from_slice(&buf[..n]));
                if inbound.send(packet).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send shows up here on some systems
            // (ECONNREFUSED); it says nothing about the socket itself.
            Err(e) => tracing::debug!(error = %e, "UDP receive error"),
        }
    }
}
