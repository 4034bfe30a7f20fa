//! Building responses to requests (RFC 3261 §8.2.6, §18.2.1; RFC 3581).
//!
//! A response copies `Via`, `From`, `To`, `Call-ID` and `CSeq` from the request byte for byte,
//! except that the topmost `Via` gets `received` (the real source IP) and a value for an empty
//! `rport` (the real source port), and `To` gets a tag when it has none.

use crate::message::Request;
use bytes::{BufMut, Bytes, BytesMut};
use ezk_sip_types::Name;
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::header::typed::Via;
use ezk_sip_types::print::AppendCtx;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The product token sent in `Server` and `User-Agent`.
pub const PRODUCT: &str = concat!("kubepbx/", env!("CARGO_PKG_VERSION"));

/// A response under construction.
#[derive(Debug)]
pub struct ResponseBuilder<'r> {
    request: &'r Request,
    source: SocketAddr,
    code: u16,
    reason: String,
    to_tag: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Bytes)>,
}

impl<'r> ResponseBuilder<'r> {
    /// Starts a response to `request`, which arrived from `source`.
    pub fn new(request: &'r Request, source: SocketAddr, code: u16, reason: &str) -> Self {
        ResponseBuilder {
            request,
            source,
            code,
            reason: sanitize_reason(reason),
            to_tag: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// The tag to add to `To` if the request's `To` has none (ignored for 100 Trying).
    pub fn to_tag(mut self, tag: impl Into<String>) -> Self {
        self.to_tag = Some(tag.into());
        self
    }

    /// Adds a header line.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body and its content type.
    pub fn body(mut self, content_type: &'static str, body: Bytes) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// The status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Serialises the response.
    pub fn build(self) -> Bytes {
        let mut out = String::with_capacity(512);
        let _ = write!(out, "SIP/2.0 {} {}\r\n", self.code, self.reason);
        let mut first = true;
        for via in self.request.headers.get_raw(&Name::VIA) {
            if first {
                first = false;
                out.push_str("Via: ");
                out.push_str(&top_via(via.as_str(), via.as_ref(), self.source));
                out.push_str("\r\n");
            } else {
                let _ = write!(out, "Via: {via}\r\n");
            }
        }
        for (name, label) in [(Name::FROM, "From"), (Name::TO, "To")] {
            if let Some(value) = self.request.header(&name) {
                let _ = write!(out, "{label}: {value}");
                if let Some(tag) = &self.to_tag
                    && crate::headers::same(&name, &Name::TO)
                    && self.code > 100
                    && !has_tag(value.as_str())
                {
                    let _ = write!(out, ";tag={tag}");
                }
                out.push_str("\r\n");
            }
        }
        for (name, label) in [(Name::CALL_ID, "Call-ID"), (Name::CSEQ, "CSeq")] {
            if let Some(value) = self.request.header(&name) {
                let _ = write!(out, "{label}: {value}\r\n");
            }
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "Server: {PRODUCT}\r\n");
        let mut buf = BytesMut::with_capacity(out.len() + 64);
        match &self.body {
            Some((content_type, body)) => {
                let _ = write!(
                    out,
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                buf.put_slice(out.as_bytes());
                buf.put_slice(body);
            }
            None => {
                out.push_str("Content-Length: 0\r\n\r\n");
                buf.put_slice(out.as_bytes());
            }
        }
        buf.freeze()
    }
}

/// Where a response to this request goes (RFC 3261 §18.2.2, RFC 3581 §4): for datagrams, the
/// source IP and — when the top Via asked for `rport` — the source port, otherwise the Via's
/// sent-by port (default 5060). Stream transports answer on the connection, i.e. `source`.
pub fn response_destination(via: &Via, source: SocketAddr, reliable: bool) -> SocketAddr {
    if reliable || via.params.get("rport").is_some() {
        return source;
    }
    if let Some(received) = via.params.get_val("received").and_then(|r| r.parse().ok()) {
        return SocketAddr::new(received, via.sent_by.port.unwrap_or(5060));
    }
    SocketAddr::new(source.ip(), via.sent_by.port.unwrap_or(5060))
}

/// Rewrites the first Via value of a Via header line with `received` and `rport` filled in.
///
/// The value is copied as received, with only those two parameters changed or added; a Via
/// this fast path does not follow (quoted parameter values, whitespace inside sent-by) is
/// parsed and printed instead.
pub(crate) fn top_via(line: &str, src: &Bytes, source: SocketAddr) -> String {
    match rewrite_top_via(line, source) {
        Some(out) => out,
        None => reprint_top_via(line, src, source),
    }
}

/// [`top_via`] on the text alone; `None` when the value needs the full parser.
fn rewrite_top_via(line: &str, source: SocketAddr) -> Option<String> {
    if line.contains('"') {
        return None;
    }
    let end = line.find(',').unwrap_or(line.len());
    let (value, rest) = line.split_at(end);
    let (head, params) = value.split_once(';').unwrap_or((value, ""));
    // "SIP/2.0/UDP host[:port]": the protocol, one run of whitespace, then sent-by.
    let mut words = head.split_whitespace();
    let (Some(protocol), Some(sent_by), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    if protocol.split('/').count() != 3 {
        return None;
    }
    let host = match sent_by.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => sent_by.split(':').next()?,
    };
    let sent_by_ip = host.parse::<std::net::IpAddr>().ok();
    let mut rport = false;
    for param in params.split(';') {
        let name = param.split('=').next().unwrap_or("").trim();
        // Named as the parser (and `response_destination`) match them: exactly.
        rport |= name == "rport";
    }
    if !rport && sent_by_ip == Some(source.ip()) {
        return Some(line.to_owned());
    }
    let mut out = String::with_capacity(line.len() + 48);
    out.push_str(head);
    let mut received = false;
    for param in params.split(';').filter(|p| !p.trim().is_empty()) {
        let name = param.split('=').next().unwrap_or("").trim();
        out.push(';');
        if name == "rport" {
            let _ = write!(out, "rport={}", source.port());
        } else if name == "received" {
            received = true;
            let _ = write!(out, "received={}", source.ip());
        } else {
            out.push_str(param);
        }
    }
    if !received {
        let _ = write!(out, ";received={}", source.ip());
    }
    out.push_str(rest);
    Some(out)
}

/// [`top_via`] through the full parser and printer.
fn reprint_top_via(line: &str, src: &Bytes, source: SocketAddr) -> String {
    let Ok((rest, mut via)) = Via::parse(src, line) else {
        return line.to_owned();
    };
    let sent_by_ip = via.sent_by.ip();
    if via.params.get("rport").is_some() {
        via.params.push_or_edit("rport", source.port().to_string());
        via.params.push_or_edit("received", source.ip().to_string());
    } else if sent_by_ip != Some(source.ip()) {
        via.params.push_or_edit("received", source.ip().to_string());
    }
    let mut out = via.default_print_ctx().to_string();
    out.push_str(rest);
    out
}

fn has_tag(value: &str) -> bool {
    // Parameters after the name-addr: the tag can only follow the closing '>' or, without
    // angle brackets, the URI (where ';tag=' cannot be a URI parameter of From/To by RFC 3261
    // §20.10's rule that URI parameters then belong to the header).
    let params = value.rsplit_once('>').map_or(value, |(_, p)| p);
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

/// A reason phrase keeps to the characters RFC 3261 allows there (reserved, unreserved, space
/// and non-ASCII): ours may quote SDP or request text, and a strict parser (JsSIP) drops a
/// response whose phrase holds a `"`. Quotes become `'`, brackets parentheses, other ASCII
/// punctuation outside the grammar and control characters go.
fn sanitize_reason(reason: &str) -> String {
    reason
        .chars()
        .filter_map(|c| match c {
            '"' | '`' => Some('\''),
            '<' | '[' | '{' => Some('('),
            '>' | ']' | '}' => Some(')'),
            '#' | '%' | '|' | '\\' | '^' => None,
            c if c.is_control() => None,
            c => Some(c),
        })
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, parse};

    fn request(text: &str) -> Request {
        match parse(Bytes::from(text.replace('\n', "\r\n"))) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:pbx.example.com SIP/2.0\n\
        Via: SIP/2.0/UDP 192.168.1.20:5062;rport;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\n\
        Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKc\n\
        To: <sip:pbx.example.com>\n\
        From: <sip:1001@pbx.example.com>;tag=abc\n\
        Call-ID: c1\n\
        CSeq: 7 OPTIONS\n\
        Content-Length: 0\n\n";

    #[test]
    fn copies_and_fills_via() {
        let r = request(OPTIONS);
        let source: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let out = ResponseBuilder::new(&r, source, 200, "OK")
            .to_tag("t1")
            .build();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(
            text.contains(
                "Via: SIP/2.0/UDP 192.168.1.20:5062;rport=40000;branch=z9hG4bKa;received=203.0.113.9, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKc\r\n"));
        assert!(text.contains("To: <sip:pbx.example.com>;tag=t1\r\n"));
        assert!(text.contains("From: <sip:1001@pbx.example.com>;tag=abc\r\n"));
        assert!(text.contains("Call-ID: c1\r\nCSeq: 7 OPTIONS\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // The result parses back.
        assert!(matches!(parse(out), Ok(Message::Response(_))));
    }

    #[test]
    fn the_copied_top_via_says_what_the_parsed_one_says() {
        // Normalised through the parser: the first value of a line as ezk prints it, and the rest.
        let normal = |line: &str| {
            let b = Bytes::from(line.to_owned());
            let text = std::str::from_utf8(&b).unwrap();
            let (rest, via) = Via::parse(&b, text).unwrap();
            format!("{}|{}", via.default_print_ctx(), rest.trim())
        };
        let lines = [
            "SIP/2.0/UDP 192.168.1.20:5062;rport;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bKa;rport, SIP/2.0/UDP 10.0.0.1;branch=b",
            "SIP/2.0/UDP 203.0.113.9:40000;branch=z9hG4bKa",
            "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKa;rport=5060;received=10.1.1.1",
            "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKa;RPORT",
            "SIP/2.0/TCP phone.example.com;branch=z9hG4bKa;alias",
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa",
            "SIP/2.0/WSS df7jal23ls0d.invalid;rport;branch=z9hG4bKa ;received=x",
            "SIP/2.0/UDP 10.0.0.1",
        ];
        for source in ["203.0.113.9:40000", "[2001:db8::1]:5060"] {
            let source: SocketAddr = source.parse().unwrap();
            for line in lines {
                let fast = rewrite_top_via(line, source).unwrap();
                let src = Bytes::from(line.to_owned());
                let slow = reprint_top_via(std::str::from_utf8(&src).unwrap(), &src, source);
                assert_eq!(normal(&fast), normal(&slow), "{line} from {source}: {fast}");
            }
        }
        // Left to the parser: quoted values, whitespace inside the protocol or sent-by.
        let source: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        for line in [
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;x=\"a;b\"",
            "SIP / 2.0 / UDP 10.0.0.1;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1 : 5060;branch=z9hG4bKa",
        ] {
            assert_eq!(rewrite_top_via(line, source), None, "{line}");
        }
    }

    #[test]
    fn reason_phrases_keep_to_the_grammar() {
        assert_eq!(
            sanitize_reason("unsupported transport \"UDP/TLS/RTP/SAVPF\" <x> 50% [a]"),
            "unsupported transport 'UDP/TLS/RTP/SAVPF' (x) 50 (a)"
        );
    }

    #[test]
    fn keeps_existing_to_tag_and_strips_crlf_from_reason() {
        let r = request(&OPTIONS.replace(
            "To: <sip:pbx.example.com>",
            "To: <sip:pbx.example.com>;tag=x",
        ));
        let source: SocketAddr = "192.168.1.20:5062".parse().unwrap();
        let out = ResponseBuilder::new(&r, source, 400, "Bad\r\nInjected: 1")
            .to_tag("t1")
            .build();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("To: <sip:pbx.example.com>;tag=x\r\n"));
        assert!(text.starts_with("SIP/2.0 400 BadInjected: 1\r\n"));
    }

    #[test]
    fn destinations() {
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let via = |s: &str| {
            // ezk parsers slice their input out of `src`, so the text must borrow from it.
            let b = Bytes::from(s.to_owned());
            let text = std::str::from_utf8(&b).unwrap();
            Via::parse(&b, text).map(|(_, v)| v).unwrap()
        };
        assert_eq!(
            response_destination(
                &via("SIP/2.0/UDP 10.0.0.1:5062;rport;branch=z9hG4bK1"),
                src,
                false
            ),
            src
        );
        assert_eq!(
            response_destination(
                &via("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1"),
                src,
                false
            ),
            "203.0.113.9:5062".parse().unwrap()
        );
        assert_eq!(
            response_destination(&via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1"), src, false),
            "203.0.113.9:5060".parse().unwrap()
        );
        assert_eq!(
            response_destination(&via("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1"), src, true),
            src
        );
    }
}
