//! [`Sipp`]: runs a sipp scenario from `tests/sipp/` in the foreground and reads its verdict.
//!
//! ```text
//! Sipp::new(REGISTER_DIGEST, pbx.sip_addr()).users(numbered_users(1001, 5)).run()
//!   writes users.csv ──► sipp <target> -sf <scenario> -inf users.csv -key domain … -m N
//!                            -i 127.0.0.1 -p <free port> -nostdin -timeout … -timeout_error
//!                            -trace_stat -stf stat.csv -trace_err -error_file errors.log
//!   ◄── SippOutcome { exit code, successful/failed from stat.csv, errors.log, messages.log }
//! ```
//!
//! One sipp call is one registration of one user of the injection CSV (see the comment at the
//! top of `tests/sipp/register_digest.xml` for the CSV format and why the credentials are a
//! field). sipp's exit code is 0 when every call succeeded and 1 when at least one failed;
//! other codes are errors of sipp itself (97: internal command, 99: no call processed, 255/254:
//! fatal, e.g. the local port was taken). Each run works in its own temp directory, kept for as
//! long as the returned [`SippOutcome`] lives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::manifests::default_password;
use crate::ports::free_udp_tcp_port;
use crate::process::{Child, find_in_path, read_lossy, tail};

/// REGISTER → 401 → REGISTER with credentials → 200.
pub const REGISTER_DIGEST: &str = "sipp/register_digest.xml";
/// REGISTER → 401 → REGISTER with (wrong) credentials → 401 again.
pub const REGISTER_WRONG_PASSWORD: &str = "sipp/register_wrong_password.xml";
/// REGISTER Expires: 0 for the Contact register_digest.xml used, with auth.
pub const UNREGISTER: &str = "sipp/unregister.xml";
/// REGISTER Contact: * Expires: 0, with auth.
pub const UNREGISTER_ALL: &str = "sipp/unregister_all.xml";

/// Message logs are kept by default only up to this many calls (they grow with every message).
const TRACE_MSG_LIMIT: u64 = 200;

/// The transport sipp uses (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `-t u1`: UDP, one socket for all calls.
    #[default]
    Udp,
    /// `-t t1`: TCP, one connection for all calls.
    Tcp,
}

impl Transport {
    fn flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// One line of the injection CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The SIP user (and digest username).
    pub name: String,
    /// The password sipp answers the challenge with.
    pub password: String,
}

impl User {
    /// A user with an explicit password.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        User {
            name: name.into(),
            password: password.into(),
        }
    }
}

/// `count` users `first`, `first+1`, … with [`default_password`] (`change-me-<n>`).
pub fn numbered_users(first: u32, count: u32) -> Vec<User> {
    (first..first.saturating_add(count))
        .map(|n| User::new(n.to_string(), default_password(&n.to_string())))
        .collect()
}

/// The injection CSV for `users` (first line `SEQUENTIAL`, then
/// `user;password;[authentication username=user password=password]`). Errors for values sipp
/// cannot carry in a field or in its keyword syntax (`;`, `]`, whitespace).
pub fn users_csv(users: &[User]) -> Result<String> {
    let mut csv = String::from("SEQUENTIAL\n");
    for u in users {
        for v in [&u.name, &u.password] {
            if v.is_empty() || v.chars().any(|c| c == ';' || c == ']' || c.is_whitespace()) {
                return Err(Error::Invalid(format!(
                    "sipp cannot carry {v:?} in an injection field (empty, ';', ']' or space)"
                )));
            }
        }
        csv.push_str(&format!(
            "{n};{p};[authentication username={n} password={p}]\n",
            n = u.name,
            p = u.password
        ));
    }
    Ok(csv)
}

/// Writes [`users_csv`] to `path` (e.g. for a benchmark's 10,000 users).
pub fn write_users_csv(path: &Path, users: &[User]) -> Result<()> {
    std::fs::write(path, users_csv(users)?).context(|| format!("write {}", path.display()))
}

/// Resolves a scenario path: absolute as is, relative to this crate's folder (`tests/`).
pub fn scenario_path(scenario: impl AsRef<Path>) -> PathBuf {
    let p = scenario.as_ref();
    if p.is_absolute() {
        p.to_owned()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    }
}

/// Rate stepping for benchmarks: start at `rate`, add `increase` every `interval` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSteps {
    /// Calls per second added each step (`-rate_increase`).
    pub increase: u32,
    /// Time between steps (`-rate_interval`).
    pub interval: Duration,
    /// Highest rate (`-rate_max`); sipp keeps it until all calls are made (`-no_rate_quit`).
    pub max: u32,
}

/// A sipp run (see the module doc); build with the setters, then [`Sipp::run`].
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: PathBuf,
    target: SocketAddr,
    transport: Transport,
    users: Vec<User>,
    domain: String,
    expires: u32,
    calls: Option<u64>,
    rate: Option<f64>,
    steps: Option<RateSteps>,
    max_concurrent: Option<u32>,
    timeout: Duration,
    recv_timeout: Duration,
    local_port: Option<u16>,
    trace_msg: Option<bool>,
    extra_args: Vec<String>,
}

impl Sipp {
    /// A run of `scenario` (relative paths start at `tests/`, see [`scenario_path`]) against
    /// `target`, over UDP, for domain `pbx.example.com`, Expires 3600, one call per user.
    pub fn new(scenario: impl AsRef<Path>, target: SocketAddr) -> Self {
        Sipp {
            scenario: scenario_path(scenario),
            target,
            transport: Transport::Udp,
            users: Vec::new(),
            domain: crate::pbx::DEFAULT_DOMAIN.to_owned(),
            expires: 3600,
            calls: None,
            rate: None,
            steps: None,
            max_concurrent: None,
            timeout: Duration::from_secs(30),
            recv_timeout: Duration::from_secs(10),
            local_port: None,
            trace_msg: None,
            extra_args: Vec::new(),
        }
    }

    /// `-t u1` or `-t t1`.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The users of the injection CSV, registered in order, one per call.
    pub fn users(mut self, users: Vec<User>) -> Self {
        self.users = users;
        self
    }

    /// The SIP domain (`-key domain`, request-URI and From/To host; also `-auth_uri`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// The Expires value (`-key expires`).
    pub fn expires(mut self, seconds: u32) -> Self {
        self.expires = seconds;
        self
    }

    /// Number of calls (`-m`; default: one per user).
    pub fn calls(mut self, calls: u64) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Calls started per second (`-r`; sipp's default is 10).
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Rate stepping (`-rate_increase`, `-rate_interval`, `-rate_max`, `-no_rate_quit`).
    pub fn rate_steps(mut self, steps: RateSteps) -> Self {
        self.steps = Some(steps);
        self
    }

    /// At most this many calls in progress (`-l`).
    pub fn max_concurrent(mut self, calls: u32) -> Self {
        self.max_concurrent = Some(calls);
        self
    }

    /// Global timeout (`-timeout`, an error when reached: `-timeout_error`). Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one call waits for an expected message (`-recv_timeout`). Default 10 s.
    pub fn recv_timeout(mut self, timeout: Duration) -> Self {
        self.recv_timeout = timeout;
        self
    }

    /// The local port (`-p`; default: a free one). Use the same port for register_digest.xml
    /// and unregister.xml so the Contact matches.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// Keep every message in `messages.log` (default: only when at most 200 calls).
    pub fn trace_msg(mut self, on: bool) -> Self {
        self.trace_msg = Some(on);
        self
    }

    /// More sipp arguments, e.g. `["-aa"]`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The number of calls the run makes.
    pub fn call_count(&self) -> u64 {
        self.calls.unwrap_or(self.users.len().max(1) as u64)
    }

    /// Runs sipp to completion (it stops itself at `-m` calls or the global timeout; the harness
    /// kills it 15 s after that as a last resort) and returns its verdict.
    pub fn run(&self) -> Result<SippOutcome> {
        let sipp = find_in_path("sipp").ok_or(Error::ProgramNotFound {
            program: "sipp",
            path: PathBuf::from("sipp (in PATH)"),
            hint: "apt-get install sip-tester",
        })?;
        if !self.scenario.is_file() {
            return Err(Error::Invalid(format!(
                "no scenario at {}",
                self.scenario.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("kubepbx-sipp-")
            .tempdir()
            .context(|| "create temp dir".into())?;
        let work = dir.path();
        let csv = work.join("users.csv");
        write_users_csv(&csv, &self.users)?;
        // Free for both transports: over TCP sipp binds its main socket on TCP.
        let local_port = match self.local_port {
            Some(p) => p,
            None => free_udp_tcp_port()?,
        };
        let calls = self.call_count();
        let trace_msg = self.trace_msg.unwrap_or(calls <= TRACE_MSG_LIMIT);
        let stat = work.join("stat.csv");
        let errors = work.join("errors.log");
        let messages = work.join("messages.log");

        let mut cmd = Command::new(sipp);
        cmd.current_dir(work)
            .arg(self.target.to_string())
            .arg("-sf")
            .arg(&self.scenario)
            .arg("-inf")
            .arg(&csv)
            .args(["-key", "domain", &self.domain])
            .args(["-key", "expires", &self.expires.to_string()])
            .args(["-auth_uri", &self.domain])
            .args(["-t", self.transport.flag()])
            .args(["-i", "127.0.0.1", "-p", &local_port.to_string()])
            .args(["-m", &calls.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1))])
            .arg("-timeout_error")
            .args([
                "-recv_timeout",
                &self.recv_timeout.as_millis().max(1).to_string(),
            ])
            .arg("-nostdin")
            // No BYE after a failed REGISTER "call".
            .args(["-default_behaviors", "all,-bye"])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .args(["-trace_err", "-error_file"])
            .arg(&errors);
        if trace_msg {
            cmd.args(["-trace_msg", "-message_file"]).arg(&messages);
        }
        if let Some(rate) = self.rate {
            cmd.args(["-r", &rate.to_string()]);
        }
        if let Some(s) = self.steps {
            cmd.args(["-rate_increase", &s.increase.to_string()])
                .args([
                    "-rate_interval",
                    &format!("{}s", s.interval.as_secs().max(1)),
                ])
                .args(["-rate_max", &s.max.to_string()])
                .arg("-no_rate_quit");
        }
        if let Some(l) = self.max_concurrent {
            cmd.args(["-l", &l.to_string()]);
        }
        cmd.args(&self.extra_args);
        let command_line = format!("{cmd:?}");

        let output = work.join("sipp.out");
        let mut child = Child::spawn("sipp", cmd, &output)?;
        let limit = self.timeout + Duration::from_secs(15);
        let finished = crate::wait::wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
        let status = child.kill()?;
        let stats = parse_stats(&read_lossy(&stat));
        let count = |key: &str| stats.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let (successful, failed) = match (count("SuccessfulCall(C)"), count("FailedCall(C)")) {
            (Some(s), Some(f)) => (s, f),
            // No statistics (sipp failed before its first dump): the exit code is all we have.
            _ if status.code() == Some(0) => (calls, 0),
            _ => (0, calls),
        };
        Ok(SippOutcome {
            status,
            killed: !finished,
            successful,
            failed,
            stats,
            errors: read_lossy(&errors),
            messages: if trace_msg {
                Some(read_lossy(&messages))
            } else {
                None
            },
            output: read_lossy(&output),
            command_line,
            dir,
        })
    }
}

/// What a sipp run reported.
#[derive(Debug)]
pub struct SippOutcome {
    /// sipp's exit status (0: all calls succeeded, 1: at least one failed).
    pub status: ExitStatus,
    /// Whether the harness had to kill sipp (it did not stop by itself).
    pub killed: bool,
    /// Successful calls (`SuccessfulCall(C)` of the last statistics line).
    pub successful: u64,
    /// Failed calls (`FailedCall(C)`).
    pub failed: u64,
    /// The last line of the statistics CSV by column name (e.g. `Retransmissions(C)`,
    /// `ResponseTimeregister(C)`, `CallRate(C)`); empty if sipp wrote none.
    pub stats: BTreeMap<String, String>,
    /// The unexpected-message log (`-trace_err`).
    pub errors: String,
    /// Every message sent and received (`-trace_msg`), when kept.
    pub messages: Option<String>,
    /// sipp's stdout and stderr (its final screen, fatal errors).
    pub output: String,
    /// The command that ran.
    pub command_line: String,
    dir: tempfile::TempDir,
}

impl SippOutcome {
    /// True when sipp exited 0, nothing failed and at least one call succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.status.success() && !self.killed && self.failed == 0 && self.successful > 0
    }

    /// The work directory (CSV, statistics, logs), alive as long as this value.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A multi-line summary for assertion messages: command, counts, error log, message log
    /// and output, each cut to its tail.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "sipp: {} (killed: {}), successful {}, failed {}\ncommand: {}\n",
            self.status, self.killed, self.successful, self.failed, self.command_line
        );
        if !self.errors.trim().is_empty() {
            s.push_str(&format!("--- errors.log\n{}\n", tail(&self.errors, 60)));
        }
        if let Some(m) = &self.messages {
            s.push_str(&format!("--- messages.log\n{}\n", tail(m, 120)));
        }
        s.push_str(&format!("--- output\n{}\n", tail(&self.output, 40)));
        s
    }
}

/// The last data line of a sipp statistics CSV (`;`-separated, header first) by column name.
pub fn parse_stats(csv: &str) -> BTreeMap<String, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let Some(last) = lines.next_back() else {
        return BTreeMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::DigestResponder;

    #[test]
    fn csv_carries_the_credentials_as_a_keyword() {
        let csv = users_csv(&numbered_users(1001, 2)).unwrap();
        assert_eq!(
            csv,
            "SEQUENTIAL\n\
             1001;change-me-1001;[authentication username=1001 password=change-me-1001]\n\
             1002;change-me-1002;[authentication username=1002 password=change-me-1002]\n"
        );
        assert!(users_csv(&[User::new("1001", "a;b")]).is_err());
        assert!(users_csv(&[User::new("1001", "a b")]).is_err());
        assert!(users_csv(&[User::new("1001", "a]")]).is_err());
    }

    #[test]
    fn ten_thousand_users_are_distinct() {
        let users = numbered_users(10000, 10000);
        assert_eq!(users.len(), 10000);
        assert_eq!(users[9999].name, "19999");
        let csv = users_csv(&users).unwrap();
        assert_eq!(csv.lines().count(), 10001);
    }

    #[test]
    fn stats_take_the_last_line() {
        let csv = "StartTime;SuccessfulCall(C);FailedCall(C);\n\
                   t0;0;0;\n\
                   t1;7;2;\n";
        let stats = parse_stats(csv);
        assert_eq!(stats["SuccessfulCall(C)"], "7");
        assert_eq!(stats["FailedCall(C)"], "2");
        assert!(parse_stats("").is_empty());
        assert!(parse_stats("header;only\n").is_empty());
    }

    #[test]
    fn scenarios_resolve_under_the_crate() {
        for s in [
            REGISTER_DIGEST,
            REGISTER_WRONG_PASSWORD,
            UNREGISTER,
            UNREGISTER_ALL,
        ] {
            assert!(scenario_path(s).is_file(), "{s}");
        }
    }

    fn responder(users: &[User]) -> DigestResponder {
        DigestResponder::start(users).expect("start the Python digest responder")
    }

    #[test]
    fn register_digest_over_udp_and_tcp() {
        let users = numbered_users(1001, 3);
        let r = responder(&users);
        for transport in [Transport::Udp, Transport::Tcp] {
            let out = Sipp::new(REGISTER_DIGEST, r.addr())
                .transport(transport)
                .users(users.clone())
                .rate(100.0)
                .timeout(Duration::from_secs(20))
                .run()
                .unwrap();
            assert!(out.all_succeeded(), "{transport:?}: {}", out.diagnostics());
            assert_eq!((out.successful, out.failed), (3, 0));
            let msgs = out.messages.as_deref().unwrap_or_default();
            assert!(msgs.contains("uri=\"sip:pbx.example.com\""), "{msgs}");
        }
    }

    #[test]
    fn wrong_password_passes_only_on_the_second_401() {
        let right = numbered_users(1001, 2);
        let r = responder(&right);
        let wrong: Vec<User> = right
            .iter()
            .map(|u| User::new(u.name.clone(), "not-the-password"))
            .collect();
        let out = Sipp::new(REGISTER_WRONG_PASSWORD, r.addr())
            .users(wrong)
            .run()
            .unwrap();
        assert!(out.all_succeeded(), "{}", out.diagnostics());
        // With the right password the registrar answers 200, which fails this scenario.
        let out = Sipp::new(REGISTER_WRONG_PASSWORD, r.addr())
            .users(right.clone())
            .run()
            .unwrap();
        assert!(!out.all_succeeded());
        assert_eq!(
            (out.successful, out.failed),
            (0, 2),
            "{}",
            out.diagnostics()
        );
        assert_eq!(out.status.code(), Some(1));
        // And register_digest with a wrong password fails.
        let out = Sipp::new(REGISTER_DIGEST, r.addr())
            .users(vec![User::new("1001", "nope")])
            .run()
            .unwrap();
        assert_eq!(
            (out.successful, out.failed),
            (0, 1),
            "{}",
            out.diagnostics()
        );
        assert!(out.errors.contains("401"), "{}", out.diagnostics());
    }

    #[test]
    fn unregister_from_the_same_port() {
        let users = numbered_users(1001, 1);
        let r = responder(&users);
        let port = crate::ports::free_udp_port().unwrap();
        for scenario in [REGISTER_DIGEST, UNREGISTER, UNREGISTER_ALL] {
            let out = Sipp::new(scenario, r.addr())
                .users(users.clone())
                .local_port(port)
                .run()
                .unwrap();
            assert!(out.all_succeeded(), "{scenario}: {}", out.diagnostics());
        }
    }

    #[test]
    fn nobody_answering_fails_within_the_timeout() {
        // A UDP port nobody listens on: every REGISTER is retransmitted, then the call fails.
        let port = crate::ports::free_udp_port().unwrap();
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let start = std::time::Instant::now();
        let out = Sipp::new(REGISTER_DIGEST, target)
            .users(numbered_users(1001, 1))
            .timeout(Duration::from_secs(3))
            .recv_timeout(Duration::from_secs(1))
            .run()
            .unwrap();
        assert!(!out.all_succeeded(), "{}", out.diagnostics());
        assert!(start.elapsed() < Duration::from_secs(15));
    }
}
