//! TLS to etcd: `https://` endpoints, the CA that signed etcd's server certificate
//! (`--etcd-ca`) and the client certificate etcd asks for when it runs with
//! `--client-cert-auth` (`--etcd-cert`, `--etcd-key`).
//!
//! [`client_tls`] checks everything before the first connection: every endpoint uses the same
//! scheme, `https://` comes with a CA, TLS files do not come with `http://`, and the PEM files
//! hold what they should (the certificates parse, the key belongs to the certificate). The
//! check builds a rustls client configuration with the ring provider named explicitly, so it
//! does not depend on a process-wide default provider; tonic, which makes the connections, does
//! the same when none is installed. Every error names the flag that fixes it.

use super::endpoint::{Endpoint, Scheme};
use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings of an etcd connection (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM certificates of the CA(s) that signed etcd's server certificate (`--etcd-ca`).
    pub ca_pem: Vec<u8>,
    /// The certificate this client presents, for an etcd with `--client-cert-auth`.
    pub client: Option<ClientCert>,
}

/// A client certificate and its private key, both PEM (`--etcd-cert`, `--etcd-key`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself, not even in a debug log.
        f.debug_struct("ClientCert")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("(hidden)"))
            .finish()
    }
}

impl EtcdTls {
    /// Reads the CA file and, when given, the client certificate and key files.
    pub fn read(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, EtcdTlsError> {
        let client = match client {
            Some((cert, key)) => Some(ClientCert {
                cert_pem: read(TlsFile::Cert, cert)?,
                key_pem: read(TlsFile::Key, key)?,
            }),
            None => None,
        };
        Ok(EtcdTls {
            ca_pem: read(TlsFile::Ca, ca)?,
            client,
        })
    }
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, EtcdTlsError> {
    std::fs::read(path).map_err(|error| EtcdTlsError::Unreadable {
        file,
        path: path.to_owned(),
        error,
    })
}

/// One of the TLS files, named in messages by its flag and environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA certificate(s): `--etcd-ca`.
    Ca,
    /// The client certificate: `--etcd-cert`.
    Cert,
    /// The client certificate's key: `--etcd-key`.
    Key,
}

impl TlsFile {
    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            TlsFile::Ca => "--etcd-ca",
            TlsFile::Cert => "--etcd-cert",
            TlsFile::Key => "--etcd-key",
        }
    }

    /// The environment variable of the flag.
    pub fn env(self) -> &'static str {
        match self {
            TlsFile::Ca => "KUBEPBX_ETCD_CA",
            TlsFile::Cert => "KUBEPBX_ETCD_CERT",
            TlsFile::Key => "KUBEPBX_ETCD_KEY",
        }
    }
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flag(), self.env())
    }
}

/// Why TLS to etcd is misconfigured or failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    /// An `https://` endpoint, but no CA to check etcd's certificate with.
    #[error(
        "the etcd endpoint {url} uses TLS but no CA certificate is given: pass the CA that signed \
         etcd's server certificate with {}",
        TlsFile::Ca
    )]
    MissingCa {
        /// The endpoint.
        url: String,
    },
    /// TLS files with an `http://` endpoint.
    #[error(
        "{} is given but the etcd endpoint {url} is plain http://: use https:// URLs in --etcd \
         (KUBEPBX_ETCD), or remove --etcd-ca, --etcd-cert and --etcd-key",
        TlsFile::Ca
    )]
    NotHttps {
        /// The endpoint.
        url: String,
    },
    /// Some endpoints `http://`, others `https://`.
    #[error(
        "the etcd endpoints mix http:// ({http}) and https:// ({https}): one connection uses \
         one scheme, so give every URL in --etcd (KUBEPBX_ETCD) the same one"
    )]
    MixedSchemes {
        /// The first `http://` endpoint.
        http: String,
        /// The first `https://` endpoint.
        https: String,
    },
    /// A file could not be read.
    #[error("cannot read {file} {}: {error}: give a readable PEM file", path.display())]
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why (in the message, so not a `source`).
        error: std::io::Error,
    },
    /// A file does not hold what its flag expects.
    #[error("{file}: {detail}")]
    InvalidPem {
        /// Which file.
        file: TlsFile,
        /// What is wrong and what it should hold.
        detail: String,
    },
    /// The connection failed during the TLS handshake.
    #[error("TLS with etcd at {endpoints} failed: {detail}; {hint}")]
    Handshake {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The failure, with its causes.
        detail: String,
        /// What most likely fixes it.
        hint: &'static str,
    },
}

/// Checks the endpoints' schemes against `tls` and returns the URLs to connect to with the
/// TLS options for them (`None`: plain http). A URL without a scheme takes `https://` when
/// `tls` is given, `http://` otherwise.
pub(super) fn client_tls(
    endpoints: &[Endpoint],
    tls: Option<&EtcdTls>,
) -> Result<(Vec<String>, Option<TlsOptions>), EtcdTlsError> {
    let first = |scheme: Scheme| {
        endpoints
            .iter()
            .find(|e| e.scheme == Some(scheme))
            .map(Endpoint::given)
    };
    match (first(Scheme::Http), first(Scheme::Https)) {
        (Some(http), Some(https)) => {
            return Err(EtcdTlsError::MixedSchemes { http, https });
        }
        (Some(url), None) if tls.is_some() => return Err(EtcdTlsError::NotHttps { url }),
        (None, Some(url)) if tls.is_none() => return Err(EtcdTlsError::MissingCa { url }),
        _ => {}
    }
    let Some(tls) = tls else {
        let urls = endpoints.iter().map(|e| e.url(Scheme::Http)).collect();
        return Ok((urls, None));
    };
    check(tls)?;
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some(client) = &tls.client {
        options = options.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    let urls = endpoints.iter().map(|e| e.url(Scheme::Https)).collect();
    Ok((urls, Some(options)))
}

/// Parses the files and builds a rustls client configuration from them (ring provider).
fn check(tls: &EtcdTls) -> Result<(), EtcdTlsError> {
    let invalid = |file: TlsFile, detail: String| EtcdTlsError::InvalidPem { file, detail };
    let cas = certificates(
        TlsFile::Ca,
        &tls.ca_pem,
        "the PEM certificate of the CA that signed etcd's server certificate (its --cert-file)",
    )?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots.add(ca).map_err(|e| {
            invalid(
                TlsFile::Ca,
                format!("certificate {} is not a usable CA certificate: {e}", i + 1),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(TlsFile::Ca, format!("no TLS version available: {e}")))?
        .with_root_certificates(roots);
    let Some(client) = &tls.client else {
        return Ok(());
    };
    let chain = certificates(
        TlsFile::Cert,
        &client.cert_pem,
        "the PEM client certificate, signed by a CA etcd trusts (its --trusted-ca-file)",
    )?;
    let key = PrivateKeyDer::from_pem_slice(&client.key_pem).map_err(|e| {
        invalid(
            TlsFile::Key,
            format!(
                "no private key ({}): give the PEM key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or \
                 EC PRIVATE KEY) of the certificate in {}",
                pem_problem(&e),
                TlsFile::Cert
            ),
        )
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => invalid(
                TlsFile::Key,
                format!(
                    "the key does not belong to the certificate in {}: give the key the \
                 certificate was issued for",
                    TlsFile::Cert
                ),
            ),
            other => invalid(
                TlsFile::Key,
                format!("the key or certificate cannot be used: {other}"),
            ),
        })?;
    Ok(())
}

/// The certificates of a PEM file: at least one, and nothing broken.
fn certificates(
    file: TlsFile,
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, EtcdTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EtcdTlsError::InvalidPem {
            file,
            detail: format!("not a valid PEM file ({})", pem_problem(&e)),
        })?;
    if certs.is_empty() {
        return Err(EtcdTlsError::InvalidPem {
            file,
            detail: format!("no certificate in it (no BEGIN CERTIFICATE section): give {what}"),
        });
    }
    Ok(certs)
}

fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section of that kind".to_owned(),
        other => other.to_string(),
    }
}

/// Whether a failed first request failed in TLS, and what most likely fixes it. `client_cert`:
/// whether a client certificate was offered.
///
/// With TLS 1.3 the server checks the client certificate after the client considers the
/// handshake done, so a refused certificate shows either as etcd's alert or, when the
/// connection closes first, as a connection closed right away; the latter is read the same way.
pub(super) fn handshake_hint(detail: &str, client_cert: bool) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    let has = |markers: &[&str]| markers.iter().any(|m| d.contains(m));
    if has(&["unknownissuer", "unknown issuer", "badsignature"]) {
        Some(
            "etcd's certificate is not signed by the CA in --etcd-ca (KUBEPBX_ETCD_CA): give \
             the CA that signed etcd's --cert-file",
        )
    } else if has(&["notvalidforname", "not valid for name"]) {
        Some(
            "etcd's certificate does not name the host in --etcd: connect by a name or address \
             the certificate lists (its subject alternative names)",
        )
    } else if has(&["expired", "notvalidyet"]) {
        Some("a certificate is expired or not valid yet: renew it, and check the clocks")
    } else if has(&[
        "certificaterequired",
        "certificate required",
        "badcertificate",
        "bad certificate",
        "unknownca",
        "unknown ca",
    ]) || (has(&[
        "connection closed",
        "broken pipe",
        "connection reset",
        "unexpected eof",
    ]) && !has(&["connection refused"]))
    {
        Some(if client_cert {
            "etcd closed the connection after the TLS handshake, which is how it refuses a \
             client certificate: give one signed by etcd's --trusted-ca-file with --etcd-cert \
             and --etcd-key (KUBEPBX_ETCD_CERT, KUBEPBX_ETCD_KEY)"
        } else {
            "etcd closed the connection after the TLS handshake, which is how an etcd with \
             --client-cert-auth refuses a client without a certificate: give one signed by \
             etcd's --trusted-ca-file with --etcd-cert and --etcd-key (KUBEPBX_ETCD_CERT, \
             KUBEPBX_ETCD_KEY)"
        })
    } else if has(&[
        "invalid peer certificate",
        "alert",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
    ]) {
        Some(
            "check that etcd serves TLS on that port and that --etcd-ca, --etcd-cert and \
             --etcd-key match its certificates",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::endpoint::endpoint;

    fn endpoints(given: &[&str]) -> Vec<Endpoint> {
        given
            .iter()
            .map(|g| endpoint(g).unwrap_or_else(|e| panic!("{g}: {e}")))
            .collect()
    }

    fn pair() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    }

    fn tls(ca: &str, client: Option<(&str, &str)>) -> EtcdTls {
        EtcdTls {
            ca_pem: ca.as_bytes().to_vec(),
            client: client.map(|(c, k)| ClientCert {
                cert_pem: c.as_bytes().to_vec(),
                key_pem: k.as_bytes().to_vec(),
            }),
        }
    }

    #[test]
    fn schemes_must_agree_with_the_tls_settings() {
        let (ca, _) = pair();
        let good = tls(&ca.pem(), None);
        let (urls, options) = client_tls(
            &endpoints(&["https://127.0.0.1:2379", "etcd:2379"]),
            Some(&good),
        )
        .unwrap();
        assert_eq!(urls, ["https://127.0.0.1:2379", "https://etcd:2379"]);
        assert!(options.is_some());
        let (urls, options) = client_tls(&endpoints(&["etcd:2379"]), None).unwrap();
        assert_eq!(urls, ["http://etcd:2379"]);
        assert!(options.is_none());

        let err = client_tls(&endpoints(&["https://etcd:2379"]), None).unwrap_err();
        assert!(matches!(&err, EtcdTlsError::MissingCa { url } if url == "https://etcd:2379"));
        assert!(
            err.to_string().contains("--etcd-ca (KUBEPBX_ETCD_CA)"),
            "{err}"
        );

        let err = client_tls(&endpoints(&["http://etcd:2379"]), Some(&good)).unwrap_err();
        assert!(matches!(err, EtcdTlsError::NotHttps { .. }), "{err}");
        assert!(err.to_string().contains("use https://"), "{err}");

        for tls in [None, Some(&good)] {
            let err = client_tls(
                &endpoints(&["https://a:2379", "b:2379", "http://c:2379"]),
                tls,
            )
            .unwrap_err();
            assert!(
                matches!(&err, EtcdTlsError::MixedSchemes { http, https }
                    if http == "http://c:2379" && https == "https://a:2379"),
                "{err}"
            );
        }
    }

    #[test]
    fn pem_files_are_checked_and_named() {
        let (ca, ca_key) = pair();
        let (cert, key) = pair();
        let (ca, ca_key, cert, key) = (
            ca.pem(),
            ca_key.serialize_pem(),
            cert.pem(),
            key.serialize_pem(),
        );
        let at = endpoints(&["https://127.0.0.1:2379"]);
        let fails = |tls: EtcdTls| match client_tls(&at, Some(&tls)) {
            Err(EtcdTlsError::InvalidPem { file, detail }) => (file, detail),
            other => panic!("expected a PEM error, got {other:?}"),
        };
        assert!(client_tls(&at, Some(&tls(&ca, Some((&cert, &key))))).is_ok());

        let (file, detail) = fails(tls("not a certificate", None));
        assert_eq!(file, TlsFile::Ca);
        assert!(detail.contains("no certificate"), "{detail}");
        // A key given where the CA belongs.
        let (file, _) = fails(tls(&ca_key, None));
        assert_eq!(file, TlsFile::Ca);
        let (file, detail) = fails(tls(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            None,
        ));
        assert_eq!(file, TlsFile::Ca);
        assert!(detail.contains("not a valid PEM"), "{detail}");
        let (file, _) = fails(tls(&ca, Some((&key, &key))));
        assert_eq!(file, TlsFile::Cert);
        let (file, detail) = fails(tls(&ca, Some((&cert, &cert))));
        assert_eq!(file, TlsFile::Key);
        assert!(detail.contains("no private key"), "{detail}");
        // The CA's key with the client's certificate.
        let (file, detail) = fails(tls(&ca, Some((&cert, &ca_key))));
        assert_eq!(file, TlsFile::Key);
        assert!(detail.contains("does not belong"), "{detail}");
        let err = EtcdTlsError::InvalidPem {
            file: TlsFile::Key,
            detail,
        };
        assert!(
            err.to_string()
                .starts_with("--etcd-key (KUBEPBX_ETCD_KEY): ")
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"x").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = EtcdTls::read(&ca, Some((&missing, &ca))).unwrap_err();
        assert!(
            matches!(&err, EtcdTlsError::Unreadable { file: TlsFile::Cert, path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("--etcd-cert"), "{err}");
        let err = EtcdTls::read(&missing, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read --etcd-ca (KUBEPBX_ETCD_CA) ")
        );
        let read = EtcdTls::read(&ca, Some((&ca, &ca))).unwrap();
        assert_eq!(read.ca_pem, b"x");
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let tls = tls("CA", Some(("CERT", "SECRET-KEY-MATERIAL")));
        let shown = format!("{tls:?}");
        assert!(shown.contains("ClientCert"), "{shown}");
        assert!(!shown.contains("SECRET-KEY-MATERIAL"), "{shown}");
    }

    #[test]
    fn handshake_failures_get_a_hint() {
        let hint = |detail: &str, client_cert: bool| handshake_hint(detail, client_cert);
        assert!(
            hint("invalid peer certificate: UnknownIssuer", true)
                .is_some_and(|h| h.contains("not signed by the CA in --etcd-ca"))
        );
        assert!(
            hint("received fatal alert: CertificateRequired", false)
                .is_some_and(|h| h.contains("without a certificate"))
        );
        assert!(
            hint("hyper::Error(Canceled, \"connection closed\")", true)
                .is_some_and(|h| h.contains("refuses a client certificate"))
        );
        assert!(
            hint("invalid peer certificate: NotValidForName", true)
                .is_some_and(|h| h.contains("does not name the host"))
        );
        assert_eq!(hint("tcp connect error: Connection refused", true), None);
        assert_eq!(hint("request timed out", false), None);
    }
}
