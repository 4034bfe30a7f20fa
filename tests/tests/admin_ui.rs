//! The admin UI in a real browser (headless Chromium) against `kubepbx up`: sign in with the
//! token (a wrong one is shown as an error), see a softphone registered with its user agent,
//! create an extension and register it with sipp, see a live call with its running duration
//! and hang it up. Screenshots are kept under the test-artifacts folder
//! (`kubepbx_tests::browser::artifacts_dir`).

use kubepbx_tests::browser::Browser;
use kubepbx_tests::pjsua2::Phone;
use kubepbx_tests::{Pbx, wait_until};
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
        assert_eq!(
            phone.wait(WAIT).map(|s| s.success()),
            Some(true),
            "{}",
            phone.output()
        );
        assert!(phone.has_line("BYE received"), "{}", phone.output());
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
