//! Session core tests: two fake phones, a fake clock.

use super::*;
use crate::sdp::Remote;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn remote(rtp: &str, mux: bool) -> Remote {
    let rtp = addr(rtp);
    Remote {
        rtp: Some(rtp),
        rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
        rtcp_mux: mux,
        secure: false,
        payloads: vec![],
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn timeouts() -> Timeouts {
    Timeouts {
        media: Duration::from_secs(60),
        setup: Duration::from_secs(180),
        relatch_after: Duration::from_secs(2),
    }
}

#[test]
fn nat_phone_is_reached_at_its_packets_source() {
    let t0 = Instant::now();
    let mut s = Session::new(timeouts(), t0);
    // The caller's SDP says 10.255.255.1:4000; it really sends from 127.0.0.1:5000.
    s.set_remote(Side::Caller, &remote("10.255.255.1:4000", false));
    s.set_remote(Side::Callee, &remote("127.0.0.2:6000", false));
    s.set_answered(t0);
    // Callee talks first: the caller is not latched yet, so its SDP address is used.
    let a = s.handle_packet(
        Side::Callee,
        Port::Rtp,
        addr("127.0.0.2:6000"),
        &rtp(1, 2),
        t0,
    );
    assert!(
        matches!(a, Action::Forward { from: Side::Caller, port: Port::Rtp, to, .. }
        if to == addr("10.255.255.1:4000"))
    );
    // The caller's first packet latches.
    let a = s.handle_packet(
        Side::Caller,
        Port::Rtp,
        addr("127.0.0.1:5000"),
        &rtp(1, 1),
        t0,
    );
    assert!(matches!(a, Action::Forward { from: Side::Callee, to, .. }
        if to == addr("127.0.0.2:6000")));
    let a = s.handle_packet(
        Side::Callee,
        Port::Rtp,
        addr("127.0.0.2:6000"),
        &rtp(2, 2),
        t0,
    );
    assert!(matches!(a, Action::Forward { to, .. } if to == addr("127.0.0.1:5000")));
    assert_eq!(s.destination(Side::Caller), Some(addr("127.0.0.1:5000")));
}

#[test]
fn rtcp_goes_to_the_rtcp_port_or_is_muxed() {
    let t0 = Instant::now();
    let mut s = Session::new(timeouts(), t0);
    s.set_remote(Side::Caller, &remote("127.0.0.1:4000", true));
    s.set_remote(Side::Callee, &remote("127.0.0.2:6000", false));
    // Callee RTCP on its RTCP port → to the caller, muxed on the RTP port.
    let a = s.handle_packet(
        Side::Callee,
        Port::Rtcp,
        addr("127.0.0.2:6001"),
        &rtcp(2),
        t0,
    );
    assert_eq!(
        a,
        Action::Forward {
            from: Side::Caller,
            port: Port::Rtp,
            to: addr("127.0.0.1:4000"),
            rtp: None
        }
    );
    // Caller RTCP muxed on RTP → to the callee's RTCP port.
    let a = s.handle_packet(
        Side::Caller,
        Port::Rtp,
        addr("127.0.0.1:4000"),
        &rtcp(1),
        t0,
    );
    assert_eq!(
        a,
        Action::Forward {
            from: Side::Callee,
            port: Port::Rtcp,
            to: addr("127.0.0.2:6001"),
            rtp: None
        }
    );
    assert_eq!(s.leg_stats(Side::Caller).rtcp_in, 1);
    assert_eq!(s.leg_stats(Side::Caller).rtcp_out, 1);
    assert_eq!(s.leg_stats(Side::Caller).packets_in, 0);
}

#[test]
fn counters_and_loss() {
    let t0 = Instant::now();
    let mut s = Session::new(timeouts(), t0);
    s.set_remote(Side::Caller, &remote("127.0.0.1:4000", false));
    s.set_remote(Side::Callee, &remote("127.0.0.2:6000", false));
    for seq in [1u16, 2, 3, 5, 6] {
        s.handle_packet(
            Side::Caller,
            Port::Rtp,
            addr("127.0.0.1:4000"),
            &rtp(seq, 1),
            t0,
        );
    }
    let caller = s.leg_stats(Side::Caller);
    let callee = s.leg_stats(Side::Callee);
    assert_eq!(
        (caller.packets_in, caller.bytes_in, caller.lost),
        (5, 5 * 172, 1)
    );
    assert_eq!((callee.packets_out, callee.bytes_out), (5, 5 * 172));
    assert_eq!((caller.packets_out, callee.packets_in), (0, 0));
}

#[test]
fn drops_noise_strangers_and_undeliverable() {
    let t0 = Instant::now();
    let mut s = Session::new(timeouts(), t0);
    s.set_remote(Side::Caller, &remote("127.0.0.1:4000", false));
    // Callee has no SDP yet (offer not answered): nowhere to send.
    let a = s.handle_packet(
        Side::Caller,
        Port::Rtp,
        addr("127.0.0.1:4000"),
        &rtp(1, 1),
        t0,
    );
    assert_eq!(a, Action::Drop(DropReason::NoDestination));
    let a = s.handle_packet(
        Side::Caller,
        Port::Rtp,
        addr("127.0.0.1:4000"),
        b"hello",
        t0,
    );
    assert_eq!(a, Action::Drop(DropReason::NotMedia));
    let a = s.handle_packet(Side::Caller, Port::Rtp, addr("127.0.0.9:1"), &rtp(9, 9), t0);
    assert_eq!(a, Action::Drop(DropReason::WrongSource));
    assert_eq!(s.leg_stats(Side::Caller).dropped, 3);
    // A stranger's packet does not count as activity.
    assert_eq!(s.last_packet(), Some(t0));
}

#[test]
fn media_timeout_after_answer_setup_timeout_before() {
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let mut s = Session::new(timeouts(), t0);
    s.set_remote(Side::Caller, &remote("127.0.0.1:4000", false));
    assert_eq!(s.poll_timeout(), t0 + secs(180));
    assert_eq!(s.handle_timeout(t0 + secs(179)), None);
    s.set_answered(t0 + secs(10));
    assert_eq!(s.poll_timeout(), t0 + secs(70));
    s.set_remote(Side::Callee, &remote("127.0.0.2:6000", false));
    s.handle_packet(
        Side::Callee,
        Port::Rtp,
        addr("127.0.0.2:6000"),
        &rtp(1, 2),
        t0 + secs(30),
    );
    assert_eq!(s.handle_timeout(t0 + secs(70)), None);
    assert_eq!(s.poll_timeout(), t0 + secs(90));
    assert_eq!(s.handle_timeout(t0 + secs(90)), Some(Expiry::Media));
    let mut never = Session::new(timeouts(), t0);
    assert_eq!(never.handle_timeout(t0 + secs(180)), Some(Expiry::Setup));
}
