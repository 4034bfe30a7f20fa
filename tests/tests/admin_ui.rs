//! The admin UI in a real browser (headless Chromium) against `kubepbx up`: sign in with the
//! token (a wrong one is shown as an error), see a softphone registered with its user agent,
//! create an extension and register it with sipp, see a live call with its running duration
//! and hang it up; play and download the recording of a call. Screenshots are kept under the
//! test-artifacts folder (`kubepbx_tests::browser::artifacts_dir`).

use kubepbx_tests::browser::Browser;
use kubepbx_tests::pjsua2::{self, Channel, Phone};
use kubepbx_tests::{ExtensionOpts, Pbx, default_password, wait_until, web_phone, write_extension};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The `data-testid` of the first element whose test id starts with `prefix`, if any.
fn first_testid(browser: &Browser, page: &str, prefix: &str) -> Option<String> {
    let js =
        format!("document.querySelector('[data-testid^=\"{prefix}\"]')?.dataset.testid ?? null");
    browser
        .eval(page, &js)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// Opens the admin UI as `page` and signs in with the PBX's token.
fn sign_in(browser: &Browser, pbx: &Pbx, page: &str) {
    browser
        .open(page, &format!("{}/", pbx.http_url()))
        .expect("open /");
    browser.fill(page, "token", pbx.token()).expect("token");
    browser.click(page, "token-login").expect("sign in");
}

#[test]
fn the_admin_ui_shows_registrations_creates_an_extension_and_hangs_up_a_call() {
    kubepbx_tests::browser::require_web_build().expect("the admin UI is built");
    // sipp answers only the first challenge and knows only MD5.
    let pbx = Pbx::builder().md5_only().start().expect("start kubepbx up");
    pbx.add_extensions(&["1001", "1002"]).expect("extensions");
    for ext in ["1001", "1002"] {
        pbx.wait_for_extension(ext, WAIT).expect("extension loaded");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut callee = Phone::start(
        &pbx,
        dir.path(),
        "callee",
        "1002",
        &["--answer", "--timeout", "90"],
    )
    .expect("start the callee");
    assert!(
        callee.wait_for_line("registered", WAIT),
        "{}",
        callee.output()
    );
    // 1001 registers at once and calls a little later, then waits for the PBX's BYE.
    let mut caller = Phone::start(
        &pbx,
        dir.path(),
        "caller",
        "1001",
        &[
            "--call",
            "1002",
            "--call-delay",
            "4",
            "--duration",
            "60",
            "--expect-hangup",
            "--timeout",
            "90",
        ],
    )
    .expect("start the caller");

    let browser = Browser::start().expect("start the browser");
    browser
        .open("admin", &format!("{}/", pbx.http_url()))
        .expect("open /");
    browser
        .fill("admin", "token", "not-the-token")
        .expect("token");
    browser.click("admin", "token-login").expect("sign in");
    browser
        .wait_text("admin", "error", "[Tt]oken", WAIT)
        .expect("a wrong token is shown as an error");
    browser.fill("admin", "token", pbx.token()).expect("token");
    browser.click("admin", "token-login").expect("sign in");
    browser
        .wait_text("admin", "ext-state-1001", "^registered$", WAIT)
        .unwrap_or_else(|e| panic!("1001 not shown registered: {e}\n{}", caller.output()));
    let api = pbx.extension("1001").expect("api").expect("1001");
    let user_agent = api["contacts"][0]["userAgent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!user_agent.is_empty(), "{api}");
    assert!(
        browser
            .text("admin", "ext-ua-1001")
            .expect("ua")
            .contains(&user_agent),
        "the UI shows the phone's user agent {user_agent:?}"
    );
    assert!(
        !browser.visible("admin", "ext-row-1003").expect("visible"),
        "no 1003 yet"
    );
    browser
        .screenshot("admin", "admin-registered")
        .expect("screenshot");

    // Create 1003 and register it with sipp.
    browser
        .fill("admin", "new-extension", "1003")
        .expect("number");
    browser
        .fill("admin", "new-password", "secret-1003-pw")
        .expect("password");
    browser
        .fill("admin", "new-display-name", "Warehouse")
        .expect("name");
    browser.click("admin", "create").expect("create");
    browser
        .wait_text("admin", "ext-state-1003", "^offline$", WAIT)
        .expect("1003 listed, offline");
    let sipp = kubepbx_tests::Sipp::new(kubepbx_tests::sipp::REGISTER_DIGEST, pbx.sip_addr())
        .users(vec![kubepbx_tests::sipp::User::new(
            "1003",
            "secret-1003-pw",
        )])
        .run()
        .expect("run sipp");
    assert!(sipp.all_succeeded(), "{}", sipp.diagnostics());
    browser
        .wait_text("admin", "ext-state-1003", "^registered$", WAIT)
        .expect("1003 registered");
    assert!(
        std::fs::read_dir(pbx.manifest_dir())
            .expect("manifests")
            .filter_map(Result::ok)
            .any(
                |f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("\"1003\"")
                    || t.contains("extension: '1003'")
                    || t.contains("extension: 1003"))
            ),
        "1003 is written into the manifest folder"
    );

    // The call shows up with a running duration; Hang up ends it for both phones.
    let mut row = None;
    assert!(
        wait_until(WAIT, || {
            row = first_testid(&browser, "admin", "call-row-");
            row.is_some()
        }),
        "no active call in the UI\n{}",
        caller.output()
    );
    let id = row
        .unwrap_or_default()
        .trim_start_matches("call-row-")
        .to_owned();
    browser
        .wait_text("admin", &format!("call-duration-{id}"), "[1-9]", WAIT)
        .expect("the duration runs");
    browser
        .screenshot("admin", "admin-active-call")
        .expect("screenshot");
    browser
        .click("admin", &format!("hangup-{id}"))
        .expect("hang up");
    for phone in [&mut caller, &mut callee] {
        assert!(phone.ended_by_bye(WAIT), "{}", phone.output());
    }
    assert!(
        wait_until(WAIT, || first_testid(&browser, "admin", "cdr-row-")
            .is_some()),
        "the finished call is listed"
    );
    browser
        .screenshot("admin", "admin-finished-call")
        .expect("screenshot");
}

/// A softphone's output and the PBX's log tail, for failure messages.
fn report(pbx: &Pbx, phone: &Phone) -> String {
    format!("{}\n{}", phone.output(), pbx.log_tail(60))
}

/// The newest recording `GET /api/v1/recordings` lists once it has ended, with its id.
fn finished_recording(pbx: &Pbx, ctx: &dyn Fn() -> String) -> (String, Value) {
    let mut entry = Value::Null;
    let ended = wait_until(WAIT, || {
        entry = pbx
            .api_get("/api/v1/recordings")
            .map(|list| list[0].clone())
            .unwrap_or(Value::Null);
        entry["endedAt"].is_string()
    });
    assert!(ended, "no finished recording listed: {entry}\n{}", ctx());
    let id = entry["id"].as_str().unwrap_or_default().to_owned();
    (id, entry)
}

/// The length in seconds of the PCM audio a RIFF/WAVE file holds (its `fmt ` byte rate and
/// `data` size), if it is one.
fn wav_seconds(bytes: &[u8]) -> Option<f64> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let (mut pos, mut byte_rate) = (12, None);
    while pos + 8 <= bytes.len() {
        let size = usize::try_from(u32_at(pos + 4)?).ok()?;
        match bytes.get(pos..pos + 4)? {
            b"fmt " => byte_rate = u32_at(pos + 16),
            b"data" => return Some(size as f64 / f64::from(byte_rate?)),
            _ => {}
        }
        pos += 8 + size + (size & 1);
    }
    None
}

/// The player's state in the page: `{src, duration, currentTime, paused, error}`.
fn player(browser: &Browser) -> Value {
    browser
        .eval(
            "admin",
            "const p = document.querySelector('[data-testid=\"player\"]'); \
             return {src: p.currentSrc, duration: p.duration, currentTime: p.currentTime, \
                     paused: p.paused, hidden: p.hidden, error: p.error && p.error.code};",
        )
        .unwrap_or(Value::Null)
}

/// A call recorded because its callee's extension says `recording: Always`: the web phone
/// (1001, its microphone a 440 Hz tone) calls a softphone (1002, 880 Hz). The admin UI lists
/// the recording; Play loads it into the page's player, which plays it (as long as the WAV
/// says, no error); Download saves the very bytes the API serves as `audio/wav`, a stereo WAV
/// named after the recording with the caller's tone left and the callee's right.
#[test]
fn the_admin_ui_plays_and_downloads_a_recording() {
    kubepbx_tests::browser::require_web_build().expect("the admin UI is built");
    let pbx = Pbx::start().expect("start kubepbx up");
    for (ext, recording) in [("1001", None), ("1002", Some("Always"))] {
        let opts = ExtensionOpts {
            recording: recording.map(str::to_owned),
            ..ExtensionOpts::default()
        };
        write_extension(pbx.manifest_dir(), ext, &default_password(ext), &opts).expect("extension");
        pbx.wait_for_extension(ext, WAIT).expect("extension loaded");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let microphone = dir.path().join("microphone-440.wav");
    pjsua2::write_tone(&microphone, 440).expect("write the microphone's tone");
    let mut softphone = Phone::start(
        &pbx,
        dir.path(),
        "softphone",
        "1002",
        &["--answer", "--tone", "880", "--timeout", "60"],
    )
    .expect("start pjsua2");
    assert!(
        softphone.wait_for_line("registered", WAIT),
        "{}",
        softphone.output()
    );

    // A call of a few seconds from the web phone.
    let browser = Browser::start_with_microphone(&microphone).expect("start the browser");
    web_phone::log_in(
        &browser,
        "web",
        &pbx.http_url(),
        "1001",
        &default_password("1001"),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("the web phone did not register: {e}\n{}", pbx.log_tail(60)));
    web_phone::dial(&browser, "web", "1002").expect("call");
    browser
        .wait_text("web", "call-state", "^in call$", WAIT)
        .unwrap_or_else(|e| panic!("not answered: {e}\n{}", report(&pbx, &softphone)));
    web_phone::wait_for_audio_both_ways(&browser, "web", WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", report(&pbx, &softphone)));
    assert!(
        wait_until(WAIT, || web_phone::shown_seconds(&browser, "web")
            .is_ok_and(|s| s >= 3)),
        "the call's duration does not count up"
    );
    browser.click("web", "hangup").expect("hang up");
    assert_eq!(
        softphone.wait(WAIT).map(|s| s.success()),
        Some(true),
        "{}",
        report(&pbx, &softphone)
    );
    let (id, entry) = finished_recording(&pbx, &|| report(&pbx, &softphone));
    let (status, content_type, served) = pbx
        .api_get_bytes(&format!("/api/v1/recordings/{id}"))
        .expect("GET the recording");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&served));
    assert_eq!(content_type.as_deref(), Some("audio/wav"), "{entry}");
    let seconds = wav_seconds(&served).expect("the recording is a RIFF/WAVE file");
    assert!(seconds > 1.0, "a recording of {seconds} s: {entry}");

    // Listed, played in the page.
    sign_in(&browser, &pbx, "admin");
    browser
        .wait_text(
            "admin",
            &format!("recording-{id}"),
            "1001[\\s\\S]*1002",
            WAIT,
        )
        .unwrap_or_else(|e| panic!("the recording is not listed: {e}\n{entry}"));
    browser.click("admin", &format!("play-{id}")).expect("Play");
    let mut state = Value::Null;
    let playing = wait_until(WAIT, || {
        state = player(&browser);
        state["error"].is_null()
            && state["hidden"] == false
            && state["duration"].as_f64().is_some_and(|d| d > 0.0)
            && state["currentTime"].as_f64().is_some_and(|t| t > 0.0)
    });
    assert!(playing, "the recording does not play in the page: {state}");
    let shown = state["duration"].as_f64().unwrap_or_default();
    assert!(
        (shown - seconds).abs() < 0.1,
        "the player says {shown} s, the WAV holds {seconds} s: {state}"
    );
    browser
        .screenshot("admin", "admin-recording-playing")
        .expect("screenshot");

    // Downloaded: the same bytes, under the recording's name.
    let saved = dir.path().join("downloaded.wav");
    let name = browser
        .download("admin", &format!("download-{id}"), &saved)
        .expect("Download");
    assert_eq!(name, format!("{id}.wav"));
    let bytes = std::fs::read(&saved).expect("the downloaded file");
    assert!(bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE".as_slice()));
    assert!(
        bytes == served,
        "the download differs from what the API serves"
    );
    for (channel, hz) in [(Channel::Left, 440), (Channel::Right, 880)] {
        let analysis = pjsua2::analyse_channel(&saved, channel, hz).expect("analyse");
        assert!(analysis.ok, "{channel:?}: {}\n{entry}", analysis.text);
    }
}
