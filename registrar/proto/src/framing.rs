//! Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3) and keep-alives (RFC 5626 §3.5.1).
//!
//! Bytes go in with [`StreamDecoder::extend`]; [`StreamDecoder::next_frame`] yields whole
//! messages (head plus `Content-Length` bytes of body), keep-alive pings (`CRLF CRLF`, to be
//! answered with [`PONG`]) and pongs. A message whose head or body would exceed the size limit is
//! an error: the connection must be closed, since the stream can no longer be delimited.

use crate::message::MAX_MESSAGE_SIZE;
use bytes::{Buf, Bytes, BytesMut};

/// The answer to a keep-alive ping.
pub const PONG: &[u8] = b"\r\n";

/// One unit cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message.
    Message(Bytes),
    /// A double-CRLF keep-alive ping: answer with [`PONG`].
    Ping,
    /// A single CRLF (a pong, or padding): nothing to do.
    Pong,
}

/// Why a stream cannot be framed any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The message exceeds the size limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// `Content-Length` is not a number.
    #[error("unreadable Content-Length")]
    BadContentLength,
}

/// Incremental decoder for one connection.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    max: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_SIZE)
    }
}

impl StreamDecoder {
    /// A decoder refusing messages above `max` bytes.
    pub fn new(max: usize) -> Self {
        StreamDecoder {
            buf: BytesMut::with_capacity(4096),
            max,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Ok(Some(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") {
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                // Maybe the first half of a ping: wait for the next bytes to tell.
                return Ok(None);
            }
            self.buf.advance(2);
            return Ok(Some(Frame::Pong));
        }
        let Some(head_end) = find(&self.buf, b"\r\n\r\n").map(|i| i + 4) else {
            if self.buf.len() > self.max {
                return Err(FramingError::TooLarge(self.buf.len()));
            }
            return Ok(None);
        };
        let body_len = content_length(&self.buf[..head_end])?;
        let total = head_end.saturating_add(body_len);
        if total > self.max {
            return Err(FramingError::TooLarge(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `Content-Length` (or compact `l`) from a message head; absent means 0.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(line[colon + 1..].trim_ascii())
                .map_err(|_| FramingError::BadContentLength)?;
            return value.parse().map_err(|_| FramingError::BadContentLength);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn frames_messages_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(b"REGISTER sip:x SIP/2.0\r\nl: 0\r\n\r\n");
        for split in 0..stream.len() {
            let mut d = StreamDecoder::default();
            let mut frames = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                d.extend(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 3, "split at {split}: {frames:?}");
            assert_eq!(frames[0], Frame::Message(Bytes::from_static(MSG)));
            assert_eq!(frames[1], Frame::Ping);
            assert!(matches!(&frames[2], Frame::Message(m) if m.starts_with(b"REGISTER")));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn lone_crlf_before_a_message_is_a_pong() {
        let mut d = StreamDecoder::default();
        d.extend(b"\r\n");
        assert_eq!(d.next_frame().unwrap(), None, "could still become a ping");
        d.extend(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Pong));
        assert!(matches!(d.next_frame().unwrap(), Some(Frame::Message(_))));
    }

    #[test]
    fn oversized_heads_and_bodies_are_errors() {
        let mut d = StreamDecoder::new(100);
        d.extend(&[b'a'; 101]);
        assert_eq!(d.next_frame(), Err(FramingError::TooLarge(101)));
        let mut d = StreamDecoder::new(100);
        d.extend(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert!(matches!(d.next_frame(), Err(FramingError::TooLarge(_))));
        let mut d = StreamDecoder::default();
        d.extend(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n");
        assert_eq!(d.next_frame(), Err(FramingError::BadContentLength));
    }
}
