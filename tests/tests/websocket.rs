//! SIP over WebSocket (RFC 7118) at `/ws` of `kubepbx up`: the upgrade rules, registration
//! with digest as browsers do it (MD5 only), bad frames, a call from a UDP phone (sipp)
//! to a phone registered over the WebSocket, and phones behind a trusted proxy
//! (`--trusted-proxies`: the source and the bans follow `X-Forwarded-For`).
//!
//! The WebSocket phone here speaks SIP by hand, the way JsSIP and SIP.js write it (`.invalid`
//! Via host and Contact, `transport=ws`, `+sip.instance`); the browser tests drive the real
//! thing.

use kubepbx_tests::sipp::User;
use kubepbx_tests::{Pbx, Sipp, wait_until};
use md5::{Digest, Md5};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(10);

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens `/ws` with the given subprotocol and Origin.
fn open(
    pbx: &Pbx,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<Socket, Box<tungstenite::Error>> {
    open_with(pbx, protocol, origin, &[])
}

/// Opens `/ws` with the given subprotocol, Origin and other headers (what a proxy adds).
fn open_with(
    pbx: &Pbx,
    protocol: Option<&str>,
    origin: Option<&str>,
    extra: &[(&'static str, &str)],
) -> Result<Socket, Box<tungstenite::Error>> {
    let url = format!("{}/ws", pbx.http_url()).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().map_err(Box::new)?;
    for (name, value) in extra {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).expect("header"));
    }
    if let Some(p) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("header"),
        );
    }
    if let Some(o) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(o).expect("header"));
    }
    let (socket, response) = tungstenite::connect(request).map_err(Box::new)?;
    if protocol.is_some() {
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("sip"),
            "the server must select the sip subprotocol"
        );
    }
    if let MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
    }
    Ok(socket)
}

/// The HTTP status of a refused upgrade.
fn refused_status(result: Result<Socket, Box<tungstenite::Error>>) -> u16 {
    match result.map_err(|e| *e) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

/// Next SIP message (text or binary frame) within `WAIT`; `None` when the socket closed.
fn next_message(socket: &mut Socket) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Close(_)) => return None,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    panic!("no SIP message on the WebSocket within {WAIT:?}");
}

/// Waits for a message whose first line starts with `start`, answering nothing in between.
fn expect(socket: &mut Socket, start: &str) -> String {
    loop {
        let msg =
            next_message(socket).unwrap_or_else(|| panic!("socket closed waiting for {start}"));
        if msg.starts_with(start) {
            return msg;
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    challenge
        .trim_start_matches("Digest")
        .split(',')
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"'))
        })
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A phone on a WebSocket, writing SIP as browser libraries do.
struct WsPhone {
    socket: Socket,
    user: String,
    password: String,
    domain: String,
    call_id: String,
    cseq: u32,
}

const CONTACT: &str = "<sip:k3v9q2mx@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:5f8f3d2c-7c1e-4a6b-9d2e-1b2c3d4e5f60>\"";

impl WsPhone {
    fn new(pbx: &Pbx, user: &str, password: &str) -> WsPhone {
        WsPhone::with_headers(pbx, user, password, &[])
    }

    /// A phone whose upgrade request carries `headers` (as if a proxy had added them).
    fn with_headers(
        pbx: &Pbx,
        user: &str,
        password: &str,
        headers: &[(&'static str, &str)],
    ) -> WsPhone {
        WsPhone {
            socket: open_with(pbx, Some("sip"), None, headers).expect("open /ws"),
            user: user.to_owned(),
            password: password.to_owned(),
            domain: pbx.domain().to_owned(),
            call_id: format!("ws-{user}-{}", std::process::id()),
            cseq: 0,
        }
    }

    fn send(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.replace('\n', "\r\n").into()))
            .expect("send on the WebSocket");
    }

    fn register_request(&mut self, authorization: Option<String>) -> String {
        self.cseq += 1;
        let auth = authorization
            .map(|a| format!("Authorization: {a}\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{d} SIP/2.0\n\
             Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws{c}x\n\
             Max-Forwards: 69\n\
             To: <sip:{u}@{d}>\n\
             From: \"{u}\" <sip:{u}@{d}>;tag=wstag{u}\n\
             Call-ID: {id}\n\
             CSeq: {c} REGISTER\n\
             {auth}\
             Contact: {CONTACT};expires=600\n\
             Expires: 600\n\
             Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\n\
             Supported: path,gruu,outbound\n\
             User-Agent: ws-test-phone\n\
             Content-Length: 0\n\n",
            d = self.domain,
            u = self.user,
            c = self.cseq,
            id = self.call_id,
        )
    }

    /// Registers; returns the final response and the first challenge seen.
    fn register(&mut self) -> (String, String) {
        let request = self.register_request(None);
        self.send(&request);
        let challenge = expect(&mut self.socket, "SIP/2.0 401");
        let challenges = headers(&challenge, "WWW-Authenticate");
        assert_eq!(
            challenges.len(),
            1,
            "one challenge on a WebSocket: {challenge}"
        );
        let first = challenges[0].to_string();
        let realm = param(&first, "realm").expect("realm").to_owned();
        let nonce = param(&first, "nonce").expect("nonce").to_owned();
        let uri = format!("sip:{}", self.domain);
        let ha1 = md5_hex(&format!("{}:{realm}:{}", self.user, self.password));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        let authorization = format!(
            "Digest algorithm=MD5, username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", qop=auth, cnonce=\"c0ffee\", nc=00000001",
            self.user
        );
        let request = self.register_request(Some(authorization));
        self.send(&request);
        let last = loop {
            let msg = next_message(&mut self.socket).expect("an answer to REGISTER");
            if msg.starts_with("SIP/2.0 1") {
                continue;
            }
            break msg;
        };
        (last, first)
    }

    /// Answers `request` with `code reason`, echoing what a UAS must.
    fn respond(&mut self, request: &str, code: u16, reason: &str, to_tag: &str, body: &str) {
        let mut out = format!("SIP/2.0 {code} {reason}\n");
        for via in headers(request, "Via") {
            out.push_str(&format!("Via: {via}\n"));
        }
        for rr in headers(request, "Record-Route") {
            out.push_str(&format!("Record-Route: {rr}\n"));
        }
        let to = header(request, "To").expect("To");
        let to = if to.contains("tag=") {
            to.to_owned()
        } else {
            format!("{to};tag={to_tag}")
        };
        out.push_str(&format!(
            "From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\nContact: {CONTACT}\n",
            header(request, "From").expect("From"),
            header(request, "Call-ID").expect("Call-ID"),
            header(request, "CSeq").expect("CSeq"),
        ));
        if body.is_empty() {
            out.push_str("Content-Length: 0\n\n");
            self.send(&out);
        } else {
            out.push_str(&format!(
                "Content-Type: application/sdp\nContent-Length: {}\n\n",
                body.len()
            ));
            let mut text = out.replace('\n', "\r\n");
            text.push_str(body);
            self.socket
                .send(Message::Text(text.into()))
                .expect("send on the WebSocket");
        }
    }
}

#[test]
fn upgrade_needs_the_sip_subprotocol() {
    let pbx = Pbx::start().expect("start kubepbx up");
    assert_eq!(refused_status(open(&pbx, None, None)), 426);
    assert_eq!(refused_status(open(&pbx, Some("chat"), None)), 426);
    assert!(open(&pbx, Some("sip"), Some("https://anywhere.example")).is_ok());
}

#[test]
fn allowed_origins_restrict_pages() {
    let pbx = Pbx::builder()
        .args(["--ws-allowed-origins", "https://phone.example.com"])
        .start()
        .expect("start kubepbx up");
    assert_eq!(
        refused_status(open(&pbx, Some("sip"), Some("https://evil.example"))),
        403
    );
    assert_eq!(refused_status(open(&pbx, Some("sip"), None)), 403);
    assert!(open(&pbx, Some("sip"), Some("https://phone.example.com")).is_ok());
}

#[test]
fn registers_over_websocket_with_md5_only() {
    let pbx = Pbx::start().expect("start kubepbx up");
    pbx.add_extensions(&["1002"]).expect("extension 1002");
    pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");
    let mut phone = WsPhone::new(&pbx, "1002", "change-me-1002");
    let (last, first_challenge) = phone.register();
    assert!(
        param(&first_challenge, "algorithm").is_some_and(|a| a.eq_ignore_ascii_case("MD5")),
        "browser SIP libraries know only MD5 and read one challenge: {first_challenge}"
    );
    assert!(
        last.starts_with("SIP/2.0 200"),
        "{last}\n{}",
        pbx.log_tail(30)
    );
    assert!(wait_until(WAIT, || pbx
        .extension("1002")
        .is_ok_and(|e| e.is_some_and(|e| e["registered"] == true))));
    let ext = pbx
        .wait_for_extension("1002", WAIT)
        .expect("1002 in the API");
    let contact = &ext["contacts"][0];
    assert_eq!(contact["transport"], "ws", "{ext}");
    assert_eq!(contact["userAgent"], "ws-test-phone", "{ext}");

    // A wrong password is challenged again and recorded with its reason, as on UDP.
    let mut wrong = WsPhone::new(&pbx, "1002", "not-the-password");
    wrong.call_id.push_str("-wrong");
    let (last, _) = wrong.register();
    assert!(last.starts_with("SIP/2.0 401"), "{last}");
    assert!(wait_until(WAIT, || pbx.extension("1002").is_ok_and(|e| {
        e.is_some_and(|e| e["lastFailure"]["reason"] == "WrongPassword")
    })));
}

#[test]
fn bad_frames_get_what_udp_gets() {
    let pbx = Pbx::start().expect("start kubepbx up");
    let mut socket = open(&pbx, Some("sip"), None).expect("open /ws");
    // A keep-alive is answered.
    socket
        .send(Message::Text("\r\n\r\n".into()))
        .expect("send keep-alive");
    assert_eq!(next_message(&mut socket).as_deref(), Some("\r\n"));
    // Not SIP at all: dropped, the socket stays open.
    socket
        .send(Message::Text("hello there".into()))
        .expect("send garbage");
    // A request with a broken header gets 400.
    let broken = "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKbad1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:pbx.example.com>\r\nCall-ID: bad1\r\nCSeq: nonsense\r\nContent-Length: 0\r\n\r\n";
    socket
        .send(Message::Text(broken.into()))
        .expect("send broken request");
    let answer = next_message(&mut socket).expect("an answer");
    assert!(answer.starts_with("SIP/2.0 400"), "{answer}");
    // A frame over 64 KiB closes the socket.
    let huge = "x".repeat(65 * 1024);
    let _ = socket.send(Message::Text(huge.into()));
    assert_eq!(next_message(&mut socket), None, "the socket must close");
}

#[test]
fn udp_phone_calls_a_websocket_phone() {
    let pbx = Pbx::builder().md5_only().start().expect("start kubepbx up");
    pbx.add_extensions(&["1001", "1002"]).expect("extensions");
    pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");
    pbx.wait_for_extension("1001", WAIT).expect("1001 loaded");
    let mut phone = WsPhone::new(&pbx, "1002", "change-me-1002");
    let (last, _) = phone.register();
    assert!(last.starts_with("SIP/2.0 200"), "{last}");

    let sipp = Sipp::new("sipp/uac_call.xml", pbx.sip_addr())
        .users(vec![User::new("1001", "change-me-1001")])
        .timeout(Duration::from_secs(30))
        .args(["-s", "1002"])
        .args(["-auth_uri".to_owned(), format!("1002@{}", pbx.domain())]);
    let caller = std::thread::spawn(move || sipp.run().expect("run sipp"));

    let invite = expect(&mut phone.socket, "INVITE ");
    assert!(
        invite.starts_with("INVITE sip:k3v9q2mx@df7jal23ls0d.invalid;transport=ws"),
        "the INVITE goes to the registered Contact: {invite}"
    );
    let rr = headers(&invite, "Record-Route").join(", ");
    assert!(
        rr.contains("transport=ws"),
        "the proxy record-routes the WebSocket side: {rr}"
    );
    let port = kubepbx_tests::ports::free_udp_port().expect("port");
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    );
    phone.respond(&invite, 180, "Ringing", "wsans1", "");
    phone.respond(&invite, 200, "OK", "wsans1", &sdp);
    let ack = expect(&mut phone.socket, "ACK ");
    assert!(header(&ack, "Call-ID") == header(&invite, "Call-ID"));
    let bye = expect(&mut phone.socket, "BYE ");
    phone.respond(&bye, 200, "OK", "wsans1", "");
    let outcome = caller.join().expect("sipp thread");
    assert!(
        outcome.all_succeeded(),
        "{}\n{}",
        outcome.diagnostics(),
        pbx.log_tail(40)
    );
    assert!(wait_until(WAIT, || {
        pbx.api_get("/api/v1/cdrs")
            .is_ok_and(|v| v[0]["endReason"] == "caller-hangup")
    }));
}

/// A client configuration trusting `certs`.
fn trusting(
    certs: &[&rcgen::CertifiedKey<rcgen::KeyPair>],
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                cert.cert.der().to_vec(),
            ))
            .expect("trust the test certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The certificate a new TLS connection to `port` is shown.
fn presented(port: u16, config: &std::sync::Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::clone(config), name).expect("tls");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to --https");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("handshake");
    }
    tls.peer_certificates().expect("a certificate")[0].to_vec()
}

fn write_cert(cert: &rcgen::CertifiedKey<rcgen::KeyPair>, dir: &Path) {
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).expect("write key");
}

#[test]
fn wss_on_the_tls_port_with_a_certificate_renewed_in_place() {
    use rustls::pki_types::ServerName;
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write_cert(&cert, dir.path());
    let https = kubepbx_tests::ports::free_tcp_port().expect("port");
    let pbx = Pbx::builder()
        .arg("--https")
        .arg(format!("127.0.0.1:{https}"))
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .start()
        .expect("start kubepbx up");
    pbx.add_extensions(&["1002"]).expect("extension");
    pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");

    let config = trusting(&[&cert]);
    let name = ServerName::try_from("localhost").expect("name");
    let tls = rustls::ClientConnection::new(std::sync::Arc::clone(&config), name).expect("tls");
    let tcp = TcpStream::connect(("127.0.0.1", https)).expect("connect to --https");
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stream = rustls::StreamOwned::new(tls, tcp);
    let mut request = format!("wss://localhost:{https}/ws")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let (mut socket, _) = tungstenite::client(request, stream).expect("WSS upgrade");
    let register = "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/WSS q.invalid;branch=z9hG4bKwss1\r\nMax-Forwards: 70\r\nTo: <sip:1002@pbx.example.com>\r\nFrom: <sip:1002@pbx.example.com>;tag=w1\r\nCall-ID: wss-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:z@q.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n";
    socket
        .send(Message::Text(register.into()))
        .expect("send over WSS");
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        assert!(Instant::now() < deadline, "no answer over WSS");
        match socket.read() {
            Ok(Message::Text(t)) => break t.to_string(),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("WSS read: {e}"),
        }
    };
    assert!(answer.starts_with("SIP/2.0 401"), "{answer}");
    assert!(
        answer.contains("Via: SIP/2.0/WSS q.invalid"),
        "the Via is echoed: {answer}"
    );

    // The certificate is renewed on disk (as cert-manager rewrites a mounted Secret): new
    // connections get it within the recheck interval (10 s), without a restart.
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    write_cert(&renewed, dir.path());
    let both = trusting(&[&cert, &renewed]);
    let served = wait_until(Duration::from_secs(20), || {
        presented(https, &both) == renewed.cert.der().to_vec()
    });
    assert!(served, "still shown the old certificate\n{}", pbx.log());
    assert!(
        pbx.log().contains("serving the renewed TLS certificate"),
        "{}",
        pbx.log()
    );
}

/// The first contact of `ext` once it is registered.
fn contact(pbx: &Pbx, ext: &str) -> serde_json::Value {
    assert!(
        wait_until(WAIT, || pbx
            .extension(ext)
            .is_ok_and(|e| e.is_some_and(|e| e["registered"] == true))),
        "{ext} not registered\n{}",
        pbx.log_tail(30)
    );
    pbx.wait_for_extension(ext, WAIT).expect("in the API")["contacts"][0].clone()
}

/// Whether nothing but keep-alives arrives on `socket` for `quiet`.
fn stays_silent(socket: &mut Socket, quiet: Duration) -> bool {
    let deadline = Instant::now() + quiet;
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Text(_) | Message::Binary(_)) => return false,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    true
}

#[test]
fn a_trusted_proxy_names_the_phone() {
    let pbx = Pbx::builder()
        .args(["--trusted-proxies", "10.0.0.0/8,127.0.0.1"])
        .start()
        .expect("start kubepbx up");
    pbx.add_extensions(&["1001", "1002"]).expect("extensions");
    pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");

    // Through an Ingress terminating TLS: the client is the last untrusted address.
    let mut phone = WsPhone::with_headers(
        &pbx,
        "1002",
        "change-me-1002",
        &[
            ("X-Forwarded-For", "203.0.113.66, 198.51.100.7, 10.1.2.3"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    let (last, _) = phone.register();
    assert!(last.starts_with("SIP/2.0 200"), "{last}");
    let c = contact(&pbx, "1002");
    let source = c["source"].as_str().expect("source");
    assert!(source.starts_with("198.51.100.7:"), "{c}");
    assert_eq!(c["transport"], "wss", "{c}");

    // A port given by the proxy (RFC 7239) is the phone's.
    let mut phone = WsPhone::with_headers(
        &pbx,
        "1001",
        "change-me-1001",
        &[("Forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
    );
    let (last, _) = phone.register();
    assert!(last.starts_with("SIP/2.0 200"), "{last}");
    let c = contact(&pbx, "1001");
    assert_eq!(c["source"], "[2001:db8::7]:4711", "{c}");
    assert_eq!(c["transport"], "ws", "no X-Forwarded-Proto: {c}");

    // A failure is recorded with the phone's address too.
    let mut wrong = WsPhone::with_headers(
        &pbx,
        "1002",
        "not-the-password",
        &[("X-Forwarded-For", "198.51.100.8")],
    );
    wrong.call_id.push_str("-wrong");
    let (last, _) = wrong.register();
    assert!(last.starts_with("SIP/2.0 401"), "{last}");
    assert!(
        wait_until(WAIT, || pbx.extension("1002").is_ok_and(|e| e.is_some_and(
            |e| {
                e["lastFailure"]["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("198.51.100.8:"))
            }
        ))),
        "{:?}",
        pbx.extension("1002")
    );
}

#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let headers = [
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
    ];
    // Without --trusted-proxies: X-Forwarded-For is ignored; X-Forwarded-Proto is believed, as
    // before the flag existed. With proxies that do not include the peer: both are ignored.
    for (args, transport) in [
        (&[][..], "wss"),
        (&["--trusted-proxies", "192.0.2.1"][..], "ws"),
    ] {
        let pbx = Pbx::builder()
            .args(args.iter().copied())
            .start()
            .expect("start kubepbx up");
        pbx.add_extensions(&["1002"]).expect("extension");
        pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");
        let mut phone = WsPhone::with_headers(&pbx, "1002", "change-me-1002", &headers);
        let (last, _) = phone.register();
        assert!(last.starts_with("SIP/2.0 200"), "{args:?}: {last}");
        let c = contact(&pbx, "1002");
        assert!(
            c["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:")),
            "{args:?}: {c}"
        );
        assert_eq!(c["transport"], transport, "{args:?}: {c}");
    }
}

#[test]
fn bans_hit_the_forwarded_phone_not_the_proxy() {
    let pbx = Pbx::builder()
        .args(["--trusted-proxies", "127.0.0.1", "--ban-threshold", "2"])
        .start()
        .expect("start kubepbx up");
    pbx.add_extensions(&["1001", "1002"]).expect("extensions");
    pbx.wait_for_extension("1002", WAIT).expect("1002 loaded");
    pbx.wait_for_extension("1001", WAIT).expect("1001 loaded");

    // Three wrong passwords from one phone behind the proxy: more than the threshold.
    let mut attacker = WsPhone::with_headers(
        &pbx,
        "1002",
        "not-the-password",
        &[("X-Forwarded-For", "198.51.100.66")],
    );
    for _ in 0..3 {
        let (last, _) = attacker.register();
        assert!(last.starts_with("SIP/2.0 401"), "{last}");
    }
    assert!(
        wait_until(WAIT, || {
            pbx.log()
                .lines()
                .any(|l| l.contains("source banned") && l.contains("198.51.100.66"))
        }),
        "{}",
        pbx.log_tail(30)
    );
    // The banned phone gets no answer, on this socket or a new one.
    let request = attacker.register_request(None);
    attacker.send(&request);
    assert!(
        stays_silent(&mut attacker.socket, Duration::from_secs(2)),
        "a banned source is ignored"
    );
    let mut again = WsPhone::with_headers(
        &pbx,
        "1002",
        "change-me-1002",
        &[("X-Forwarded-For", "198.51.100.66")],
    );
    let request = again.register_request(None);
    again.send(&request);
    assert!(stays_silent(&mut again.socket, Duration::from_secs(2)));

    // Another phone behind the same proxy, and the proxy itself, are still served.
    let mut other = WsPhone::with_headers(
        &pbx,
        "1001",
        "change-me-1001",
        &[("X-Forwarded-For", "198.51.100.7")],
    );
    let (last, _) = other.register();
    assert!(
        last.starts_with("SIP/2.0 200"),
        "{last}\n{}",
        pbx.log_tail(30)
    );
    let mut direct = WsPhone::new(&pbx, "1002", "change-me-1002");
    let (last, _) = direct.register();
    assert!(
        last.starts_with("SIP/2.0 200"),
        "{last}\n{}",
        pbx.log_tail(30)
    );
    assert!(
        !pbx.log()
            .lines()
            .any(|l| l.contains("source banned") && l.contains("127.0.0.1")),
        "the proxy is not banned:\n{}",
        pbx.log_tail(30)
    );
}
