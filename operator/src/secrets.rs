//! The password Secrets the operator has read, so a reconcile caused by a registration (which
//! happens all the time) does not read the Secret from the API server again.
//!
//! An entry is dropped whenever the Secret watch reports any change to that Secret (created,
//! updated, deleted); the next reconcile reads it afresh. A read that started before such a
//! change is not kept (each Secret has an epoch that every change moves), so a stale value never
//! outlives the change that made it stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A Secret's data as read: `None` when it did not exist.
pub type Data = Option<BTreeMap<String, Vec<u8>>>;

/// `(namespace, name)` of a Secret.
pub type SecretKey = (String, String);

/// Cached Secret data, invalidated by the Secret watch.
#[derive(Debug, Default)]
pub struct SecretCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    epochs: HashMap<SecretKey, u64>,
    entries: HashMap<SecretKey, (u64, Data)>,
}

/// Proof of when a read started: [`SecretCache::keep`] stores the result only if nothing
/// changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    key: SecretKey,
    epoch: u64,
}

impl SecretCache {
    /// The cached data of `key`, or a ticket to read it.
    pub fn get(&self, key: &SecretKey) -> Result<Data, Ticket> {
        let inner = self.lock();
        let epoch = inner.epochs.get(key).copied().unwrap_or(0);
        match inner.entries.get(key) {
            Some((at, data)) if *at == epoch => Ok(data.clone()),
            _ => Err(Ticket {
                key: key.clone(),
                epoch,
            }),
        }
    }

    /// Stores what a read begun with `ticket` found, unless the Secret changed meanwhile.
    pub fn keep(&self, ticket: Ticket, data: Data) {
        let mut inner = self.lock();
        if inner.epochs.get(&ticket.key).copied().unwrap_or(0) == ticket.epoch {
            inner.entries.insert(ticket.key, (ticket.epoch, data));
        }
    }

    /// The Secret changed (or appeared, or went away): forget it.
    pub fn changed(&self, key: &SecretKey) {
        let mut inner = self.lock();
        *inner.epochs.entry(key.clone()).or_default() += 1;
        inner.entries.remove(key);
    }

    /// Forgets a Secret no Extension refers to any more.
    pub fn forget(&self, key: &SecretKey) {
        let mut inner = self.lock();
        inner.entries.remove(key);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        ("office".into(), "ext-1001".into())
    }

    fn data(pw: &str) -> Data {
        Some(BTreeMap::from([(
            "password".into(),
            pw.as_bytes().to_vec(),
        )]))
    }

    #[test]
    fn a_read_is_kept_until_the_secret_changes() {
        let cache = SecretCache::default();
        let ticket = cache.get(&key()).expect_err("nothing cached yet");
        cache.keep(ticket, data("one"));
        assert_eq!(cache.get(&key()), Ok(data("one")));
        cache.changed(&key());
        let ticket = cache.get(&key()).expect_err("changed");
        cache.keep(ticket, None);
        assert_eq!(
            cache.get(&key()),
            Ok(None),
            "a missing Secret is remembered too"
        );
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_kept() {
        let cache = SecretCache::default();
        let ticket = cache.get(&key()).expect_err("nothing cached yet");
        cache.changed(&key());
        cache.keep(ticket, data("stale"));
        assert!(cache.get(&key()).is_err(), "the stale read was dropped");
    }
}
