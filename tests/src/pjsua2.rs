//! [`Phone`]: a pjsua2 softphone (`tests/clients/pjsua2_call.py`, pjsip 2.15 — the stack of
//! MicroSIP) that registers with a [`Pbx`] and makes or takes one call with audio; and
//! [`analyse`]: whether a WAV holds a tone (or, for a recording still being written, whether its
//! last moments are silent: [`analyse_recent`]).
//!
//! ```text
//! Phone::start(&pbx, dir, "callee", "1002", &["--answer", "--tone", "880", "--record", w])
//!   python3 pjsua2_call.py --registrar <pbx sip> --user 1002 --password <default> --timeout 30 …
//!     stdout → <dir>/callee.out   status lines `pjsua2: …` (see the script's docstring)
//!     stderr → <dir>/callee.err   pjsip's log
//! phone.wait(timeout) → exit status (killed after the timeout); phone.lines(), phone.output()
//! drop(phone)         → kill + wait
//! ```
//!
//! The script's options are passed through as `args`; the ones tests use most: `--call N` /
//! `--answer`, `--duration S`, `--expect-hangup`, `--tone HZ`, `--record WAV`, `--bind IP`,
//! `--port N` (the same device when started again), `--public-address IP` (a phone behind NAT),
//! `--codec PCMU`, `--call-delay S`, `--keep-registration` (exit without unregistering),
//! `--expect-dtmf DIGITS` (the key presses the call must receive, [`Phone::dtmf`]),
//! `--send-dtmf DIGITS` (keys to press once the call is up) with `--dtmf-method info` (as SIP
//! INFO rather than RFC 4733 telephone-events). Needs `python3` with the pip package
//! `pjsua2-python` (`scripts/install-deps.sh test`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::manifests::default_password;
use crate::pbx::Pbx;
use crate::wait::wait_until;

/// The script's own give-up time (`--timeout`) unless the test passes another one.
pub const DEFAULT_PHONE_TIMEOUT_SECS: u32 = 30;

/// How many lines of a phone's stderr (pjsip's log) [`Phone::output`] shows.
const STDERR_LINES: usize = 40;

/// The path of `tests/clients/pjsua2_call.py`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/pjsua2_call.py")
}

/// A running pjsua2 phone (see the module doc). Killed when dropped.
#[derive(Debug)]
pub struct Phone {
    name: String,
    child: std::process::Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Phone {
    /// Starts the script as `user` (with its default password) against `pbx`, with `args` after
    /// the standard ones; its output goes to `<dir>/<name>.out` and `<dir>/<name>.err`. A
    /// `--timeout` in `args` overrides the default [`DEFAULT_PHONE_TIMEOUT_SECS`].
    pub fn start(pbx: &Pbx, dir: &Path, name: &str, user: &str, args: &[&str]) -> Result<Phone> {
        Self::start_at(pbx.sip_addr(), pbx.domain(), dir, name, user, args)
    }

    /// Like [`Phone::start`] for a PBX at `registrar` (its outbound proxy) serving `domain`:
    /// a cluster's load balancer, a replica.
    pub fn start_at(
        registrar: SocketAddr,
        domain: &str,
        dir: &Path,
        name: &str,
        user: &str,
        args: &[&str],
    ) -> Result<Phone> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let out =
            std::fs::File::create(&stdout).context(|| format!("create {}", stdout.display()))?;
        let err =
            std::fs::File::create(&stderr).context(|| format!("create {}", stderr.display()))?;
        let mut cmd = Command::new("python3");
        cmd.arg(script())
            .args(["--registrar", &registrar.to_string()])
            .args(["--domain", domain])
            .args(["--user", user, "--password", &default_password(user)]);
        if !args.contains(&"--timeout") {
            cmd.args(["--timeout", &DEFAULT_PHONE_TIMEOUT_SECS.to_string()]);
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::ProgramNotFound {
                    program: "python3",
                    path: PathBuf::from("python3"),
                    hint: "install python3 and pjsua2-python: scripts/install-deps.sh test",
                },
                _ => Error::io(format!("start {}", script().display()), e),
            })?;
        Ok(Phone {
            name: name.to_owned(),
            child,
            status: None,
            stdout,
            stderr,
        })
    }

    /// The name given at the start (`caller`, `callee`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the phone exited, if it has.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the phone to exit; `None` when it is still running then (it is
    /// left running: [`Drop`] kills it).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }

    /// The status lines (`pjsua2: …`, prefix removed), in order.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("pjsua2: ").map(str::to_owned))
            .collect()
    }

    /// Whether a status line starts with `prefix`.
    pub fn has_line(&self, prefix: &str) -> bool {
        self.lines().iter().any(|l| l.starts_with(prefix))
    }

    /// Waits up to `timeout` for the phone to end its call because the other side hung up: it
    /// exits successfully having printed `BYE received`.
    pub fn ended_by_bye(&mut self, timeout: Duration) -> bool {
        self.wait(timeout).is_some_and(|s| s.success()) && self.has_line("BYE received")
    }

    /// Waits up to `timeout` for a status line starting with `prefix`; false if none came (or
    /// the phone exited without printing it).
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.has_line(prefix) || self.try_wait().is_some()
        });
        self.has_line(prefix)
    }

    /// Every `remote sdp c=IP m=PORT in WHAT` line: what the SDP bodies this phone received say
    /// (`WHAT` is `INVITE` for an offer, `200/INVITE` etc. for an answer).
    pub fn remote_sdps(&self) -> Vec<SdpLine> {
        self.sdps("remote sdp ")
    }

    /// Every `local sdp …` line: the SDP bodies this phone sent (its own media address).
    pub fn local_sdps(&self) -> Vec<SdpLine> {
        self.sdps("local sdp ")
    }

    fn sdps(&self, prefix: &str) -> Vec<SdpLine> {
        self.lines()
            .iter()
            .filter_map(|l| SdpLine::parse(l.strip_prefix(prefix)?))
            .collect()
    }

    /// The first `remote media IP:PORT` line: where pjsua sends its RTP.
    pub fn remote_media(&self) -> Option<SocketAddr> {
        self.lines()
            .iter()
            .find_map(|l| l.strip_prefix("remote media ")?.parse().ok())
    }

    /// The key presses (DTMF) received so far, in order: every `dtmf DIGIT METHOD` line.
    pub fn dtmf(&self) -> Vec<Dtmf> {
        self.lines()
            .iter()
            .filter_map(|l| Dtmf::parse(l.strip_prefix("dtmf ")?))
            .collect()
    }

    /// Everything worth printing when a test fails: the status lines and the tail of pjsip's
    /// log.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout (exit {:?})\n{}\n--- {} stderr\n{}\n",
            self.name,
            self.status,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.name,
            crate::process::tail(
                &std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                STDERR_LINES
            )
        )
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `remote sdp` or `local sdp` status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpLine {
    /// The connection address (`c=`), media-level if there was one.
    pub ip: IpAddr,
    /// The audio port (`m=audio PORT`).
    pub port: u16,
    /// Which message carried it: `INVITE` (an offer) or `CODE/INVITE` (an answer).
    pub message: String,
}

impl SdpLine {
    /// Parses `c=IP m=PORT in WHAT`.
    fn parse(line: &str) -> Option<SdpLine> {
        let mut ip = None;
        let mut port = None;
        let mut message = String::new();
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if let Some(v) = w.strip_prefix("c=") {
                ip = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("m=") {
                port = v.parse().ok();
            } else if w == "in" {
                message = words.next().unwrap_or_default().to_owned();
            }
        }
        Some(SdpLine {
            ip: ip?,
            port: port?,
            message,
        })
    }

    /// Whether this SDP is an INVITE's (an offer) rather than an answer to one.
    pub fn is_offer(&self) -> bool {
        self.message == "INVITE"
    }
}

/// A key press a phone received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtmf {
    /// `0`-`9`, `*`, `#` (or `A`-`D`).
    pub digit: char,
    /// How it came: `rfc4733` (a telephone-event in the RTP stream) or `info` (a SIP INFO).
    pub method: String,
}

impl Dtmf {
    /// Parses `DIGIT METHOD`.
    fn parse(line: &str) -> Option<Dtmf> {
        let mut words = line.split_whitespace();
        let mut digit = words.next()?.chars();
        let (Some(d), None) = (digit.next(), digit.next()) else {
            return None;
        };
        Some(Dtmf {
            digit: d,
            method: words.next()?.to_owned(),
        })
    }
}

/// A channel of a stereo WAV (the PBX records the caller left and the callee right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The first channel: the caller's audio in the PBX's recordings.
    Left,
    /// The second channel: the callee's audio.
    Right,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Left => "left",
            Channel::Right => "right",
        }
    }
}

/// What `pjsua2_call.py --analyse` said about a recording.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Not silent and, if asked, the expected tone is the stronger one.
    pub ok: bool,
    /// The script's output (the `analysis …` line and any `error …` line).
    pub text: String,
}

/// What a recording's last moments should hold ([`analyse_recent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Sound: the RMS reaches the script's silence threshold.
    Sound,
    /// Silence: the RMS stays below it.
    Silence,
}

/// What `--analyse` is asked.
#[derive(Debug, Clone, Copy, Default)]
struct Query {
    channel: Option<Channel>,
    hz: Option<u32>,
    /// Only the last this many seconds.
    last: Option<f64>,
    silence: bool,
}

/// `pjsua2_call.py --analyse WAV --expect-hz HZ`: whether a mono `wav` holds the tone of `hz`
/// (440 or 880) and is not silent.
pub fn analyse(wav: &Path, hz: u32) -> Result<Analysis> {
    run_analysis(
        wav,
        Query {
            hz: Some(hz),
            ..Query::default()
        },
    )
}

/// `pjsua2_call.py --analyse WAV`: whether a mono `wav` holds sound (not silence), whatever
/// its pitch (a browser's fake microphone, say).
pub fn analyse_sound(wav: &Path) -> Result<Analysis> {
    run_analysis(wav, Query::default())
}

/// Like [`analyse`] for one channel of a stereo `wav`.
pub fn analyse_channel(wav: &Path, channel: Channel, hz: u32) -> Result<Analysis> {
    run_analysis(
        wav,
        Query {
            channel: Some(channel),
            hz: Some(hz),
            ..Query::default()
        },
    )
}

/// `pjsua2_call.py --analyse WAV --last S [--expect-silence]`: whether the last `last` of a
/// mono `wav` — a phone's recording while it still records — holds what `expect` says. The
/// analysis fails (ok false) while the file holds less than that.
pub fn analyse_recent(wav: &Path, last: Duration, expect: Expect) -> Result<Analysis> {
    run_analysis(
        wav,
        Query {
            last: Some(last.as_secs_f64()),
            silence: expect == Expect::Silence,
            ..Query::default()
        },
    )
}

/// `pjsua2_call.py --write-tone WAV --tone HZ`: the loopable sine the phones play (16-bit mono),
/// for a browser's fake microphone ([`crate::browser::Browser::start_with_microphone`]).
pub fn write_tone(wav: &Path, hz: u32) -> Result<()> {
    let out = Command::new("python3")
        .arg(script())
        .arg("--write-tone")
        .arg(wav)
        .args(["--tone", &hz.to_string()])
        .output()
        .context(|| format!("run {} --write-tone", script().display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{} --write-tone {}: {}{}",
            script().display(),
            wav.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn run_analysis(wav: &Path, query: Query) -> Result<Analysis> {
    let mut cmd = Command::new("python3");
    cmd.arg(script()).arg("--analyse").arg(wav);
    if let Some(hz) = query.hz {
        cmd.args(["--expect-hz", &hz.to_string()]);
    }
    if let Some(c) = query.channel {
        cmd.args(["--channel", c.as_str()]);
    }
    if let Some(last) = query.last {
        cmd.args(["--last", &format!("{last:.3}")]);
    }
    if query.silence {
        cmd.arg("--expect-silence");
    }
    let out = cmd
        .output()
        .context(|| format!("run {} --analyse", script().display()))?;
    Ok(Analysis {
        ok: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sdp_lines_parse() {
        let s = SdpLine::parse("c=127.0.0.1 m=20004 in 200/INVITE").unwrap();
        assert_eq!(s.ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(s.port, 20004);
        assert!(!s.is_offer());
        assert!(
            SdpLine::parse("c=127.0.0.1 m=4000 in INVITE")
                .unwrap()
                .is_offer()
        );
        assert_eq!(SdpLine::parse("c=- m=4000 in INVITE"), None);
    }

    #[test]
    fn dtmf_lines_parse() {
        assert_eq!(
            Dtmf::parse("# rfc4733"),
            Some(Dtmf {
                digit: '#',
                method: "rfc4733".into()
            })
        );
        assert_eq!(Dtmf::parse("12 info"), None);
        assert_eq!(Dtmf::parse("5"), None);
    }
}
