//! The web phone in a real browser (headless Chromium with a fake microphone) against
//! `kubepbx up`: it registers over `/ws`, its audio goes through the relay's WebRTC leg, and a
//! pjsua2 softphone on plain RTP is on the other end.
//!
//! - the web phone calls a softphone: audio both ways (the browser's `getStats()` inbound
//!   packets and level; the softphone's recording of what it received), the duration counts up,
//!   Hang up ends the call on both sides;
//! - the softphone calls the web phone: it rings, Answer works, audio both ways;
//! - two web phones call each other.
//!
//! Screenshots of every step that matters are kept under the test-artifacts folder
//! (`kubepbx_tests::browser::artifacts_dir`).

use kubepbx_tests::browser::Browser;
use kubepbx_tests::pjsua2::{self, Phone};
use kubepbx_tests::{Pbx, wait_until};
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
    browser
        .open(page, &format!("{}/phone/", pbx.http_url()))
        .expect("open /phone/");
    browser
        .login(page, ext, &format!("change-me-{ext}"))
        .expect("log in");
    browser
        .wait_text(page, "status", "^registered$", WAIT)
        .unwrap_or_else(|e| panic!("{page} did not register: {e}\n{}", pbx.log_tail(40)));
}

/// Seconds shown by the duration counter (`mm:ss`).
fn shown_seconds(browser: &Browser, page: &str) -> u64 {
    let text = browser.text(page, "duration").expect("duration");
    let mut parts = text
        .trim()
        .split(':')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (m, s) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    m * 60 + s
}

/// Waits until the page's call shows audio both ways: packets sent and received, and a
/// received level above silence.
fn assert_audio_both_ways(browser: &Browser, page: &str, pbx: &Pbx) -> Value {
    let mut last = Value::Null;
    let flowing = wait_until(WAIT, || {
        let Ok(stats) = browser.phone_stats(page) else {
            return false;
        };
        last = stats.clone();
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        number(&stats["inbound"]["packetsReceived"]) > 50.0
            && number(&stats["outbound"]["packetsSent"]) > 50.0
            && (number(&stats["inbound"]["audioLevel"]) > 0.0
                || number(&stats["inbound"]["totalAudioEnergy"]) > 0.0)
    });
    assert!(
        flowing,
        "{page}: no audio both ways: {last}\n{}",
        pbx.log_tail(40)
    );
    last
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

#[test]
fn the_web_phone_calls_a_softphone_and_they_talk() {
    let pbx = pbx();
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("softphone.wav");
    let wav_arg = wav.to_string_lossy().into_owned();
    let mut softphone = Phone::start(
        &pbx,
        dir.path(),
        "softphone",
        "1002",
        &[
            "--answer",
            "--tone",
            "880",
            "--record",
            &wav_arg,
            "--timeout",
            "60",
        ],
    )
    .expect("start pjsua2");
    assert!(
        softphone.wait_for_line("registered", WAIT),
        "{}",
        softphone.output()
    );

    let browser = Browser::start().expect("start the browser");
    web_phone(&browser, &pbx, "web", "1001");
    browser.fill("web", "number", "1002").expect("number");
    browser.click("web", "call").expect("call");
    browser
        .wait_text("web", "call-state", "^in call$", WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "not answered: {e}\n{}\n{}",
                softphone.output(),
                pbx.log_tail(60)
            )
        });
    let stats = assert_audio_both_ways(&browser, "web", &pbx);
    assert!(
        wait_until(WAIT, || shown_seconds(&browser, "web") >= 3),
        "the duration does not count up"
    );
    browser
        .screenshot("web", "web-calls-softphone")
        .expect("screenshot");
    let calls = pbx.api_get("/api/v1/calls").expect("calls");
    assert_eq!(calls[0]["from"], "1001", "{calls}");
    assert_eq!(calls[0]["to"], "1002", "{calls}");
    assert_eq!(calls[0]["state"], "answered", "{calls}");

    browser.click("web", "hangup").expect("hang up");
    browser
        .wait_text("web", "call-state", "^ended", WAIT)
        .expect("the call ends on the web phone");
    assert_eq!(
        softphone.wait(WAIT).map(|s| s.success()),
        Some(true),
        "the softphone must see the BYE: {}",
        softphone.output()
    );
    assert!(softphone.has_line("BYE received"));
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
    browser.fill("alice", "number", "1003").expect("number");
    browser.click("alice", "call").expect("call");
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
