//! Certificates for a test etcd with TLS ([`TestCerts`]): a fresh CA, etcd's server certificate
//! for `127.0.0.1` and `localhost`, and a client certificate, both signed by the CA, written as
//! PEM files in a folder.

use super::EtcdServerError;
use crate::store::etcd::{EtcdTls, EtcdTlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// PEM files of a test CA and the certificates it signed (see the module docs).
#[derive(Debug, Clone)]
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Generates a new CA and its certificates into `dir` (created when missing).
    pub fn generate(dir: &Path) -> Result<Self, EtcdServerError> {
        std::fs::create_dir_all(dir)?;
        let certs = TestCerts {
            dir: dir.to_owned(),
        };
        let failed = |e: rcgen::Error| EtcdServerError::Certificates(e.to_string());

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // A name of its own: another test CA is an unknown issuer, not a false signature.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("kubepbx test etcd CA {}-{n}", std::process::id()),
        );
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(failed)?)
            .map_err(failed)?;
        std::fs::write(certs.ca(), ca.pem())?;

        // etcd's own gateway also dials etcd with the server certificate: both usages.
        let leaves = [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            (
                "client",
                Vec::new(),
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        ];
        for (name, names, usages) in leaves {
            let key = KeyPair::generate().map_err(failed)?;
            let mut params = CertificateParams::new(names).map_err(failed)?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("kubepbx test {name}"));
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).map_err(failed)?;
            std::fs::write(certs.dir.join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(
                certs.dir.join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )?;
        }
        Ok(certs)
    }

    /// The CA certificate (what `--etcd-ca` takes).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// etcd's server certificate (its `--cert-file`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// etcd's server key (its `--key-file`).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// The client certificate (what `--etcd-cert` takes).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client key (what `--etcd-key` takes).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// The store's TLS settings: this CA and the client certificate.
    pub fn tls(&self) -> Result<EtcdTls, EtcdTlsError> {
        EtcdTls::read(&self.ca(), Some((&self.client_cert(), &self.client_key())))
    }
}
