//! A child process whose stdout and stderr go to one log file, killed when dropped.
//!
//! Output goes to a file, not a pipe, so a chatty child can never block on a full pipe and the
//! log survives the process for diagnostics. Readers read the file; [`Child::tail`] gives the last
//! lines for error messages.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How many lines of a log an error message carries.
const TAIL_LINES: usize = 60;

/// A running child process (see the module doc).
#[derive(Debug)]
pub(crate) struct Child {
    program: &'static str,
    child: std::process::Child,
    /// Set once the process has been reaped.
    status: Option<ExitStatus>,
    log_path: PathBuf,
}

impl Child {
    /// Starts `command` with stdin from /dev/null and stdout+stderr appended to `log_path`.
    pub(crate) fn spawn(
        program: &'static str,
        mut command: Command,
        log_path: &Path,
    ) -> Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .context(|| format!("open {}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .context(|| format!("clone {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // ETXTBSY: a script written just before (by this or a parallel test) can still be open
        // for writing in a child forked by another thread; that clears within milliseconds.
        let mut attempts = 0;
        let child = loop {
            match command.spawn() {
                Err(e) if e.raw_os_error() == Some(26) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.context(|| format!("start {program} ({command:?})"))?,
            }
        };
        Ok(Child {
            program,
            child,
            status: None,
            log_path: log_path.to_owned(),
        })
    }

    /// The process id (also after it exited).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (lossy UTF-8).
    pub(crate) fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn tail(&self) -> String {
        tail(&self.log(), TAIL_LINES)
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let program = self.program;
            self.status = self
                .child
                .try_wait()
                .context(|| format!("wait for {program}"))?;
        }
        Ok(self.status)
    }

    /// Errors with the log if the process has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.try_wait()? {
            Some(status) => Err(Error::Exited {
                program: self.program,
                status,
                log: self.tail(),
            }),
            None => Ok(()),
        }
    }

    /// Polls `condition` on the log until it holds; fails if the process exits or time is up.
    pub(crate) fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(&self.log()) {
                return Ok(());
            }
            self.ensure_running()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    program: self.program,
                    what: what.to_owned(),
                    timeout,
                    log: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM (through the `kill` command: no unsafe code here), waits up to `timeout`
    /// for the process to exit, then kills it. Returns how it exited.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if self.try_wait()?.is_none() {
            let pid = self.id();
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if sent.is_ok() {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if self.try_wait()?.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.kill()
    }

    /// Kills the process (if still running) and reaps it. Returns how it exited.
    pub(crate) fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // Fails only if it exited meanwhile, which wait() then reports.
        let _ = self.child.kill();
        let program = self.program;
        let status = self
            .child
            .wait()
            .context(|| format!("wait for {program}"))?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends a marker line to a log file (between runs of a restarted process).
pub(crate) fn append_marker(log_path: &Path, line: &str) -> Result<()> {
    let mut f: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context(|| format!("open {}", log_path.display()))?;
    writeln!(f, "{line}").context(|| format!("write {}", log_path.display()))
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[… {start} earlier lines]\n"));
    }
    out.push_str(&all[start..].join("\n"));
    out
}

/// Looks `program` up in PATH, for clear "not installed" errors.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("a\nb\nc", 2), "[… 1 earlier lines]\nb\nc");
    }

    #[test]
    fn child_output_lands_in_the_log_and_kill_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; sleep 30"]);
        let mut child = Child::spawn("sh", cmd, &log).unwrap();
        child
            .wait_for_log("both lines", Duration::from_secs(5), |l| {
                l.contains("out") && l.contains("err")
            })
            .unwrap();
        let status = child.terminate(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        assert!(
            child.ensure_running().is_err(),
            "a reaped child is not running"
        );
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom; exit 3"]);
        let mut child = Child::spawn("sh", cmd, &log).unwrap();
        let err = child
            .wait_for_log("never", Duration::from_secs(5), |_| false)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("exited early") && text.contains("boom"),
            "{text}"
        );
    }
}
