//! The web phone in a real browser (headless Chromium with a fake microphone) against
//! `kubepbx up`: it registers over `/ws`, its audio goes through the relay's WebRTC leg, and a
//! pjsua2 softphone on plain RTP is on the other end.
//!
//! - the web phone calls a softphone: audio both ways (the browser's `getStats()` inbound
//!   packets and level; the softphone's recording of what it received), the duration counts up,
//!   Hang up ends the call on both sides;
//! - the softphone calls the web phone: it rings, Answer works, audio both ways;
//! - two web phones call each other;
//! - dial-pad keys pressed during a call reach the softphone, exactly and as RFC 4733
//!   telephone-events (the relay bridges them between the WebRTC and the RTP leg);
//! - Mute silences what the softphone hears (its recording, read while it records) until
//!   Unmute, and the button says so.
//!
//! Screenshots of every step that matters are kept under the test-artifacts folder
//! (`kubepbx_tests::browser::artifacts_dir`).

use kubepbx_tests::browser::Browser;
use kubepbx_tests::pjsua2::{self, Expect, Phone};
use kubepbx_tests::web_phone::{self, MuteButton};
use kubepbx_tests::{Pbx, default_password, wait_until};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A PBX with extensions 1001-1003 (the harness gives its relay a WebRTC port).
fn pbx() -> Pbx {
    kubepbx_tests::browser::require_web_build().expect("the web phone is built");
    let pbx = Pbx::start().expect("start kubepbx up");
    pbx.add_extensions(&["1001", "1002", "1003"])
        .expect("extensions");
    for ext in ["1001", "1002", "1003"] {
        pbx.wait_for_extension(ext, WAIT).expect("extension loaded");
    }
    pbx
}

/// Opens the web phone as `page` and logs in as `ext`.
fn web_phone(browser: &Browser, pbx: &Pbx, page: &str, ext: &str) {
    web_phone::log_in(
        browser,
        page,
        &pbx.http_url(),
        ext,
        &default_password(ext),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{page} did not register: {e}\n{}", pbx.log_tail(40)));
}

/// Waits until the page's call shows audio both ways: packets sent and received, and a
/// received level above silence.
fn assert_audio_both_ways(browser: &Browser, page: &str, pbx: &Pbx) -> Value {
    web_phone::wait_for_audio_both_ways(browser, page, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", pbx.log_tail(40)))
}

/// Whether a softphone's recording holds sound (what it received from the browser).
fn assert_heard(wav: &Path) {
    let analysis = pjsua2::analyse_sound(wav).expect("analyse the recording");
    assert!(
        analysis.ok,
        "the softphone heard nothing from the browser: {}",
        analysis.text
    );
}

/// A softphone 1002 that answers the web phone with an 880 Hz tone and records what it hears
/// into `wav`; `extra` options after those. Waits for its registration.
fn answering_softphone(pbx: &Pbx, dir: &Path, wav: &Path, extra: &[&str]) -> Phone {
    let wav = wav.to_string_lossy();
    let mut args = vec![
        "--answer",
        "--tone",
        "880",
        "--record",
        &wav,
        "--timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    let mut softphone = Phone::start(pbx, dir, "softphone", "1002", &args).expect("start pjsua2");
    assert!(
        softphone.wait_for_line("registered", WAIT),
        "{}",
        softphone.output()
    );
    softphone
}

/// The web phone on `page` calls 1002 and waits until the call is up with audio both ways;
/// returns the page's audio counters then.
fn call_softphone(browser: &Browser, page: &str, pbx: &Pbx, softphone: &Phone) -> Value {
    web_phone::dial(browser, page, "1002").expect("call");
    browser
        .wait_text(page, "call-state", "^in call$", WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "not answered: {e}\n{}\n{}",
                softphone.output(),
                pbx.log_tail(60)
            )
        });
    assert_audio_both_ways(browser, page, pbx)
}

/// The web phone on `page` hangs up; the call ends there, and the softphone sees the BYE and
/// exits successfully (its own checks included, such as `--expect-dtmf`).
fn hang_up_softphone(browser: &Browser, page: &str, softphone: &mut Phone) {
    browser.click(page, "hangup").expect("hang up");
    browser
        .wait_text(page, "call-state", "^ended", WAIT)
        .expect("the call ends on the web phone");
    assert!(
        softphone.ended_by_bye(WAIT),
        "the softphone must see the BYE: {}",
        softphone.output()
    );
}

#[test]
fn the_web_phone_calls_a_softphone_and_they_talk() {
    let pbx = pbx();
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("softphone.wav");
    let mut softphone = answering_softphone(&pbx, dir.path(), &wav, &[]);

    let browser = Browser::start().expect("start the browser");
    web_phone(&browser, &pbx, "web", "1001");
    let stats = call_softphone(&browser, "web", &pbx, &softphone);
    assert!(
        wait_until(WAIT, || web_phone::shown_seconds(&browser, "web")
            .is_ok_and(|s| s >= 3)),
        "the duration does not count up"
    );
    browser
        .screenshot("web", "web-calls-softphone")
        .expect("screenshot");
    let calls = pbx.api_get("/api/v1/calls").expect("calls");
    assert_eq!(calls[0]["from"], "1001", "{calls}");
    assert_eq!(calls[0]["to"], "1002", "{calls}");
    assert_eq!(calls[0]["state"], "answered", "{calls}");

    hang_up_softphone(&browser, "web", &mut softphone);
    assert_heard(&wav);
    eprintln!("web phone stats during the call: {stats}");
}

#[test]
fn a_softphone_calls_the_web_phone_and_it_answers() {
    let pbx = pbx();
    let browser = Browser::start().expect("start the browser");
    web_phone(&browser, &pbx, "web", "1002");

    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("softphone.wav");
    let wav_arg = wav.to_string_lossy().into_owned();
    let mut softphone = Phone::start(
        &pbx,
        dir.path(),
        "softphone",
        "1001",
        &[
            "--call",
            "1002",
            "--duration",
            "6",
            "--tone",
            "440",
            "--record",
            &wav_arg,
            "--timeout",
            "60",
        ],
    )
    .expect("start pjsua2");
    browser
        .wait_text("web", "call-state", "^incoming$", WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "no incoming call: {e}\n{}\n{}",
                softphone.output(),
                pbx.log_tail(60)
            )
        });
    assert!(
        browser.text("web", "peer").expect("peer").contains("1001"),
        "the caller is shown"
    );
    browser
        .screenshot("web", "incoming-call")
        .expect("screenshot");
    browser.click("web", "answer").expect("answer");
    browser
        .wait_text("web", "call-state", "^in call$", WAIT)
        .expect("answered");
    assert_audio_both_ways(&browser, "web", &pbx);
    // The softphone hangs up after --duration.
    browser
        .wait_text("web", "call-state", "^ended", WAIT)
        .expect("the softphone's BYE ends the call");
    assert_eq!(
        softphone.wait(WAIT).map(|s| s.success()),
        Some(true),
        "{}",
        softphone.output()
    );
    assert_heard(&wav);
}

#[test]
fn two_web_phones_call_each_other() {
    let pbx = pbx();
    let browser = Browser::start().expect("start the browser");
    web_phone(&browser, &pbx, "alice", "1001");
    web_phone(&browser, &pbx, "bob", "1003");
    web_phone::dial(&browser, "alice", "1003").expect("call");
    browser
        .wait_text("bob", "call-state", "^incoming$", WAIT)
        .unwrap_or_else(|e| panic!("no incoming call: {e}\n{}", pbx.log_tail(60)));
    browser.click("bob", "answer").expect("answer");
    for page in ["alice", "bob"] {
        browser
            .wait_text(page, "call-state", "^in call$", WAIT)
            .expect("in call");
    }
    assert_audio_both_ways(&browser, "alice", &pbx);
    assert_audio_both_ways(&browser, "bob", &pbx);
    browser
        .screenshot("alice", "browser-to-browser")
        .expect("screenshot");
    browser.click("bob", "hangup").expect("hang up");
    browser
        .wait_text("alice", "call-state", "^ended", WAIT)
        .expect("the hang-up reaches the other page");
    assert!(wait_until(WAIT, || {
        pbx.api_get("/api/v1/cdrs")
            .is_ok_and(|v| v[0]["endReason"] == "callee-hangup")
    }));
}

/// Keys pressed on the dial pad during a call reach the softphone exactly, in order, and as
/// RFC 4733 telephone-events: the browser negotiates telephone-event with the relay's WebRTC
/// leg, which passes the events on to the softphone's RTP leg in its payload type (SIP INFO is
/// the web phone's fallback when a call has none).
#[test]
fn key_presses_during_a_call_reach_the_softphone_as_telephone_events() {
    const KEYS: &str = "19*0#";
    let pbx = pbx();
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("softphone.wav");
    let mut softphone = answering_softphone(&pbx, dir.path(), &wav, &["--expect-dtmf", KEYS]);
    let browser = Browser::start().expect("start the browser");
    web_phone(&browser, &pbx, "web", "1001");
    call_softphone(&browser, "web", &pbx, &softphone);

    web_phone::press_keys(&browser, "web", KEYS).expect("press the keys");
    browser
        .wait_text(
            "web",
            "dtmf",
            &format!("^Tones sent: {}$", regex_escape(KEYS)),
            WAIT,
        )
        .expect("the page shows the tones sent");
    assert!(
        wait_until(WAIT, || softphone.dtmf().len() >= KEYS.len()),
        "the softphone received {:?} of {KEYS:?}\n{}\n{}",
        softphone.dtmf(),
        softphone.output(),
        pbx.log_tail(60)
    );
    browser.screenshot("web", "dtmf-sent").expect("screenshot");
    hang_up_softphone(&browser, "web", &mut softphone);

    let received = softphone.dtmf();
    eprintln!("the softphone received {received:?}");
    let digits: String = received.iter().map(|d| d.digit).collect();
    assert_eq!(digits, KEYS, "{received:?}\n{}", softphone.output());
    assert!(
        received.iter().all(|d| d.method == "rfc4733"),
        "every key should come as an RFC 4733 telephone-event, not SIP INFO: {received:?}"
    );
}

/// `pattern` matching `text` literally, for the driver's JavaScript regular expressions.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\^$.|?*+()[]{}/".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// How much of a softphone's recording [`wait_until_heard`] looks at: the last second.
const RECENT: Duration = Duration::from_secs(1);

/// Waits until the last second of `wav` (the softphone's recording, still being written) holds
/// what `expect` says; panics with the last analysis.
fn wait_until_heard(wav: &Path, expect: Expect, softphone: &Phone, pbx: &Pbx) {
    let mut last = String::new();
    let held = wait_until(WAIT, || {
        pjsua2::analyse_recent(wav, RECENT, expect).is_ok_and(|a| {
            last = a.text;
            a.ok
        })
    });
    assert!(
        held,
        "the softphone's last second is not {expect:?}: {last}\n{}\n{}",
        softphone.output(),
        pbx.log_tail(40)
    );
}

/// Mute stops what the softphone hears from the browser's microphone (a steady 440 Hz tone),
/// Unmute brings it back, and the button shows the state (`aria-pressed`, its label). The
/// softphone's recording is read while it records: its last second must turn silent after
/// Mute and hold sound again after Unmute.
#[test]
fn mute_silences_the_web_phone_until_unmuted() {
    let pbx = pbx();
    let dir = tempfile::tempdir().expect("temp dir");
    let microphone = dir.path().join("microphone-440.wav");
    pjsua2::write_tone(&microphone, 440).expect("write the microphone's tone");
    let wav = dir.path().join("softphone.wav");
    let mut softphone = answering_softphone(&pbx, dir.path(), &wav, &[]);
    let browser = Browser::start_with_microphone(&microphone).expect("start the browser");
    web_phone(&browser, &pbx, "web", "1001");
    call_softphone(&browser, "web", &pbx, &softphone);
    // The button as it should read: pressed (muted) and offering Unmute, or not.
    let assert_button = |muted: bool| {
        let text = if muted { "Unmute" } else { "Mute" };
        browser
            .wait_text("web", "mute", &format!("^{text}$"), WAIT)
            .expect("the button's label");
        assert_eq!(
            web_phone::mute_button(&browser, "web").expect("mute button"),
            MuteButton {
                pressed: muted,
                text: text.to_owned(),
            }
        );
    };
    assert_button(false);
    wait_until_heard(&wav, Expect::Sound, &softphone, &pbx);

    browser.click("web", "mute").expect("mute");
    assert_button(true);
    wait_until_heard(&wav, Expect::Silence, &softphone, &pbx);
    browser.screenshot("web", "muted").expect("screenshot");

    browser.click("web", "mute").expect("unmute");
    assert_button(false);
    wait_until_heard(&wav, Expect::Sound, &softphone, &pbx);

    hang_up_softphone(&browser, "web", &mut softphone);
    // What the softphone heard, over the whole call, was the browser's tone.
    let analysis = pjsua2::analyse(&wav, 440).expect("analyse the recording");
    assert!(analysis.ok, "{}", analysis.text);
}
