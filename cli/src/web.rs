//! The browser-facing flags of `up` and `registrar`: HTTPS (WSS) with a certificate, which
//! page origins may open SIP WebSockets, which proxies (an Ingress) name the phone behind them,
//! and where the built web phone and admin UI are.

use crate::serve::bind_error;
use anyhow::{Context, Result, bail};
use clap::Args;
use kubepbx_registrar::forwarded::{Cidr, TrustedProxies};
use kubepbx_registrar::tls::{self, TlsListener};
use kubepbx_registrar::web::WebAssets;
use kubepbx_registrar::ws::{OriginPolicy, Secure, WsPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Flags for browsers: the web phone, the admin UI and SIP over WebSocket.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// HTTPS address and port (the same routes as --http, WebSockets as WSS); used only with
    /// --tls-cert and --tls-key.
    #[arg(
        long,
        env = "KUBEPBX_HTTPS",
        default_value = "0.0.0.0:8443",
        value_name = "ADDR:PORT"
    )]
    pub https: SocketAddr,
    /// PEM certificate chain for --https (in Kubernetes the Ingress usually terminates TLS
    /// instead).
    #[arg(
        long,
        env = "KUBEPBX_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "KUBEPBX_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Page origins allowed to open SIP WebSockets at /ws, comma-separated (e.g.
    /// https://phone.example.com) [default: any origin; digest authentication admits phones].
    // The doc comment is the `--help` text: a bare URL reads better there than a rustdoc link.
    #[allow(rustdoc::bare_urls)]
    #[arg(
        long,
        env = "KUBEPBX_WS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub ws_allowed_origins: Vec<String>,
    /// Proxies whose X-Forwarded-For (or Forwarded) header names the phone behind them, as
    /// address ranges, comma-separated (e.g. the Ingress controller's pod range 10.0.0.0/8; a
    /// bare address is one host). Bans and the source shown for registrations then apply to
    /// the phone [default: none; every WebSocket's source is its TCP peer].
    #[arg(
        long,
        env = "KUBEPBX_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR[,CIDR…]"
    )]
    pub trusted_proxies: Vec<String>,
    /// Folder with the built web phone (phone/) and admin UI (admin/): `make web` builds them
    /// into web/dist.
    #[arg(
        long,
        env = "KUBEPBX_WEB_DIR",
        default_value = "web/dist",
        value_name = "DIR"
    )]
    pub web_dir: PathBuf,
}

impl WebArgs {
    /// Rejects origins that cannot match a browser's `Origin` header and entries of
    /// --trusted-proxies that are not address ranges, naming the fix.
    pub fn check(&self) -> Result<()> {
        for entry in self.proxy_entries() {
            if let Err(e) = entry.parse::<Cidr>() {
                bail!("--trusted-proxies (KUBEPBX_TRUSTED_PROXIES): {e}");
            }
        }
        for origin in &self.ws_allowed_origins {
            let o = origin.trim();
            let scheme_ok = o.starts_with("https://") || o.starts_with("http://");
            let host = o
                .split_once("://")
                .map_or("", |(_, h)| h.trim_end_matches('/'));
            if !scheme_ok || host.is_empty() || host.contains('/') {
                bail!(
                    "--ws-allowed-origins {origin:?} is not an origin: use scheme://host[:port] \
                     without a path, e.g. https://phone.example.com"
                );
            }
        }
        Ok(())
    }

    /// Who may open `/ws` (the allowed origins) and whose forwarding headers are believed (the
    /// trusted proxies).
    pub fn ws_policy(&self) -> WsPolicy {
        WsPolicy {
            origins: OriginPolicy::new(self.ws_allowed_origins.iter().cloned()),
            // Entries that are not ranges were refused by `check`.
            proxies: TrustedProxies::new(self.proxy_entries().filter_map(|e| e.parse().ok())),
        }
    }

    /// The entries of --trusted-proxies, blank ones (an empty variable) left out.
    fn proxy_entries(&self) -> impl Iterator<Item = &str> {
        self.trusted_proxies
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
    }

    /// The built UIs, for `default_domain`.
    pub fn assets(&self, default_domain: &str) -> WebAssets {
        WebAssets {
            dir: self.web_dir.clone(),
            default_domain: default_domain.to_owned(),
        }
    }

    /// Binds `--https` and loads the certificate when TLS is configured (before anything is
    /// served, so a bad file stops the start).
    pub async fn bind_https(&self) -> Result<Option<Https>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let acceptor = tls::acceptor(cert, key)?;
        let listener = tokio::net::TcpListener::bind(self.https)
            .await
            .map_err(|e| bind_error("HTTPS", self.https, &e))?;
        Ok(Some(Https { listener, acceptor }))
    }
}

/// A bound HTTPS socket and its certificate.
pub struct Https {
    listener: tokio::net::TcpListener,
    acceptor: tls::TlsAcceptor,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the HTTPS address")
    }

    /// Serves `app` over TLS as a task on `tasks` until `shutdown`.
    pub fn spawn(
        self,
        app: axum::Router,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<()> {
        use axum::serve::ListenerExt as _;
        let listener = TlsListener::spawn(self.listener, self.acceptor, shutdown.clone(), tasks)
            .context("starting the HTTPS listener")?
            // The blanket `ConnectInfo` for tapped listeners gives handlers the peer address.
            .tap_io(|_| {});
        let app = app.layer(axum::Extension(Secure));
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the HTTPS server stopped");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::net::IpAddr;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        web: WebArgs,
    }

    fn web(args: &[&str]) -> WebArgs {
        Cli::try_parse_from(["kubepbx"].iter().chain(args))
            .expect("parse")
            .web
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn trusted_proxies_are_ranges() {
        let args = web(&["--trusted-proxies", "10.0.0.0/8, 192.0.2.7,fd00::/8"]);
        args.check().expect("valid ranges");
        let proxies = args.ws_policy().proxies;
        assert!(proxies.trusts(ip("10.20.30.40")));
        assert!(proxies.trusts(ip("192.0.2.7")));
        assert!(!proxies.trusts(ip("192.0.2.8")));
        assert!(proxies.trusts(ip("fd12::1")));
    }

    #[test]
    fn no_trusted_proxies_by_default_or_when_blank() {
        for args in [&[][..], &["--trusted-proxies", ""][..]] {
            let args = web(args);
            args.check().expect("nothing to check");
            assert!(args.ws_policy().proxies.is_empty());
        }
    }

    #[test]
    fn a_bad_range_names_the_flag() {
        let args = web(&["--trusted-proxies", "10.0.0.0/8,10.0.0.0/33"]);
        let message = args.check().expect_err("/33").to_string();
        assert!(
            message.starts_with("--trusted-proxies (KUBEPBX_TRUSTED_PROXIES): \"10.0.0.0/33\""),
            "{message}"
        );
        assert!(message.contains("0 to 32"), "{message}");
    }
}
