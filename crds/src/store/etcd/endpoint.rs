//! Checking etcd endpoints given on the command line (`--etcd URL[,URL…]`).
//!
//! An endpoint is `http://host:port`, `https://host:port` or `host:port`; which scheme a bare
//! `host:port` takes depends on whether TLS is configured ([`super::tls`]).

use crate::store::StoreError;

/// The scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::Http => "http://",
            Scheme::Https => "https://",
        }
    }
}

/// A checked endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The scheme given; `None` for a bare `host:port`.
    pub scheme: Option<Scheme>,
    /// `host:port`.
    pub authority: String,
}

impl Endpoint {
    /// The URL with its own scheme, or `default` when it has none.
    pub fn url(&self, default: Scheme) -> String {
        format!(
            "{}{}",
            self.scheme.unwrap_or(default).prefix(),
            self.authority
        )
    }

    /// The endpoint as given (normalised), for messages.
    pub fn given(&self) -> String {
        match self.scheme {
            Some(scheme) => self.url(scheme),
            None => self.authority.clone(),
        }
    }
}

/// Checks an endpoint.
pub(super) fn endpoint(given: &str) -> Result<Endpoint, StoreError> {
    let invalid = |detail: &str| StoreError::InvalidEndpoint {
        url: given.to_owned(),
        detail: detail.to_owned(),
    };
    let trimmed = given.trim();
    let (scheme, authority) = if let Some(rest) = trimmed.strip_prefix("https://") {
        (Some(Scheme::Https), rest)
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        (Some(Scheme::Http), rest)
    } else {
        (None, trimmed)
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains("://") || authority.contains('/') {
        return Err(invalid("expected http://HOST:PORT or https://HOST:PORT"));
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(invalid(
            "no port: expected http://HOST:PORT (etcd listens on 2379)",
        ));
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid("no host: expected http://HOST:PORT"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid("the port is not a number from 1 to 65535"));
    }
    Ok(Endpoint {
        scheme,
        authority: authority.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(given: &str) -> Option<String> {
        endpoint(given).ok().map(|e| e.url(Scheme::Http))
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            url("http://10.0.0.1:2379").as_deref(),
            Some("http://10.0.0.1:2379")
        );
        assert_eq!(
            url("etcd.kubepbx:2379/").as_deref(),
            Some("http://etcd.kubepbx:2379")
        );
        assert_eq!(
            url("http://[::1]:2379").as_deref(),
            Some("http://[::1]:2379")
        );
        for bad in [
            "",
            "etcd",
            "http://etcd",
            "http://:2379",
            "etcd:0",
            "etcd:99999",
            "ftp://x:1",
            "https://etcd",
            "http://etcd:2379/v3",
        ] {
            let err = endpoint(bad).expect_err(bad);
            assert!(
                matches!(&err, StoreError::InvalidEndpoint { url, .. } if url == bad),
                "{err:?}"
            );
        }
    }

    #[test]
    fn schemes_are_kept() {
        let https = endpoint(" https://etcd-0.etcd:2379/ ").expect("https");
        assert_eq!(https.scheme, Some(Scheme::Https));
        assert_eq!(https.url(Scheme::Http), "https://etcd-0.etcd:2379");
        assert_eq!(https.given(), "https://etcd-0.etcd:2379");
        let bare = endpoint("etcd:2379").expect("bare");
        assert_eq!(bare.scheme, None);
        assert_eq!(bare.url(Scheme::Https), "https://etcd:2379");
        assert_eq!(bare.given(), "etcd:2379");
    }
}
