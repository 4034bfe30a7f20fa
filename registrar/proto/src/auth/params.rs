//! A tolerant lexer for auth-param lists, `scheme name=value, name="quoted", …` (RFC 7235 §2.1),
//! used for credentials (and, in tests, for reading challenges back).
//!
//! Accepts any whitespace including line breaks between tokens, quoted or unquoted values,
//! `\"` and `\\` escapes, commas inside quotes and empty list elements. Every position is
//! checked, so no input can make it panic.

use std::borrow::Cow;

use super::credentials::CredentialsError;

/// At most 48 characters of attacker-controlled text, for error messages.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 48;
    let mut out: String = s.chars().take(MAX).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A lexer over `scheme name=value, name="quoted value", …` (shared by credentials and, in
/// tests, challenges).
pub(crate) struct AuthParams<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> AuthParams<'a> {
    /// Splits off the scheme (everything up to the first whitespace).
    pub(crate) fn new(value: &'a str) -> Result<(&'a str, Self), CredentialsError> {
        let mut p = Self { s: value, pos: 0 };
        p.skip_ws();
        let scheme = p.take_while(|b| !is_ws(b));
        if scheme.is_empty() {
            return Err(p.syntax("expected an authorization scheme"));
        }
        Ok((scheme, p))
    }

    /// The next `name=value` pair, or `None` at the end.
    pub(crate) fn next_param(
        &mut self,
    ) -> Result<Option<(&'a str, Cow<'a, str>)>, CredentialsError> {
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(None),
                Some(b',') => self.pos += 1,
                Some(_) => break,
            }
        }
        let name = self.take_while(is_tchar);
        if name.is_empty() {
            return Err(self.syntax("expected a parameter name"));
        }
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Err(self.syntax("expected '=' after a parameter name"));
        }
        self.pos += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let v = self.take_while(|b| !is_ws(b) && b != b',' && b != b'"');
            if v.is_empty() {
                return Err(self.syntax("expected a parameter value"));
            }
            Cow::Borrowed(v)
        };
        self.skip_ws();
        match self.peek() {
            None => {}
            Some(b',') => self.pos += 1,
            Some(_) => return Err(self.syntax("expected ',' between parameters")),
        }
        Ok(Some((name, value)))
    }

    /// A quoted-string starting at `self.pos`, unescaped.
    fn quoted(&mut self) -> Result<Cow<'a, str>, CredentialsError> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => {
                    return Err(CredentialsError::Syntax {
                        at: open,
                        what: "unterminated quoted string",
                    });
                }
                Some(b'"') => break,
                Some(b'\\') => {
                    // Skips the backslash and the first byte of the escaped character; any
                    // remaining UTF-8 continuation bytes are never '"' or '\\'.
                    escaped = true;
                    self.pos += 2;
                }
                Some(_) => self.pos += 1,
            }
        }
        let raw = self
            .s
            .get(start..self.pos)
            .ok_or_else(|| self.syntax("invalid quoted string"))?;
        self.pos += 1;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        Ok(Cow::Owned(out))
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// Consumes bytes while `f` holds. Every predicate used here either accepts only ASCII bytes
    /// or stops only on ASCII bytes, so the slice ends on a character boundary.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn syntax(&self, what: &'static str) -> CredentialsError {
        CredentialsError::Syntax { at: self.pos, what }
    }
}
