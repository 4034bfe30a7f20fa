//! SIP messages: parsing bytes into a [`Message`] and the checks every request must pass.
//!
//! Parsing is done in two steps so that a broken request can still be answered:
//!
//! 1. [`parse`] splits the start line and the header lines (with `ezk-sip-types`), applies
//!    `Content-Length` and the size limit. Failure here means nothing sensible can be answered:
//!    the caller drops the datagram (or closes the connection) and counts it. Problems that
//!    still leave the headers readable (a broken header line, a short body, a `tel:` URI) are
//!    kept as the request's [`Defect`] so it can be answered with 400 or 416.
//! 2. [`Request::essentials`] decodes the headers every transaction needs (top `Via`, `From`,
//!    `To`, `Call-ID`, `CSeq`, `Max-Forwards`). Failure here yields a [`HeaderProblem`] whose text
//!    becomes the reason phrase of a `400 Bad Request`.
//!
//! Header values stay as the bytes received (`BytesStr` slices of one buffer, in a
//! [`Headers`] table), so responses and forwarded requests copy them verbatim.

use crate::headers::Headers;
use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CallID, FromTo, MaxForwards, Via};
use ezk_sip_types::msg::{Line, PullParser};
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Name, StatusCode};
use std::str::FromStr;

/// Largest message accepted on any transport (64 KiB).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Header lines read per message; a request with more is answered 400 ([`Defect::TooManyHeaders`])
/// from the lines read so far, a response with more is dropped. Real messages have a few dozen
/// (a request through many proxies: one `Via` and `Record-Route` line each).
pub const MAX_HEADER_LINES: usize = 500;

/// Different header names kept per message, as for [`MAX_HEADER_LINES`]. Each line is looked up
/// among the names seen before it, so the two limits bound the work a crafted message can cause:
/// 64 KiB of one-letter names would otherwise be tens of millions of comparisons.
pub const MAX_HEADER_NAMES: usize = 100;

/// A parsed SIP message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// A SIP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, case-sensitive as RFC 3261 §7.1 requires.
    pub method: Method,
    /// The Request-URI; `None` when its scheme is not `sip`/`sips` (see [`Defect::UriScheme`]).
    pub uri: Option<SipUri>,
    /// The Request-URI exactly as received.
    pub uri_raw: BytesStr,
    /// Every header, in order of first appearance of each name.
    pub headers: Headers,
    /// The body (after applying `Content-Length`).
    pub body: Bytes,
    /// A problem found while parsing that still allows an answer.
    pub defect: Option<Defect>,
    /// [`Request::essentials`], decoded by [`parse`]: on the task that reads the socket, so
    /// that the endpoint's task, which handles every message of a replica, does not.
    decoded: Option<Box<Result<Essentials, HeaderProblem>>>,
}

/// A problem that makes a request invalid but still answerable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// A header line without a colon or with an invalid name (the line was skipped).
    #[error("Malformed Header Line")]
    HeaderLine,
    /// `Content-Length` is not a number or larger than the body received.
    #[error("Bad Content-Length")]
    ContentLength,
    /// The Request-URI scheme is not `sip` or `sips` (answered with 416).
    #[error("Unsupported URI Scheme")]
    UriScheme,
    /// More header lines than [`MAX_HEADER_LINES`] or names than [`MAX_HEADER_NAMES`]; the
    /// rest were not read.
    #[error("Too Many Header Fields")]
    TooManyHeaders,
}

/// A SIP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: BytesStr,
    /// Every header.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// Why bytes could not be parsed into a message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes exceeds the 64 KiB limit")]
    TooLarge(usize),
    /// The header section does not end (no empty line).
    #[error("incomplete message head")]
    Incomplete,
    /// The head is not UTF-8 text.
    #[error("message head is not UTF-8")]
    NotText,
    /// The first line is neither `METHOD uri SIP/2.0` nor `SIP/2.0 code reason`.
    #[error("malformed start line")]
    StartLine,
    /// A response with more header lines or names than kubepbx reads (see
    /// [`MAX_HEADER_LINES`]).
    #[error("response with too many header fields")]
    TooManyHeaders,
}

/// A request whose headers are broken, with what is broken; `Display` is the reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// A mandatory header is absent.
    #[error("Missing {0} Header")]
    Missing(&'static str),
    /// A mandatory header could not be parsed.
    #[error("Malformed {0} Header")]
    Malformed(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq Method Mismatch")]
    CSeqMethod,
}

/// The decoded headers every request must have.
#[derive(Debug, Clone)]
pub struct Essentials {
    /// The topmost Via.
    pub via: Via,
    /// `From`.
    pub from: FromTo,
    /// `To`.
    pub to: FromTo,
    /// `Call-ID`.
    pub call_id: BytesStr,
    /// `CSeq`.
    pub cseq: CSeq,
    /// `Max-Forwards`, when present.
    pub max_forwards: Option<u32>,
}

/// Parses one complete message (a datagram, or a frame cut by [`crate::framing`]).
pub fn parse(bytes: Bytes) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let mut lines = PullParser::new(&bytes, 0);
    let start = match lines.next() {
        Some(Ok(line)) => line,
        _ => return Err(ParseError::Incomplete),
    };
    let start = std::str::from_utf8(start).map_err(|_| ParseError::NotText)?;
    let start = StartLine::parse(&bytes, start)?;

    let mut defect = None;
    let mut headers = Headers::with_capacity(16);
    let mut too_many = false;
    for (read, line) in lines.by_ref().enumerate() {
        let line = line.map_err(|_| ParseError::Incomplete)?;
        if read >= MAX_HEADER_LINES {
            // Still walked to find where the head ends.
            too_many = true;
            continue;
        }
        let text = std::str::from_utf8(line).map_err(|_| ParseError::NotText)?;
        match Line::parse(&bytes, text) {
            Ok((_, Line { name, value })) => {
                too_many |= !headers.insert_within(name, value, MAX_HEADER_NAMES);
            }
            Err(_) => defect = Some(Defect::HeaderLine),
        }
    }
    let body_start = lines.head_end();
    let available = bytes.len().saturating_sub(body_start);
    let body_len = match headers.get_raw(&Name::CONTENT_LENGTH).next() {
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n <= available => n,
            _ => {
                defect = Some(Defect::ContentLength);
                0
            }
        },
        None => available,
    };
    let body = bytes.slice(body_start..body_start + body_len);
    if too_many {
        defect = Some(Defect::TooManyHeaders);
    }

    Ok(match start {
        StartLine::Request {
            method,
            uri,
            uri_raw,
        } => {
            let mut request = Request {
                defect: if uri.is_none() {
                    Some(Defect::UriScheme)
                } else {
                    defect
                },
                method,
                uri,
                uri_raw,
                headers,
                body,
                decoded: None,
            };
            request.decoded = Some(Box::new(request.essentials()));
            Message::Request(request)
        }
        StartLine::Response { .. } if too_many => return Err(ParseError::TooManyHeaders),
        StartLine::Response { code, reason } => Message::Response(Response {
            code,
            reason,
            headers,
            body,
        }),
    })
}

enum StartLine {
    Request {
        method: Method,
        uri: Option<SipUri>,
        uri_raw: BytesStr,
    },
    Response {
        code: u16,
        reason: BytesStr,
    },
}

impl StartLine {
    fn parse(src: &Bytes, line: &str) -> Result<StartLine, ParseError> {
        let mut parts = line.splitn(3, ' ');
        let (Some(first), Some(second), Some(third)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::StartLine);
        };
        if first == "SIP/2.0" {
            let code: u16 = second.parse().map_err(|_| ParseError::StartLine)?;
            if !(100..=699).contains(&code) {
                return Err(ParseError::StartLine);
            }
            return Ok(StartLine::Response {
                code,
                reason: BytesStr::from_parse(src, third),
            });
        }
        if third != "SIP/2.0" || !is_token(first) {
            return Err(ParseError::StartLine);
        }
        let scheme = second.split(':').next().unwrap_or_default();
        let uri = if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            Some(SipUri::from_str(second).map_err(|_| ParseError::StartLine)?)
        } else if second.contains(':') {
            None
        } else {
            return Err(ParseError::StartLine);
        };
        Ok(StartLine::Request {
            method: Method::from_token(first),
            uri,
            uri_raw: BytesStr::from_parse(src, second),
        })
    }
}

/// A SIP method, matched exactly: methods are case-sensitive (RFC 3261 §7.1). (The parser
/// library's own method type matches case-insensitively and by prefix.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// CANCEL
    Cancel,
    /// BYE
    Bye,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// MESSAGE
    Message,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// PUBLISH
    Publish,
    /// REFER
    Refer,
    /// Any other token.
    Other(String),
}

impl Method {
    const KNOWN: [(&'static str, Method); 14] = [
        ("INVITE", Method::Invite),
        ("ACK", Method::Ack),
        ("CANCEL", Method::Cancel),
        ("BYE", Method::Bye),
        ("REGISTER", Method::Register),
        ("OPTIONS", Method::Options),
        ("INFO", Method::Info),
        ("UPDATE", Method::Update),
        ("PRACK", Method::Prack),
        ("MESSAGE", Method::Message),
        ("SUBSCRIBE", Method::Subscribe),
        ("NOTIFY", Method::Notify),
        ("PUBLISH", Method::Publish),
        ("REFER", Method::Refer),
    ];

    /// The method named by `token`, exactly.
    pub fn from_token(token: &str) -> Method {
        Self::KNOWN
            .iter()
            .find(|(name, _)| *name == token)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| Method::Other(token.to_owned()))
    }

    /// The method name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(_, m)| m == known)
                .map_or("", |(name, _)| name),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded `CSeq` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1826 REGISTER`.
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut parts = value.split_ascii_whitespace();
        let seq = parts.next()?.parse().ok()?;
        let method = parts.next().filter(|m| is_token(m))?;
        if parts.next().is_some() {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

/// RFC 3261 `token` characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

impl Request {
    /// Decodes the headers every request needs; the error names the first broken one.
    pub fn essentials(&self) -> Result<Essentials, HeaderProblem> {
        // Via decodes the first value of the first Via line: the topmost Via.
        let via: Via = typed(&self.headers, Name::VIA, "Via")?;
        let from: FromTo = typed(&self.headers, Name::FROM, "From")?;
        let to: FromTo = typed(&self.headers, Name::TO, "To")?;
        let call_id: CallID = typed(&self.headers, Name::CALL_ID, "Call-ID")?;
        let cseq = self
            .header(&Name::CSEQ)
            .ok_or(HeaderProblem::Missing("CSeq"))
            .and_then(|v| CSeq::parse(v).ok_or(HeaderProblem::Malformed("CSeq")))?;
        let max_forwards = match self.headers.try_get::<MaxForwards>(Name::MAX_FORWARDS) {
            None => None,
            Some(Ok(mf)) => Some(u32::from(mf.0)),
            Some(Err(_)) => return Err(HeaderProblem::Malformed("Max-Forwards")),
        };
        if cseq.method != self.method {
            return Err(HeaderProblem::CSeqMethod);
        }
        Ok(Essentials {
            via,
            from,
            to,
            call_id: call_id.0,
            cseq,
            max_forwards,
        })
    }

    /// [`Self::essentials`], taken from the request: decoded when it was parsed, so this is
    /// cheap the first time; later calls decode again. (Decoded from the headers as parsed:
    /// call [`Self::essentials`] instead after changing them.)
    pub fn take_essentials(&mut self) -> Result<Essentials, HeaderProblem> {
        match self.decoded.take() {
            Some(decoded) => *decoded,
            None => self.essentials(),
        }
    }

    /// The first value of a header, raw.
    pub fn header(&self, name: &Name) -> Option<&BytesStr> {
        self.headers.get_raw(name).next()
    }
}

impl Response {
    /// The first value of a header, raw.
    pub fn header(&self, name: &Name) -> Option<&BytesStr> {
        self.headers.get_raw(name).next()
    }

    /// The status code as the library type.
    pub fn status(&self) -> StatusCode {
        StatusCode::from(self.code)
    }
}

fn typed<T>(headers: &Headers, name: Name, label: &'static str) -> Result<T, HeaderProblem>
where
    T: ezk_sip_types::header::DecodeValues,
{
    match headers.try_get::<T>(name) {
        None => Err(HeaderProblem::Missing(label)),
        Some(Ok(v)) => Ok(v),
        Some(Err(_)) => Err(HeaderProblem::Malformed(label)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse(Bytes::from(text.replace('\n', "\r\n"))) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected request, got {other:?}"),
        }
    }

    const REGISTER: &str = "REGISTER sip:pbx.example.com SIP/2.0\n\
        Via: SIP/2.0/UDP 192.168.1.20:5060;rport;branch=z9hG4bK776asdhds\n\
        Max-Forwards: 70\n\
        To: <sip:1001@pbx.example.com>\n\
        From: <sip:1001@pbx.example.com>;tag=456248\n\
        Call-ID: 843817637684230@998sdasdh09\n\
        CSeq: 1826 REGISTER\n\
        Contact: <sip:1001@192.168.1.20:5060>\n\
        Expires: 3600\n\
        Content-Length: 0\n\n";

    #[test]
    fn parses_register_essentials() {
        let mut r = req(REGISTER);
        assert_eq!(r.method, Method::Register);
        let e = r.essentials().expect("essentials");
        let taken = r.take_essentials().expect("decoded by parse");
        assert_eq!(taken.cseq, e.cseq);
        assert_eq!(taken.call_id, e.call_id);
        assert!(r.decoded.is_none(), "taken");
        assert_eq!(r.take_essentials().expect("decoded again").cseq, e.cseq);
        assert_eq!(e.cseq.seq, 1826);
        assert_eq!(e.call_id.as_ref() as &str, "843817637684230@998sdasdh09");
        assert_eq!(
            e.via.params.get_val("branch").map(|b| b.as_ref()),
            Some("z9hG4bK776asdhds")
        );
        assert_eq!(e.max_forwards, Some(70));
    }

    #[test]
    fn methods_are_case_sensitive() {
        let r = req(&REGISTER.replacen("REGISTER sip", "register sip", 1));
        assert_eq!(r.method, Method::Other("register".into()));
        assert_eq!(r.essentials().unwrap_err(), HeaderProblem::CSeqMethod);
        assert_eq!(
            Method::from_token("REGISTERX"),
            Method::Other("REGISTERX".into())
        );
        assert_eq!(Method::Register.to_string(), "REGISTER");
    }

    #[test]
    fn missing_call_id_is_named() {
        let r = req(&REGISTER.replace("Call-ID: 843817637684230@998sdasdh09\n", ""));
        assert_eq!(
            r.essentials().unwrap_err(),
            HeaderProblem::Missing("Call-ID")
        );
        assert_eq!(
            HeaderProblem::Missing("Call-ID").to_string(),
            "Missing Call-ID Header"
        );
    }

    #[test]
    fn bad_cseq_is_named() {
        let r = req(&REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: abc REGISTER"));
        assert_eq!(
            r.essentials().unwrap_err(),
            HeaderProblem::Malformed("CSeq")
        );
    }

    #[test]
    fn content_length_applies() {
        let body = "v=0\n";
        let text = REGISTER.replace("Content-Length: 0", "Content-Length: 4") + body;
        assert_eq!(req(&text).body.len(), 4);
        let short = REGISTER.replace("Content-Length: 0", "Content-Length: 40");
        assert_eq!(req(&short).defect, Some(Defect::ContentLength));
        let bad_line = REGISTER.replace("Expires: 3600", "Expires 3600");
        let r = req(&bad_line);
        assert_eq!(r.defect, Some(Defect::HeaderLine));
        assert!(r.essentials().is_ok());
    }

    #[test]
    fn start_line_errors() {
        for bad in [
            "GARBAGE\r\n\r\n",
            "REGISTER sip:x SIP/3.0\r\n\r\n",
            "\r\n\r\n",
            "SIP/2.0 99 X\r\n\r\n",
        ] {
            assert!(parse(Bytes::from(bad)).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            req("INVITE tel:+123 SIP/2.0\n\n").defect,
            Some(Defect::UriScheme)
        );
        assert!(parse(Bytes::from(vec![0xff; 40])).is_err());
        assert_eq!(
            parse(Bytes::from(vec![b'a'; MAX_MESSAGE_SIZE + 1])).unwrap_err(),
            ParseError::TooLarge(MAX_MESSAGE_SIZE + 1)
        );
    }

    /// A REGISTER with `names` more header lines, each with a name of its own (6,000 make
    /// about 60 KB).
    fn crafted(names: usize) -> String {
        let mut text = REGISTER.replace("Content-Length: 0\n\n", "");
        for i in 0..names {
            text.push_str(&format!("X{i}: v\n"));
        }
        text.push_str("Content-Length: 0\n\n");
        text
    }

    #[test]
    fn a_message_of_too_many_header_lines_is_answerable_and_read_only_so_far() {
        let r = req(&crafted(6_000));
        assert_eq!(r.defect, Some(Defect::TooManyHeaders));
        assert_eq!(
            r.defect.map(|d| d.to_string()).as_deref(),
            Some("Too Many Header Fields")
        );
        // The essentials came first, so a 400 can be built.
        r.essentials().expect("essentials");
        let names = r
            .headers
            .iter()
            .map(|(n, _)| n.as_print_str())
            .collect::<std::collections::BTreeSet<_>>();
        assert!(
            names.len() <= MAX_HEADER_NAMES,
            "{} names kept",
            names.len()
        );
        assert!(r.headers.iter().count() <= MAX_HEADER_LINES);
        // Up to the limits a message is whole.
        let r = req(&crafted(MAX_HEADER_NAMES - 9));
        assert_eq!(r.defect, None);
        assert_eq!(r.headers.get_raw(&Name::from("X0")).count(), 1);
    }

    #[test]
    fn response_parses() {
        let text = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n";
        match parse(Bytes::from(text)) {
            Ok(Message::Response(r)) => {
                assert_eq!(r.code, 401);
                assert_eq!(r.reason.as_ref() as &str, "Unauthorized");
            }
            other => panic!("{other:?}"),
        }
    }
}
