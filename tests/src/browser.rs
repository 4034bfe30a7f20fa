//! [`Browser`]: headless Chromium driven through `web/tests/driver.mjs` (Node + playwright-core),
//! for end-to-end tests of the web phone (`web/`, built to `web/dist/phone/`).
//!
//! ```text
//! Browser::start()            checks web/node_modules and web/dist/phone (require_web_build),
//!                             spawns node web/tests/driver.mjs (stdin/stdout piped,
//!                             stderr → <tmp>/driver.log: the driver's log and every page's
//!                             console messages, prefixed with the page name)
//! .open("a", url)             ──► {"id":1,"cmd":"open","page":"a","url":…}
//!                             ◄── {"id":1,"ok":true,"value":{"url":…,"title":…}}
//! .login("a", "1001", pw)     fill extension, fill password, click login
//! .wait_text("a", "status", "^registered$", 10 s)
//! .eval("a", "window.kubepbxPhone.stats()")  → serde_json::Value
//! drop                        closes stdin (the driver closes Chromium and exits), kills
//!                             after 3 s
//! ```
//!
//! Every method waits a bounded time for its reply. A failed command's error names the command,
//! the page and element, what the driver said, and the tail of the driver's log; a screenshot of
//! the page is saved under [`artifacts_dir`] first and its path is in the error too. A command
//! whose reply did not come in time keeps running in the driver (commands run one after
//! another there); its late reply is skipped.
//!
//! Needs `node`, `npm ci` and `npm run build` done in `web/` ([`require_web_build`] says so
//! when not), and Chromium: Debian's `chromium` at `/usr/bin/chromium`, or the path in
//! `$CHROMIUM`. Pages get microphone permission and a fake microphone: Chromium's beep (20 ms
//! every half second), or a WAV file looped ([`Browser::start_with_microphone`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::process::{find_in_path, read_lossy, tail};

/// What errors call the driver process.
const PROGRAM: &str = "browser driver";
/// How long the driver waits for an element to click or fill.
const ELEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time granted on top of the driver's own timeout before giving up on a reply.
const REPLY_SLACK: Duration = Duration::from_secs(10);
/// `open` may start Chromium first: slow on a busy 2-core machine.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Commands that do not wait for anything in the page.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped [`Browser`] gives the driver to close Chromium before killing it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines of the driver's log in error messages.
const LOG_LINES: usize = 40;
/// The default Chromium, Debian's package `chromium`.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const BUILD_HINT: &str =
    "build the web UIs: `make web` (part of `make test`), or `cd web && npm ci && npm run build`";

/// The `web/` folder of the workspace.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(".."))
        .join("web")
}

/// The built web phone, `web/dist/phone/` (what the registrar serves at `/phone/`).
pub fn phone_dist() -> PathBuf {
    web_dir().join("dist/phone")
}

/// The driver script, `web/tests/driver.mjs`.
pub fn driver_script() -> PathBuf {
    web_dir().join("tests/driver.mjs")
}

/// The Chromium the driver starts: `$CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from)
}

/// Where tests leave files for people to look at after a run (screenshots):
/// `$KUBEPBX_TEST_ARTIFACTS`, else `test-artifacts/` in the cargo target folder of the running
/// test (`<target>/<profile>/deps/<test>` → `<target>/test-artifacts`). Not created here.
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEPBX_TEST_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let target = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()
            .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    });
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("test-artifacts")
}

/// Checks that everything [`Browser::start`] needs is there: `node`, `web/node_modules`
/// (`npm ci`), the built phone `web/dist/phone/index.html` (`npm run build`) and Chromium.
/// The error says which is missing and how to get it.
pub fn require_web_build() -> Result<()> {
    if find_in_path("node").is_none() {
        return Err(Error::ProgramNotFound {
            program: "node",
            path: PathBuf::from("node (in PATH)"),
            hint: "install Node.js 20 or newer (Debian: apt-get install nodejs npm)",
        });
    }
    let web = web_dir();
    let playwright = web.join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        return Err(Error::ProgramNotFound {
            program: "web/node_modules (playwright-core)",
            path: playwright,
            hint: BUILD_HINT,
        });
    }
    let index = phone_dist().join("index.html");
    if !index.is_file() {
        return Err(Error::ProgramNotFound {
            program: "the built web phone",
            path: index,
            hint: BUILD_HINT,
        });
    }
    let chromium = chromium_path();
    if !chromium.is_file() {
        return Err(Error::ProgramNotFound {
            program: "chromium",
            path: chromium,
            hint: "apt-get install chromium, or set CHROMIUM to a Chromium or Chrome binary",
        });
    }
    Ok(())
}

/// A headless Chromium with named pages, driven line by line (see the module doc). The driver
/// and its browser are stopped when this drops. Methods take `&self`; commands are serialised.
#[derive(Debug)]
pub struct Browser {
    inner: Mutex<Inner>,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Inner {
    child: Child,
    /// None once closed (quit, drop).
    stdin: Option<ChildStdin>,
    /// Lines the driver wrote to stdout (replies); disconnected when it closes stdout.
    replies: Receiver<String>,
    next_id: u64,
    status: Option<ExitStatus>,
    /// Pages opened and not closed, for [`Browser::pages`].
    pages: Vec<String>,
    /// Screenshots taken on failures so far, to number them.
    failure_shots: u32,
}

impl Browser {
    /// Starts the driver (Chromium itself starts with the first [`Browser::open`]). Fails with
    /// [`require_web_build`]'s error when the web build or Chromium is missing.
    pub fn start() -> Result<Browser> {
        Self::launch(None)
    }

    /// Like [`Browser::start`], with every page's microphone playing `wav` (16-bit PCM) in a
    /// loop: a steady tone instead of the beep, for tests that look at what arrives when.
    pub fn start_with_microphone(wav: &Path) -> Result<Browser> {
        if !wav.is_file() {
            return Err(Error::Invalid(format!(
                "{PROGRAM}: no microphone file {}",
                wav.display()
            )));
        }
        Self::launch(Some(wav))
    }

    fn launch(microphone: Option<&Path>) -> Result<Browser> {
        require_web_build()?;
        let dir = tempfile::Builder::new()
            .prefix("kubepbx-browser-")
            .tempdir()
            .context(|| "create temp dir".into())?;
        let log_path = dir.path().join("driver.log");
        let log = std::fs::File::create(&log_path)
            .context(|| format!("create {}", log_path.display()))?;
        let mut command = Command::new("node");
        command
            .arg(driver_script())
            .current_dir(web_dir())
            .env("CHROMIUM", chromium_path())
            .env_remove("FAKE_MICROPHONE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(wav) = microphone {
            command.env("FAKE_MICROPHONE", wav);
        }
        let mut child = command
            .spawn()
            .context(|| format!("start node {}", driver_script().display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, replies) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::Builder::new()
                .name("browser-driver-stdout".into())
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })
                .context(|| "start the driver's reader thread".into())?;
        }
        Ok(Browser {
            inner: Mutex::new(Inner {
                child,
                stdin,
                replies,
                next_id: 1,
                status: None,
                pages: Vec::new(),
                failure_shots: 0,
            }),
            log_path,
            dir,
        })
    }

    /// Opens `url` in a new page called `page`, in its own browser context (no shared cookies,
    /// storage or permissions with other pages), with microphone permission. Returns the final
    /// URL and title as `{"url", "title"}`.
    pub fn open(&self, page: &str, url: &str) -> Result<Value> {
        let value = self.command(
            "open",
            json!({"page": page, "url": url, "timeoutMs": millis(OPEN_TIMEOUT)}),
            OPEN_TIMEOUT + REPLY_SLACK,
        )?;
        self.lock().pages.push(page.to_owned());
        Ok(value)
    }

    /// Clicks the element `data-testid=testid` once it is visible and enabled (waits up to
    /// 10 s).
    pub fn click(&self, page: &str, testid: &str) -> Result<()> {
        self.element_command("click", page, testid, json!({}))
            .map(drop)
    }

    /// Replaces the value of the input `data-testid=testid`.
    pub fn fill(&self, page: &str, testid: &str, value: &str) -> Result<()> {
        self.element_command("fill", page, testid, json!({"value": value}))
            .map(drop)
    }

    /// Picks the option with this value (or label) of the `<select>` `data-testid=testid`; for
    /// any other input (such as the phone's extension field with its datalist) it fills.
    pub fn select(&self, page: &str, testid: &str, value: &str) -> Result<()> {
        self.element_command("select", page, testid, json!({"value": value}))
            .map(drop)
    }

    /// The value of an input, else the visible text of the element `data-testid=testid`.
    pub fn text(&self, page: &str, testid: &str) -> Result<String> {
        let value = self.command(
            "text",
            json!({"page": page, "testid": testid}),
            QUICK_TIMEOUT,
        )?;
        as_string("text", value)
    }

    /// Waits until the text of `data-testid=testid` matches the JavaScript regular expression
    /// `pattern` and returns it; on timeout the error carries the last text seen.
    pub fn wait_text(
        &self,
        page: &str,
        testid: &str,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String> {
        let value = self.command(
            "waitText",
            json!({"page": page, "testid": testid, "pattern": pattern, "timeoutMs": millis(timeout)}),
            timeout + REPLY_SLACK,
        )?;
        as_string("waitText", value)
    }

    /// Whether `data-testid=testid` exists and is visible now (no waiting).
    pub fn visible(&self, page: &str, testid: &str) -> Result<bool> {
        let value = self.command(
            "visible",
            json!({"page": page, "testid": testid}),
            QUICK_TIMEOUT,
        )?;
        value.as_bool().ok_or_else(|| {
            Error::Invalid(format!(
                "{PROGRAM}: visible answered {value}, not a boolean"
            ))
        })
    }

    /// Runs `js` in the page and returns its JSON value (`undefined` is `null`; a promise is
    /// awaited). `js` is an expression (`window.kubepbxPhone.state()`) or the body of an async
    /// function (`const s = await window.kubepbxPhone.stats(); return s.inbound;`).
    pub fn eval(&self, page: &str, js: &str) -> Result<Value> {
        self.command("eval", json!({"page": page, "js": js}), QUICK_TIMEOUT)
    }

    /// Saves a full-page PNG as `<artifacts_dir>/<name>.png` (folders created) and returns its
    /// path. `name` may contain `/` to group screenshots of a test.
    pub fn screenshot(&self, page: &str, name: &str) -> Result<PathBuf> {
        let path = artifacts_dir().join(format!("{}.png", name.trim_end_matches(".png")));
        self.command(
            "screenshot",
            json!({"page": page, "path": path}),
            QUICK_TIMEOUT,
        )?;
        Ok(path)
    }

    /// Clicks `data-testid=testid` and waits for the download it starts; saves the file as
    /// `path` (folders created). Returns the file name the page suggested (a link's
    /// `download` attribute, else the server's).
    pub fn download(&self, page: &str, testid: &str, path: &Path) -> Result<String> {
        let value = self.element_command("download", page, testid, json!({"path": path}))?;
        as_string("download", value)
    }

    /// Closes the page and its browser context.
    pub fn close(&self, page: &str) -> Result<()> {
        self.command("close", json!({"page": page}), QUICK_TIMEOUT)?;
        self.lock().pages.retain(|p| p != page);
        Ok(())
    }

    /// Logs the web phone on `page` in: fills extension and password, clicks "Log in". Wait
    /// for the outcome with `wait_text(page, "status", "^registered$", …)`.
    pub fn login(&self, page: &str, extension: &str, password: &str) -> Result<()> {
        self.fill(page, "extension", extension)?;
        self.fill(page, "password", password)?;
        self.click(page, "login")
    }

    /// The web phone's audio counters (`window.kubepbxPhone.stats()`):
    /// `{"inbound": {"packetsReceived", "bytesReceived", "audioLevel", "totalAudioEnergy"},
    ///   "outbound": {"packetsSent", "bytesSent", "audioLevel"}, "final"}`.
    pub fn phone_stats(&self, page: &str) -> Result<Value> {
        self.eval(page, "window.kubepbxPhone.stats()")
    }

    /// The pages opened and not closed.
    pub fn pages(&self) -> Vec<String> {
        self.lock().pages.clone()
    }

    /// Everything the driver logged so far: its own lines (`[driver] …`) and the pages'
    /// console messages and errors (`[<page>] …`).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The folder of the driver's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Closes the browser and waits for the driver to exit (killed after 3 s).
    pub fn quit(self) -> Result<ExitStatus> {
        let mut inner = self.lock();
        inner.shut_down()
    }

    /// Sends one command (`cmd` plus the fields of `args`) and waits up to `timeout` for its
    /// reply's value. The building block of the other methods, for commands they do not cover.
    pub fn command(&self, cmd: &str, args: Value, timeout: Duration) -> Result<Value> {
        let result = self.lock().round_trip(cmd, &args, timeout);
        match result {
            Ok(value) => Ok(value),
            Err(failure) => Err(self.describe(cmd, &args, timeout, failure)),
        }
    }

    fn element_command(&self, cmd: &str, page: &str, testid: &str, extra: Value) -> Result<Value> {
        let mut args =
            json!({"page": page, "testid": testid, "timeoutMs": millis(ELEMENT_TIMEOUT)});
        if let (Some(map), Value::Object(extra)) = (args.as_object_mut(), extra) {
            map.extend(extra);
        }
        self.command(cmd, args, ELEMENT_TIMEOUT + REPLY_SLACK)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns a failure into the harness error: what was asked, what the driver said, a
    /// screenshot of the page when there is one, and the driver's log.
    fn describe(&self, cmd: &str, args: &Value, timeout: Duration, failure: Failure) -> Error {
        let what = describe_command(cmd, args);
        let page = args.get("page").and_then(Value::as_str);
        let open = page.is_some_and(|p| self.lock().pages.iter().any(|o| o == p));
        let shot = match (&failure, page) {
            (Failure::Driver { .. }, Some(page))
                if open && cmd != "screenshot" && cmd != "close" =>
            {
                self.failure_screenshot(page, cmd)
            }
            _ => None,
        };
        let shot_line = shot.map_or_else(String::new, |p| format!("\nscreenshot: {}", p.display()));
        let log = format!("{}{shot_line}", tail(&self.log(), LOG_LINES));
        match failure {
            Failure::Driver {
                error,
                timed_out: true,
                last,
            } => Error::Timeout {
                program: PROGRAM,
                what: match last {
                    Some(Value::String(last)) => format!("{what} (last text: {last:?})"),
                    Some(_) => format!("{what} (no such element)"),
                    None => format!("{what} ({})", error.lines().next().unwrap_or_default()),
                },
                // The driver's own wait, when the command named one.
                timeout: args
                    .get("timeoutMs")
                    .and_then(Value::as_u64)
                    .map_or(timeout, Duration::from_millis),
                log,
            },
            Failure::Driver { error, .. } => Error::Invalid(format!(
                "{PROGRAM}: {what} failed: {error}{shot_line}\ndriver log:\n{}",
                tail(&self.log(), LOG_LINES)
            )),
            Failure::NoReply => Error::Timeout {
                program: PROGRAM,
                what: format!("a reply to {what}"),
                timeout,
                log,
            },
            Failure::Exited(status) => Error::Exited {
                program: PROGRAM,
                status,
                log: format!("(while waiting for {what})\n{log}"),
            },
            Failure::Io(e) => e,
            Failure::BadReply(line) => Error::Invalid(format!(
                "{PROGRAM}: {what}: unreadable reply {line:?}\ndriver log:\n{log}"
            )),
        }
    }

    /// A screenshot after a failed command, named after the running test; None if it fails too.
    fn failure_screenshot(&self, page: &str, cmd: &str) -> Option<PathBuf> {
        let n = {
            let mut inner = self.lock();
            inner.failure_shots += 1;
            inner.failure_shots
        };
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-")
            .replace(
                |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "_",
            );
        let path = artifacts_dir().join(format!("{test}/failure-{n}-{page}-{cmd}.png"));
        let args = json!({"page": page, "path": path});
        self.lock()
            .round_trip("screenshot", &args, QUICK_TIMEOUT)
            .ok()
            .map(|_| path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.lock().shut_down();
    }
}

/// Why a command did not give a value.
enum Failure {
    /// The driver answered `ok: false` (without the command's name in front of `error`);
    /// `last`: the last text a waitText saw.
    Driver {
        error: String,
        timed_out: bool,
        last: Option<Value>,
    },
    /// No reply in time.
    NoReply,
    /// The driver exited.
    Exited(ExitStatus),
    /// Writing the command failed.
    Io(Error),
    /// A reply line that is not the expected JSON.
    BadReply(String),
}

impl Inner {
    fn round_trip(&mut self, cmd: &str, args: &Value, timeout: Duration) -> Result<Value, Failure> {
        if let Some(status) = self.exited() {
            return Err(Failure::Exited(status));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "cmd": cmd});
        if let (Some(map), Some(fields)) = (message.as_object_mut(), args.as_object()) {
            for (k, v) in fields {
                map.insert(k.clone(), v.clone());
            }
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Failure::Io(Error::Invalid(format!(
                "{PROGRAM}: already shut down"
            ))));
        };
        let line = format!("{message}\n");
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            return Err(match self.exited() {
                Some(status) => Failure::Exited(status),
                None => Failure::Io(Error::io(format!("send {cmd} to the {PROGRAM}"), e)),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.replies.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => return Err(Failure::NoReply),
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: the driver is exiting; give it a moment to be reaped.
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until {
                        if let Some(status) = self.exited() {
                            return Err(Failure::Exited(status));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Err(Failure::NoReply);
                }
            };
            let Ok(reply) = serde_json::from_str::<Value>(&line) else {
                return Err(Failure::BadReply(line));
            };
            // A late reply to a command given up on earlier.
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if reply.get("ok").and_then(Value::as_bool) == Some(true) {
                return Ok(reply.get("value").cloned().unwrap_or(Value::Null));
            }
            let error = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no error text)");
            let error = error
                .strip_prefix(&format!("{cmd}: "))
                .unwrap_or(error)
                .to_owned();
            let timed_out = reply.get("timeout").and_then(Value::as_bool) == Some(true);
            let last = reply.get("last").cloned();
            return Err(Failure::Driver {
                error,
                timed_out,
                last,
            });
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Closes stdin (the driver closes Chromium and exits), waits, kills if needed.
    fn shut_down(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        self.pages.clear();
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .context(|| format!("wait for the {PROGRAM}"))?;
        self.status = Some(status);
        Ok(status)
    }
}

/// `waitText a/status /^registered$/` and the like, for error messages.
fn describe_command(cmd: &str, args: &Value) -> String {
    let field = |name: &str| args.get(name).and_then(Value::as_str);
    let mut out = cmd.to_owned();
    if let Some(page) = field("page") {
        out.push_str(&format!(" page {page:?}"));
    }
    if let Some(testid) = field("testid") {
        out.push_str(&format!(" [data-testid={testid}]"));
    }
    if let Some(pattern) = field("pattern") {
        out.push_str(&format!(" /{pattern}/"));
    }
    if let Some(url) = field("url") {
        out.push_str(&format!(" {url}"));
    }
    if let Some(js) = field("js") {
        out.push_str(&format!(" `{js}`"));
    }
    out
}

fn as_string(cmd: &str, value: Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(Error::Invalid(format!(
            "{PROGRAM}: {cmd} answered {other}, not a string"
        ))),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_described_by_their_target() {
        let args = json!({"page": "a", "testid": "status", "pattern": "^registered$"});
        assert_eq!(
            describe_command("waitText", &args),
            "waitText page \"a\" [data-testid=status] /^registered$/"
        );
        assert_eq!(
            describe_command("eval", &json!({"page": "b", "js": "1+1"})),
            "eval page \"b\" `1+1`"
        );
    }

    #[test]
    fn paths_point_into_the_workspace() {
        assert!(driver_script().ends_with("web/tests/driver.mjs"));
        assert!(phone_dist().ends_with("web/dist/phone"));
        assert!(artifacts_dir().ends_with("test-artifacts"));
    }
}
