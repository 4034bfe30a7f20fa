//! Proxy tests: two simulated phones register, one calls the other through the endpoint.

use super::*;

const CALLER: &str = "192.0.2.10:5060";
const CALLEE: &str = "192.0.2.20:5062";
const PROXY: &str = "192.0.2.1:5060";

/// Every transmit, as (destination, parsed message).
fn drain(ep: &mut Endpoint) -> Vec<(SocketAddr, Message)> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push((t.flow.remote, message::parse(t.bytes).expect("parsable")));
    }
    out
}

fn input(ep: &mut Endpoint, now: Now, from: &str, text: &str) -> Vec<(SocketAddr, Message)> {
    ep.handle_packet(
        now,
        Flow::udp(from.parse().unwrap()),
        Bytes::from(text.to_owned()),
    );
    drain(ep)
}

fn responses_to(out: &[(SocketAddr, Message)], to: &str) -> Vec<Response> {
    let to: SocketAddr = to.parse().unwrap();
    out.iter()
        .filter(|(d, _)| *d == to)
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.clone()),
            Message::Request(_) => None,
        })
        .collect()
}

fn requests_to(out: &[(SocketAddr, Message)], to: &str) -> Vec<Request> {
    let to: SocketAddr = to.parse().unwrap();
    out.iter()
        .filter(|(d, _)| *d == to)
        .filter_map(|(_, m)| match m {
            Message::Request(r) => Some(r.clone()),
            Message::Response(_) => None,
        })
        .collect()
}

/// 1001 and 1002 exist and 1002 is registered from CALLEE; 1003 exists but is offline.
fn pbx() -> (Endpoint, Now) {
    let mut ep = endpoint(vec![
        record("1001", "pw1001"),
        record("1002", "pw1002"),
        record("1003", "pw1003"),
    ]);
    let now = start();
    let mut callee = Phone::new("1002", "pw1002");
    callee.source = CALLEE.parse().unwrap();
    callee.contact = format!("<sip:1002@{CALLEE}>");
    assert_eq!(register(&mut ep, now, &mut callee, Some(600)).code, 200);
    while ep.poll_event().is_some() {}
    (ep, now)
}

fn invite(target: &str, branch: &str, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{target}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};rport;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:{PROXY};transport=udp;lr>\r\n\
         From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\n\
         To: <sip:{target}@{DOMAIN}>\r\n\
         Call-ID: call-a\r\nCSeq: {cseq} INVITE\r\n\
         Contact: <sip:1001@{CALLER}>\r\n{auth}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The Proxy-Authorization answering the MD5 challenge of a 407.
fn proxy_auth(challenge: &Response, user: &str, password: &str, uri: &str) -> String {
    let chosen = challenge
        .headers
        .get_raw(&Name::PROXY_AUTHENTICATE)
        .map(|v| v.to_string())
        .find(|v| v.contains("algorithm=MD5"))
        .expect("MD5 challenge");
    let param = |name: &str| -> String {
        let start = chosen.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        chosen[start..].split('"').next().unwrap().to_owned()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = crate::auth::ha1(Algorithm::Md5, user, &realm, password);
    let qop = QopAuth {
        qop: "auth",
        nc: "00000001",
        cnonce: "c0ffee",
    };
    let resp = response(Algorithm::Md5, &ha1, &nonce, "INVITE", uri, Some(qop));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc=00000001",
        resp.as_str()
    )
}

/// Calls `target` from 1001 through the digest exchange; returns what the proxy sent.
fn call(ep: &mut Endpoint, now: Now, target: &str) -> Vec<(SocketAddr, Message)> {
    call_with(ep, now, target, true)
}

/// [`call`], with or without an SDP offer in the authenticated INVITE.
fn call_with(
    ep: &mut Endpoint,
    now: Now,
    target: &str,
    with_sdp: bool,
) -> Vec<(SocketAddr, Message)> {
    let out = input(ep, now, CALLER, &invite(target, "z9hG4bKc1", 1, None));
    let challenge = responses_to(&out, CALLER).remove(0);
    assert_eq!(challenge.code, 407, "{challenge:?}");
    let ack = format!(
        "ACK sip:{target}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKc1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=caller-tag\r\n{}\r\n\
         Call-ID: call-a\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        format_args!("To: {}", challenge.header(&Name::TO).unwrap())
    );
    assert!(
        input(ep, now, CALLER, &ack).is_empty(),
        "ACK for the 407 is absorbed"
    );
    let uri = format!("sip:{target}@{DOMAIN}");
    let auth = proxy_auth(&challenge, "1001", "pw1001", &uri);
    let mut text = invite(target, "z9hG4bKc2", 2, Some(&auth));
    if !with_sdp {
        let cut = text.find("Content-Type:").unwrap();
        text.truncate(cut);
        text.push_str("Content-Length: 0\r\n\r\n");
    }
    input(ep, now, CALLER, &text)
}

/// The caller's CANCEL of the INVITE `call` sent with credentials.
fn cancel_of_call() -> String {
    format!(
        "CANCEL sip:1002@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKc2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>\r\n\
         Call-ID: call-a\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A response from the callee to a request the proxy forwarded to it.
fn answer(req: &Request, code: u16, reason: &str, to_tag: &str) -> String {
    let mut b = ResponseBuilder::new(req, CALLEE.parse().unwrap(), code, reason).to_tag(to_tag);
    if code == 200 && req.method == Method::Invite {
        b = b.header("Contact", format!("<sip:1002@{CALLEE}>"));
    }
    String::from_utf8(b.build().to_vec()).unwrap()
}

#[test]
fn a_call_is_authenticated_forwarded_answered_and_hung_up() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let trying = responses_to(&out, CALLER);
    assert_eq!(trying.iter().map(|r| r.code).collect::<Vec<_>>(), [100]);
    let forwarded = requests_to(&out, CALLEE);
    assert_eq!(forwarded.len(), 1, "{out:?}");
    let inv = &forwarded[0];
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(&*inv.uri_raw, format!("sip:1002@{CALLEE}"));
    let vias: Vec<String> = inv
        .headers
        .get_raw(&Name::VIA)
        .map(|v| v.to_string())
        .collect();
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/UDP {PROXY};branch=z9hG4bK")),
        "{vias:?}"
    );
    // The caller's Via says where the request came from (RFC 3261 §18.2.1, RFC 3581), so the
    // callee and the caller (in the responses) see the address the proxy saw.
    assert!(
        vias[1].starts_with(&format!("SIP/2.0/UDP {CALLER};rport=5060;")),
        "{vias:?}"
    );
    assert!(vias[1].ends_with(";received=192.0.2.10"), "{vias:?}");
    assert_eq!(
        &**inv.header(&Name::RECORD_ROUTE).unwrap(),
        &format!("<sip:{PROXY};lr>")
    );
    assert_eq!(&**inv.header(&Name::MAX_FORWARDS).unwrap(), "69");
    assert!(
        inv.header(&Name::PROXY_AUTHORIZATION).is_none(),
        "our credentials stay here"
    );
    assert!(inv.body.starts_with(b"v=0"), "the SDP goes through");
    assert_eq!(ep.call_count(), 1);

    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(inv, 180, "Ringing", "callee-tag"),
    );
    let ringing = responses_to(&out, CALLER);
    assert_eq!(ringing.len(), 1);
    assert_eq!(ringing[0].code, 180);
    assert_eq!(
        ringing[0].headers.get_raw(&Name::VIA).count(),
        1,
        "our Via removed"
    );
    assert!(
        ringing[0]
            .header(&Name::VIA)
            .unwrap()
            .contains("received=192.0.2.10"),
        "the caller learns its address"
    );

    let out = input(&mut ep, now, CALLEE, &answer(inv, 200, "OK", "callee-tag"));
    let ok = responses_to(&out, CALLER);
    assert_eq!(ok.iter().map(|r| r.code).collect::<Vec<_>>(), [200]);
    assert_eq!(ep.calls().next().unwrap().state, CallState::Answered);

    // ACK and BYE follow the Record-Route back through the proxy to the callee's flow.
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} sip:1002@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch={branch}\r\n\
             Route: <sip:{PROXY};lr>\r\nMax-Forwards: 70\r\n\
             From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
             Call-ID: call-a\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = input(&mut ep, now, CALLER, &in_dialog("ACK", 2, "z9hG4bKc3"));
    let acks = requests_to(&out, CALLEE);
    assert_eq!(acks.len(), 1);
    assert!(acks[0].header(&Name::ROUTE).is_none(), "our Route popped");
    let out = input(&mut ep, now, CALLER, &in_dialog("BYE", 3, "z9hG4bKc4"));
    let byes = requests_to(&out, CALLEE);
    assert_eq!(byes.len(), 1);
    let bye_vias: Vec<String> = byes[0]
        .headers
        .get_raw(&Name::VIA)
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        bye_vias[1],
        format!("SIP/2.0/UDP {CALLER};rport=5060;branch=z9hG4bKc4;received=192.0.2.10")
    );
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(&byes[0], 200, "OK", "callee-tag"),
    );
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [200]
    );
    assert_eq!(ep.call_count(), 0);
    let mut ended = false;
    while let Some(e) = ep.poll_event() {
        ended |= matches!(
            e,
            EndpointEvent::CallEnded(summary)
                if summary.code == 200
                    && summary.reason == EndReason::CallerHangup
                    && summary.answered_at.is_some()
        );
    }
    assert!(ended);
}

#[test]
fn busy_callee_is_acked_and_the_caller_gets_486() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    let out = input(&mut ep, now, CALLEE, &answer(&inv, 486, "Busy Here", "t1"));
    let acks = requests_to(&out, CALLEE);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].method, Method::Ack);
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [486]
    );
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn unknown_offline_and_cancelled_calls() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "4711");
    assert_eq!(responses_to(&out, CALLER)[0].code, 404);
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1003");
    assert_eq!(responses_to(&out, CALLER)[0].code, 480);

    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    let out = input(&mut ep, now, CALLER, &cancel_of_call());
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [200]
    );
    let cancels = requests_to(&out, CALLEE);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].method, Method::Cancel);
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(&inv, 487, "Request Terminated", "t1"),
    );
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [487]
    );
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn a_wrong_password_on_invite_is_classified_like_on_register() {
    let (mut ep, now) = pbx();
    let out = input(&mut ep, now, CALLER, &invite("1002", "z9hG4bKw1", 1, None));
    let challenge = responses_to(&out, CALLER).remove(0);
    let uri = format!("sip:1002@{DOMAIN}");
    let auth = proxy_auth(&challenge, "1001", "not-it", &uri);
    let out = input(
        &mut ep,
        now,
        CALLER,
        &invite("1002", "z9hG4bKw2", 2, Some(&auth)),
    );
    assert_eq!(responses_to(&out, CALLER)[0].code, 407);
    assert!(requests_to(&out, CALLEE).is_empty());
    assert_eq!(failures(&mut ep), [FailureReason::WrongPassword]);
}

fn media_pbx() -> (Endpoint, Now) {
    let (mut ep, now) = pbx();
    ep.config.anchor_media = true;
    (ep, now)
}

fn answer_with_sdp(req: &Request, code: u16, sdp: &str) -> String {
    let b = ResponseBuilder::new(req, CALLEE.parse().unwrap(), code, "OK")
        .to_tag("callee-tag")
        .header("Contact", format!("<sip:1002@{CALLEE}>"))
        .body("application/sdp", Bytes::from(sdp.to_owned()));
    String::from_utf8(b.build().to_vec()).unwrap()
}

#[test]
fn with_a_media_relay_every_sdp_is_rewritten_before_it_is_forwarded() {
    let (mut ep, now) = media_pbx();
    let out = call(&mut ep, now, "1002");
    assert!(requests_to(&out, CALLEE).is_empty(), "waits for the relay");
    let Some(MediaCommand::Offer {
        op,
        side,
        sdp,
        source,
        record,
        ..
    }) = ep.poll_media()
    else {
        panic!("an offer for the relay")
    };
    assert_eq!(side, Side::Caller);
    assert!(sdp.contains("c=IN IP4 192.0.2.10"));
    assert_eq!(source, "192.0.2.10".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(record, None);
    ep.handle_media_result(now, op, Ok("v=0\r\nc=IN IP4 198.51.100.1\r\n".into()));
    let out = drain(&mut ep);
    let inv = requests_to(&out, CALLEE).remove(0);
    assert_eq!(&inv.body[..], b"v=0\r\nc=IN IP4 198.51.100.1\r\n");

    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer_with_sdp(&inv, 200, "v=0\r\nc=IN IP4 192.0.2.20\r\n"),
    );
    assert!(responses_to(&out, CALLER).is_empty(), "waits for the relay");
    let Some(MediaCommand::Answer { op, side, .. }) = ep.poll_media() else {
        panic!("an answer for the relay")
    };
    assert_eq!(side, Side::Callee);
    ep.handle_media_result(
        now,
        op,
        Ok("v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 20002\r\n".into()),
    );
    let out = drain(&mut ep);
    let ok = responses_to(&out, CALLER).remove(0);
    assert_eq!(ok.code, 200);
    assert!(ok.body.ends_with(b"m=audio 20002\r\n"));

    let bye = format!(
        "BYE sip:1002@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKb1\r\n\
         Route: <sip:{PROXY};lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
         Call-ID: call-a\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    input(&mut ep, now, CALLER, &bye);
    assert!(matches!(ep.poll_media(), Some(MediaCommand::Delete { .. })));
}

#[test]
fn a_refused_offer_ends_the_call_with_the_relays_status() {
    let (mut ep, now) = media_pbx();
    call(&mut ep, now, "1002");
    let Some(MediaCommand::Offer { op, .. }) = ep.poll_media() else {
        panic!("an offer")
    };
    let failure = MediaFailure {
        code: 503,
        reason: "No Media Ports Available".into(),
        retry_after: Some(5),
    };
    ep.handle_media_result(now, op, Err(failure));
    let out = drain(&mut ep);
    let refused = responses_to(&out, CALLER).remove(0);
    assert_eq!(refused.code, 503);
    assert_eq!(&**refused.header(&Name::RETRY_AFTER).unwrap(), "5");
    assert!(requests_to(&out, CALLEE).is_empty(), "never half set up");
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn a_refused_re_invite_is_acked_hop_by_hop_and_forwarded() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    input(&mut ep, now, CALLEE, &answer(&inv, 200, "OK", "callee-tag"));
    let reinvite = format!(
        "INVITE sip:1002@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKr1\r\n\
         Route: <sip:{PROXY};lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
         Call-ID: call-a\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = input(&mut ep, now, CALLER, &reinvite);
    let fwd = requests_to(&out, CALLEE).remove(0);
    assert_eq!(fwd.method, Method::Invite);
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(&fwd, 491, "Request Pending", "callee-tag"),
    );
    let acks = requests_to(&out, CALLEE);
    assert_eq!(acks.len(), 1, "{out:?}");
    assert_eq!(acks[0].method, Method::Ack);
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [491]
    );
    assert_eq!(ep.call_count(), 1, "the call goes on");
}

#[test]
fn a_cancel_while_the_relay_works_on_the_offer_ends_the_call_and_sends_nothing() {
    let (mut ep, now) = media_pbx();
    call(&mut ep, now, "1002");
    let Some(MediaCommand::Offer { op, .. }) = ep.poll_media() else {
        panic!("an offer")
    };
    let out = input(&mut ep, now, CALLER, &cancel_of_call());
    let codes: Vec<u16> = responses_to(&out, CALLER).iter().map(|r| r.code).collect();
    assert_eq!(codes, [200, 487]);
    assert!(matches!(ep.poll_media(), Some(MediaCommand::Delete { .. })));
    ep.handle_media_result(now, op, Ok("v=0\r\n".into()));
    assert!(
        requests_to(&drain(&mut ep), CALLEE).is_empty(),
        "no INVITE after the CANCEL"
    );
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn timer_c_cancels_a_ringing_call_and_the_caller_gets_408() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    input(&mut ep, now, CALLEE, &answer(&inv, 180, "Ringing", "t1"));
    // Ringing for a minute is fine: no timeout of the branch.
    let later = now.plus(Duration::from_secs(60));
    ep.handle_timeout(later);
    assert!(requests_to(&drain(&mut ep), CALLEE).is_empty());
    let late = now.plus(TIMER_C);
    ep.handle_timeout(late);
    let cancels = requests_to(&drain(&mut ep), CALLEE);
    assert_eq!(
        cancels.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        [Method::Cancel]
    );
    let out = input(
        &mut ep,
        late,
        CALLEE,
        &answer(&inv, 487, "Request Terminated", "t1"),
    );
    assert_eq!(
        responses_to(&out, CALLER)
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [408]
    );
    assert_eq!(ep.call_count(), 0);
}

/// Calls 1002 and lets it answer; returns the INVITE the callee got.
fn answered_call(ep: &mut Endpoint, now: Now) -> Request {
    let out = call(ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    let out = input(ep, now, CALLEE, &answer(&inv, 200, "OK", "callee-tag"));
    assert_eq!(responses_to(&out, CALLER)[0].code, 200);
    while ep.poll_event().is_some() {}
    inv
}

fn ended_events(ep: &mut Endpoint) -> Vec<CallSummary> {
    let mut ended = Vec::new();
    while let Some(e) = ep.poll_event() {
        if let EndpointEvent::CallEnded(summary) = e {
            ended.push(*summary);
        }
    }
    ended
}

#[test]
fn the_pbx_hangs_up_an_answered_call_with_a_bye_to_each_phone() {
    let (mut ep, now) = pbx();
    answered_call(&mut ep, now);
    let name = ep.calls().next().unwrap().name.clone();
    assert!(name.starts_with("up-"), "{name}");
    assert!(!ep.hangup(now, "no-such-call", EndReason::AdminHangup));
    assert!(ep.hangup(now, &name, EndReason::AdminHangup));
    assert_eq!(ep.call_count(), 0);
    let out = drain(&mut ep);

    // To the callee, as the caller would send it: caller's From, callee's tag, next CSeq.
    let to_callee = requests_to(&out, CALLEE);
    assert_eq!(to_callee.len(), 1, "{out:?}");
    let bye = &to_callee[0];
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(&*bye.uri_raw, format!("sip:1002@{CALLEE}"));
    let e = bye.essentials().unwrap();
    assert_eq!(e.from.tag.as_deref(), Some("caller-tag"));
    assert_eq!(e.to.tag.as_deref(), Some("callee-tag"));
    assert_eq!(e.cseq.seq, 3, "after the caller's INVITE with CSeq 2");
    assert_eq!(e.call_id.as_str(), "call-a");
    assert!(
        bye.headers
            .iter()
            .any(|(n, v)| n.as_print_str() == "Reason" && v.contains("administrator")),
        "{bye:?}"
    );

    // To the caller, as the callee would send it, at the caller's Contact.
    let to_caller = requests_to(&out, CALLER);
    assert_eq!(to_caller.len(), 1, "{out:?}");
    let bye = &to_caller[0];
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(&*bye.uri_raw, format!("sip:1001@{CALLER}"));
    let e = bye.essentials().unwrap();
    assert_eq!(e.from.tag.as_deref(), Some("callee-tag"));
    assert_eq!(e.to.tag.as_deref(), Some("caller-tag"));
    assert_eq!(e.cseq.seq, 1);

    let ended = ended_events(&mut ep);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::AdminHangup);
    assert_eq!(ended[0].id, name);
    assert_eq!(ep.stats().calls_answered, 1);

    // Their 200s end our transactions and go nowhere.
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(&to_callee[0], 200, "OK", "callee-tag"),
    );
    assert!(out.is_empty(), "{out:?}");
    let ok = String::from_utf8(
        ResponseBuilder::new(&to_caller[0], CALLER.parse().unwrap(), 200, "OK")
            .build()
            .to_vec(),
    )
    .unwrap();
    assert!(input(&mut ep, now, CALLER, &ok).is_empty());
    assert_eq!(
        ep.stats().dropped[1..].iter().sum::<u64>(),
        0,
        "nothing stray"
    );
    // A BYE the caller sends afterwards finds no call.
    let late = format!(
        "BYE sip:1002@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKlate\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
         Call-ID: call-a\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        responses_to(&input(&mut ep, now, CALLER, &late), CALLER)[0].code,
        481
    );
}

#[test]
fn the_pbx_ends_a_ringing_call_by_cancelling_it() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    input(&mut ep, now, CALLEE, &answer(&inv, 180, "Ringing", "t1"));
    let name = ep.calls().next().unwrap().name.clone();
    assert!(ep.hangup(now, &name, EndReason::AdminHangup));
    let cancels = requests_to(&drain(&mut ep), CALLEE);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].method, Method::Cancel);
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer(&inv, 487, "Request Terminated", "t1"),
    );
    let finals = responses_to(&out, CALLER);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].code, 487);
    assert_eq!(&*finals[0].reason, "Call Ended By The PBX");
    let ended = ended_events(&mut ep);
    assert_eq!(ended[0].reason, EndReason::AdminHangup);
    assert!(ended[0].answered_at.is_none());
}

#[test]
fn an_answer_racing_the_pbxs_cancel_is_hung_up_at_once() {
    let (mut ep, now) = pbx();
    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, CALLEE).remove(0);
    let name = ep.calls().next().unwrap().name.clone();
    assert!(ep.hangup(now, &name, EndReason::AdminHangup));
    drain(&mut ep);
    let out = input(&mut ep, now, CALLEE, &answer(&inv, 200, "OK", "callee-tag"));
    assert_eq!(
        responses_to(&out, CALLER)[0].code,
        200,
        "a 2xx is always forwarded"
    );
    let byes: Vec<Method> = requests_to(&out, CALLEE)
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(byes, [Method::Bye]);
    assert_eq!(requests_to(&out, CALLER)[0].method, Method::Bye);
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn the_relays_media_timeout_hangs_up_the_call() {
    let (mut ep, now) = media_pbx();
    call(&mut ep, now, "1002");
    let Some(MediaCommand::Offer { op, session, .. }) = ep.poll_media() else {
        panic!("an offer")
    };
    ep.handle_media_result(now, op, Ok("v=0\r\n".into()));
    drain(&mut ep);
    assert!(!ep.hangup_session(now, "other", EndReason::MediaTimeout));
    assert!(ep.hangup_session(now, &session, EndReason::MediaTimeout));
    let out = drain(&mut ep);
    assert_eq!(requests_to(&out, CALLEE)[0].method, Method::Cancel);
}

#[test]
fn a_late_offer_from_the_callee_is_anchored_and_the_acks_answer_too() {
    let (mut ep, now) = media_pbx();
    let out = call_with(&mut ep, now, "1002", false);
    let inv = requests_to(&out, CALLEE).remove(0);
    assert!(
        inv.body.is_empty(),
        "no offer to rewrite: forwarded at once"
    );
    assert!(ep.poll_media().is_none());

    // The callee's 200 carries the offer: the relay gets it as the callee's offer.
    let out = input(
        &mut ep,
        now,
        CALLEE,
        &answer_with_sdp(&inv, 200, "v=0\r\nc=IN IP4 192.0.2.20\r\n"),
    );
    assert!(responses_to(&out, CALLER).is_empty(), "waits for the relay");
    let Some(MediaCommand::Offer {
        op, side, source, ..
    }) = ep.poll_media()
    else {
        panic!("the callee's offer for the relay")
    };
    assert_eq!(side, Side::Callee);
    assert_eq!(source, "192.0.2.20".parse::<std::net::IpAddr>().unwrap());
    ep.handle_media_result(now, op, Ok("v=0\r\nm=audio 20000\r\n".into()));
    let ok = responses_to(&drain(&mut ep), CALLER).remove(0);
    assert!(ok.body.ends_with(b"m=audio 20000\r\n"));

    // The caller answers in the ACK.
    let sdp = "v=0\r\nc=IN IP4 192.0.2.10\r\n";
    let ack = format!(
        "ACK sip:1002@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKa9\r\n\
         Route: <sip:{PROXY};lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
         Call-ID: call-a\r\nCSeq: 2 ACK\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    assert!(requests_to(&input(&mut ep, now, CALLER, &ack), CALLEE).is_empty());
    let Some(MediaCommand::Answer { op, side, .. }) = ep.poll_media() else {
        panic!("the caller's answer for the relay")
    };
    assert_eq!(side, Side::Caller);
    ep.handle_media_result(now, op, Ok("v=0\r\nm=audio 20002\r\n".into()));
    let acks = requests_to(&drain(&mut ep), CALLEE);
    assert_eq!(acks.len(), 1);
    assert!(acks[0].body.ends_with(b"m=audio 20002\r\n"));
}

/// 1002 registers again on the stream `flow` (TCP or TLS) and removes the UDP binding of
/// `pbx()`, so that `flow` is its only contact.
fn callee_only_on(ep: &mut Endpoint, now: Now, flow: Flow) {
    let transport = flow.transport.as_str();
    let mut phone = Phone::new("1002", "pw1002");
    phone.source = flow.remote;
    phone.contact = format!("<sip:1002@{};transport={transport}>", flow.remote);
    phone.call_id = format!("{transport}-reg");
    ep.handle_packet(now, flow, phone.request(Some(600), None));
    let out = drain(ep);
    let Message::Response(challenge) = &out[0].1 else {
        panic!("{out:?}")
    };
    let auth = phone.answer(challenge, "pw1002");
    ep.handle_packet(now, flow, phone.request(Some(600), Some(auth)));
    drain(ep);
    let mut udp = Phone::new("1002", "pw1002");
    udp.source = CALLEE.parse().unwrap();
    udp.contact = format!("<sip:1002@{CALLEE}>");
    udp.call_id = "udp-unreg".into();
    assert_eq!(register(ep, now, &mut udp, Some(0)).code, 200);
}

#[test]
fn a_callee_on_tcp_gets_a_double_record_route_and_in_dialog_requests_pop_both() {
    let (mut ep, now) = pbx();
    // 1002 registers again, over TCP, from another address: the only live binding.
    let tcp_callee = "192.0.2.30:40000";
    let flow = Flow {
        transport: Transport::Tcp,
        id: 7,
        remote: tcp_callee.parse().unwrap(),
    };
    let send_tcp = |ep: &mut Endpoint, bytes: Bytes| {
        ep.handle_packet(now, flow, bytes);
        drain(ep)
    };
    callee_only_on(&mut ep, now, flow);

    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, tcp_callee).remove(0);
    assert_eq!(
        &**inv.header(&Name::RECORD_ROUTE).unwrap(),
        format!("<sip:{PROXY};transport=tcp;lr>, <sip:{PROXY};lr>")
    );
    let ok = answer(&inv, 200, "OK", "callee-tag");
    let out = send_tcp(&mut ep, Bytes::from(ok));
    assert_eq!(responses_to(&out, CALLER)[0].code, 200);

    // The caller's route set is the Record-Route reversed: both entries are ours.
    let bye = format!(
        "BYE sip:1002@{tcp_callee};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKdr1\r\n\
         Route: <sip:{PROXY};lr>, <sip:{PROXY};transport=tcp;lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@{DOMAIN}>;tag=caller-tag\r\nTo: <sip:1002@{DOMAIN}>;tag=callee-tag\r\n\
         Call-ID: call-a\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = input(&mut ep, now, CALLER, &bye);
    let forwarded = requests_to(&out, tcp_callee).remove(0);
    assert!(forwarded.header(&Name::ROUTE).is_none(), "{forwarded:?}");
    assert!(
        forwarded
            .headers
            .get_raw(&Name::VIA)
            .next()
            .unwrap()
            .starts_with("SIP/2.0/TCP")
    );
}

#[test]
fn a_fork_to_a_softphone_and_a_browser_gives_each_the_sdp_it_takes() {
    let (mut ep, now) = media_pbx();
    // 1002 also registers from a browser, over a WebSocket (a second binding next to UDP).
    let browser = "192.0.2.40:50000";
    let flow = Flow {
        transport: Transport::Ws,
        id: 9,
        remote: browser.parse().unwrap(),
    };
    let mut phone = Phone::new("1002", "pw1002");
    phone.source = flow.remote;
    phone.contact = "<sip:k3v9q2mx@df7jal23ls0d.invalid;transport=ws>".to_owned();
    phone.call_id = "ws-reg".into();
    ep.handle_packet(now, flow, phone.request(Some(600), None));
    let out = drain(&mut ep);
    let Message::Response(challenge) = &out[0].1 else {
        panic!("{out:?}")
    };
    let challenges: Vec<_> = challenge.headers.get_raw(&Name::WWW_AUTHENTICATE).collect();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(
        challenges[0].contains("algorithm=MD5"),
        "browser SIP libraries know only MD5 and read one challenge"
    );
    let auth = phone.answer(challenge, "pw1002");
    ep.handle_packet(now, flow, phone.request(Some(600), Some(auth)));
    drain(&mut ep);

    call(&mut ep, now, "1002");
    let Some(MediaCommand::Offer { op, peer, .. }) = ep.poll_media() else {
        panic!("an offer for the relay")
    };
    assert_eq!(peer, PeerMedia::Either);
    let relayed = RelaySdp {
        sdp: "v=0\r\nm=audio 20000 RTP/AVP 0\r\n".to_owned(),
        webrtc: Some("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n".to_owned()),
    };
    ep.handle_media_result(now, op, Ok(relayed));
    let out = drain(&mut ep);
    let to_softphone = requests_to(&out, CALLEE).remove(0);
    assert!(to_softphone.body.ends_with(b"RTP/AVP 0\r\n"));
    let to_browser = requests_to(&out, browser).remove(0);
    assert!(to_browser.body.ends_with(b"UDP/TLS/RTP/SAVPF 0\r\n"));
    assert_eq!(
        to_browser.uri_raw.to_string(),
        "sip:k3v9q2mx@df7jal23ls0d.invalid;transport=ws"
    );
}

#[test]
fn a_callee_on_tls_is_record_routed_at_the_tls_port_and_in_dialog_requests_find_it() {
    const PROXY_TLS: &str = "192.0.2.1:5061";
    let (mut ep, now) = pbx();
    let tls_callee = "192.0.2.31:40001";
    let flow = Flow {
        transport: Transport::Tls,
        id: 8,
        remote: tls_callee.parse().unwrap(),
    };
    let send_tls = |ep: &mut Endpoint, bytes: Bytes| {
        ep.handle_packet(now, flow, bytes);
        drain(ep)
    };
    callee_only_on(&mut ep, now, flow);

    let out = call(&mut ep, now, "1002");
    let inv = requests_to(&out, tls_callee).remove(0);
    // The TLS phone sends in-dialog requests to the TLS port, the UDP caller to 5060.
    assert_eq!(
        &**inv.header(&Name::RECORD_ROUTE).unwrap(),
        format!("<sip:{PROXY_TLS};transport=tls;lr>, <sip:{PROXY};lr>")
    );
    let via = inv.headers.get_raw(&Name::VIA).next().unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS {PROXY_TLS};")),
        "{via}"
    );
    let ok = answer(&inv, 200, "OK", "callee-tag");
    let out = send_tls(&mut ep, Bytes::from(ok));
    assert_eq!(responses_to(&out, CALLER)[0].code, 200);

    // A BYE from the TLS callee carries both of our Routes (TLS port first) and reaches the
    // caller with none of them left.
    let bye = format!(
        "BYE sip:1001@{CALLER} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {tls_callee};rport;branch=z9hG4bKtl1\r\n\
         Route: <sip:{PROXY_TLS};transport=tls;lr>, <sip:{PROXY};lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1002@{DOMAIN}>;tag=callee-tag\r\nTo: <sip:1001@{DOMAIN}>;tag=caller-tag\r\n\
         Call-ID: call-a\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = send_tls(&mut ep, Bytes::from(bye));
    let forwarded = requests_to(&out, CALLER).remove(0);
    assert!(forwarded.header(&Name::ROUTE).is_none(), "{forwarded:?}");
}
