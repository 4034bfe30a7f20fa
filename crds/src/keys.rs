//! The key layout every store implementation uses (prefix configurable, default `/kubepbx`).
//!
//! | key | value |
//! |---|---|
//! | `{prefix}/ext/{domain}/{user}` | [`ExtensionRecord`](crate::ExtensionRecord) |
//! | `{prefix}/reg/{domain}/{user}/{binding-id}` | [`Binding`](crate::Binding) |
//! | `{prefix}/status/{domain}/{user}` | [`RegStatus`](crate::RegStatus) |
//!
//! Domains, users and binding ids never contain `/` (they are validated or generated), so a key
//! splits unambiguously.

use crate::records::{BindingKey, UserKey};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/kubepbx";

/// The kind of record a key holds, with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `ext/{domain}/{user}`
    Extension(UserKey),
    /// `reg/{domain}/{user}/{id}`
    Binding(BindingKey),
    /// `status/{domain}/{user}`
    Status(UserKey),
}

impl Key {
    /// The full key under `prefix`.
    pub fn to_path(&self, prefix: &str) -> String {
        match self {
            Key::Extension(u) => format!("{prefix}/ext/{}/{}", u.domain, u.user),
            Key::Binding(b) => {
                format!("{prefix}/reg/{}/{}/{}", b.user.domain, b.user.user, b.id)
            }
            Key::Status(u) => format!("{prefix}/status/{}/{}", u.domain, u.user),
        }
    }

    /// Parses a full key under `prefix`; `None` for keys of other kinds or other prefixes.
    pub fn parse(prefix: &str, path: &str) -> Option<Key> {
        let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["ext", domain, user] => Some(Key::Extension(UserKey::new(*domain, *user))),
            ["status", domain, user] => Some(Key::Status(UserKey::new(*domain, *user))),
            ["reg", domain, user, id] => Some(Key::Binding(BindingKey {
                user: UserKey::new(*domain, *user),
                id: (*id).to_owned(),
            })),
            _ => None,
        }
    }
}

/// Prefix of every binding of one extension (for range reads and deletes).
pub fn bindings_of(prefix: &str, user: &UserKey) -> String {
    format!("{prefix}/reg/{}/{}/", user.domain, user.user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = [
            Key::Extension(UserKey::new("pbx.example.com", "1001")),
            Key::Status(UserKey::new("pbx.example.com", "1001")),
            Key::Binding(BindingKey {
                user: UserKey::new("pbx.example.com", "1001"),
                id: "3f2a".into(),
            }),
        ];
        for k in keys {
            let path = k.to_path(DEFAULT_PREFIX);
            assert_eq!(Key::parse(DEFAULT_PREFIX, &path), Some(k));
        }
        assert_eq!(Key::parse(DEFAULT_PREFIX, "/other/ext/a/b"), None);
        assert_eq!(Key::parse(DEFAULT_PREFIX, "/kubepbx/ext/a"), None);
        assert_eq!(bindings_of("/p", &UserKey::new("d", "u")), "/p/reg/d/u/");
    }
}
