//! Calls through `kubepbx up`'s proxy with real SIP clients: two sipp phones (the scenarios of
//! `tests/sipp/uac_*.xml` and `uas_*.xml`) for the signalling cases, two pjsua2 phones
//! (`tests/clients/pjsua2_call.py`) for a call with audio both ways and one with key presses
//! sent as SIP INFO. Each test starts its own PBX on free loopback ports.
//!
//! A sipp callee is two sipp runs from one local port: `register_digest.xml` registers the
//! extension from it, then a server-mode `uas_*.xml` listens on it (in a thread) for the INVITE
//! the proxy sends to that binding's flow (`uas_answer.xml` says why one scenario cannot do
//! both). The caller runs in the test's thread; both verdicts, and what each side received, are
//! checked afterwards.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_tests::sipp::{REGISTER_DIGEST, numbered_users};
use kubepbx_tests::{
    ExtensionOpts, Pbx, Phone, Sipp, SippOutcome, User, analyse, default_password, free_udp_port,
    wait_until, write_extension,
};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

/// The callee side of a basic call: INVITE → 180 → 200 → ACK → BYE → 200.
const UAS_ANSWER: &str = "sipp/uas_answer.xml";
/// INVITE → 486 → ACK.
const UAS_BUSY: &str = "sipp/uas_busy.xml";
/// INVITE → 180 → CANCEL → 200 → 487 → ACK.
const UAS_RING: &str = "sipp/uas_ring.xml";
/// Like `UAS_ANSWER` with a re-INVITE (a=sendonly) answered a=recvonly before the BYE.
const UAS_HOLD: &str = "sipp/uas_hold.xml";
/// INVITE → 407 → ACK → INVITE with credentials → 180 → 200 → ACK → BYE → 200.
const UAC_CALL: &str = "sipp/uac_call.xml";
/// … → 486 → ACK.
const UAC_BUSY: &str = "sipp/uac_busy.xml";
/// … → 404 → ACK.
const UAC_NOT_FOUND: &str = "sipp/uac_not_found.xml";
/// … → 480 → ACK.
const UAC_UNAVAILABLE: &str = "sipp/uac_unavailable.xml";
/// … → 180 → CANCEL → 200 → 487 → ACK.
const UAC_CANCEL: &str = "sipp/uac_cancel.xml";
/// Like `UAC_CALL` with a hold re-INVITE before the BYE.
const UAC_HOLD: &str = "sipp/uac_hold.xml";
/// INVITE → 407 → ACK → INVITE with wrong credentials → 407 → ACK.
const UAC_WRONG_PASSWORD: &str = "sipp/uac_wrong_password.xml";
/// Like `UAC_CALL`, but waits for the PBX's BYE instead of sending one.
const UAC_MEDIA_TIMEOUT: &str = "sipp/uac_media_timeout.xml";

/// Long enough for a change of the manifest folder (polled every second) on a busy machine.
const FOLDER_WAIT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(10);
/// sipp's global timeout for one side of a call (each finishes in about a second).
const SIPP_TIMEOUT: Duration = Duration::from_secs(20);

/// sipp answers only the first challenge and only knows MD5, so its PBX offers MD5 alone.
fn pbx_for_sipp(extensions: &[&str]) -> Pbx {
    let pbx = Pbx::builder().md5_only().start().unwrap();
    pbx.add_extensions(extensions).unwrap();
    for ext in extensions {
        pbx.wait_for_extension(ext, FOLDER_WAIT).unwrap();
    }
    pbx
}

/// Whether `/api/v1/registrations` lists a binding of `ext` registered from `source`.
fn registered_from(pbx: &Pbx, ext: &str, source: &str) -> bool {
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    regs.as_array()
        .unwrap()
        .iter()
        .any(|r| r["extension"] == ext && r["source"] == source)
}

/// Whether a UDP socket is bound to 127.0.0.1:`port` (read from /proc, so that looking does
/// not take the port from the process about to bind it).
fn udp_port_bound(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A sipp phone registered as `ext` and waiting for a call in a `uas_*.xml` scenario.
struct Callee {
    port: u16,
    run: JoinHandle<SippOutcome>,
}

impl Callee {
    /// Registers `ext` from a free port, checks that the binding is in the API, then starts
    /// `scenario` on that port in a thread and returns once its socket is bound.
    fn start(pbx: &Pbx, ext: &str, scenario: &str) -> Callee {
        let port = free_udp_port().unwrap();
        let user = User::new(ext, default_password(ext));
        let reg = Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
            .users(vec![user.clone()])
            .local_port(port)
            .run()
            .unwrap();
        assert!(
            reg.all_succeeded(),
            "{ext} did not register: {}\n{}",
            reg.diagnostics(),
            tail(&pbx.log(), 40)
        );
        let source = format!("127.0.0.1:{port}");
        assert!(
            wait_until(WAIT, || registered_from(pbx, ext, &source)),
            "no binding of {ext} from {source} in the API"
        );
        let sipp = Sipp::new(scenario, pbx.sip_addr())
            .users(vec![user])
            .local_port(port)
            .timeout(SIPP_TIMEOUT);
        let run = std::thread::spawn(move || sipp.run().unwrap());
        assert!(
            wait_until(WAIT, || udp_port_bound(port) || run.is_finished()),
            "the callee's sipp never bound 127.0.0.1:{port}"
        );
        Callee { port, run }
    }

    /// Waits for the callee's sipp to finish (at the latest at its global timeout).
    fn finish(self) -> SippOutcome {
        self.run.join().expect("the callee's sipp thread panicked")
    }
}

/// `from` (with its default password) calls `to` with a `uac_*.xml` scenario.
fn call(pbx: &Pbx, scenario: &str, from: &str, to: &str) -> SippOutcome {
    call_as(pbx, scenario, User::new(from, default_password(from)), to)
}

/// `user` calls `to`: sipp's `-s` is the number, and the digest uri is the Request-URI.
fn call_as(pbx: &Pbx, scenario: &str, user: User, to: &str) -> SippOutcome {
    Sipp::new(scenario, pbx.sip_addr())
        .users(vec![user])
        .timeout(SIPP_TIMEOUT)
        .args(["-s", to])
        // Overrides the harness's -auth_uri <domain> (sipp keeps the last one).
        .args(["-auth_uri".to_owned(), format!("{to}@{}", pbx.domain())])
        .run()
        .unwrap()
}

/// Everything worth printing when a call test fails.
fn report(pbx: &Pbx, caller: &SippOutcome, callee: Option<&SippOutcome>) -> String {
    let mut s = format!("--- caller\n{}", caller.diagnostics());
    if let Some(c) = callee {
        s.push_str(&format!("--- callee\n{}", c.diagnostics()));
    }
    s.push_str(&format!("--- kubepbx\n{}\n", tail(&pbx.log(), 60)));
    s
}

/// One SIP message from a sipp message log.
#[derive(Debug, Clone)]
struct Msg {
    received: bool,
    text: String,
}

impl Msg {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    /// The values of every header called `name` (full names only, as the PBX and sipp write
    /// them), comma-separated values split.
    fn header(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .flat_map(|l| l[prefix.len()..].split(", ").map(|v| v.trim().to_owned()))
            .collect()
    }

    fn body(&self) -> &str {
        self.text.split_once("\n\n").map_or("", |(_, b)| b)
    }

    /// The `branch` parameter of the top Via.
    fn top_branch(&self) -> String {
        let via = self.header("Via").into_iter().next().unwrap_or_default();
        via.split(';')
            .find_map(|p| p.trim().strip_prefix("branch=").map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The messages of a run's `messages.log`, in order (sipp logs each one after a dashed line:
/// `UDP message sent (N bytes):` or `UDP message received [N] bytes :`, a blank line, then the
/// message).
fn messages(out: &SippOutcome) -> Vec<Msg> {
    let log = out
        .messages
        .as_deref()
        .unwrap_or_default()
        .replace('\r', "");
    let mut msgs = Vec::new();
    for block in log.split("----------------------------------------------- ") {
        let mut lines = block.lines();
        let _timestamp = lines.next();
        let Some(kind) = lines.next() else { continue };
        let received = kind.contains("message received");
        if !received && !kind.contains("message sent") {
            continue;
        }
        let text = lines
            .skip_while(|l| l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        msgs.push(Msg {
            received,
            text: text.trim_end().to_owned(),
        });
    }
    msgs
}

fn received(out: &SippOutcome) -> Vec<Msg> {
    messages(out).into_iter().filter(|m| m.received).collect()
}

fn sent(out: &SippOutcome) -> Vec<Msg> {
    messages(out).into_iter().filter(|m| !m.received).collect()
}

/// The first message whose first line starts with `start` (and, if given, whose CSeq ends with
/// `method`).
fn find<'a>(msgs: &'a [Msg], start: &str, method: Option<&str>) -> Option<&'a Msg> {
    msgs.iter().find(|m| {
        m.first_line().starts_with(start)
            && method.is_none_or(|meth| {
                m.header("CSeq")
                    .first()
                    .is_some_and(|c| c.ends_with(&format!(" {meth}")))
            })
    })
}

/// Asserts that the first lines of `msgs` contain `expected` (prefixes) in this order, other
/// messages (retransmissions, 100 Trying) allowed in between.
fn assert_in_order(side: &str, msgs: &[Msg], expected: &[&str], context: &str) {
    let lines: Vec<&str> = msgs.iter().map(Msg::first_line).collect();
    let mut rest = lines.iter();
    for want in expected {
        assert!(
            rest.any(|l| l.starts_with(want)),
            "{side}: expected {expected:?} in this order, got {lines:?}\n{context}"
        );
    }
}

#[test]
fn a_basic_call_between_two_sipp_phones() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    let callee = Callee::start(&pbx, "1002", UAS_ANSWER);
    let port = callee.port;
    let caller = call(&pbx, UAC_CALL, "1001", "1002");
    let callee = callee.finish();
    let ctx = report(&pbx, &caller, Some(&callee));
    assert!(caller.all_succeeded(), "caller failed\n{ctx}");
    assert!(callee.all_succeeded(), "callee failed\n{ctx}");

    let got = received(&caller);
    assert_in_order(
        "caller",
        &got,
        &[
            "SIP/2.0 407",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200",
            "SIP/2.0 200",
        ],
        &ctx,
    );
    let challenge = find(&got, "SIP/2.0 407", None).unwrap();
    let offered = challenge.header("Proxy-Authenticate");
    assert!(
        offered
            .iter()
            .any(|c| c.contains("realm=\"pbx.example.com\"")),
        "realm is the domain: {offered:?}"
    );
    let ok = find(&got, "SIP/2.0 200", Some("INVITE")).unwrap();
    let pbx_hop = format!("<sip:{};lr>", pbx.sip_addr());
    assert_eq!(ok.header("Record-Route"), [pbx_hop.as_str()], "{ctx}");
    assert!(ok.body().contains("m=audio"), "the answer's SDP: {ok:?}");
    assert!(
        find(&got, "SIP/2.0 200", Some("BYE")).is_some(),
        "BYE answered\n{ctx}"
    );

    // What the caller sent inside the dialog went through the proxy to the callee's Contact.
    let out = sent(&caller);
    let auth = out
        .iter()
        .filter(|m| m.first_line().starts_with("INVITE"))
        .flat_map(|m| m.header("Proxy-Authorization"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(auth.contains("uri=\"sip:1002@pbx.example.com\""), "{auth}");
    let contact = format!("sip:1002@127.0.0.1:{port};transport=UDP");
    for method in ["ACK", "BYE"] {
        let m = out
            .iter()
            .rfind(|m| m.first_line().starts_with(method))
            .unwrap();
        assert_eq!(m.first_line(), format!("{method} {contact} SIP/2.0"));
        assert_eq!(m.header("Route"), [pbx_hop.as_str()], "{method}: {m:?}");
    }

    let got = received(&callee);
    assert_in_order("callee", &got, &["INVITE", "ACK", "BYE"], &ctx);
    let invite = find(&got, "INVITE", None).unwrap();
    assert_eq!(invite.first_line(), format!("INVITE {contact} SIP/2.0"));
    assert_eq!(invite.header("Record-Route"), [pbx_hop.as_str()]);
    assert_eq!(invite.header("Max-Forwards"), ["69"]);
    assert!(
        invite.header("Proxy-Authorization").is_empty(),
        "the caller's credentials stay in the PBX: {invite:?}"
    );
    let vias = invite.header("Via");
    assert_eq!(vias.len(), 2, "the proxy's Via and the caller's: {vias:?}");
    assert!(vias[0].starts_with(&format!("SIP/2.0/UDP {}", pbx.sip_addr())));
    assert!(
        invite.body().contains("m=audio"),
        "the offer's SDP: {invite:?}"
    );
    for method in ["ACK", "BYE"] {
        let m = find(&got, method, None).unwrap();
        assert!(m.header("Route").is_empty(), "our Route popped: {m:?}");
        assert_eq!(m.header("From"), invite.header("From"));
    }
}

#[test]
fn unknown_numbers_get_404_and_extensions_without_a_registration_480() {
    let pbx = pbx_for_sipp(&["1001", "1003"]);
    let disabled = ExtensionOpts {
        enabled: false,
        ..ExtensionOpts::default()
    };
    write_extension(
        pbx.manifest_dir(),
        "1004",
        &default_password("1004"),
        &disabled,
    )
    .unwrap();
    pbx.wait_for_extension("1004", FOLDER_WAIT).unwrap();

    let unknown = call(&pbx, UAC_NOT_FOUND, "1001", "4711");
    assert!(
        unknown.all_succeeded(),
        "4711 is no extension: expected 404\n{}",
        report(&pbx, &unknown, None)
    );
    let offline = call(&pbx, UAC_UNAVAILABLE, "1001", "1003");
    assert!(
        offline.all_succeeded(),
        "1003 has no registration: expected 480\n{}",
        report(&pbx, &offline, None)
    );
    let off = call(&pbx, UAC_UNAVAILABLE, "1001", "1004");
    assert!(
        off.all_succeeded(),
        "1004 is disabled: expected 480\n{}",
        report(&pbx, &off, None)
    );
    // Each was refused only after the caller had answered the one challenge.
    for run in [&unknown, &offline, &off] {
        let got = received(run);
        assert_eq!(
            got.iter()
                .filter(|m| m.first_line().starts_with("SIP/2.0 407"))
                .count(),
            1
        );
    }
}

#[test]
fn a_busy_callee_reaches_the_caller_as_486() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    let callee = Callee::start(&pbx, "1002", UAS_BUSY);
    let caller = call(&pbx, UAC_BUSY, "1001", "1002");
    let callee = callee.finish();
    let ctx = report(&pbx, &caller, Some(&callee));
    assert!(caller.all_succeeded(), "caller failed\n{ctx}");
    assert!(callee.all_succeeded(), "callee failed\n{ctx}");
    assert_in_order(
        "caller",
        &received(&caller),
        &["SIP/2.0 407", "SIP/2.0 486 Busy Here"],
        &ctx,
    );
    let got = received(&callee);
    assert_in_order("callee", &got, &["INVITE", "ACK"], &ctx);
    // The proxy acknowledged the 486 itself (hop by hop): the ACK is in the INVITE's
    // transaction.
    let invite = find(&got, "INVITE", None).unwrap();
    let ack = find(&got, "ACK", None).unwrap();
    assert_eq!(ack.top_branch(), invite.top_branch(), "{ctx}");
    assert_eq!(
        ack.header("CSeq"),
        [invite.header("CSeq")[0].replace("INVITE", "ACK")]
    );
}

#[test]
fn cancel_before_answer_reaches_the_callee_and_the_caller_gets_487() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    let callee = Callee::start(&pbx, "1002", UAS_RING);
    let caller = call(&pbx, UAC_CANCEL, "1001", "1002");
    let callee = callee.finish();
    let ctx = report(&pbx, &caller, Some(&callee));
    assert!(caller.all_succeeded(), "caller failed\n{ctx}");
    assert!(callee.all_succeeded(), "callee failed\n{ctx}");
    let got = received(&caller);
    assert_in_order(
        "caller",
        &got,
        &["SIP/2.0 180", "SIP/2.0 200", "SIP/2.0 487"],
        &ctx,
    );
    assert!(find(&got, "SIP/2.0 200", Some("CANCEL")).is_some(), "{ctx}");
    assert!(find(&got, "SIP/2.0 487", Some("INVITE")).is_some(), "{ctx}");
    assert!(find(&got, "SIP/2.0 200", Some("INVITE")).is_none(), "{ctx}");

    let got = received(&callee);
    assert_in_order("callee", &got, &["INVITE", "CANCEL", "ACK"], &ctx);
    let invite = find(&got, "INVITE", None).unwrap();
    let cancel = find(&got, "CANCEL", None).unwrap();
    assert_eq!(
        cancel.top_branch(),
        invite.top_branch(),
        "CANCEL matches its INVITE"
    );
    assert_eq!(
        cancel.first_line().replace("CANCEL", "INVITE"),
        invite.first_line()
    );
}

#[test]
fn a_hold_re_invite_passes_through_and_is_answered() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    let callee = Callee::start(&pbx, "1002", UAS_HOLD);
    let caller = call(&pbx, UAC_HOLD, "1001", "1002");
    let callee = callee.finish();
    let ctx = report(&pbx, &caller, Some(&callee));
    assert!(caller.all_succeeded(), "caller failed\n{ctx}");
    assert!(callee.all_succeeded(), "callee failed\n{ctx}");

    let got = received(&callee);
    assert_in_order(
        "callee",
        &got,
        &["INVITE", "ACK", "INVITE", "ACK", "BYE"],
        &ctx,
    );
    let reinvite = got
        .iter()
        .find(|m| m.first_line().starts_with("INVITE") && m.header("CSeq") == ["3 INVITE"])
        .unwrap();
    assert!(reinvite.body().contains("a=sendonly"), "{reinvite:?}");
    assert!(
        reinvite.header("To")[0].contains("tag="),
        "inside the dialog: {reinvite:?}"
    );
    let answered = received(&caller).iter().any(|m| {
        m.first_line().starts_with("SIP/2.0 200")
            && m.header("CSeq") == ["3 INVITE"]
            && m.body().contains("a=recvonly")
    });
    assert!(answered, "the hold was answered a=recvonly\n{ctx}");
}

#[test]
fn a_wrong_password_on_invite_is_challenged_again_and_recorded() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    // 1002 is registered from a socket of ours: nothing may reach it.
    let port = free_udp_port().unwrap();
    let reg = Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .users(numbered_users(1002, 1))
        .local_port(port)
        .run()
        .unwrap();
    assert!(reg.all_succeeded(), "{}", reg.diagnostics());
    let phone = UdpSocket::bind(("127.0.0.1", port)).unwrap();

    let caller = call_as(
        &pbx,
        UAC_WRONG_PASSWORD,
        User::new("1001", "not-the-password"),
        "1002",
    );
    let ctx = report(&pbx, &caller, None);
    assert!(caller.all_succeeded(), "expected a second 407\n{ctx}");
    let got = received(&caller);
    assert_eq!(
        got.iter()
            .filter(|m| m.first_line().starts_with("SIP/2.0 407"))
            .count(),
        2,
        "{ctx}"
    );
    assert!(
        find(&got, "SIP/2.0 100", None).is_none(),
        "no 100 Trying: the call never started\n{ctx}"
    );

    phone
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    if let Ok((n, from)) = phone.recv_from(&mut buf) {
        panic!(
            "the callee got a message from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    let e = pbx.extension("1001").unwrap().unwrap();
    let failure = &e["lastFailure"];
    assert_eq!(failure["reason"], "WrongPassword", "{e}");
    assert!(
        failure["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{e}"
    );
    assert_eq!(
        pbx.extension("1002").unwrap().unwrap()["lastFailure"],
        Value::Null
    );
    assert!(
        !pbx.log().contains("not-the-password"),
        "passwords are never logged"
    );
}

/// A PBX with 1001 and 1002 and its default challenges (SHA-256 and MD5), for pjsua2 phones.
fn pbx_for_pjsua2() -> Pbx {
    let pbx = Pbx::start().unwrap();
    pbx.add_extensions(&["1001", "1002"]).unwrap();
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    pbx
}

/// One call between two pjsua2 phones over UDP: 1002 answers (`--answer`, then `callee`),
/// and once it is registered 1001 calls it (`--call 1002`, then `caller`). Both must exit
/// successfully. Returns the phones and what to print when a later check fails.
fn pjsua2_call(pbx: &Pbx, dir: &Path, callee: &[&str], caller: &[&str]) -> (Phone, Phone, String) {
    let args = [&["--answer"], callee].concat();
    let mut callee = Phone::start(pbx, dir, "callee", "1002", &args).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            pbx.extension("1002").unwrap().unwrap()["registered"] == true
        }),
        "1002 never registered\n{}\n{}",
        callee.output(),
        tail(&pbx.log(), 40)
    );
    let args = [&["--call", "1002"], caller].concat();
    let mut caller = Phone::start(pbx, dir, "caller", "1001", &args).unwrap();
    let caller_status = caller.wait(Duration::from_secs(40));
    let callee_status = callee.wait(Duration::from_secs(10));
    let ctx = format!(
        "{}{}--- kubepbx\n{}",
        caller.output(),
        callee.output(),
        tail(&pbx.log(), 40)
    );
    assert!(
        caller_status.is_some_and(|s| s.success()),
        "caller: {caller_status:?}\n{ctx}"
    );
    assert!(
        callee_status.is_some_and(|s| s.success()),
        "callee: {callee_status:?}\n{ctx}"
    );
    (caller, callee, ctx)
}

/// pjsip 2.15 (the stack of MicroSIP) on both ends, the PBX's default challenges (SHA-256 and
/// MD5), UDP: 1001 calls 1002, each plays its own tone (440 Hz and 880 Hz) and records what it
/// hears; after three seconds 1001 hangs up.
#[test]
fn two_pjsua2_phones_talk_with_audio_both_ways() {
    let pbx = pbx_for_pjsua2();
    let dir = tempfile::tempdir().unwrap();
    let caller_wav = dir.path().join("caller.wav");
    let callee_wav = dir.path().join("callee.wav");
    let (caller, callee, ctx) = pjsua2_call(
        &pbx,
        dir.path(),
        &["--tone", "880", "--record", callee_wav.to_str().unwrap()],
        &[
            "--duration",
            "3",
            "--tone",
            "440",
            "--record",
            caller_wav.to_str().unwrap(),
        ],
    );

    let (caller_lines, callee_lines) = (caller.lines(), callee.lines());
    for (side, lines, bye) in [
        ("caller", &caller_lines, "BYE sent, answered 200"),
        ("callee", &callee_lines, "BYE received"),
    ] {
        for want in ["registered", "call state CONFIRMED", bye] {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "{side}: no '{want}'\n{ctx}"
            );
        }
        let media = lines
            .iter()
            .find_map(|l| l.strip_prefix("remote media "))
            .unwrap_or_else(|| panic!("{side}: no remote media\n{ctx}"));
        let addr: SocketAddr = media
            .parse()
            .unwrap_or_else(|e| panic!("{side}: remote media {media:?}: {e}"));
        assert!(addr.ip().is_loopback(), "{side}: {addr}");
    }

    // Each side heard the other's tone: audio went both ways.
    for (side, wav, hz) in [("caller", &caller_wav, 880), ("callee", &callee_wav, 440)] {
        let a = analyse(wav, hz).unwrap();
        assert!(
            a.ok,
            "{side} recording ({}): {}\n{ctx}",
            wav.display(),
            a.text
        );
    }
}

/// A pjsua2 call in which the caller presses `keys` with `method` (`info` or `rfc4733`) once
/// it is answered: the caller says it pressed them, and the callee reports exactly those keys,
/// in order, each received by that method.
fn press_keys(pbx: &Pbx, dir: &Path, keys: &str, method: &str) -> (Phone, Phone, String) {
    let (caller, callee, ctx) = pjsua2_call(
        pbx,
        dir,
        &["--expect-dtmf", keys],
        &[
            "--duration",
            "3",
            "--send-dtmf",
            keys,
            "--dtmf-method",
            method,
        ],
    );
    assert!(
        caller.has_line(&format!("sent dtmf {keys} {method}")),
        "the caller should have pressed the keys\n{ctx}"
    );
    let received = callee.dtmf();
    let digits: String = received.iter().map(|d| d.digit).collect();
    assert_eq!(digits, keys, "{received:?}\n{ctx}");
    assert!(
        received.iter().all(|d| d.method == method),
        "every key should come by {method}: {received:?}\n{ctx}"
    );
    (caller, callee, ctx)
}

/// Key presses sent as SIP INFO (`application/dtmf-relay`, one INFO per key, as MicroSIP can
/// send them instead of RFC 4733 telephone-events): each INFO follows the dialog's route set
/// (the proxy's `Record-Route`) and reaches the callee from the PBX, not straight from the
/// caller; the callee reports exactly those keys, in order, as INFO; and its 200 for every INFO
/// comes back to the caller.
#[test]
fn key_presses_sent_as_sip_info_reach_the_callee_and_are_answered_200() {
    const KEYS: &str = "19*0#";
    let pbx = pbx_for_pjsua2();
    let dir = tempfile::tempdir().unwrap();
    let (caller, callee, ctx) = press_keys(&pbx, dir.path(), KEYS, "info");

    let pbx_addr = pbx.sip_addr().to_string();
    let sources: Vec<String> = callee
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("INFO received from ").map(str::to_owned))
        .collect();
    assert_eq!(
        sources,
        vec![pbx_addr; KEYS.len()],
        "one INFO per key, each from the PBX\n{ctx}"
    );
    let answers: Vec<String> = caller
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("INFO sent, answered "))
        .collect();
    assert_eq!(
        answers,
        vec!["INFO sent, answered 200"; KEYS.len()],
        "one 200 per INFO\n{ctx}"
    );
}

/// Key presses sent as RFC 4733 telephone-events (pjsua2's default, and what softphones
/// usually send): they travel in the RTP stream, so the relay carries them between the two
/// plain legs with the audio; the callee reports exactly those keys, in order, as telephone-events,
/// and no SIP INFO reaches it.
#[test]
fn key_presses_sent_as_telephone_events_reach_the_callee_through_the_relay() {
    let pbx = pbx_for_pjsua2();
    let dir = tempfile::tempdir().unwrap();
    let (_caller, callee, ctx) = press_keys(&pbx, dir.path(), "1590*#", "rfc4733");
    assert!(
        !callee.has_line("INFO received from "),
        "no INFO should reach the callee\n{ctx}"
    );
}

/// Neither sipp phone sends RTP: after `--media-timeout` the relay closes the session and the PBX
/// hangs up, a BYE to each phone, and the call record says why.
#[test]
fn a_call_without_media_is_hung_up_after_the_media_timeout() {
    let pbx = Pbx::builder()
        .md5_only()
        .args(["--media-timeout", "5s"])
        .start()
        .unwrap();
    pbx.add_extensions(&["1001", "1002"]).unwrap();
    for ext in ["1001", "1002"] {
        pbx.wait_for_extension(ext, FOLDER_WAIT).unwrap();
    }
    let callee = Callee::start(&pbx, "1002", UAS_ANSWER);
    let caller = call(&pbx, UAC_MEDIA_TIMEOUT, "1001", "1002");
    let callee = callee.finish();
    let ctx = report(&pbx, &caller, Some(&callee));
    assert!(caller.all_succeeded(), "caller got no BYE\n{ctx}");
    assert!(callee.all_succeeded(), "callee got no BYE\n{ctx}");
    for (side, out) in [("caller", &caller), ("callee", &callee)] {
        let got = received(out);
        let bye = find(&got, "BYE ", None).unwrap_or_else(|| panic!("{side}: no BYE\n{ctx}"));
        assert!(
            bye.header("Reason").iter().any(|r| r.contains("No media")),
            "{side}: the BYE says why: {bye:?}"
        );
    }
    assert!(
        wait_until(WAIT, || {
            pbx.api_get("/api/v1/cdrs").unwrap()[0]["endReason"] == "media-timeout"
        }),
        "no media-timeout call record: {}\n{ctx}",
        pbx.api_get("/api/v1/cdrs").unwrap()
    );
    assert!(
        pbx.api_get("/api/v1/calls")
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
