//! `kubepbx up` with real SIP clients: sipp (UDP and TCP, digest), baresip, and raw sockets for
//! what no client sends on purpose. Each test starts its own PBX on free loopback ports.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_tests::sipp::{self, REGISTER_DIGEST, REGISTER_WRONG_PASSWORD, numbered_users};
use kubepbx_tests::{
    Account, Baresip, ExtensionOpts, Pbx, Sipp, Transport, User, default_password, manifests,
    remove_extension, wait_until, write_extension,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// Long enough for a change of the manifest folder (polled every second) on a busy machine.
const FOLDER_WAIT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(10);

/// sipp answers only the first challenge and only knows MD5, so its PBX offers MD5 alone.
fn pbx_for_sipp(extensions: &[&str]) -> Pbx {
    let pbx = Pbx::builder().md5_only().start().unwrap();
    pbx.add_extensions(extensions).unwrap();
    pbx
}

fn register(pbx: &Pbx, users: Vec<User>, transport: Transport) -> kubepbx_tests::SippOutcome {
    Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .transport(transport)
        .users(users)
        .run()
        .unwrap()
}

fn metric(pbx: &Pbx, line_prefix: &str) -> f64 {
    let (status, text) = pbx.api_get_status("/metrics", None).unwrap();
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

#[test]
fn sipp_registers_with_digest_over_udp_and_tcp() {
    let exts: Vec<String> = (2001..2011).map(|n| n.to_string()).collect();
    let names: Vec<&str> = exts.iter().map(String::as_str).collect();
    let pbx = pbx_for_sipp(&names);
    pbx.wait_for_extension("2010", FOLDER_WAIT).unwrap();

    let udp = register(&pbx, numbered_users(2001, 5), Transport::Udp);
    assert!(udp.all_succeeded(), "{}\n{}", udp.diagnostics(), pbx.log());
    let tcp = register(&pbx, numbered_users(2006, 5), Transport::Tcp);
    assert!(tcp.all_succeeded(), "{}\n{}", tcp.diagnostics(), pbx.log());

    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    let regs = regs.as_array().unwrap();
    assert_eq!(regs.len(), 10, "{regs:#?}");
    for r in regs {
        let n: u32 = r["extension"].as_str().unwrap().parse().unwrap();
        let want = if n <= 2005 { "udp" } else { "tcp" };
        assert_eq!(r["transport"], want, "{r}");
        assert_eq!(r["userAgent"], "sipp-kubepbx-tests");
        assert!(r["source"].as_str().unwrap().starts_with("127.0.0.1:"));
        let expires = r["expiresIn"].as_u64().unwrap();
        assert!((3000..=3600).contains(&expires), "{r}");
    }
    // The query selects: one extension in a domain, one extension anywhere, a domain.
    let one = pbx
        .api_get("/api/v1/registrations?extension=2007&domain=PBX.example.com")
        .unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["extension"], "2007");
    assert_eq!(one[0]["transport"], "tcp");
    let anywhere = pbx.api_get("/api/v1/registrations?extension=2002").unwrap();
    assert_eq!(anywhere.as_array().unwrap().len(), 1, "{anywhere}");
    let domain = pbx
        .api_get("/api/v1/registrations?domain=pbx.example.com")
        .unwrap();
    assert_eq!(domain.as_array().unwrap().len(), 10);
    let none = pbx
        .api_get("/api/v1/registrations?extension=2007&domain=other.example.com")
        .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    let (status, body) = pbx
        .api_get_status("/api/v1/registrations?user=2007", Some(pbx.token()))
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unknown field `user`") && body.contains("extension="),
        "{body}"
    );
    let e = pbx.extension("2003").unwrap().unwrap();
    assert_eq!(e["registered"], true);
    assert_eq!(e["contacts"].as_array().unwrap().len(), 1);
    assert_eq!(e["lastFailure"], Value::Null);
    assert_eq!(metric(&pbx, "kubepbx_registrations "), 10.0);
    assert_eq!(metric(&pbx, "kubepbx_registers_total{result=\"ok\"}"), 10.0);
}

/// Debian's baresip 1.0 (libre 1.0) gives up ("Function not implemented") on any challenge
/// that is not MD5, even when an MD5 one follows, so its PBX offers MD5 alone
/// (docs/troubleshooting.md tells users the same).
fn pbx_for_baresip(extensions: &[&str]) -> Pbx {
    pbx_for_sipp(extensions)
}

#[test]
fn baresip_registers_and_unregisters_when_it_quits() {
    let pbx = pbx_for_baresip(&["1001"]);
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let account = Account::new("1001", default_password("1001"), pbx.sip_addr());
    let mut phone = Baresip::start(&account).unwrap();
    phone.wait_registered(WAIT).unwrap();
    let e = pbx.extension("1001").unwrap().unwrap();
    assert_eq!(e["registered"], true, "{e}\n{}", pbx.log());
    let contact = &e["contacts"][0];
    assert!(
        contact["userAgent"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("baresip"),
        "{e}"
    );
    assert_eq!(contact["transport"], "udp");
    phone.quit(WAIT).unwrap();
    assert!(
        wait_until(
            WAIT,
            || pbx.extension("1001").unwrap().unwrap()["registered"] == false
        ),
        "{}",
        pbx.log()
    );
}

#[test]
fn baresip_over_tcp_and_a_wrong_password_in_baresip_is_named() {
    let pbx = pbx_for_baresip(&["1001", "1002"]);
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    let tcp =
        Account::new("1001", default_password("1001"), pbx.sip_addr()).transport(Transport::Tcp);
    let mut phone = Baresip::start(&tcp).unwrap();
    phone.wait_registered(WAIT).unwrap();
    let e = pbx.extension("1001").unwrap().unwrap();
    assert_eq!(e["contacts"][0]["transport"], "tcp", "{e}");

    let wrong = Account::new("1002", "not-the-password", pbx.sip_addr());
    let mut bad = Baresip::start(&wrong).unwrap();
    assert!(bad.wait_registered(WAIT).is_err());
    let e = pbx.extension("1002").unwrap().unwrap();
    assert_eq!(e["registered"], false);
    assert_eq!(e["lastFailure"]["reason"], "WrongPassword", "{e}");
}

/// pjsua2 (pjsip 2.15, the stack of MicroSIP) against the default challenges: it picks
/// SHA-256.
fn pjsua2(pbx: &Pbx, user: &str, password: &str, transport: &str) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/pjsua2_register.py");
    std::process::Command::new("python3")
        .arg(script)
        .args(["--registrar", &pbx.sip_addr().to_string(), "--user", user])
        .args([
            "--password",
            password,
            "--transport",
            transport,
            "--stay",
            "30",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_line(child: &mut std::process::Child, needle: &str) -> bool {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        if line.contains(needle) {
            return true;
        }
        if line.contains("registration state") && !line.contains(" 200 ") && !line.contains(" 401 ")
        {
            eprintln!("{}", lines.join("\n"));
            return false;
        }
    }
    eprintln!("{}", lines.join("\n"));
    false
}

#[test]
fn pjsua2_registers_over_udp_and_tcp_with_the_default_challenges() {
    let pbx = Pbx::start().unwrap();
    pbx.add_extensions(&["1001", "1002"]).unwrap();
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    let mut udp = pjsua2(&pbx, "1001", &default_password("1001"), "udp");
    let mut tcp = pjsua2(&pbx, "1002", &default_password("1002"), "tcp");
    let ok = wait_line(&mut udp, "pjsua2: registered") && wait_line(&mut tcp, "pjsua2: registered");
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    let _ = udp.kill();
    let _ = tcp.kill();
    let _ = udp.wait();
    let _ = tcp.wait();
    assert!(ok, "{}", pbx.log());
    let regs = regs.as_array().unwrap().clone();
    assert_eq!(regs.len(), 2, "{regs:?}");
    let transports: Vec<&str> = regs
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["udp", "tcp"]);
    for r in &regs {
        // pjsip marks its Contact for RFC 5626 outbound (and sends no User-Agent by default).
        assert!(r["uri"].as_str().unwrap().ends_with(";ob"), "{r}");
    }
}

#[test]
fn wrong_password_and_unknown_user_are_told_apart_in_the_api_and_metrics() {
    let pbx = pbx_for_sipp(&["1001"]);
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let wrong = Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(vec![User::new("1001", "not-the-password")])
        .run()
        .unwrap();
    // The scenario succeeds when the PBX refuses the credentials with a second 401.
    assert!(wrong.all_succeeded(), "{}", wrong.diagnostics());
    let unknown = Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(vec![User::new("4711", "whatever")])
        .run()
        .unwrap();
    assert!(
        unknown.all_succeeded(),
        "same answer on the wire: {}",
        unknown.diagnostics()
    );

    let e = pbx.extension("1001").unwrap().unwrap();
    assert_eq!(e["registered"], false);
    let failure = &e["lastFailure"];
    assert_eq!(failure["reason"], "WrongPassword", "{e}");
    assert!(
        failure["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        failure["at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC: {failure}"
    );
    assert!(!failure["detail"].as_str().unwrap().is_empty());
    assert_eq!(
        metric(
            &pbx,
            "kubepbx_auth_failures_total{reason=\"WrongPassword\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&pbx, "kubepbx_auth_failures_total{reason=\"UnknownUser\"}"),
        1.0
    );
    let log = pbx.log();
    assert!(
        log.contains("reason=WrongPassword") && log.contains("reason=UnknownUser"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "passwords are never logged"
    );
}

#[test]
fn repeated_failures_ban_the_source() {
    let pbx = Pbx::builder()
        .md5_only()
        .args(["--ban-threshold", "3", "--ban-window", "60s"])
        .start()
        .unwrap();
    pbx.add_extensions(&["1001"]).unwrap();
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let wrong: Vec<User> = (0..4)
        .map(|_| User::new("1001", "not-the-password"))
        .collect();
    let _ = Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(wrong)
        .timeout(Duration::from_secs(5))
        .run()
        .unwrap();
    assert_eq!(metric(&pbx, "kubepbx_bans_total"), 1.0, "{}", pbx.log());
    // Now even the right password gets no answer from this address.
    let right = Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .users(numbered_users(1001, 1))
        .timeout(Duration::from_secs(3))
        .run()
        .unwrap();
    assert!(!right.all_succeeded());
    assert!(metric(&pbx, "kubepbx_sip_dropped_total{reason=\"banned\"}") >= 1.0);
    assert!(pbx.log().contains("source banned"), "{}", pbx.log());
}

#[test]
fn registrations_survive_a_restart_and_a_crash() {
    let mut pbx = pbx_for_sipp(&["1001", "1002"]);
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    let run = register(&pbx, numbered_users(1001, 2), Transport::Udp);
    assert!(run.all_succeeded(), "{}", run.diagnostics());

    pbx.restart().unwrap();
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    assert_eq!(
        regs.as_array().unwrap().len(),
        2,
        "after a restart: {regs}\n{}",
        pbx.log()
    );
    let expires = regs[0]["expiresIn"].as_u64().unwrap();
    assert!(
        expires > 3000 && expires <= 3600,
        "remaining lifetime kept: {regs}"
    );

    // A crash loses at most the last second: wait for the periodic flush, then kill -9.
    std::thread::sleep(Duration::from_millis(2500));
    pbx.stop().unwrap();
    pbx.restart().unwrap();
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    assert_eq!(
        regs.as_array().unwrap().len(),
        2,
        "after kill -9: {regs}\n{}",
        pbx.log()
    );
}

#[test]
fn expired_registrations_are_gone_after_a_restart() {
    let mut pbx = Pbx::builder()
        .md5_only()
        .args(["--min-expires", "1"])
        .start()
        .unwrap();
    pbx.add_extensions(&["1001"]).unwrap();
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let run = Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .users(numbered_users(1001, 1))
        .expires(2)
        .run()
        .unwrap();
    assert!(run.all_succeeded(), "{}", run.diagnostics());
    pbx.shutdown(WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    pbx.restart().unwrap();
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    assert_eq!(regs, Value::Array(vec![]), "{}", pbx.log());
}

#[test]
fn a_password_change_in_the_folder_rejects_the_old_password() {
    let pbx = pbx_for_sipp(&["1001"]);
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let old = register(&pbx, numbered_users(1001, 1), Transport::Udp);
    assert!(old.all_succeeded(), "{}", old.diagnostics());

    write_extension(
        pbx.manifest_dir(),
        "1001",
        "brand-new-secret",
        &ExtensionOpts::default(),
    )
    .unwrap();
    let new_works = wait_until(FOLDER_WAIT, || {
        register(
            &pbx,
            vec![User::new("1001", "brand-new-secret")],
            Transport::Udp,
        )
        .all_succeeded()
    });
    assert!(new_works, "the new password never worked\n{}", pbx.log());
    let refused = Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(numbered_users(1001, 1))
        .run()
        .unwrap();
    assert!(
        refused.all_succeeded(),
        "old password still accepted: {}",
        refused.diagnostics()
    );
    let e = pbx.extension("1001").unwrap().unwrap();
    assert_eq!(e["lastFailure"]["reason"], "WrongPassword");
    assert!(pbx.log().contains("extension updated"));
}

#[test]
fn base64_secrets_and_added_extensions_are_picked_up_without_restart() {
    let pbx = pbx_for_sipp(&[]);
    let opts = ExtensionOpts {
        password_base64: true,
        display_name: Some("Front desk".into()),
        ..ExtensionOpts::default()
    };
    write_extension(pbx.manifest_dir(), "3001", &default_password("3001"), &opts).unwrap();
    let e = pbx.wait_for_extension("3001", FOLDER_WAIT).unwrap();
    assert_eq!(e["displayName"], "Front desk");
    assert_eq!(e["domain"], pbx.domain());
    assert_eq!(e["enabled"], true);
    let run = register(&pbx, numbered_users(3001, 1), Transport::Udp);
    assert!(run.all_succeeded(), "{}", run.diagnostics());
}

#[test]
fn a_deleted_extension_loses_its_registrations() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    let run = register(&pbx, numbered_users(1001, 2), Transport::Udp);
    assert!(run.all_succeeded(), "{}", run.diagnostics());
    remove_extension(pbx.manifest_dir(), "1001").unwrap();
    assert!(
        wait_until(FOLDER_WAIT, || pbx.extension("1001").unwrap().is_none()),
        "{}",
        pbx.log()
    );
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    let regs = regs.as_array().unwrap();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["extension"], "1002");
    // And it can no longer register.
    let again = Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(numbered_users(1001, 1))
        .run()
        .unwrap();
    assert!(again.all_succeeded(), "{}", again.diagnostics());
    assert_eq!(pbx.extension("1002").unwrap().unwrap()["registered"], true);
}

#[test]
fn an_invalid_manifest_is_named_and_the_rest_keeps_working() {
    let pbx = pbx_for_sipp(&["1001"]);
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let bad = "apiVersion: kubepbx.io/v1alpha1\nkind: Extension\n\
               metadata: {name: ext-1003, namespace: default}\n\
               spec:\n  extension: \"1003\"\n  maxContacts: lots\n  \
               passwordSecretRef: {name: ext-1003}\n";
    std::fs::write(pbx.manifest_dir().join("broken.yaml"), bad).unwrap();
    // A missing Secret disables only its extension.
    let yaml = manifests::extension_yaml("1004", "x", &ExtensionOpts::default());
    let without_secret = yaml.split("\n---\n").next().unwrap().to_owned() + "\n";
    std::fs::write(pbx.manifest_dir().join("no-secret.yaml"), without_secret).unwrap();

    let e = pbx.wait_for_extension("1004", FOLDER_WAIT).unwrap();
    assert_eq!(e["enabled"], false, "{e}");
    assert!(
        e["disabledReason"].as_str().unwrap().contains("ext-1004"),
        "{e}"
    );
    let log = pbx.log();
    assert!(
        log.contains("broken.yaml: document 1: spec.maxContacts"),
        "the error names file, document and field:\n{log}"
    );
    assert!(
        log.contains("no-secret.yaml") && log.contains("disabled"),
        "{log}"
    );
    assert!(pbx.extension("1003").unwrap().is_none());
    let run = register(&pbx, numbered_users(1001, 1), Transport::Udp);
    assert!(run.all_succeeded(), "{}", run.diagnostics());
}

#[test]
fn garbage_does_not_stop_the_service() {
    let pbx = pbx_for_sipp(&["1001"]);
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for (name, bytes) in kubepbx_tests::fixtures::malformed_fixtures().unwrap() {
        udp.send_to(&bytes, pbx.sip_addr())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for len in [0usize, 1, 3, 100, 1400, 65_000] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
        let _ = udp.send_to(&junk, pbx.sip_addr());
    }
    // A request without Call-ID still gets an answer naming the problem.
    let missing = b"OPTIONS sip:pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx1;rport\r\n\
        From: <sip:a@pbx.example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\n\
        CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let mut buf = [0u8; 4096];
    let mut answer_to = |request: &[u8], branch: &str| {
        udp.send_to(request, pbx.sip_addr()).unwrap();
        loop {
            let (n, _) = udp
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no answer to the request {branch}: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains(branch) {
                break text;
            }
        }
    };
    let answer = answer_to(missing, "z9hG4bKx1");
    assert!(
        answer.starts_with("SIP/2.0 400 Missing Call-ID"),
        "{answer}"
    );
    // 60 KB of header lines with names of their own: answered from the lines read so far.
    let mut crowded = b"OPTIONS sip:pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx2;rport\r\n\
        From: <sip:a@pbx.example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\n\
        Call-ID: crowded\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        .to_vec();
    for i in 0..6_000 {
        crowded.extend_from_slice(format!("X{i}: v\r\n").as_bytes());
    }
    crowded.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let answer = answer_to(&crowded, "z9hG4bKx2");
    assert!(
        answer.starts_with("SIP/2.0 400 Too Many Header Fields"),
        "{answer}"
    );

    // TCP: an oversized message closes the connection; a message split across writes works.
    let mut tcp = TcpStream::connect(pbx.sip_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut huge = b"OPTIONS sip:pbx.example.com SIP/2.0\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70_000));
    let _ = tcp.write_all(&huge);
    let mut rest = Vec::new();
    // EOF or a reset: closed. A read timeout means the PBX kept waiting for more.
    match tcp.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the connection must be closed: {e}"
        ),
    }

    let mut tcp = TcpStream::connect(pbx.sip_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let options = b"OPTIONS sip:pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt1\r\n\
        From: <sip:a@pbx.example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\n\
        Call-ID: tcp-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    tcp.write_all(b"\r\n\r\n").unwrap(); // keep-alive ping first
    tcp.write_all(&options[..20]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tcp.write_all(&options[20..]).unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nSIP/2.0")
        && !String::from_utf8_lossy(&got).contains("Content-Length: 0\r\n\r\n")
    {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("\r\n"), "pong first: {text:?}");
    assert!(text.contains("SIP/2.0 200 OK"), "{text}");
    assert!(text.contains("Allow: INVITE, ACK, CANCEL, BYE"), "{text}");

    let run = register(&pbx, numbered_users(1001, 1), Transport::Udp);
    assert!(
        run.all_succeeded(),
        "still serving: {}\n{}",
        run.diagnostics(),
        pbx.log()
    );
    assert!(metric(&pbx, "kubepbx_sip_dropped_total{reason=\"unparseable\"}") >= 1.0);
}

#[test]
fn the_admin_api_needs_the_token_and_health_does_not() {
    let pbx = Pbx::start().unwrap();
    for path in ["/api/v1/extensions", "/api/v1/registrations"] {
        let (status, body) = pbx.api_get_status(path, None).unwrap();
        assert_eq!(status, 401, "{body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], 401);
        assert!(problem["detail"].as_str().unwrap().contains("Bearer"));
        let (status, _) = pbx.api_get_status(path, Some("wrong-token")).unwrap();
        assert_eq!(status, 401);
        let (status, _) = pbx.api_get_status(path, Some(pbx.token())).unwrap();
        assert_eq!(status, 200);
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = pbx.api_get_status(path, None).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = pbx
        .api_get_status("/api/v1/nope", Some(pbx.token()))
        .unwrap();
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_graceful_stop_exits_zero() {
    let mut pbx = Pbx::start().unwrap();
    let status = pbx.shutdown(WAIT).unwrap();
    assert!(status.success(), "{status:?}\n{}", pbx.log());
}

#[test]
fn expires_zero_and_wildcard_remove_bindings() {
    let pbx = pbx_for_sipp(&["1001", "1002"]);
    pbx.wait_for_extension("1002", FOLDER_WAIT).unwrap();
    let port = kubepbx_tests::free_udp_port().unwrap();
    let run = Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .users(numbered_users(1001, 2))
        .local_port(port)
        .run()
        .unwrap();
    assert!(run.all_succeeded(), "{}", run.diagnostics());
    let remove = Sipp::new(sipp::UNREGISTER, pbx.sip_addr())
        .users(numbered_users(1001, 1))
        .local_port(port)
        .run()
        .unwrap();
    assert!(remove.all_succeeded(), "{}", remove.diagnostics());
    let all = Sipp::new(sipp::UNREGISTER_ALL, pbx.sip_addr())
        .users(numbered_users(1002, 1))
        .run()
        .unwrap();
    assert!(all.all_succeeded(), "{}", all.diagnostics());
    let regs = pbx.api_get("/api/v1/registrations").unwrap();
    assert_eq!(regs, Value::Array(vec![]), "{}", pbx.log());
    assert!(pbx.log().contains("unregistered"));
}
