//! The admin token: given with `--admin-token`, or generated on first start and kept in the
//! data directory (`admin-token`, mode 0600) so later starts reuse it.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rand::RngExt as _;
use std::io::Write as _;
use std::path::Path;

/// File name of the stored token inside the data directory.
pub const FILE: &str = "admin-token";

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--admin-token` / `KUBEPBX_ADMIN_TOKEN`.
    Flag,
    /// Read from the data directory.
    Stored,
    /// Generated now (print it once).
    Generated,
}

/// The token to use and where it came from.
pub fn load_or_create(data_dir: &Path, given: Option<&str>) -> Result<(String, Origin)> {
    if let Some(token) = given {
        let token = token.trim();
        if token.is_empty() {
            bail!("--admin-token is empty: give a token, or leave it out to generate one");
        }
        return Ok((token.to_owned(), Origin::Flag));
    }
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                bail!(
                    "{} is empty: delete it to generate a new token",
                    path.display()
                );
            }
            return Ok((token.to_owned(), Origin::Stored));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((token, Origin::Generated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = load_or_create(dir.path(), None).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert!(first.len() >= 32);
        let (again, origin) = load_or_create(dir.path(), None).unwrap();
        assert_eq!((again.as_str(), origin), (first.as_str(), Origin::Stored));
        let (flag, origin) = load_or_create(dir.path(), Some("s3cret")).unwrap();
        assert_eq!((flag.as_str(), origin), ("s3cret", Origin::Flag));
        assert!(load_or_create(dir.path(), Some("  ")).is_err());
    }
}
