//! Test harness for kubepbx: start the real PBX and real SIP clients on loopback, drive them,
//! and read what happened.
//!
//! Integration tests (in this crate's `tests/` or in other crates as a dev-dependency) use it
//! like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use kubepbx_tests::{Pbx, Sipp, manifests, sipp};
//!
//! let pbx = Pbx::start()?;
//! manifests::write_extension(pbx.manifest_dir(), "1001", "change-me-1001", &Default::default())?;
//! let run = Sipp::new(sipp::REGISTER_DIGEST, pbx.sip_addr())
//!     .users(sipp::numbered_users(1001, 1))
//!     .run()?;
//! assert!(run.all_succeeded(), "{}", run.diagnostics());
//! // (The admin API path is illustrative: use the one the registrar serves.)
//! assert!(kubepbx_tests::wait_until(Duration::from_secs(5), || {
//!     pbx.api_get("/api/v1/registrations").is_ok_and(|v| v.to_string().contains("1001"))
//! }));
//! # Ok::<(), kubepbx_tests::Error>(())
//! ```
//!
//! # Layout
//!
//! | module | holds |
//! |---|---|
//! | [`ports`] | free loopback ports, UDP+TCP for SIP, TCP for HTTP, UDP blocks for the relay |
//! | [`pbx`] | [`Pbx`]: `kubepbx up` in a temp dir, ready-wait, admin API requests, restart, kill on drop |
//! | [`cluster`] | [`Replica`]: `kubepbx registrar` / `kubepbx media` sharing a test's etcd; kill, terminate, start again |
//! | [`lb`] | [`UdpBalancer`]: a UDP load balancer in front of registrar replicas, pinning and steering phones |
//! | [`manifests`] | Extension + Secret YAML written into the `-f` folder |
//! | [`sipp`] | [`Sipp`]: runs a scenario of `tests/sipp/` with an injection CSV, reads the verdict |
//! | [`baresip`] | [`Baresip`]: Debian's baresip as a headless softphone, registration watched in its log |
//! | [`pjsua2`] | [`Phone`]: a pjsua2 softphone making or taking one call with a tone; [`analyse`] of WAVs |
//! | [`browser`] | [`Browser`](browser::Browser): headless Chromium through `web/tests/driver.mjs`, pages found by `data-testid` |
//! | [`web_phone`] | the web phone in a [`Browser`](browser::Browser) page: log in, dial, keys, audio counters, mute button |
//! | [`responder`] | [`DigestResponder`]: a Python stand-in registrar for testing the harness itself |
//! | [`fixtures`] | real REGISTERs of eight clients and malformed messages from `tests/fixtures/` |
//! | [`wait`] | [`wait_until`]: poll a condition with a deadline |
//! | [`error`] | [`Error`]: the one error type; process errors carry the process's output |
//!
//! Files beside the code: `sipp/*.xml` (scenarios, documented at their top), `fixtures/`
//! (`README.md` says what was captured from which client and how; `capture/` has the scripts).
//!
//! Every child process writes stdout and stderr to a log file in its own temp directory and is
//! killed when its handle drops, so a failing test leaves no process behind and its error says
//! what the process printed. Tests need `sipp` (Debian `sip-tester`), `baresip`, `python3` and
//! the pip package `pjsua2-python`; `scripts/install-deps.sh test` installs them. Nothing here sends a packet off 127.0.0.1.

pub mod baresip;
pub mod browser;
pub mod cluster;
pub mod error;
pub mod fixtures;
pub mod lb;
pub mod manifests;
pub mod pbx;
pub mod pjsua2;
pub mod ports;
mod process;
pub mod responder;
pub mod sipp;
pub mod wait;
pub mod web_phone;

pub use baresip::{Account, Baresip, Registration};
pub use cluster::{ClusterConfig, Replica};
pub use error::{Error, Result};
pub use lb::UdpBalancer;
pub use manifests::{ExtensionOpts, default_password, remove_extension, write_extension};
pub use pbx::{Pbx, PbxBuilder, kubepbx_binary};
pub use pjsua2::{Analysis, Channel, Dtmf, Phone, SdpLine, analyse, analyse_channel};
pub use ports::{free_tcp_port, free_udp_port, free_udp_port_block, free_udp_tcp_port};
pub use responder::DigestResponder;
pub use sipp::{Sipp, SippOutcome, Transport, User};
pub use wait::wait_until;
