//! The browser driver (`web/tests/driver.mjs` through [`kubepbx_tests::browser::Browser`]) and
//! the built web phone (`web/dist/phone/`), without a PBX: a small static server here serves
//! the phone at `/phone/` with a `config.json`, and nothing answers its WebSocket, so the phone
//! must say that it failed and why. Needs the web build and Chromium
//! ([`kubepbx_tests::browser::require_web_build`]).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_tests::Error;
use kubepbx_tests::browser::{Browser, phone_dist};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Serves `root` at `/phone/` and a fixed `config.json` over HTTP/1.0-style one-request
/// connections on 127.0.0.1; `/ws` is answered 404, as by a server without SIP over WebSocket.
struct StaticServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    fn start(root: PathBuf, config: Value) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let config = config.to_string();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let root = root.clone();
                let config = config.clone();
                std::thread::spawn(move || serve(stream, &root, &config));
            }
        });
        StaticServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, root: &Path, config: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();
    let (status, content_type, body, location): (&str, &str, Vec<u8>, Option<&str>) =
        match path.as_str() {
            "/phone" => (
                "301 Moved Permanently",
                "text/plain",
                Vec::new(),
                Some("/phone/"),
            ),
            "/phone/config.json" => (
                "200 OK",
                "application/json",
                config.as_bytes().to_vec(),
                None,
            ),
            _ => match path.strip_prefix("/phone/").and_then(|p| file_in(root, p)) {
                Some(file) => match std::fs::read(&file) {
                    Ok(bytes) => ("200 OK", content_type(&file), bytes, None),
                    Err(_) => ("404 Not Found", "text/plain", b"not found".to_vec(), None),
                },
                None => ("404 Not Found", "text/plain", b"not found".to_vec(), None),
            },
        };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(location) = location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// `root/<rel>` (`index.html` for the folder itself) if `rel` stays inside `root`.
fn file_in(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let rel = Path::new(rel);
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Some(root.join(rel))
    } else {
        None
    }
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn phone_server() -> StaticServer {
    StaticServer::start(
        phone_dist(),
        json!({
            "domain": "pbx.example.com",
            "websocket": "/ws",
            "extensions": [
                {"extension": "1001", "domain": "pbx.example.com", "displayName": "Reception"},
                {"extension": "1002", "domain": "pbx.example.com", "displayName": "Sales"}
            ]
        }),
    )
}

#[test]
fn phone_logs_in_and_shows_why_the_websocket_failed() {
    let server = phone_server();
    let browser = Browser::start().unwrap();
    let opened = browser.open("a", &server.url("/phone/")).unwrap();
    assert_eq!(opened["title"], "kubepbx phone", "{opened}");
    assert_eq!(browser.text("a", "status").unwrap(), "not logged in");

    // The extension picker is filled from config.json, with display names.
    let options = browser
        .eval(
            "a",
            "[...document.querySelectorAll('#extensions option')].map(o => [o.value, o.label])",
        )
        .unwrap();
    assert_eq!(
        options,
        json!([["1001", "Reception"], ["1002", "Sales"]]),
        "{}",
        browser.log()
    );
    assert!(browser.visible("a", "login").unwrap());
    assert!(
        !browser.visible("a", "call").unwrap(),
        "no phone before login"
    );

    browser.select("a", "extension", "1001").unwrap();
    browser.fill("a", "password", "change-me-1001").unwrap();
    browser.click("a", "login").unwrap();

    // Nothing serves /ws: the status says so, with the URL it tried and the close code.
    let ws = format!("ws://{}/ws", server.addr).replace('.', r"\.");
    let status = browser
        .wait_text(
            "a",
            "status",
            &format!("^failed: WebSocket {ws} .*code 1006"),
            WAIT,
        )
        .unwrap();
    assert!(status.ends_with("; retrying"), "{status}");
    assert_eq!(browser.text("a", "account").unwrap(), "1001 · Reception");
    browser
        .screenshot("a", "browser_driver/websocket-failed")
        .unwrap();

    // The phone is usable offline: the dial pad types the number; call controls show.
    for key in ["key-1", "key-0", "key-0", "key-2", "key-star", "key-hash"] {
        browser.click("a", key).unwrap();
    }
    assert_eq!(browser.text("a", "number").unwrap(), "1002*#");
    assert_eq!(browser.text("a", "call-state").unwrap(), "idle");
    assert_eq!(browser.text("a", "duration").unwrap(), "00:00");
    assert!(browser.visible("a", "call").unwrap());
    for hidden in ["hangup", "answer", "reject", "mute"] {
        assert!(
            !browser.visible("a", hidden).unwrap(),
            "{hidden} shown while idle"
        );
    }
    let state = browser.eval("a", "window.kubepbxPhone.state()").unwrap();
    assert_eq!(state["registered"], false, "{state}");
    assert_eq!(state["extension"], "1001", "{state}");
    assert_eq!(
        state["websocket"],
        format!("ws://{}/ws", server.addr),
        "{state}"
    );
    let stats = browser.phone_stats("a").unwrap();
    assert_eq!(
        stats["inbound"],
        Value::Null,
        "no call, no counters: {stats}"
    );

    // Logging out goes back to the form and stops retrying.
    browser.click("a", "logout").unwrap();
    assert_eq!(browser.text("a", "status").unwrap(), "logged out");
    assert!(browser.visible("a", "login").unwrap());
    browser.close("a").unwrap();
    assert!(browser.pages().is_empty());
    browser.quit().unwrap();
}

#[test]
fn driver_failures_name_the_command_and_what_was_seen() {
    let server = phone_server();
    let browser = Browser::start().unwrap();
    browser.open("p", &server.url("/phone/")).unwrap();

    // eval: an expression, a promise, and a function body.
    assert_eq!(browser.eval("p", "1 + 1").unwrap(), json!(2));
    assert_eq!(
        browser.eval("p", "Promise.resolve({a: [1]})").unwrap(),
        json!({"a": [1]})
    );
    assert_eq!(
        browser
            .eval("p", "const t = document.title; return t.toUpperCase();")
            .unwrap(),
        json!("KUBEPBX PHONE")
    );
    assert_eq!(browser.eval("p", "undefined").unwrap(), Value::Null);

    // A wait that runs out is a timeout naming the element, the pattern and the last text.
    let err = browser
        .wait_text("p", "status", "^registered$", Duration::from_millis(300))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{text}");
    assert!(
        text.contains("[data-testid=status]")
            && text.contains("/^registered$/")
            && text.contains("not logged in"),
        "{text}"
    );
    assert!(
        text.contains("screenshot: "),
        "a failure leaves a screenshot: {text}"
    );

    // An element that is not there, within a short wait.
    let err = browser
        .command(
            "click",
            json!({"page": "p", "testid": "no-such-button", "timeoutMs": 300}),
            Duration::from_secs(10),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("no-such-button"), "{err}");

    // A page that was never opened, and a script that throws.
    let err = browser.text("nowhere", "status").unwrap_err().to_string();
    assert!(err.contains("no page \"nowhere\""), "{err}");
    let err = browser
        .eval("p", "throw new Error('boom')")
        .unwrap_err()
        .to_string();
    assert!(err.contains("boom"), "{err}");

    // The driver still works after failures, and logs the page's console.
    browser
        .eval("p", "console.log('hello from the page')")
        .unwrap();
    assert_eq!(browser.text("p", "status").unwrap(), "not logged in");
    assert!(
        kubepbx_tests::wait_until(Duration::from_secs(5), || browser
            .log()
            .contains("[p] console.log: hello from the page")),
        "{}",
        browser.log()
    );
}
