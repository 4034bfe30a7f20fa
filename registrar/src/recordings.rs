//! Call recordings on disk, as the API lists and serves them.
//!
//! The media relay writes `<dir>/<id>.wav` (stereo 16-bit, caller left, callee right) and
//! `<dir>/<id>.json` (who, when, skipped codecs). The list is read from the metadata files on
//! each request: the directory is the only truth, so recordings of earlier runs show up too and
//! a file removed by hand disappears from the list.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One recording, as listed by `GET /api/v1/recordings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    /// The id (`GET /api/v1/recordings/{id}`).
    pub id: String,
    /// The caller's extension (left channel).
    pub from: String,
    /// The callee's extension (right channel).
    pub to: String,
    /// When recording started (RFC 3339).
    pub started_at: String,
    /// When it ended; `null` while the call lasts.
    pub ended_at: Option<String>,
    /// Size of the WAV file.
    pub size_bytes: u64,
    /// Payload types that could not be decoded (not G.711) and are silent in the file.
    pub skipped_payloads: Vec<String>,
}

/// The metadata file's fields we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    id: String,
    caller: String,
    callee: String,
    started_at: String,
    ended_at: Option<String>,
    #[serde(default)]
    skipped_payloads: Vec<String>,
}

/// Whether `id` can name a recording: the relay's rule for file names, so an id from a URL
/// cannot leave the directory.
pub use kubepbx_media::recorder::valid_id;

/// Every recording in `dir` with its metadata, newest first. A missing directory is an empty
/// list; unreadable metadata files are skipped.
pub fn list(dir: &Path) -> std::io::Result<Vec<RecordingView>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(meta) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Meta>(&bytes).ok())
            .filter(|m| valid_id(&m.id))
        else {
            tracing::debug!(file = %path.display(), "not a recording's metadata; skipped");
            continue;
        };
        let Ok(wav) = std::fs::metadata(wav_path(dir, &meta.id)) else {
            continue;
        };
        out.push(RecordingView {
            id: meta.id,
            from: meta.caller,
            to: meta.callee,
            started_at: meta.started_at,
            ended_at: meta.ended_at,
            size_bytes: wav.len(),
            skipped_payloads: meta.skipped_payloads,
        });
    }
    // RFC 3339 UTC timestamps of one format sort as text.
    out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// The WAV file of recording `id` (which must be [`valid_id`]).
pub fn wav_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.wav"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, id: &str, started: &str, wav: bool) {
        let meta = serde_json::json!({
            "id": id, "caller": "1001", "callee": "1002",
            "startedAt": started, "endedAt": null, "sampleRate": 8000,
        });
        std::fs::write(dir.join(format!("{id}.json")), meta.to_string()).unwrap();
        if wav {
            std::fs::write(dir.join(format!("{id}.wav")), b"RIFF....").unwrap();
        }
    }

    #[test]
    fn lists_recordings_with_a_wav_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", "2026-11-21T10:00:00Z", true);
        write(dir.path(), "b", "2026-11-21T11:00:00Z", true);
        write(dir.path(), "no-wav", "2026-11-21T12:00:00Z", false);
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        let list = list(dir.path()).unwrap();
        let ids: Vec<&str> = list.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(list[0].size_bytes, 8);
        assert_eq!(list[0].from, "1001");
        assert!(super::list(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn ids_cannot_leave_the_directory() {
        for bad in ["", "../x", ".hidden", "a/b", "a\\b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(valid_id("up-1795000000-1-1001-1002"));
    }
}
