//! Checking etcd endpoints given on the command line (`--etcd URL[,URL…]`).

use crate::store::StoreError;

/// Checks an endpoint and returns it as a URL: `http://host:port`.
pub(super) fn endpoint_url(given: &str) -> Result<String, StoreError> {
    let invalid = |detail: &str| StoreError::InvalidEndpoint {
        url: given.to_owned(),
        detail: detail.to_owned(),
    };
    let trimmed = given.trim();
    if trimmed.starts_with("https://") {
        return Err(invalid(
            "TLS to etcd is not supported yet: use an http:// URL",
        ));
    }
    let authority = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains("://") || authority.contains('/') {
        return Err(invalid("expected http://HOST:PORT"));
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
    Ok(format!("http://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            endpoint_url("http://10.0.0.1:2379").ok().as_deref(),
            Some("http://10.0.0.1:2379")
        );
        assert_eq!(
            endpoint_url("etcd.kubepbx:2379/").ok().as_deref(),
            Some("http://etcd.kubepbx:2379")
        );
        assert_eq!(
            endpoint_url("http://[::1]:2379").ok().as_deref(),
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
            "https://etcd:2379",
            "http://etcd:2379/v3",
        ] {
            let err = endpoint_url(bad).expect_err(bad);
            assert!(
                matches!(&err, StoreError::InvalidEndpoint { url, .. } if url == bad),
                "{err:?}"
            );
        }
    }
}
