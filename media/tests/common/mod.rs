//! What the relay's end-to-end tests share: loopback port ranges per test and a started
//! `LocalRelay` that stops cleanly.

use kubepbx_media::*;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A port range of `pairs` pairs for test number `slot`: below the kernel's ephemeral ports
/// (32768 and up, where other programs' sockets land), away from the PBX default (20000-20999)
/// and the integration tests' relay ports (10000-19999).
pub fn ports(slot: u16, pairs: u16) -> std::ops::RangeInclusive<u16> {
    let base = 21000 + (std::process::id() % 100) as u16 * 100 + slot * 10;
    base..=base + pairs * 2 - 1
}

/// A relay on loopback with `pairs` port pairs of test `slot`.
pub fn config(slot: u16, pairs: u16) -> RelayConfig {
    RelayConfig {
        advertise: LOCAL,
        bind: LOCAL,
        ports: ports(slot, pairs),
        ..RelayConfig::default()
    }
}

pub struct Relay {
    pub relay: LocalRelay,
    pub events: RelayEvents,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Relay {
    pub fn start(config: RelayConfig) -> Relay {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (relay, events) = LocalRelay::start(config, shutdown.clone(), &tasks).unwrap();
        Relay {
            relay,
            events,
            shutdown,
            tasks,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .unwrap();
    }

    /// Ends session `id`, which must exist; its final stats.
    pub async fn end(&self, id: &str) -> SessionStats {
        self.relay
            .delete(&SessionId(id.into()))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no session {id}"))
    }

    /// Waits (at most 2 s) until every port pair is back in the pool.
    pub async fn wait_ports_free(&self) {
        for _ in 0..200 {
            let m = self.relay.metrics();
            if m.port_pairs_free == m.port_pairs_total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("ports not returned: {:?}", self.relay.metrics());
    }
}
