//! Calls with audio through `kubepbx up`'s proxy and in-process RTP relay, with real pjsua2
//! phones (`tests/clients/pjsua2_call.py`, pjsip 2.15 — the stack of MicroSIP): phones behind
//! NAT, the SDP each phone receives, recordings, and the calls API (`/api/v1/calls`, `/cdrs`,
//! `/recordings`). Each test starts its own PBX on free loopback ports with its own block of
//! relay ports (`Pbx::rtp_ports`).
//!
//! In every call 1001 calls 1002; the caller plays 440 Hz, the callee 880 Hz, and each records
//! what it hears, so "audio both ways" means the caller's recording holds 880 Hz and the
//! callee's 440 Hz. A phone "behind NAT" binds 127.0.0.2 or 127.0.0.3 and advertises a private
//! 10.255.255.x address in its Contact, Via and SDP (`--public-address`), which nothing may
//! send to: the PBX has to use the source of its packets. pjsip marks its Contact `;ob` (RFC 5626
//! outbound) by default; `--no-outbound` phones do not, like most desk phones, so nothing but
//! the PBX's own NAT handling gets requests to them.
//!
//! The calls API tests follow docs/api.md (`/api/v1/calls`, `/cdrs`, `/recordings`).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_tests::{
    Channel, ExtensionOpts, Pbx, Phone, analyse, analyse_channel, default_password, wait_until,
    write_extension,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a change of the manifest folder (polled every second) on a busy machine.
const FOLDER_WAIT: Duration = Duration::from_secs(10);
/// From a phone's start to its registration in the API.
const REGISTER_WAIT: Duration = Duration::from_secs(15);
/// For a phone to finish: the script's own --timeout (30 s) plus its shutdown.
const PHONE_WAIT: Duration = Duration::from_secs(40);
/// For the other phone once the first has finished.
const SECOND_PHONE_WAIT: Duration = Duration::from_secs(10);
/// For the PBX's API to reflect a change (a call answered, ended, recorded).
const API_WAIT: Duration = Duration::from_secs(10);

/// The private addresses the NATed phones advertise.
const NAT_CALLER: &str = "10.255.255.1";
const NAT_CALLEE: &str = "10.255.255.2";

/// A PBX serving 1001 and 1002 (1002 with `recording: Always` when `record`).
fn pbx(record: bool) -> Pbx {
    serve(Pbx::start().unwrap(), record)
}

/// Like [`pbx`], logging every SIP message it sends and receives (`RUST_LOG=sip=debug`), for
/// [`sip_destinations`].
fn pbx_logging_sip() -> Pbx {
    serve(
        Pbx::builder().rust_log("sip=debug,info").start().unwrap(),
        false,
    )
}

fn serve(pbx: Pbx, record: bool) -> Pbx {
    pbx.add_extensions(&["1001"]).unwrap();
    let opts = ExtensionOpts {
        recording: record.then(|| "Always".to_owned()),
        ..ExtensionOpts::default()
    };
    write_extension(pbx.manifest_dir(), "1002", &default_password("1002"), &opts).unwrap();
    for ext in ["1001", "1002"] {
        pbx.wait_for_extension(ext, FOLDER_WAIT).unwrap();
    }
    pbx
}

/// Everything worth printing when a test fails: each phone's output and the PBX's log tail.
fn report(pbx: &Pbx, phones: &[&Phone]) -> String {
    let mut s = String::new();
    for p in phones {
        s.push_str(&p.output());
    }
    s.push_str(&format!("--- kubepbx\n{}\n", pbx.log_tail(60)));
    s
}

/// `ext`'s first contact in `GET /api/v1/extensions`, once it has one.
fn wait_for_contact(pbx: &Pbx, ext: &str, phones: &[&Phone]) -> Value {
    let mut contact = Value::Null;
    let found = wait_until(REGISTER_WAIT, || {
        contact = pbx.extension(ext).unwrap().unwrap()["contacts"][0].clone();
        !contact.is_null()
    });
    assert!(found, "{ext} never registered\n{}", report(pbx, phones));
    contact
}

/// Starts 1002 answering with `callee_extra` args, waits until it is registered, then starts 1001
/// calling 1002 with `caller_extra`. Both record into `dir`.
fn call(pbx: &Pbx, dir: &Path, caller_extra: &[&str], callee_extra: &[&str]) -> (Phone, Phone) {
    let callee_wav = wav(dir, "callee");
    let mut args = vec!["--answer", "--tone", "880", "--record", &callee_wav];
    args.extend_from_slice(callee_extra);
    let callee = Phone::start(pbx, dir, "callee", "1002", &args).unwrap();
    wait_for_contact(pbx, "1002", &[&callee]);
    let caller_wav = wav(dir, "caller");
    let mut args = vec!["--call", "1002", "--tone", "440", "--record", &caller_wav];
    args.extend_from_slice(caller_extra);
    let caller = Phone::start(pbx, dir, "caller", "1001", &args).unwrap();
    (caller, callee)
}

fn wav(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.wav")).to_str().unwrap().to_owned()
}

/// Waits for both phones to exit and asserts both succeeded (the script's own verdict: the
/// call was confirmed and ended with the BYE each side expected).
fn both_succeed(pbx: &Pbx, caller: &mut Phone, callee: &mut Phone) {
    let first = caller.wait(PHONE_WAIT);
    let second = callee.wait(SECOND_PHONE_WAIT);
    let ctx = report(pbx, &[caller, callee]);
    assert!(
        first.is_some_and(|s| s.success()),
        "caller: {first:?}\n{ctx}"
    );
    assert!(
        second.is_some_and(|s| s.success()),
        "callee: {second:?}\n{ctx}"
    );
}

/// Asserts each phone heard the other's tone.
fn audio_both_ways(pbx: &Pbx, dir: &Path, caller: &Phone, callee: &Phone) {
    for (side, hz) in [("caller", 880), ("callee", 440)] {
        let path = PathBuf::from(wav(dir, side));
        let a = analyse(&path, hz).unwrap();
        assert!(
            a.ok,
            "{side} should hear {hz} Hz ({}): {}\n{}",
            path.display(),
            a.text,
            report(pbx, &[caller, callee])
        );
    }
}

/// Asserts that every SDP `phone` received (offers if `offers`, else answers; at least one)
/// names the relay: the PBX's advertised address and a port of its `--rtp-ports`, never what
/// `other` sent; and that pjsua sends its RTP there. Returns the audio port of the first.
fn sdp_points_at_the_relay(
    pbx: &Pbx,
    phone: &Phone,
    other: &Phone,
    offers: bool,
    ctx: &str,
) -> u16 {
    let got: Vec<_> = phone
        .remote_sdps()
        .into_iter()
        .filter(|s| s.is_offer() == offers)
        .collect();
    let what = if offers { "offer" } else { "answer" };
    assert!(
        !got.is_empty(),
        "{}: no SDP {what} received\n{ctx}",
        phone.name()
    );
    let sent = other.local_sdps();
    assert!(!sent.is_empty(), "{}: no SDP sent\n{ctx}", other.name());
    for sdp in &got {
        assert!(
            sent.iter().all(|o| (o.ip, o.port) != (sdp.ip, sdp.port)),
            "{} got {}'s own SDP {sdp:?}\n{ctx}",
            phone.name(),
            other.name()
        );
        assert_eq!(
            sdp.ip,
            pbx.advertise(),
            "{}: the {what} names {sdp:?}, not the relay\n{ctx}",
            phone.name()
        );
        assert!(
            pbx.rtp_ports().contains(&sdp.port),
            "{}: the {what}'s port {} is outside the relay's {:?}\n{ctx}",
            phone.name(),
            sdp.port,
            pbx.rtp_ports()
        );
    }
    let media = phone
        .remote_media()
        .unwrap_or_else(|| panic!("{}: no remote media\n{ctx}", phone.name()));
    assert_eq!(
        (media.ip(), media.port()),
        (got[0].ip, got[0].port),
        "{}: pjsua sends RTP elsewhere than the SDP says\n{ctx}",
        phone.name()
    );
    got[0].port
}

/// Where the PBX sent SIP messages: the `ip:port` of each `sent N bytes TRANSPORT IP:PORT:` line
/// of its `sip=debug` log.
fn sip_destinations(pbx: &Pbx) -> Vec<String> {
    pbx.log()
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(" sent ")? + 1..];
            match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["sent", _, "bytes", _, to, ..] => Some(to.trim_end_matches(':').to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Asserts the PBX sent SIP to each of `sources` (the NATed phones' real addresses) and never
/// to a 10.255.255.x address they advertised.
fn sip_went_to_sources_only(pbx: &Pbx, sources: &[&str], ctx: &str) {
    let sent = sip_destinations(pbx);
    for source in sources {
        assert!(
            sent.iter().any(|d| d.starts_with(&format!("{source}:"))),
            "no SIP message sent to {source}: {sent:?}\n{ctx}"
        );
    }
    let private: Vec<_> = sent
        .iter()
        .filter(|d| d.starts_with("10.255.255."))
        .collect();
    assert!(
        private.is_empty(),
        "SIP sent to an address behind NAT: {private:?}\n{ctx}"
    );
}

/// Asserts that every SDP `phone` sent named `public` (the NAT simulation works).
fn sent_sdp_names(phone: &Phone, public: &str, ctx: &str) {
    let sent = phone.local_sdps();
    assert!(!sent.is_empty(), "{}: no SDP sent\n{ctx}", phone.name());
    for sdp in sent {
        assert_eq!(
            sdp.ip.to_string(),
            public,
            "{}: {sdp:?}\n{ctx}",
            phone.name()
        );
    }
}

/// Asserts the registrar shows `contact` as one behind NAT: the private `public` address in its
/// URI, packets from `bind`.
fn assert_nat_contact(contact: &Value, public: &str, bind: &str, ctx: &str) {
    assert_eq!(contact["nat"], true, "{contact}\n{ctx}");
    assert!(
        contact["uri"].as_str().unwrap().contains(public),
        "{contact}"
    );
    assert!(
        contact["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{bind}:")),
        "{contact}"
    );
}

/// Both phones behind NAT (different private addresses, different loopback sources): audio
/// both ways through the relay, and the callee receives the caller's BYE at its real source.
#[test]
fn phones_behind_nat_talk_both_ways_and_the_callee_gets_the_bye() {
    let pbx = pbx_logging_sip();
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(
        &pbx,
        dir.path(),
        &[
            "--duration",
            "4",
            "--bind",
            "127.0.0.2",
            "--public-address",
            NAT_CALLER,
        ],
        &[
            "--bind",
            "127.0.0.3",
            "--public-address",
            NAT_CALLEE,
            "--no-outbound",
        ],
    );
    // The caller's binding lasts until it unregisters at its end.
    let caller_contact = wait_for_contact(&pbx, "1001", &[&caller, &callee]);
    let callee_contact = pbx.extension("1002").unwrap().unwrap()["contacts"][0].clone();
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = report(&pbx, &[&caller, &callee]);
    assert_nat_contact(&caller_contact, NAT_CALLER, "127.0.0.2", &ctx);
    assert_nat_contact(&callee_contact, NAT_CALLEE, "127.0.0.3", &ctx);

    assert!(caller.has_line("BYE sent, answered 200"), "{ctx}");
    assert!(callee.has_line("BYE received"), "{ctx}");
    audio_both_ways(&pbx, dir.path(), &caller, &callee);
    // Each phone sent its private address; neither reached the other phone: the relay's
    // address replaced it.
    sent_sdp_names(&caller, NAT_CALLER, &ctx);
    sent_sdp_names(&callee, NAT_CALLEE, &ctx);
    sip_went_to_sources_only(&pbx, &["127.0.0.2", "127.0.0.3"], &ctx);
    sdp_points_at_the_relay(&pbx, &callee, &caller, true, &ctx);
    sdp_points_at_the_relay(&pbx, &caller, &callee, false, &ctx);
}

/// A caller behind NAT: the callee hangs up, and the BYE reaches the caller at its real source
/// although its Contact (the BYE's Request-URI) names a private address.
#[test]
fn a_caller_behind_nat_gets_the_callees_bye() {
    let pbx = pbx_logging_sip();
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(
        &pbx,
        dir.path(),
        &[
            "--expect-hangup",
            "--duration",
            "20",
            "--bind",
            "127.0.0.2",
            "--public-address",
            NAT_CALLER,
            "--no-outbound",
        ],
        &["--hangup", "--duration", "3"],
    );
    let caller_contact = wait_for_contact(&pbx, "1001", &[&caller, &callee]);
    // The callee finishes first here.
    let callee_status = callee.wait(PHONE_WAIT);
    let caller_status = caller.wait(SECOND_PHONE_WAIT);
    let ctx = report(&pbx, &[&caller, &callee]);
    assert!(
        callee_status.is_some_and(|s| s.success()),
        "callee: {callee_status:?}\n{ctx}"
    );
    assert!(
        caller_status.is_some_and(|s| s.success()),
        "caller: {caller_status:?}\n{ctx}"
    );
    assert_nat_contact(&caller_contact, NAT_CALLER, "127.0.0.2", &ctx);
    sent_sdp_names(&caller, NAT_CALLER, &ctx);
    sip_went_to_sources_only(&pbx, &["127.0.0.2"], &ctx);
    sdp_points_at_the_relay(&pbx, &callee, &caller, true, &ctx);
    assert!(callee.has_line("BYE sent, answered 200"), "{ctx}");
    assert!(caller.has_line("BYE received"), "{ctx}");
    audio_both_ways(&pbx, dir.path(), &caller, &callee);
    let cdr = newest_cdr(&pbx, &[&caller, &callee]);
    assert_eq!(cdr["endReason"], "callee-hangup", "{cdr}\n{ctx}");
}

/// The offer the callee receives and the answer the caller receives both name the relay (the
/// PBX's address, ports of its `--rtp-ports`, one per leg), never the other phone.
#[test]
fn the_sdp_each_phone_receives_points_at_the_relay() {
    let pbx = pbx(false);
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(&pbx, dir.path(), &["--duration", "2"], &[]);
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = report(&pbx, &[&caller, &callee]);
    let to_callee = sdp_points_at_the_relay(&pbx, &callee, &caller, true, &ctx);
    let to_caller = sdp_points_at_the_relay(&pbx, &caller, &callee, false, &ctx);
    assert_ne!(
        to_callee, to_caller,
        "each leg has its own relay port\n{ctx}"
    );
}

/// The single recording in the data dir, once the recorder has finished it (`endedAt` in its
/// JSON and the WAV header's sizes match the file).
fn finished_recording(pbx: &Pbx, ctx: &dyn Fn() -> String) -> (String, PathBuf, Value) {
    let dir = pbx.data_dir().join("recordings");
    let mut found = None;
    let done = wait_until(API_WAIT, || {
        let wavs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                    .collect()
            })
            .unwrap_or_default();
        let [wav] = wavs.as_slice() else {
            return false;
        };
        let meta: Value = std::fs::read(wav.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if meta["endedAt"].is_string() && wav_finalised(wav) {
            let id = wav.file_stem().unwrap().to_str().unwrap().to_owned();
            found = Some((id, wav.clone(), meta));
            return true;
        }
        false
    });
    assert!(
        done,
        "no finished recording in {}: {:?}\n{}",
        dir.display(),
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()),
        ctx()
    );
    found.unwrap()
}

/// Whether the RIFF size in `wav`'s header matches the file (the recorder has finalised it).
fn wav_finalised(wav: &Path) -> bool {
    let Ok(bytes) = std::fs::read(wav) else {
        return false;
    };
    bytes.len() > 44
        && bytes.starts_with(b"RIFF")
        && bytes[4..8] == u32::try_from(bytes.len() - 8).unwrap().to_le_bytes()
}

/// Asserts the stereo `wav` holds the caller's 440 Hz left and the callee's 880 Hz right.
fn both_channels(wav: &Path, ctx: &str) {
    for (channel, hz) in [(Channel::Left, 440), (Channel::Right, 880)] {
        let a = analyse_channel(wav, channel, hz).unwrap();
        assert!(
            a.ok,
            "{channel:?} channel of {} should hold {hz} Hz: {}\n{ctx}",
            wav.display(),
            a.text
        );
    }
}

/// Phones offering PCMU alone (pjsip's own preference is speex/16000).
const PCMU: [&str; 2] = ["--codec", "PCMU"];

/// 1002 records every call: the stereo WAV in `<data-dir>/recordings/` holds the caller left
/// and the callee right, both non-silent. The phones keep pjsip's default codec order (speex
/// first, G.711 further down): the recorder decodes G.711 only, so the PBX limits the offer of a
/// recorded call to G.711, and nothing is skipped.
#[test]
fn a_recorded_call_has_the_caller_left_and_the_callee_right() {
    let pbx = pbx(true);
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(&pbx, dir.path(), &["--duration", "4"], &[]);
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = || report(&pbx, &[&caller, &callee]);
    audio_both_ways(&pbx, dir.path(), &caller, &callee);
    let (id, wav, meta) = finished_recording(&pbx, &ctx);
    assert!(id.ends_with("-1001-1002"), "{id}");
    assert_eq!(meta["caller"], "1001", "{meta}");
    assert_eq!(meta["callee"], "1002", "{meta}");
    assert_eq!(meta["skippedPayloads"], serde_json::json!([]), "{meta}");
    both_channels(&wav, &ctx());
}

// ---- the calls API ----------------------------------------------------------------------------

/// Whether `s` looks like an RFC 3339 timestamp (`2025-01-02T03:04:05[.fff](Z|±hh:mm)`).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z')
            || s.ends_with('z')
            || b[b.len() - 6] == b'+'
            || b[b.len() - 6] == b'-')
}

fn assert_time(v: &Value, field: &str, ctx: &str) {
    let t = v[field].as_str().unwrap_or_default();
    assert!(is_rfc3339(t), "{field} is not RFC 3339: {v}\n{ctx}");
}

/// The live calls (`GET /api/v1/calls`).
fn live_calls(pbx: &Pbx) -> Vec<Value> {
    pbx.api_get("/api/v1/calls")
        .unwrap()
        .as_array()
        .expect("GET /api/v1/calls is an array")
        .clone()
}

/// Waits for the live call from 1001 to 1002 to be answered and returns it.
fn answered_call(pbx: &Pbx, phones: &[&Phone]) -> Value {
    let mut call = Value::Null;
    let found = wait_until(Duration::from_secs(20), || {
        call = live_calls(pbx)
            .into_iter()
            .find(|c| c["from"] == "1001" && c["to"] == "1002" && c["state"] == "answered")
            .unwrap_or(Value::Null);
        !call.is_null()
    });
    assert!(
        found,
        "no answered call 1001 → 1002 in GET /api/v1/calls: {:?}\n{}",
        pbx.api_get("/api/v1/calls"),
        report(pbx, phones)
    );
    call
}

/// The media counters of `leg` (`caller` or `callee`) as (packetsIn, bytesIn, packetsOut,
/// bytesOut, lost).
fn counters(call: &Value, leg: &str) -> [u64; 5] {
    let m = &call["media"][leg];
    ["packetsIn", "bytesIn", "packetsOut", "bytesOut", "lost"].map(|k| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("media.{leg}.{k} in {call}"))
    })
}

/// Asserts both legs of `call` carried media each way, and that the relay sent each phone no
/// more than it received from the other.
fn media_flowed(call: &Value, ctx: &str) {
    for (leg, other) in [("caller", "callee"), ("callee", "caller")] {
        let [p_in, b_in, p_out, b_out, _lost] = counters(call, leg);
        assert!(
            p_in > 0 && b_in > 0 && p_out > 0 && b_out > 0,
            "{leg} leg without media: {call}\n{ctx}"
        );
        let [other_in, ..] = counters(call, other);
        assert!(
            p_out <= other_in,
            "the relay sent {leg} more packets than {other} sent it: {call}\n{ctx}"
        );
    }
}

/// The newest CDR of a call from 1001 to 1002, once there is one.
fn newest_cdr(pbx: &Pbx, phones: &[&Phone]) -> Value {
    let mut cdr = Value::Null;
    let found = wait_until(API_WAIT, || {
        cdr = pbx
            .api_get("/api/v1/cdrs")
            .unwrap()
            .as_array()
            .expect("GET /api/v1/cdrs is an array")
            .iter()
            .find(|c| c["from"] == "1001" && c["to"] == "1002")
            .cloned()
            .unwrap_or(Value::Null);
        !cdr.is_null()
    });
    assert!(
        found,
        "no CDR of 1001 → 1002: {:?}\n{}",
        pbx.api_get("/api/v1/cdrs"),
        report(pbx, phones)
    );
    cdr
}

/// The fields every CDR of an answered call has.
fn assert_answered_cdr(cdr: &Value, ctx: &str) {
    for field in ["startedAt", "answeredAt", "endedAt"] {
        assert_time(cdr, field, ctx);
    }
    assert!(cdr["id"].is_string(), "{cdr}");
    assert_eq!(cdr["state"], "ended", "{cdr}\n{ctx}");
    assert!(cdr["durationSeconds"].is_number(), "{cdr}\n{ctx}");
    assert_eq!(cdr["endCode"], 200, "an answered call: {cdr}\n{ctx}");
    // Same format (the PBX writes UTC): the text order is the time order.
    let (s, a, e) = (
        cdr["startedAt"].as_str().unwrap(),
        cdr["answeredAt"].as_str().unwrap(),
        cdr["endedAt"].as_str().unwrap(),
    );
    if [s, a, e].iter().all(|t| t.ends_with('Z')) {
        assert!(s <= a && a <= e, "times out of order: {cdr}\n{ctx}");
    }
}

/// `GET /api/v1/calls` shows the pjsua2 call while it lasts, with media counters rising on both
/// legs; `DELETE /api/v1/calls/{id}` answers 204 and ends it with a BYE to each phone; the call
/// leaves the list and becomes a CDR with endReason `admin-hangup`.
#[test]
fn the_calls_api_lists_a_live_call_and_an_admin_hangup_ends_it_on_both_phones() {
    let pbx = pbx(false);
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(
        &pbx,
        dir.path(),
        &["--expect-hangup", "--duration", "20"],
        &["--expect-hangup"],
    );
    let first = answered_call(&pbx, &[&caller, &callee]);
    let ctx = || report(&pbx, &[&caller, &callee]);
    let id = first["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id: {first}"))
        .to_owned();
    assert_time(&first, "startedAt", &ctx());
    assert_time(&first, "answeredAt", &ctx());
    assert!(first["durationSeconds"].is_number(), "{first}");
    assert_eq!(first["recording"], Value::Null, "{first}");

    // Counters rise on both legs while the phones send their tones (50 packets/s each way).
    let mut before = first.clone();
    let mut later = Value::Null;
    let rose = wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(500));
        let Some(now) = live_calls(&pbx).into_iter().find(|c| c["id"] == id) else {
            return false;
        };
        if before["media"].is_null() {
            before = now;
            return false;
        }
        later = now;
        ["caller", "callee"].iter().all(|leg| {
            let (b, l) = (counters(&before, leg), counters(&later, leg));
            l[0] > b[0] && l[1] > b[1] && l[2] > b[2] && l[3] > b[3]
        })
    });
    assert!(
        rose,
        "media counters did not rise on both legs:\nbefore {before}\nlater {later}\n{}",
        ctx()
    );
    assert!(
        later["durationSeconds"].as_f64() >= first["durationSeconds"].as_f64(),
        "{first}\n{later}"
    );

    let (status, body) = pbx.api_delete(&format!("/api/v1/calls/{id}")).unwrap();
    assert_eq!(status, 204, "DELETE /api/v1/calls/{id}: {body}\n{}", ctx());
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = report(&pbx, &[&caller, &callee]);
    for phone in [&caller, &callee] {
        assert!(phone.has_line("BYE received"), "{}: {ctx}", phone.name());
        // docs/api.md: "with a Reason header saying the administrator hung up".
        assert!(
            phone.has_line("BYE reason "),
            "{}: the PBX's BYE has no Reason header\n{ctx}",
            phone.name()
        );
    }
    assert!(
        wait_until(API_WAIT, || live_calls(&pbx).iter().all(|c| c["id"] != id)),
        "the call is still listed: {:?}\n{ctx}",
        live_calls(&pbx)
    );

    let cdr = newest_cdr(&pbx, &[&caller, &callee]);
    assert_eq!(cdr["id"], id.as_str(), "{cdr}\n{ctx}");
    assert_eq!(cdr["endReason"], "admin-hangup", "{cdr}\n{ctx}");
    assert_answered_cdr(&cdr, &ctx);
    media_flowed(&cdr, &ctx);
}

/// A call the caller ends with its BYE is a CDR with endReason `caller-hangup`, its talk time
/// and media counters above zero on both legs.
#[test]
fn a_call_the_caller_hangs_up_is_a_cdr_with_caller_hangup_and_media() {
    let pbx = pbx(false);
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(&pbx, dir.path(), &["--duration", "3"], &[]);
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = report(&pbx, &[&caller, &callee]);
    let cdr = newest_cdr(&pbx, &[&caller, &callee]);
    assert_eq!(cdr["endReason"], "caller-hangup", "{cdr}\n{ctx}");
    assert_answered_cdr(&cdr, &ctx);
    media_flowed(&cdr, &ctx);
    let talk = cdr["durationSeconds"].as_f64().unwrap();
    assert!(
        (2.0..15.0).contains(&talk),
        "the caller talked ~3 s: {cdr}\n{ctx}"
    );
    // 3 s of 20 ms packets is ~150 each way; at least one second's worth arrived.
    for leg in ["caller", "callee"] {
        let [p_in, ..] = counters(&cdr, leg);
        assert!(p_in >= 50, "{leg}: {p_in} packets in 3 s: {cdr}\n{ctx}");
    }
    assert_eq!(cdr["recording"], Value::Null, "{cdr}");
    assert!(
        wait_until(API_WAIT, || live_calls(&pbx).is_empty()),
        "no live call after both hung up: {:?}\n{ctx}",
        live_calls(&pbx)
    );
}

/// A call that still rings is listed as `ringing` (no answer time, no talk time); `DELETE`
/// cancels it: the callee's phone stops ringing, the caller gets 487, and the CDR says
/// `admin-hangup`.
#[test]
fn deleting_a_ringing_call_cancels_it() {
    let pbx = pbx(false);
    let dir = tempfile::tempdir().unwrap();
    // The callee rings far longer than the test waits; the caller would talk for 2 s.
    let (mut caller, mut callee) = call(&pbx, dir.path(), &["--duration", "2"], &["--ring", "60"]);
    let mut ringing = Value::Null;
    let found = wait_until(Duration::from_secs(20), || {
        ringing = live_calls(&pbx)
            .into_iter()
            .find(|c| c["from"] == "1001" && c["to"] == "1002")
            .unwrap_or(Value::Null);
        ringing["state"] == "ringing" && callee.has_line("call state EARLY")
    });
    let ctx = || report(&pbx, &[&caller, &callee]);
    assert!(found, "no ringing call: {ringing}\n{}", ctx());
    assert_time(&ringing, "startedAt", &ctx());
    assert_eq!(ringing["answeredAt"], Value::Null, "{ringing}");
    assert_eq!(ringing["durationSeconds"].as_f64(), Some(0.0), "{ringing}");
    let id = ringing["id"].as_str().unwrap().to_owned();

    let (status, body) = pbx.api_delete(&format!("/api/v1/calls/{id}")).unwrap();
    assert_eq!(status, 204, "DELETE /api/v1/calls/{id}: {body}\n{}", ctx());
    // Neither phone's call is ever confirmed: both exit 1 ("never confirmed"), quickly.
    let caller_status = caller.wait(Duration::from_secs(15));
    let callee_status = callee.wait(SECOND_PHONE_WAIT);
    let ctx = report(&pbx, &[&caller, &callee]);
    assert!(
        caller_status.is_some() && callee_status.is_some(),
        "the phones did not stop: {caller_status:?} {callee_status:?}\n{ctx}"
    );
    assert!(
        caller.has_line("call state DISCONNECTED 487"),
        "the caller should get 487\n{ctx}"
    );
    assert!(!caller.has_line("call state CONFIRMED"), "{ctx}");
    assert!(callee.has_line("call state DISCONNECTED"), "{ctx}");
    assert!(!callee.has_line("call state CONFIRMED"), "{ctx}");

    let cdr = newest_cdr(&pbx, &[&caller, &callee]);
    assert_eq!(cdr["id"], id.as_str(), "{cdr}\n{ctx}");
    assert_eq!(cdr["endReason"], "admin-hangup", "{cdr}\n{ctx}");
    assert_eq!(cdr["answeredAt"], Value::Null, "{cdr}");
    assert_eq!(cdr["endCode"], 487, "{cdr}\n{ctx}");
}

/// The calls API needs the admin token like the rest of /api/v1; deleting a call that does not
/// exist is a 404 problem document.
#[test]
fn the_calls_api_needs_the_token_and_an_unknown_call_is_404() {
    let pbx = pbx(false);
    for path in ["/api/v1/calls", "/api/v1/cdrs", "/api/v1/recordings"] {
        let (status, body) = pbx.api_get_status(path, None).unwrap();
        assert_eq!(status, 401, "GET {path} without a token: {body}");
        let (status, body) = pbx.api_get_status(path, Some("wrong")).unwrap();
        assert_eq!(status, 401, "GET {path} with a wrong token: {body}");
        assert_eq!(pbx.api_get(path).unwrap(), serde_json::json!([]), "{path}");
    }
    let (status, body) = pbx.api_delete("/api/v1/calls/no-such-call").unwrap();
    assert_eq!(status, 404, "{body}\n{}", pbx.log_tail(20));
    let problem: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("not a problem document ({e}): {body}"));
    assert_eq!(problem["status"], 404, "{problem}");
    let (status, _, body) = pbx
        .api_get_bytes("/api/v1/recordings/no-such-recording")
        .unwrap();
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

/// A recorded call: the live call names its recording, `GET /api/v1/recordings` lists it
/// (newest first) after the call, `GET /api/v1/recordings/{id}` serves the WAV with both
/// channels non-silent, and the CDR names the recording too.
#[test]
fn a_recording_is_listed_and_downloadable_through_the_api() {
    let pbx = pbx(true);
    let dir = tempfile::tempdir().unwrap();
    let (mut caller, mut callee) = call(
        &pbx,
        dir.path(),
        &["--duration", "4", PCMU[0], PCMU[1]],
        &PCMU,
    );
    let live = answered_call(&pbx, &[&caller, &callee]);
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = || report(&pbx, &[&caller, &callee]);
    let (id, wav, _meta) = finished_recording(&pbx, &ctx);
    assert_eq!(live["recording"], id.as_str(), "{live}\n{}", ctx());

    let list = pbx.api_get("/api/v1/recordings").unwrap();
    let entry = &list[0];
    assert_eq!(entry["id"], id.as_str(), "{list}\n{}", ctx());
    assert_eq!(entry["from"], "1001", "{entry}");
    assert_eq!(entry["to"], "1002", "{entry}");
    assert_time(entry, "startedAt", &ctx());
    assert_time(entry, "endedAt", &ctx());
    let on_disk = std::fs::metadata(&wav).unwrap().len();
    assert_eq!(entry["sizeBytes"].as_u64(), Some(on_disk), "{entry}");

    let (status, content_type, bytes) = pbx
        .api_get_bytes(&format!("/api/v1/recordings/{id}"))
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(content_type.as_deref(), Some("audio/wav"));
    assert_eq!(bytes.len() as u64, on_disk);
    assert!(bytes.starts_with(b"RIFF"), "not a WAV");
    let downloaded = dir.path().join("downloaded.wav");
    std::fs::write(&downloaded, &bytes).unwrap();
    both_channels(&downloaded, &ctx());

    let cdr = newest_cdr(&pbx, &[&caller, &callee]);
    assert_eq!(cdr["recording"], id.as_str(), "{cdr}");
}

/// SIP over TLS (`--sip-tls`): 1002 registers over TLS, verifying the PBX's certificate, and
/// takes a call from 1001 on UDP; audio flows both ways and the callee gets the BYE over TLS.
#[test]
fn a_phone_on_sip_over_tls_takes_a_call_from_a_udp_phone() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls_port = kubepbx_tests::ports::free_tcp_port().unwrap();
    let https_port = kubepbx_tests::ports::free_tcp_port().unwrap();
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let pbx = serve(
        Pbx::builder()
            .arg("--sip-tls")
            .arg(tls_addr.to_string())
            .arg("--https")
            .arg(format!("127.0.0.1:{https_port}"))
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .rust_log("sip=debug,info")
            .start()
            .unwrap(),
        false,
    );
    let ca = cert_path.to_str().unwrap();
    let callee_wav = wav(dir.path(), "callee");
    let mut callee = Phone::start_at(
        tls_addr,
        pbx.domain(),
        dir.path(),
        "callee",
        "1002",
        &[
            "--answer",
            "--tone",
            "880",
            "--record",
            &callee_wav,
            "--transport",
            "tls",
            "--tls-ca",
            ca,
        ],
    )
    .unwrap();
    let contact = wait_for_contact(&pbx, "1002", &[&callee]);
    let caller_wav = wav(dir.path(), "caller");
    let mut caller = Phone::start(
        &pbx,
        dir.path(),
        "caller",
        "1001",
        &[
            "--call",
            "1002",
            "--tone",
            "440",
            "--record",
            &caller_wav,
            "--duration",
            "3",
        ],
    )
    .unwrap();
    both_succeed(&pbx, &mut caller, &mut callee);
    let ctx = report(&pbx, &[&caller, &callee]);
    assert_eq!(contact["transport"], "tls", "{contact}\n{ctx}");
    assert!(callee.has_line("BYE received"), "{ctx}");
    audio_both_ways(&pbx, dir.path(), &caller, &callee);
    // The INVITE reached the TLS phone record-routed at the TLS port.
    let log = pbx.log_tail(2000);
    assert!(
        log.contains(&format!("<sip:127.0.0.1:{tls_port};transport=tls;lr")),
        "no Record-Route at the TLS port\n{ctx}"
    );
}
