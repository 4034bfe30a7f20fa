//! The etcd flags every cluster role shares (`--etcd`, `--etcd-prefix`) and the connection they
//! describe.

use anyhow::{Context, Result};
use clap::Args;
use kubepbx_api::keys::DEFAULT_PREFIX;
use kubepbx_api::store::{EtcdOptions, EtcdStore};

/// Where the PBX's shared state lives.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (`http://etcd-0.etcd:2379,http://etcd-1.etcd:2379`).
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
}

impl EtcdArgs {
    /// Connects, naming the endpoints and the fix when etcd cannot be reached.
    pub async fn connect(&self) -> Result<EtcdStore> {
        let options = EtcdOptions {
            prefix: self.etcd_prefix.clone(),
            ..EtcdOptions::default()
        };
        EtcdStore::connect(&self.endpoints, options)
            .await
            .with_context(|| {
                format!(
                    "connecting to etcd at {} (check --etcd / KUBEPBX_ETCD and that etcd runs)",
                    self.endpoints.join(",")
                )
            })
    }
}
