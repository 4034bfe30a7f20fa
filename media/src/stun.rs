//! Just enough STUN (RFC 8489) to route an ICE connectivity check: [`binding_ufrag`] finds the
//! username fragment a Binding request is addressed to, the part of USERNAME before the colon
//! (`local:remote`, RFC 8445 §7.2.2), which names the relay's WebRTC leg. Nothing is verified
//! here: the leg's ICE agent checks MESSAGE-INTEGRITY with its password.

/// STUN message type of a Binding request.
const BINDING_REQUEST: u16 = 0x0001;
/// The magic cookie every RFC 5389+ message carries.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The USERNAME attribute.
const USERNAME: u16 = 0x0006;
/// The STUN header: type, length, cookie, transaction id.
const HEADER: usize = 20;

/// Whether `data` looks like a STUN message (RFC 7983 demultiplexing: first byte 0–3).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The local username fragment of a STUN Binding request (`None` for anything else, or a
/// request without a well-formed USERNAME).
pub fn binding_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) || u16::from_be_bytes([data[0], data[1]]) != BINDING_REQUEST {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(HEADER..HEADER + declared)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        // Values are padded to a multiple of 4.
        let padded = 4 + len.div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(username: &[u8], kind: u16) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, as browsers send it.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        let m = request(b"relay1:brow", BINDING_REQUEST);
        assert!(is_stun(&m));
        assert_eq!(binding_ufrag(&m), Some("relay1"));
        // A success response is routed by address, not by username.
        assert_eq!(binding_ufrag(&request(b"relay1:brow", 0x0101)), None);
        assert_eq!(binding_ufrag(&request(b"nocolon", BINDING_REQUEST)), None);
        assert_eq!(binding_ufrag(&request(b":x", BINDING_REQUEST)), None);
        assert_eq!(
            binding_ufrag(&request(&[0xff, b':', b'a'], BINDING_REQUEST)),
            None
        );
    }

    #[test]
    fn garbage_never_panics() {
        let m = request(b"relay1:brow", BINDING_REQUEST);
        for cut in 0..m.len() {
            let _ = binding_ufrag(&m[..cut]);
        }
        let mut lying = m.clone();
        lying[3] = 0xff; // length beyond the datagram
        assert_eq!(binding_ufrag(&lying), None);
        let mut huge_attr = m.clone();
        huge_attr[HEADER + 10] = 0xff; // USERNAME length beyond the body
        assert_eq!(binding_ufrag(&huge_attr), None);
        assert!(!is_stun(&[0x80, 0, 0, 0]));
        assert_eq!(binding_ufrag(&[0u8; 19]), None);
    }
}
