//! `kubepbx operator --etcd URL`: the Kubernetes operator. Extension custom resources and their
//! password Secrets become extension records in etcd; registrations and failures seen by the
//! registrars come back into each Extension's `.status`, conditions and Events.
//!
//! The Kubernetes API is reached with the in-cluster service account, or with `KUBECONFIG`
//! (or `~/.kube/config`) outside a cluster.

use crate::etcd::EtcdArgs;
use crate::serve::shutdown_signal;
use anyhow::{Context as _, Result};
use clap::Args;
use kubepbx_operator::reconcile::Settings;
use kubepbx_operator::run::{Config, Election};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `kubepbx operator`.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// SIP domain (and digest realm) for Extensions without `spec.domain`; must be the
    /// registrars' `--domain`.
    #[arg(
        long,
        env = "KUBEPBX_DOMAIN",
        default_value = "pbx.example.com",
        value_name = "NAME"
    )]
    pub domain: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(
        long,
        env = "KUBEPBX_HTTP",
        default_value = "0.0.0.0:8081",
        value_name = "ADDR:PORT"
    )]
    pub http: SocketAddr,
    /// Only manage Extensions (and read Secrets) in this namespace; default: all namespaces.
    #[arg(long, env = "KUBEPBX_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Compete for a Lease so that only one replica acts; `false` for a single replica
    /// outside a Deployment.
    #[arg(long, env = "KUBEPBX_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "KUBEPBX_LEASE_NAME",
        default_value = "kubepbx-operator",
        value_name = "NAME"
    )]
    pub lease_name: String,
    /// Namespace of the leader election Lease; default: `POD_NAMESPACE`, else the namespace of
    /// the kubeconfig context (or the service account).
    #[arg(long, env = "KUBEPBX_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the leader keeps the Lease without renewing it; a standby takes over this long
    /// after the leader dies.
    #[arg(long, env = "KUBEPBX_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_duration: Duration,
    /// This replica's name, as Lease holder and Event reporter; default: `POD_NAME`, else the
    /// host name.
    #[arg(long, env = "KUBEPBX_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
    /// Least time between two status writes of one Extension caused by registrations coming
    /// and going (changes of the spec or Secret are written at once).
    #[arg(long, env = "KUBEPBX_STATUS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub status_interval: Duration,
    /// How often every Extension is reconciled even when nothing changed.
    #[arg(long, env = "KUBEPBX_RESYNC", default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub resync: Duration,
    /// Reconciles that may run at once.
    #[arg(
        long,
        env = "KUBEPBX_CONCURRENCY",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64),
        value_name = "N"
    )]
    pub concurrency: u16,
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let client = kubepbx_operator::run::client().await?;
    let store = Arc::new(args.etcd.connect().await?);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("kubepbx-operator-{}", std::process::id()));
    let election = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let duration_secs = args.lease_duration.as_secs().max(2);
        Some(Election {
            lease: args.lease_name.clone(),
            namespace,
            duration_secs,
            grace_secs: (duration_secs / 3).max(1),
        })
    } else {
        None
    };
    let config = Config {
        settings: Settings {
            domain: args.domain.clone(),
            status_interval: args.status_interval,
            resync: args.resync,
            ..Settings::default()
        },
        http: Some(args.http),
        namespace: args.namespace.clone(),
        election,
        identity,
        concurrency: args.concurrency,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        stop.cancel();
    });
    kubepbx_operator::run::run(client, store, config, shutdown)
        .await
        .context("running the operator")
}
