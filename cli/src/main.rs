//! `kubepbx`: one binary, many roles: `kubepbx up -f DIR` (the whole PBX in one process serving
//! the Extensions of a manifest folder), and for clusters sharing etcd: `kubepbx registrar` (a
//! SIP registrar/proxy replica), `kubepbx media` (an RTP relay replica) and
//! `kubepbx apply -f DIR --etcd URL` (a manifest folder into etcd); in Kubernetes,
//! `kubepbx operator --etcd URL` (Extension resources into etcd, registrations into their
//! status); `kubepbx crdgen` prints the Extension CRD.
//!
//! Every flag can also be given as `KUBEPBX_<FLAG>` in the environment (`--admin-token` →
//! `KUBEPBX_ADMIN_TOKEN`). Logs go to stderr and follow `RUST_LOG` (default `info`; full SIP
//! messages with `RUST_LOG=info,sip=debug`).

mod apply;
mod calls;
mod etcd;
mod media;
mod net;
mod operator;
mod registrar;
mod serve;
mod token;
mod up;
mod web;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// jemalloc: faster than the system allocator for the many small, short-lived allocations of
/// SIP processing, returns freed memory to the system instead of keeping per-thread arenas,
/// and counts live heap bytes (`kubepbx_heap_*` metrics; see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// kubepbx: a Kubernetes-native PBX.
#[derive(Debug, Parser)]
#[command(name = "kubepbx", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole PBX in one process, serving the Extensions of a manifest folder.
    Up(up::UpArgs),
    /// Write the Extensions of a manifest folder into etcd (HA1 digests only).
    Apply(apply::ApplyArgs),
    /// Run one registrar replica of a cluster sharing etcd.
    Registrar(registrar::RegistrarArgs),
    /// Run one media replica (RTP relay) of a cluster sharing etcd.
    Media(media::MediaArgs),
    /// Run the Kubernetes operator: Extensions and their Secrets into etcd, registrations
    /// and failures back into their status.
    Operator(operator::OperatorArgs),
    /// Print the Extension CustomResourceDefinition (YAML for `kubectl apply -f -`).
    Crdgen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Crdgen = cli.command {
        print!("{}", kubepbx_api::extension::crd_yaml());
        return ExitCode::SUCCESS;
    }
    // A one-shot command reports on stdout/stderr itself; the servers log.
    let default_filter = match cli.command {
        Command::Apply(_) | Command::Crdgen => "error",
        Command::Up(_) | Command::Registrar(_) | Command::Media(_) | Command::Operator(_) => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubepbx: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Apply(args) => apply::run(args).await,
            Command::Registrar(args) => registrar::run(args).await,
            Command::Media(args) => media::run(args).await,
            Command::Operator(args) => operator::run(args).await,
            Command::Crdgen => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubepbx: {e:#}");
            ExitCode::FAILURE
        }
    }
}
