//! [`Baresip`]: Debian's `baresip` (1.0) as a real softphone, headless, for one test.
//!
//! ```text
//! Baresip::start(&Account::new("1001", "change-me-1001", pbx.sip_addr()))
//!   writes <tmp>/config + <tmp>/accounts ──► baresip -f <tmp>   (stdin /dev/null, output → log)
//!   ◄── waits for "baresip is ready."
//! .wait_registered(10 s)   ◄── watches the log for "1001@pbx.example.com: {0/UDP/v4} 200 OK …"
//! .quit(5 s)               ──► SIGTERM: baresip unregisters (Expires 0), then exits
//! drop                     ──► kill
//! ```
//!
//! Headless setup, found by trial on Debian 12: no `stdio.so` (it needs a TTY: with stdin from
//! /dev/null it fails with "epoll_ctl: Operation not permitted") and no audio driver module;
//! `menu.so` prints the registration results; `account.so` reads the accounts file, `uuid.so`
//! writes the `+sip.instance` UUID. `net_interface 127.0.0.1` keeps baresip on loopback,
//! `dns_server 127.0.0.1:53` keeps it from asking any outside resolver, and the account's
//! `outbound=` proxy sends every request to the PBX without resolving the domain. Output is
//! unbuffered, so the log can be watched live. baresip's Contact user is `<user>-0x<hex>`, not
//! `<user>`: find its binding by [`Baresip::sip_port`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::ports::free_udp_tcp_port;
use crate::process::{Child, find_in_path};
use crate::sipp::Transport;

/// How long [`Baresip::start`] waits for "baresip is ready.".
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts tried when baresip finds a port taken.
const START_ATTEMPTS: u32 = 3;

/// One SIP account for baresip's `accounts` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// SIP user (and digest username).
    pub user: String,
    /// Digest password.
    pub password: String,
    /// SIP domain of the AOR (default `pbx.example.com`).
    pub domain: String,
    /// Where requests go (the PBX's SIP address), as outbound proxy.
    pub registrar: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Registration interval in seconds (`regint`, sent as the Contact's `expires`).
    pub regint: u32,
}

impl Account {
    /// An account registering `user` at `pbx.example.com` via `registrar`, UDP, every 60 s.
    pub fn new(
        user: impl Into<String>,
        password: impl Into<String>,
        registrar: SocketAddr,
    ) -> Self {
        Account {
            user: user.into(),
            password: password.into(),
            domain: crate::pbx::DEFAULT_DOMAIN.to_owned(),
            registrar,
            transport: Transport::Udp,
            regint: 60,
        }
    }

    /// Another domain.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// UDP or TCP.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Another registration interval.
    pub fn regint(mut self, seconds: u32) -> Self {
        self.regint = seconds;
        self
    }

    /// The address of record, `user@domain`, as baresip prints it.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    /// The line of baresip 1.0's `accounts` file.
    pub fn accounts_line(&self) -> String {
        let t = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        format!(
            "<sip:{user}@{domain};transport={t}>;auth_pass={pass};\
             outbound=\"sip:{proxy};transport={t}\";regint={regint}",
            user = self.user,
            domain = self.domain,
            pass = self.password,
            proxy = self.registrar,
            regint = self.regint,
        )
    }
}

/// How a registration attempt ended, from baresip's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A 2xx: the line baresip printed, e.g. `1001@pbx.example.com: {0/UDP/v4} 200 OK (…) [1 binding]`.
    Registered(String),
    /// A final failure: e.g. `reg: sip:1001@pbx.example.com: 401 Unauthorized (…)`.
    Failed(String),
}

/// A running baresip (see the module doc). Killed when dropped.
#[derive(Debug)]
pub struct Baresip {
    child: Child,
    account: Account,
    sip_port: u16,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Writes the config for `account`, starts baresip and waits until it is ready (it then
    /// registers on its own).
    pub fn start(account: &Account) -> Result<Self> {
        let baresip = find_in_path("baresip").ok_or(Error::ProgramNotFound {
            program: "baresip",
            path: PathBuf::from("baresip (in PATH)"),
            hint: "apt-get install baresip",
        })?;
        // baresip also opens SIP/TLS on the next port, which nobody reserved: when that one is
        // taken, start again on other ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on(&baresip, account, free_udp_tcp_port()?) {
                Err(Error::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") => {}
                other => return other,
            }
        }
    }

    fn start_on(baresip: &Path, account: &Account, sip_port: u16) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kubepbx-baresip-")
            .tempdir()
            .context(|| "create temp dir".into())?;
        let config = format!(
            "# written by kubepbx-tests: headless, loopback only\n\
             poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             net_interface\t\t127.0.0.1\n\
             dns_server\t\t127.0.0.1:53\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module_tmp\t\tuuid.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n"
        );
        let config_path = dir.path().join("config");
        std::fs::write(&config_path, config)
            .context(|| format!("write {}", config_path.display()))?;
        let accounts_path = dir.path().join("accounts");
        std::fs::write(&accounts_path, account.accounts_line() + "\n")
            .context(|| format!("write {}", accounts_path.display()))?;
        let mut cmd = Command::new(baresip);
        cmd.arg("-f").arg(dir.path());
        let mut child = Child::spawn("baresip", cmd, &dir.path().join("baresip.log"))?;
        child.wait_for_log("\"baresip is ready.\"", START_TIMEOUT, |log| {
            log.contains("baresip is ready.")
        })?;
        Ok(Baresip {
            child,
            account: account.clone(),
            sip_port,
            dir,
        })
    }

    /// The port baresip listens on (UDP and TCP) and puts in its Contact.
    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// `127.0.0.1:<sip_port>`.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.sip_port))
    }

    /// The config folder (config, accounts, uuid, baresip.log).
    pub fn config_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything baresip printed so far, with terminal colour codes removed.
    pub fn log(&self) -> String {
        strip_ansi(&self.child.log())
    }

    /// Waits for the first registration result (success or final failure) in the output.
    pub fn wait_registration(&mut self, timeout: Duration) -> Result<Registration> {
        let aor = self.account.aor();
        let mut found = None;
        self.child.wait_for_log(
            &format!("a registration result for {aor}"),
            timeout,
            |log| {
                found = registration_result(&strip_ansi(log), &aor);
                found.is_some()
            },
        )?;
        found.ok_or_else(|| Error::Invalid("registration result vanished".into()))
    }

    /// Waits until baresip reports a successful registration; errors with the log if it reports
    /// a failure, exits, or `timeout` passes.
    pub fn wait_registered(&mut self, timeout: Duration) -> Result<String> {
        match self.wait_registration(timeout)? {
            Registration::Registered(line) => Ok(line),
            Registration::Failed(line) => Err(Error::Invalid(format!(
                "baresip registration failed: {line}\n{}",
                crate::process::tail(&self.log(), 40)
            ))),
        }
    }

    /// Waits until `needle` appears in the output.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.child
            .wait_for_log(&format!("{needle:?} in the output"), timeout, |log| {
                strip_ansi(log).contains(needle)
            })
    }

    /// SIGTERM: baresip unregisters (REGISTER with expires=0), then exits; killed after
    /// `timeout`. Returns how it exited.
    pub fn quit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.child.terminate(timeout)
    }
}

/// Finds the first registration result for `aor` in baresip 1.0 output.
fn registration_result(log: &str, aor: &str) -> Option<Registration> {
    let ok_prefix = format!("{aor}: {{");
    let fail_prefix = format!("reg: sip:{aor}: ");
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(&ok_prefix) {
            // "{0/UDP/v4} 200 OK (server) [1 binding]"
            let status = rest.split_once("} ").map(|(_, s)| s).unwrap_or_default();
            if status.starts_with('2') {
                return Some(Registration::Registered(line.to_owned()));
            }
            if status.starts_with(['3', '4', '5', '6']) {
                return Some(Registration::Failed(line.to_owned()));
            }
        } else if line.starts_with(&fail_prefix) {
            return Some(Registration::Failed(line.to_owned()));
        }
    }
    None
}

/// Removes `ESC [ … letter` sequences (baresip colours warnings).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::DigestResponder;
    use crate::sipp::{User, numbered_users};

    #[test]
    fn accounts_line_has_baresip_1_0_syntax() {
        let acc = Account::new("1001", "change-me-1001", "127.0.0.1:5060".parse().unwrap());
        assert_eq!(
            acc.accounts_line(),
            "<sip:1001@pbx.example.com;transport=udp>;auth_pass=change-me-1001;\
             outbound=\"sip:127.0.0.1:5060;transport=udp\";regint=60"
        );
        let tcp = acc.transport(Transport::Tcp).regint(300);
        assert!(tcp.accounts_line().contains(";transport=tcp>"));
        assert!(tcp.accounts_line().ends_with("transport=tcp\";regint=300"));
    }

    #[test]
    fn registration_lines_are_recognised() {
        let aor = "1001@pbx.example.com";
        let ok = "baresip is ready.\n\
                  1001@pbx.example.com: {0/UDP/v4} 200 OK (kubepbx) [1 binding]\n";
        assert_eq!(
            registration_result(ok, aor),
            Some(Registration::Registered(
                "1001@pbx.example.com: {0/UDP/v4} 200 OK (kubepbx) [1 binding]".into()
            ))
        );
        let fail = strip_ansi(
            "\u{1b}[31mreg: sip:1001@pbx.example.com: 401 Unauthorized (kubepbx)\n\u{1b}[;m",
        );
        assert_eq!(
            registration_result(&fail, aor),
            Some(Registration::Failed(
                "reg: sip:1001@pbx.example.com: 401 Unauthorized (kubepbx)".into()
            ))
        );
        assert_eq!(registration_result("baresip is ready.\n", aor), None);
        assert_eq!(registration_result(ok, "1002@pbx.example.com"), None);
    }

    #[test]
    fn registers_with_the_digest_responder_and_unregisters_on_quit() {
        let r = DigestResponder::start(&numbered_users(1001, 1)).unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            let acc = Account::new("1001", "change-me-1001", r.addr()).transport(transport);
            let mut phone = Baresip::start(&acc).unwrap();
            let line = phone.wait_registered(Duration::from_secs(10)).unwrap();
            assert!(line.contains("200 OK"), "{line}");
            phone.quit(Duration::from_secs(5)).unwrap();
            // baresip unregisters before it exits (over TCP from the connection's port).
            let prefix = match transport {
                Transport::Udp => format!("udp 127.0.0.1:{} ", phone.sip_port()),
                Transport::Tcp => "tcp 127.0.0.1:".to_owned(),
            };
            let unregistered = crate::wait_until(Duration::from_secs(5), || {
                r.log()
                    .lines()
                    .any(|l| l.starts_with(&prefix) && l.ends_with("-> 200 (expires 0)"))
            });
            assert!(unregistered, "{transport:?}: {}", r.log());
        }
    }

    #[test]
    fn a_wrong_password_is_reported_as_failure() {
        let r = DigestResponder::start(&[User::new("1001", "change-me-1001")]).unwrap();
        let acc = Account::new("1001", "wrong-password", r.addr());
        let mut phone = Baresip::start(&acc).unwrap();
        match phone.wait_registration(Duration::from_secs(10)).unwrap() {
            Registration::Failed(line) => assert!(line.contains("401"), "{line}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(phone.wait_registered(Duration::from_secs(1)).is_err());
    }
}
