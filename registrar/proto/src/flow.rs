//! Flows and transmits: where bytes come from and where they go.
//!
//! A *flow* is what carries packets to and from a phone: for UDP the remote address on our
//! socket, for TCP/TLS/WS one connection (numbered by the driver). Every inbound message names
//! its flow; every outbound [`Transmit`] names the flow to send on, so a driver never has to
//! guess which connection a response belongs to.
//!
//! In a cluster, a flow can also be the internal socket between replicas ([`Flow::INTERNAL`]).

use bytes::Bytes;
use kubepbx_api::Transport;
use std::net::SocketAddr;

/// Connection number given by a stream driver; [`Flow::DATAGRAM`] for UDP.
pub type FlowId = u64;

/// Where a message came from / goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Transport of the flow.
    pub transport: Transport,
    /// Connection id (stream transports) or [`Flow::DATAGRAM`].
    pub id: FlowId,
    /// Remote address: the source of inbound packets, the destination of outbound ones.
    pub remote: SocketAddr,
}

impl Flow {
    /// Flow id used for datagram transports (the remote address identifies the flow).
    pub const DATAGRAM: FlowId = 0;
    /// Flow id of the internal socket (`--internal`): SIP between the replicas of a cluster.
    pub const INTERNAL: FlowId = u64::MAX;

    /// A flow to or from another replica's internal address.
    pub fn internal(remote: SocketAddr) -> Self {
        Flow {
            transport: Transport::Udp,
            id: Self::INTERNAL,
            remote,
        }
    }

    /// Whether this is a flow between replicas.
    pub fn is_internal(&self) -> bool {
        self.id == Self::INTERNAL
    }

    /// A UDP flow to or from `remote`.
    pub fn udp(remote: SocketAddr) -> Self {
        Flow {
            transport: Transport::Udp,
            id: Self::DATAGRAM,
            remote,
        }
    }

    /// Whether the transport is reliable (no retransmissions needed).
    pub fn is_reliable(&self) -> bool {
        self.transport.is_stream()
    }

    /// The same flow with another remote address (datagram responses may go to the Via port).
    pub fn with_remote(self, remote: SocketAddr) -> Self {
        Flow { remote, ..self }
    }
}

/// Bytes to send on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send.
    pub flow: Flow,
    /// What to send.
    pub bytes: Bytes,
}
