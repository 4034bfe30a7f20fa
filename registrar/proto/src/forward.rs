//! Rewriting messages on their way through the proxy (RFC 3261 §16.6, §16.7), and the
//! hop-by-hop requests a proxy makes itself (CANCEL §9.1, ACK for a non-2xx §17.1.1.3).
//!
//! A forwarded request keeps every header of the original in order, except that the proxy
//! pushes its own `Via` on top, notes on the sender's `Via` where the request came from
//! (`received`, `rport`), decrements `Max-Forwards`, may add its `Record-Route`, may
//! remove the topmost `Route` (the one naming it) and may replace the body (an SDP rewritten by
//! the media relay). A forwarded response loses its topmost `Via` (the proxy's own) and may get
//! a new body. `Content-Length` is always recomputed.

use crate::builder::top_via;
use crate::headers::same;
use crate::message::{Request, Response};
use bytes::{BufMut, Bytes, BytesMut};
use ezk_sip_types::Name;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Default `Max-Forwards` for requests that carry none (RFC 3261 §8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// How to forward one request.
#[derive(Debug, Clone, Default)]
pub struct Forward<'a> {
    /// New Request-URI (the target contact); `None` keeps the received one.
    pub uri: Option<&'a str>,
    /// The proxy's `Via` value, pushed on top (`SIP/2.0/UDP host:port;branch=…`).
    pub via: &'a str,
    /// The proxy's `Record-Route` value(s), added on top (`<sip:host:port;lr>`).
    pub record_route: Option<&'a str>,
    /// How many of the topmost `Route` values to remove (those naming this proxy).
    pub pop_routes: usize,
    /// Replacement body and its content type.
    pub body: Option<(&'a str, &'a [u8])>,
    /// Remove `Proxy-Authorization`: the credentials were for this proxy (RFC 3261 §22.3).
    pub strip_proxy_auth: bool,
    /// Where the request came from: the sender's `Via` (now the second) gets `received` and,
    /// when it asked, `rport` (RFC 3261 §18.2.1, RFC 3581 §4), as in the proxy's own responses.
    pub source: Option<SocketAddr>,
}

/// Splits a header value at the commas that separate values (RFC 3261 §7.3.1), not at those
/// inside `<…>` or quoted strings.
pub fn split_values(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0u32, false, false, 0usize);
    for (i, c) in value.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

fn head_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

fn finish(mut head: String, content_type: Option<&str>, body: &[u8]) -> Bytes {
    if let Some(ct) = content_type {
        head_line(&mut head, "Content-Type", ct);
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut buf = BytesMut::with_capacity(head.len() + body.len());
    buf.put_slice(head.as_bytes());
    buf.put_slice(body);
    buf.freeze()
}

/// The request as forwarded (see the module docs). `Max-Forwards` must be checked (> 0) by
/// the caller before.
///
/// Rows of one header stay together and in order, as strict parsers expect: the proxy's `Via`
/// goes right before the received ones, its `Record-Route` right before the received ones (or,
/// when there are none, right after the last `Via`), and `Max-Forwards` is decremented where it
/// stood (added after the `Via`s when the request had none).
pub fn request(req: &Request, f: &Forward<'_>) -> Bytes {
    let mut out = String::with_capacity(req.body.len() + 1024);
    let uri = f.uri.unwrap_or(&req.uri_raw);
    let _ = write!(out, "{} {uri} SIP/2.0\r\n", req.method);
    let has = |wanted: &Name| req.headers.contains(wanted);
    let (has_via, has_record_route) = (has(&Name::VIA), has(&Name::RECORD_ROUTE));
    let has_max_forwards = has(&Name::MAX_FORWARDS);
    // What is still to be written: the proxy's Via, its Record-Route, Max-Forwards.
    let mut via = Some(f.via);
    let mut record_route = f.record_route;
    let mut max_forwards = Some(
        req.header(&Name::MAX_FORWARDS)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(DEFAULT_MAX_FORWARDS)
            .saturating_sub(1),
    );
    let mut to_pop = f.pop_routes;
    let mut sender_via = f.source;
    let mut headers = req.headers.iter().peekable();
    if !has_via {
        put(&mut out, "Via", via.take());
        put(&mut out, "Record-Route", record_route.take());
    }
    while let Some((name, value)) = headers.next() {
        if same(name, &Name::VIA) {
            put(&mut out, "Via", via.take());
        } else if same(name, &Name::RECORD_ROUTE) {
            put(&mut out, "Record-Route", record_route.take());
        }
        if same(name, &Name::VIA)
            && let Some(source) = sender_via.take()
        {
            head_line(&mut out, "Via", &top_via(value, value.as_ref(), source));
        } else if same(name, &Name::MAX_FORWARDS) {
            put_max_forwards(&mut out, max_forwards.take());
        } else if same(name, &Name::ROUTE) && to_pop > 0 {
            let values = split_values(value);
            let popped = to_pop.min(values.len());
            to_pop -= popped;
            if values.len() > popped {
                head_line(&mut out, "Route", &values[popped..].join(", "));
            }
        } else if !(same(name, &Name::CONTENT_LENGTH)
            || (f.body.is_some() && same(name, &Name::CONTENT_TYPE))
            || (f.strip_proxy_auth && same(name, &Name::PROXY_AUTHORIZATION)))
        {
            head_line(&mut out, name.as_print_str(), value);
        }
        let via_block_ends = same(name, &Name::VIA)
            && headers
                .peek()
                .is_none_or(|(next, _)| !same(next, &Name::VIA));
        if via_block_ends {
            if !has_record_route {
                put(&mut out, "Record-Route", record_route.take());
            }
            if !has_max_forwards {
                put_max_forwards(&mut out, max_forwards.take());
            }
        }
    }
    // Only for a request without any Via (not one the parser lets through).
    put_max_forwards(&mut out, max_forwards.take());
    match f.body {
        Some((ct, body)) => finish(out, Some(ct), body),
        None => finish(out, None, &req.body),
    }
}

/// Writes the header row when there is one to write.
fn put(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        head_line(out, name, value);
    }
}

fn put_max_forwards(out: &mut String, value: Option<u32>) {
    if let Some(n) = value {
        let _ = write!(out, "Max-Forwards: {n}\r\n");
    }
}

/// The response as forwarded upstream: the topmost `Via` value (the proxy's) removed, the body
/// optionally replaced. `None` when no `Via` is left to send it by.
pub fn response(resp: &Response, body: Option<(&str, &[u8])>) -> Option<Bytes> {
    let mut out = String::with_capacity(resp.body.len() + 1024);
    let _ = write!(out, "SIP/2.0 {} {}\r\n", resp.code, resp.reason);
    let mut popped = false;
    let mut vias_left = 0;
    for (name, value) in resp.headers.iter() {
        if same(name, &Name::CONTENT_LENGTH) || (body.is_some() && same(name, &Name::CONTENT_TYPE))
        {
            continue;
        }
        if same(name, &Name::VIA) {
            let mut values = split_values(value);
            if !popped {
                popped = true;
                values.remove(0);
            }
            vias_left += values.len();
            if !values.is_empty() {
                head_line(&mut out, "Via", &values.join(", "));
            }
            continue;
        }
        head_line(&mut out, name.as_print_str(), value);
    }
    if vias_left == 0 {
        return None;
    }
    Some(match body {
        Some((ct, body)) => finish(out, Some(ct), body),
        None => finish(out, None, &resp.body),
    })
}

/// The `branch` of the topmost `Via` of a message.
pub fn top_branch(headers: &crate::headers::Headers) -> Option<String> {
    let via = headers.get_raw(&Name::VIA).next()?;
    let first = split_values(via).into_iter().next()?;
    first
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch=").map(str::to_owned))
}

/// The response as received (every `Via` kept), to hand it to another replica that will
/// forward it itself.
pub fn response_unchanged(resp: &Response) -> Bytes {
    let mut out = String::with_capacity(resp.body.len() + 1024);
    let _ = write!(out, "SIP/2.0 {} {}\r\n", resp.code, resp.reason);
    for (name, value) in resp.headers.iter() {
        if !same(name, &Name::CONTENT_LENGTH) {
            head_line(&mut out, name.as_print_str(), value);
        }
    }
    finish(out, None, &resp.body)
}

/// Copies the headers a CANCEL or ACK shares with the INVITE it belongs to: the top `Via`,
/// `From`, `Call-ID`, `Route`s and `Max-Forwards`.
fn hop_by_hop(invite: &Request, method: &str, to: &str) -> String {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "{method} {} SIP/2.0\r\n", invite.uri_raw);
    if let Some(via) = invite.header(&Name::VIA)
        && let Some(top) = split_values(via).first()
    {
        head_line(&mut out, "Via", top);
    }
    for (name, label) in [(Name::FROM, "From"), (Name::CALL_ID, "Call-ID")] {
        if let Some(v) = invite.header(&name) {
            head_line(&mut out, label, v);
        }
    }
    head_line(&mut out, "To", to);
    let seq = invite
        .header(&Name::CSEQ)
        .and_then(|v| v.split_ascii_whitespace().next())
        .unwrap_or("1");
    let _ = write!(out, "CSeq: {seq} {method}\r\n");
    for route in invite.headers.get_raw(&Name::ROUTE) {
        head_line(&mut out, "Route", route);
    }
    let _ = write!(out, "Max-Forwards: {DEFAULT_MAX_FORWARDS}\r\n");
    out
}

/// CANCEL for an INVITE this proxy sent (`invite` is that INVITE, parsed): same Request-URI,
/// top `Via`, `From`, `To`, `Call-ID`, CSeq number and `Route`s (RFC 3261 §9.1).
pub fn cancel(invite: &Request) -> Bytes {
    let to = invite.header(&Name::TO).map_or("", |v| v.as_str());
    finish(hop_by_hop(invite, "CANCEL", to), None, &[])
}

/// ACK for a non-2xx final response to an INVITE this proxy sent: like the INVITE, but with
/// the response's `To` (which carries the tag) (RFC 3261 §17.1.1.3).
pub fn ack(invite: &Request, response: &Response) -> Bytes {
    let to = response
        .header(&Name::TO)
        .or_else(|| invite.header(&Name::TO))
        .map_or("", |v| v.as_str());
    finish(hop_by_hop(invite, "ACK", to), None, &[])
}

/// A request this proxy originates inside a dialog on behalf of one party (a BYE when the
/// PBX ends a call): the dialog's `From`/`To` as that party would send them, the next CSeq of
/// that party, our own `Via`, and a `Reason` header (RFC 3326) telling the phone why.
#[derive(Debug, Clone, Copy)]
pub struct Originate<'a> {
    /// Method, e.g. `BYE`.
    pub method: &'a str,
    /// Request-URI: the remote target (the receiving phone's Contact).
    pub uri: &'a str,
    /// Our `Via` value.
    pub via: &'a str,
    /// `From` (with the sending party's tag).
    pub from: &'a str,
    /// `To` (with the receiving party's tag).
    pub to: &'a str,
    /// `Call-ID`.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// `Reason` header value.
    pub reason: Option<&'a str>,
}

/// The bytes of an [`Originate`] request (no body).
pub fn originate(r: &Originate<'_>) -> Bytes {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "{} {} SIP/2.0\r\n", r.method, r.uri);
    head_line(&mut out, "Via", r.via);
    let _ = write!(out, "Max-Forwards: {DEFAULT_MAX_FORWARDS}\r\n");
    head_line(&mut out, "From", r.from);
    head_line(&mut out, "To", r.to);
    head_line(&mut out, "Call-ID", r.call_id);
    let _ = write!(out, "CSeq: {} {}\r\n", r.cseq, r.method);
    if let Some(reason) = r.reason {
        head_line(&mut out, "Reason", reason);
    }
    finish(out, None, &[])
}

/// The URI of the first `Contact` value: inside `<…>`, or up to the first `;` without them.
pub fn contact_uri(value: &str) -> Option<&str> {
    let first = split_values(value).into_iter().next()?;
    let uri = match (first.find('<'), first.find('>')) {
        (Some(open), Some(close)) if open < close => &first[open + 1..close],
        _ => first.split(';').next().unwrap_or_default(),
    };
    let uri = uri.trim();
    (!uri.is_empty() && uri != "*").then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Method, parse};

    fn req(text: &str) -> Request {
        match parse(Bytes::from(text.replace('\n', "\r\n"))) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn parsed(bytes: &Bytes) -> Request {
        match parse(bytes.clone()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn resp(bytes: &Bytes) -> Response {
        match parse(bytes.clone()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:1002@pbx.example.com SIP/2.0\n\
        Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller;rport\n\
        Max-Forwards: 70\n\
        Route: <sip:pbx.example.com;lr>, <sip:other.example.com;lr>\n\
        From: \"Reception, Desk\" <sip:1001@pbx.example.com>;tag=f1\n\
        To: <sip:1002@pbx.example.com>\n\
        Call-ID: call-1\n\
        CSeq: 20 INVITE\n\
        Contact: <sip:1001@10.0.0.5:5060>\n\
        Content-Type: application/sdp\n\
        Content-Length: 4\n\nv=0\n";

    #[test]
    fn splits_values_only_at_top_level_commas() {
        assert_eq!(
            split_values("\"a, b\" <sip:x;p=1,2>;q=1, <sip:y>,  sip:z"),
            ["\"a, b\" <sip:x;p=1,2>;q=1", "<sip:y>", "sip:z"]
        );
        assert!(split_values(" , ").is_empty());
    }

    #[test]
    fn forwarded_request_pushes_via_and_record_route_pops_route_and_replaces_body() {
        let r = req(INVITE);
        let out = request(
            &r,
            &Forward {
                uri: Some("sip:1002@192.0.2.7:5062;ob"),
                via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy",
                record_route: Some("<sip:192.0.2.1:5060;lr>"),
                pop_routes: 1,
                body: Some(("application/sdp", b"v=0\r\ns=relay\r\n")),
                strip_proxy_auth: true,
                source: Some("203.0.113.9:40000".parse().unwrap()),
            },
        );
        let f = parsed(&out);
        assert_eq!(&*f.uri_raw, "sip:1002@192.0.2.7:5062;ob");
        let vias: Vec<_> = f
            .headers
            .get_raw(&Name::VIA)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy",
                "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller;rport=40000;received=203.0.113.9"
            ]
        );
        assert_eq!(&**f.header(&Name::MAX_FORWARDS).unwrap(), "69");
        assert_eq!(
            &**f.header(&Name::ROUTE).unwrap(),
            "<sip:other.example.com;lr>"
        );
        assert_eq!(
            &**f.header(&Name::RECORD_ROUTE).unwrap(),
            "<sip:192.0.2.1:5060;lr>"
        );
        assert_eq!(f.body, Bytes::from_static(b"v=0\r\ns=relay\r\n"));
        assert_eq!(f.headers.get_raw(&Name::CONTENT_TYPE).count(), 1);
        assert!(f.header(&Name::FROM).unwrap().contains("Reception, Desk"));
        assert!(f.essentials().is_ok());
    }

    /// The header names of a message, in order.
    fn names(bytes: &Bytes) -> Vec<String> {
        let text = std::str::from_utf8(bytes).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        head.lines()
            .skip(1)
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn rows_of_one_header_stay_together_and_max_forwards_stays_in_place() {
        let out = request(
            &req(INVITE),
            &Forward {
                via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy",
                record_route: Some("<sip:192.0.2.1:5060;lr>"),
                ..Forward::default()
            },
        );
        assert_eq!(
            names(&out)[..5],
            ["Via", "Via", "Record-Route", "Max-Forwards", "Route"]
        );
        // Another proxy's Record-Route and two Vias before it, no Max-Forwards: ours goes on top
        // of the Record-Routes, Max-Forwards (70 - 1) right after the Vias.
        let relayed = "BYE sip:1002@192.0.2.7:5062 SIP/2.0\n\
            Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKother\n\
            Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller\n\
            From: <sip:1001@pbx.example.com>;tag=f1\n\
            Record-Route: <sip:198.51.100.9;lr>\n\
            To: <sip:1002@pbx.example.com>;tag=t2\n\
            Call-ID: call-1\n\
            CSeq: 21 BYE\n\
            Content-Length: 0\n\n";
        let out = request(
            &req(relayed),
            &Forward {
                via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy",
                record_route: Some("<sip:192.0.2.1:5060;lr>"),
                ..Forward::default()
            },
        );
        assert_eq!(
            names(&out),
            [
                "Via",
                "Via",
                "Via",
                "Max-Forwards",
                "From",
                "Record-Route",
                "Record-Route",
                "To",
                "Call-ID",
                "CSeq",
                "Content-Length"
            ]
        );
        let f = parsed(&out);
        assert!(f.header(&Name::VIA).unwrap().contains("z9hG4bKproxy"));
        assert_eq!(&**f.header(&Name::MAX_FORWARDS).unwrap(), "69");
        assert_eq!(
            f.headers
                .get_raw(&Name::RECORD_ROUTE)
                .map(|v| v.to_string())
                .collect::<Vec<_>>(),
            ["<sip:192.0.2.1:5060;lr>", "<sip:198.51.100.9;lr>"]
        );
    }

    #[test]
    fn forwarded_response_loses_the_top_via() {
        let text = "SIP/2.0 180 Ringing\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy, SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller\r\n\
            From: <sip:1001@pbx.example.com>;tag=f1\r\nTo: <sip:1002@pbx.example.com>;tag=t2\r\n\
            Call-ID: call-1\r\nCSeq: 20 INVITE\r\nContent-Length: 0\r\n\r\n";
        let r = resp(&Bytes::from(text));
        let out = response(&r, None).unwrap();
        let f = resp(&out);
        let vias: Vec<_> = f
            .headers
            .get_raw(&Name::VIA)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(vias, ["SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller"]);
        assert_eq!(f.code, 180);
        // Our own Via only: nowhere to send it.
        let only = text.replace(", SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcaller", "");
        assert!(response(&resp(&Bytes::from(only)), None).is_none());
    }

    #[test]
    fn cancel_and_ack_copy_what_rfc3261_requires() {
        let sent = request(
            &req(INVITE),
            &Forward {
                uri: Some("sip:1002@192.0.2.7:5062"),
                via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy",
                ..Forward::default()
            },
        );
        let invite = parsed(&sent);
        let c = parsed(&cancel(&invite));
        assert_eq!(c.method.as_str(), "CANCEL");
        assert_eq!(&*c.uri_raw, "sip:1002@192.0.2.7:5062");
        assert_eq!(c.headers.get_raw(&Name::VIA).count(), 1);
        assert!(c.header(&Name::VIA).unwrap().contains("z9hG4bKproxy"));
        assert_eq!(&**c.header(&Name::CSEQ).unwrap(), "20 CANCEL");
        assert!(c.essentials().is_ok());

        let busy = resp(&Bytes::from(
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy\r\n\
             From: <sip:1001@pbx.example.com>;tag=f1\r\nTo: <sip:1002@pbx.example.com>;tag=t9\r\n\
             Call-ID: call-1\r\nCSeq: 20 INVITE\r\nContent-Length: 0\r\n\r\n",
        ));
        let a = parsed(&ack(&invite, &busy));
        assert_eq!(a.method.as_str(), "ACK");
        assert!(a.header(&Name::TO).unwrap().contains("tag=t9"));
        assert_eq!(&**a.header(&Name::CSEQ).unwrap(), "20 ACK");
        assert_eq!(a.headers.get_raw(&Name::ROUTE).count(), 1);
    }

    #[test]
    fn originated_bye_and_contact_uris() {
        let bytes = originate(&Originate {
            method: "BYE",
            uri: "sip:1002@10.0.0.2:5062;ob",
            via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kp1",
            from: "<sip:1001@pbx.example.com>;tag=a",
            to: "<sip:1002@pbx.example.com>;tag=b",
            call_id: "c1",
            cseq: 3,
            reason: Some("SIP;cause=200;text=\"Call ended by the PBX\""),
        });
        let bye = parsed(&bytes);
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.uri_raw.as_str(), "sip:1002@10.0.0.2:5062;ob");
        assert_eq!(bye.header(&Name::CSEQ).unwrap().as_str(), "3 BYE");
        let e = bye.essentials().unwrap();
        assert_eq!(e.from.tag.as_deref(), Some("a"));
        assert_eq!(e.to.tag.as_deref(), Some("b"));
        assert_eq!(e.max_forwards, Some(70));

        assert_eq!(
            contact_uri("\"A\" <sip:1001@10.0.0.1:5060;ob>;+sip.instance=\"<urn:uuid:1>\""),
            Some("sip:1001@10.0.0.1:5060;ob")
        );
        assert_eq!(contact_uri("sip:1001@h;expires=3"), Some("sip:1001@h"));
        assert_eq!(contact_uri("*"), None);
        assert_eq!(contact_uri(""), None);
    }
}
