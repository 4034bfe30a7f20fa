//! The certificate the TLS listeners present (`--tls-cert`/`--tls-key`), taken up again when
//! its files change, so a renewed certificate (cert-manager rewriting a mounted Secret, certbot
//! renewing one on disk) is served without a restart.
//!
//! The files are read again at a handshake when [`RECHECK`] has passed since they were last
//! read: no task, no file watcher, nothing to do while nobody connects. New contents are used
//! once they parse and the key fits the certificate; until then (a rotation caught half
//! written, a key that belongs to another certificate) the certificate in use stays, and the
//! problem is logged once per distinct problem. Connections already established keep theirs.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the files are trusted not to have changed.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("--tls-cert {path}: {detail} (a PEM file with the certificate chain, leaf first)")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error("--tls-key {path}: {detail} (a PEM file with the private key, PKCS#8, PKCS#1 or SEC1)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key does not fit the certificate, or is of a kind TLS cannot sign with.
    #[error("--tls-cert/--tls-key: {0}")]
    Mismatch(String),
}

/// The certificate in use and the file contents it came from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    files: (Vec<u8>, Vec<u8>),
    read_at: Instant,
    /// The last problem with newer contents, logged once.
    problem: Option<CertError>,
}

/// A [`ResolvesServerCert`] serving the certificate of two PEM files, re-read every
/// [`RECHECK`] at most.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    recheck: Duration,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl ReloadingCert {
    /// Loads the certificate chain in `cert` and the private key in `key`.
    pub fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, CertError> {
        ReloadingCert::with_recheck(cert, key, provider, RECHECK)
    }

    /// As [`ReloadingCert::load`], re-reading the files at most every `recheck`.
    pub fn with_recheck(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        recheck: Duration,
    ) -> Result<ReloadingCert, CertError> {
        let files = read(cert, key)?;
        let certified = certified(cert, key, &files, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            recheck,
            provider,
            loaded: Mutex::new(Loaded {
                key: Arc::new(certified),
                files,
                read_at: Instant::now(),
                problem: None,
            }),
        })
    }

    /// The certificate to present at `now`, after reading the files again if it is time.
    pub fn current(&self, now: Instant) -> Arc<CertifiedKey> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(loaded.read_at) >= self.recheck {
            loaded.read_at = now;
            self.refresh(&mut loaded);
        }
        Arc::clone(&loaded.key)
    }

    fn refresh(&self, loaded: &mut Loaded) {
        let fresh = read(&self.cert, &self.key).and_then(|files| {
            if files == loaded.files {
                return Ok(None);
            }
            let key = certified(&self.cert, &self.key, &files, &self.provider)?;
            Ok(Some((files, key)))
        });
        match fresh {
            Ok(None) => {}
            Ok(Some((files, key))) => {
                tracing::info!(cert = %self.cert.display(), "serving the renewed TLS certificate");
                loaded.files = files;
                loaded.key = Arc::new(key);
                loaded.problem = None;
            }
            Err(problem) => {
                if loaded.problem.as_ref() != Some(&problem) {
                    tracing::warn!(error = %problem,
                        "the TLS files changed but cannot be used; still serving the previous certificate");
                    loaded.problem = Some(problem);
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(Instant::now()))
    }
}

fn read(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let chain = std::fs::read(cert).map_err(|e| CertError::Cert {
        path: cert.to_owned(),
        detail: e.to_string(),
    })?;
    let private = std::fs::read(key).map_err(|e| CertError::Key {
        path: key.to_owned(),
        detail: e.to_string(),
    })?;
    Ok((chain, private))
}

fn certified(
    cert: &Path,
    key: &Path,
    (chain, private): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Cert {
            path: cert.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Cert {
            path: cert.to_owned(),
            detail: "no certificate in it".to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(private).map_err(|e| CertError::Key {
        path: key.to_owned(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| CertError::Mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn pair(name: &str) -> Pair {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn renewed_files_are_served_after_the_recheck_and_bad_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |p: &Pair| {
            std::fs::write(&cert, &p.cert).unwrap();
            std::fs::write(&key, &p.key).unwrap();
        };
        let (a, b) = (pair("a.example.com"), pair("b.example.com"));
        write(&a);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let recheck = Duration::from_secs(10);
        let served = ReloadingCert::with_recheck(&cert, &key, provider, recheck).unwrap();
        let start = Instant::now();
        assert_eq!(leaf(&served.current(start)), der(&a.cert));

        // Renewed: still the old one until the recheck, the new one after it.
        write(&b);
        assert_eq!(leaf(&served.current(start + recheck / 2)), der(&a.cert));
        let later = start + recheck;
        assert_eq!(leaf(&served.current(later)), der(&b.cert));

        // Half written, then a key of another certificate: b stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
        let later = later + recheck;
        assert_eq!(leaf(&served.current(later)), der(&b.cert));
        std::fs::write(&cert, &a.cert).unwrap();
        let later = later + recheck;
        assert_eq!(leaf(&served.current(later)), der(&b.cert));
        assert!(matches!(
            served.loaded.lock().unwrap().problem,
            Some(CertError::Mismatch(_))
        ));

        // Fixed: a is back.
        std::fs::write(&key, &a.key).unwrap();
        assert_eq!(leaf(&served.current(later + recheck)), der(&a.cert));
    }

    #[test]
    fn unusable_files_are_refused_at_start_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let err = ReloadingCert::load(&cert, &key, provider()).unwrap_err();
        assert!(
            matches!(&err, CertError::Cert { path, .. } if path == &cert),
            "{err}"
        );
        let (a, b) = (pair("a.example.com"), pair("b.example.com"));
        std::fs::write(&cert, &a.cert).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = ReloadingCert::load(&cert, &key, provider()).unwrap_err();
        assert!(
            matches!(&err, CertError::Key { path, .. } if path == &key),
            "{err}"
        );
        std::fs::write(&key, &b.key).unwrap();
        let err = ReloadingCert::load(&cert, &key, provider()).unwrap_err();
        assert!(matches!(err, CertError::Mismatch(_)), "{err}");
    }
}
