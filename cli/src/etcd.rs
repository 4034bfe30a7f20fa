//! The etcd flags every cluster role shares (`--etcd`, `--etcd-prefix`, and TLS:
//! `--etcd-ca`, `--etcd-cert`, `--etcd-key`) and the connection they describe.

use anyhow::Result;
use clap::Args;
use kubepbx_api::keys::DEFAULT_PREFIX;
use kubepbx_api::store::{EtcdOptions, EtcdStore, EtcdTls, StoreError};
use std::path::PathBuf;

/// Where the PBX's shared state lives.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (`http://etcd-0.etcd:2379,http://etcd-1.etcd:2379`;
    /// `https://` with --etcd-ca).
    #[arg(
        long = "etcd",
        env = "KUBEPBX_ETCD",
        value_delimiter = ',',
        required = true,
        value_name = "URL[,URL…]"
    )]
    pub endpoints: Vec<String>,
    /// Prefix of every key the PBX writes; several PBXs can share one etcd with different
    /// prefixes.
    #[arg(long, env = "KUBEPBX_ETCD_PREFIX", default_value = DEFAULT_PREFIX, value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// PEM certificate(s) of the CA that signed etcd's server certificate: connects over TLS
    /// (https:// endpoints).
    #[arg(long, env = "KUBEPBX_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for an etcd that asks for one (`--client-cert-auth`); with
    /// --etcd-key and --etcd-ca.
    #[arg(
        long,
        env = "KUBEPBX_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key",
        requires = "etcd_ca"
    )]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(
        long,
        env = "KUBEPBX_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The TLS settings, read from the files (`None` without --etcd-ca).
    fn tls(&self) -> Result<Option<EtcdTls>, StoreError> {
        let Some(ca) = &self.etcd_ca else {
            return Ok(None);
        };
        let client = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        Ok(Some(EtcdTls::read(ca, client)?))
    }

    /// Connects, naming the endpoints and the fix when etcd cannot be reached.
    pub async fn connect(&self) -> Result<EtcdStore> {
        self.try_connect().await.map_err(|e| {
            let hint = match &e {
                // The message names the flag to fix already.
                StoreError::Tls(_) => "",
                _ => " (check --etcd / KUBEPBX_ETCD and that etcd runs)",
            };
            let joined = self.endpoints.join(",");
            anyhow::Error::new(e).context(format!("connecting to etcd at {joined}{hint}"))
        })
    }

    async fn try_connect(&self) -> Result<EtcdStore, StoreError> {
        let options = EtcdOptions {
            prefix: self.etcd_prefix.clone(),
            tls: self.tls()?,
            ..EtcdOptions::default()
        };
        EtcdStore::connect(&self.endpoints, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["kubepbx"].iter().chain(args))
    }

    #[test]
    fn tls_flags_parse() {
        let cli = parse(&[
            "--etcd",
            "https://etcd:2379",
            "--etcd-ca",
            "ca.pem",
            "--etcd-cert",
            "client.pem",
            "--etcd-key",
            "client-key.pem",
        ])
        .expect("all three");
        assert_eq!(cli.etcd.etcd_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.etcd.etcd_cert, Some(PathBuf::from("client.pem")));
        assert_eq!(cli.etcd.etcd_key, Some(PathBuf::from("client-key.pem")));
        let cli = parse(&["--etcd", "https://etcd:2379", "--etcd-ca", "ca.pem"]).expect("CA only");
        assert_eq!(cli.etcd.etcd_cert, None);
    }

    #[test]
    fn cert_and_key_come_together_and_with_a_ca() {
        for args in [
            &["--etcd", "e:1", "--etcd-ca", "ca", "--etcd-cert", "c"][..],
            &["--etcd", "e:1", "--etcd-ca", "ca", "--etcd-key", "k"][..],
            &["--etcd", "e:1", "--etcd-cert", "c", "--etcd-key", "k"][..],
        ] {
            let err = parse(args).expect_err("incomplete TLS flags");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{args:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreadable_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("ca.pem");
        let cli = parse(&[
            "--etcd",
            "https://127.0.0.1:1",
            "--etcd-ca",
            missing.to_str().expect("utf-8 path"),
        ])
        .expect("parse");
        let err = cli.etcd.connect().await.expect_err("no such file");
        let message = format!("{err:#}");
        assert!(
            message.contains("cannot read --etcd-ca (KUBEPBX_ETCD_CA)"),
            "{message}"
        );
        assert!(message.contains("ca.pem"), "{message}");
        assert!(!message.contains("that etcd runs"), "{message}");
    }
}
