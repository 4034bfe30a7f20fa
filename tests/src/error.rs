//! The one error type of the harness.
//!
//! Every variant that concerns a child process carries the tail of that process's output, so a
//! failing test prints why the PBX, sipp or baresip did not do what was expected without anyone
//! having to rerun it by hand.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What can go wrong while setting up or driving the processes of a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program the test needs is not installed or not built.
    #[error("{program} not found at {path}: {hint}")]
    ProgramNotFound {
        /// Which program.
        program: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// A child process exited while the harness still needed it.
    #[error("{program} exited early ({status}); its output:\n{log}")]
    Exited {
        /// Which program.
        program: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its stdout and stderr.
        log: String,
    },
    /// A child process did not reach the awaited state in time.
    #[error("{program}: {what} not reached within {timeout:?}; its output:\n{log}")]
    Timeout {
        /// Which program.
        program: &'static str,
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The tail of its stdout and stderr.
        log: String,
    },
    /// An HTTP request to the PBX failed or answered with an unexpected status.
    #[error("{method} {url}: {message}")]
    Http {
        /// `GET`, `DELETE`, …
        method: &'static str,
        /// The requested URL.
        url: String,
        /// The transport error, or the status and body.
        message: String,
    },
    /// A response body was not the expected JSON.
    #[error("GET {url}: body is not JSON ({source}): {body}")]
    Json {
        /// The requested URL.
        url: String,
        /// The body as received.
        body: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A value handed to the harness cannot be used (for example a password sipp cannot carry).
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Result with the harness [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}
