//! [`DigestResponder`]: a stand-in registrar for testing the harness itself without kubepbx.
//!
//! It runs `tests/fixtures/capture/digest_responder.py` (Python 3, standard library only) on a
//! free 127.0.0.1 port, UDP and TCP: REGISTER without credentials → 401 with a fixed nonce, a
//! correct MD5 digest → 200, a wrong one → 401 again. With [`DigestResponder::start_recording`]
//! it also writes every received message to a folder (how the fixtures were captured). It is
//! not a PBX: no bindings, no calls; use it to check that scenarios and client wrappers work.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::process::{Child, find_in_path};
use crate::sipp::{User, write_users_csv};

/// The nonce the responder always challenges with.
pub const RESPONDER_NONCE: &str = "7d1b3f0a2c9e4d5f8a6b0c1d2e3f4a5b";

/// A running digest responder (see the module doc). Killed when dropped.
#[derive(Debug)]
pub struct DigestResponder {
    child: Child,
    port: u16,
    record_dir: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl DigestResponder {
    /// Starts the responder knowing `users` (realm `pbx.example.com`).
    pub fn start(users: &[User]) -> Result<Self> {
        Self::launch(users, None)
    }

    /// Like [`DigestResponder::start`], and records every received message into `dir` as
    /// `NNN-<udp|tcp>-<METHOD>[-auth].sip`.
    pub fn start_recording(users: &[User], dir: &Path) -> Result<Self> {
        Self::launch(users, Some(dir.to_owned()))
    }

    fn launch(users: &[User], record_dir: Option<PathBuf>) -> Result<Self> {
        let python = find_in_path("python3").ok_or(Error::ProgramNotFound {
            program: "python3",
            path: PathBuf::from("python3 (in PATH)"),
            hint: "apt-get install python3",
        })?;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/capture/digest_responder.py");
        let dir = tempfile::Builder::new()
            .prefix("kubepbx-responder-")
            .tempdir()
            .context(|| "create temp dir".into())?;
        let csv = dir.path().join("users.csv");
        write_users_csv(&csv, users)?;
        let port_file = dir.path().join("port");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--users"])
            .arg(&csv)
            .arg("--port-file")
            .arg(&port_file);
        if let Some(rec) = &record_dir {
            cmd.arg("--record").arg(rec);
        }
        let mut child = Child::spawn(
            "digest_responder.py",
            cmd,
            &dir.path().join("responder.log"),
        )?;
        child.wait_for_log("READY", Duration::from_secs(10), |log| {
            log.contains("READY ")
        })?;
        let port = std::fs::read_to_string(&port_file)
            .context(|| format!("read {}", port_file.display()))?
            .trim()
            .parse()
            .map_err(|e| Error::Invalid(format!("responder port file: {e}")))?;
        Ok(DigestResponder {
            child,
            port,
            record_dir,
            _dir: dir,
        })
    }

    /// Where to send SIP (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// One line per answered REGISTER (`udp 127.0.0.1:5070 REGISTER -> 200 (expires 3600)`).
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// The recorded messages in arrival order (file name, bytes), when recording.
    pub fn recorded(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let Some(dir) = &self.record_dir else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .context(|| format!("read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".sip"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let bytes = std::fs::read(dir.join(&n)).context(|| format!("read {n}"))?;
                Ok((n, bytes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sipp::numbered_users;
    use std::net::UdpSocket;

    #[test]
    fn challenges_a_register_without_credentials() {
        let rec = tempfile::tempdir().unwrap();
        let r = DigestResponder::start_recording(&numbered_users(1001, 1), rec.path()).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = sock.local_addr().unwrap();
        let register = format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-test-1;rport\r\n\
             From: <sip:1001@pbx.example.com>;tag=t1\r\n\
             To: <sip:1001@pbx.example.com>\r\n\
             Call-ID: responder-test-1\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:1001@{local}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sock.send_to(register.as_bytes(), r.addr()).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]);
        assert!(resp.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{resp}");
        assert!(
            resp.contains(&format!("nonce=\"{RESPONDER_NONCE}\"")),
            "{resp}"
        );
        let recorded = r.recorded().unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].0, "001-udp-REGISTER.sip");
        assert_eq!(recorded[0].1, register.as_bytes());
    }
}
