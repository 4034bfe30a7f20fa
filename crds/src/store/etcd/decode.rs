//! Decoding etcd key-values into records (snapshots) and [`Event`]s (the watch).
//!
//! Keys are parsed with [`crate::keys`]; keys of other kinds under the prefix (`calls/`,
//! `replicas/`, …) are not this store's business and are skipped. A value that does not decode,
//! or that names another record than its key, is *corrupt*: the caller skips and counts it.
//!
//! A binding's expiry comes from its lease when the lease is a refresh lease (see
//! [`super::lease`]): the value was not rewritten by the refresh and still holds the old expiry.

use super::lease::BucketLease;
use crate::keys::Key;
use crate::records::{Binding, ExtensionRecord, RegStatus, UserKey};
use crate::store::Event;
use std::sync::Arc;

/// A decoded value.
#[derive(Debug)]
pub(super) enum Record {
    Extension(ExtensionRecord),
    Binding(Arc<Binding>),
    Status(UserKey, RegStatus),
}

/// What a key under `prefix` holds; `Ok(None)` for kinds this store does not handle.
pub(super) fn parse_key(prefix: &str, key: &[u8]) -> Result<Option<Key>, String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
    Ok(Key::parse(prefix, key))
}

/// The record stored under `key`, with the effective expiry of a binding.
pub(super) fn record(key: &Key, value: &[u8], lease: i64) -> Result<Record, String> {
    match key {
        Key::Extension(user) => {
            let record: ExtensionRecord = json(value)?;
            if record.key() != *user {
                return Err(format!("the value is the extension {}", record.key()));
            }
            Ok(Record::Extension(record))
        }
        Key::Binding(bkey) => {
            let mut binding: Binding = json(value)?;
            if binding.key() != *bkey {
                let other = binding.key();
                return Err(format!(
                    "the value is binding {} of {}",
                    other.id, other.user
                ));
            }
            if let Some(lease) = BucketLease::decode(lease).filter(|l| l.is_refresh()) {
                binding.expires_at = lease.end();
            }
            Ok(Record::Binding(Arc::new(binding)))
        }
        Key::Status(user) => Ok(Record::Status(user.clone(), json(value)?)),
    }
}

/// The event for a put of `value` under `key` on `lease`.
pub(super) fn put_event(key: Key, value: &[u8], lease: i64) -> Result<Event, String> {
    if let Key::Binding(bkey) = &key
        && let Some(lease) = BucketLease::decode(lease).filter(|l| l.is_refresh())
    {
        // A refresh: the value is unchanged, only the lease moved.
        return Ok(Event::BindingRefreshed {
            key: bkey.clone(),
            expires_at: lease.end(),
        });
    }
    Ok(match record(&key, value, lease)? {
        Record::Extension(r) => Event::ExtensionPut(r),
        Record::Binding(b) => Event::BindingPut(b),
        Record::Status(u, s) => Event::StatusPut(u, s),
    })
}

/// The event for a deletion of `key` (a status goes with its extension: no event of its own).
pub(super) fn delete_event(key: Key) -> Option<Event> {
    match key {
        Key::Extension(user) => Some(Event::ExtensionDeleted(user)),
        Key::Binding(bkey) => Some(Event::BindingDeleted(bkey)),
        Key::Status(_) => None,
    }
}

fn json<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("undecodable value: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::BindingKey;
    use crate::store::contract::{binding, record as ext_record};
    use crate::time::UnixMillis;
    use std::time::Duration;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn bkey(user: &str, id: &str) -> Key {
        Key::Binding(BindingKey {
            user: UserKey::new("d", user),
            id: id.to_owned(),
        })
    }

    #[test]
    fn keys_of_other_kinds_are_skipped_and_bad_keys_reported() {
        assert_eq!(parse_key("/p", b"/p/calls/abc"), Ok(None));
        assert_eq!(parse_key("/p", b"/p/replicas/registrar/r0"), Ok(None));
        assert!(parse_key("/p", b"/p/ext/d/\xff").is_err());
        assert_eq!(
            parse_key("/p", b"/p/ext/d/1001"),
            Ok(Some(Key::Extension(UserKey::new("d", "1001"))))
        );
    }

    #[test]
    fn a_refresh_lease_gives_the_expiry() {
        let b = binding("d", "1001", "a", NOW.plus(Duration::from_secs(60)));
        let value = serde_json::to_vec(&*b).expect("encode");
        let put = BucketLease::for_expiry(b.expires_at, NOW, Duration::from_secs(5), false);
        let refresh = BucketLease::for_expiry(
            NOW.plus(Duration::from_secs(3601)),
            NOW,
            Duration::from_secs(5),
            true,
        );
        assert_eq!(
            put_event(bkey("1001", "a"), &value, put.id()),
            Ok(Event::BindingPut(Arc::clone(&b)))
        );
        assert_eq!(
            put_event(bkey("1001", "a"), &value, refresh.id()),
            Ok(Event::BindingRefreshed {
                key: b.key(),
                expires_at: refresh.end()
            })
        );
        match record(&bkey("1001", "a"), &value, refresh.id()) {
            Ok(Record::Binding(got)) => {
                assert_eq!(got.expires_at, refresh.end());
                assert!(got.same_except_lifetime(&b));
            }
            other => panic!("{other:?}"),
        }
        // A lease kubepbx did not choose: the value's expiry stands.
        match record(&bkey("1001", "a"), &value, 0x694d_8b1e_3a5c_1234) {
            Ok(Record::Binding(got)) => assert_eq!(got, b),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_that_do_not_match_their_key_are_corrupt() {
        let b = binding("d", "1001", "a", NOW);
        let value = serde_json::to_vec(&*b).expect("encode");
        let err = record(&bkey("1001", "other"), &value, 0).expect_err("mismatch");
        assert!(err.contains("binding a of 1001@d"), "{err}");
        let value = serde_json::to_vec(&ext_record("d", "1001")).expect("encode");
        let err =
            record(&Key::Extension(UserKey::new("d", "1002")), &value, 0).expect_err("mismatch");
        assert!(err.contains("1001@d"), "{err}");
        let err =
            record(&Key::Status(UserKey::new("d", "1")), b"{not json", 0).expect_err("garbage");
        assert!(err.starts_with("undecodable value"), "{err}");
    }

    #[test]
    fn a_status_deletion_has_no_event() {
        assert_eq!(delete_event(Key::Status(UserKey::new("d", "1"))), None);
        assert_eq!(
            delete_event(Key::Extension(UserKey::new("d", "1"))),
            Some(Event::ExtensionDeleted(UserKey::new("d", "1")))
        );
    }
}
