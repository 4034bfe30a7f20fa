//! The location service's memory: extensions, their bindings and statuses, fed by the store.
//!
//! The endpoint reads only from here, so a REGISTER never waits for the store. It changes this
//! view itself when it decides (so the next request sees the change at once) and sends the same
//! change to the store; the store's echo of that change is then applied idempotently:
//! a binding put that equals the one held only keeps the later expiry, and refreshes never move
//! an expiry backwards.

use kubepbx_api::records::{Binding, BindingKey, ExtensionRecord, RegStatus, UserKey, UserKeyRef};
use kubepbx_api::store::{Event, Snapshot};
use kubepbx_api::time::UnixMillis;
use std::collections::HashMap;
use std::sync::Arc;

/// A binding as held in memory: the shared record plus what changes on every refresh.
#[derive(Debug, Clone)]
pub struct CachedBinding {
    /// The stored binding (its `expires_at` may be older than [`Self::expires_at`]).
    pub binding: Arc<Binding>,
    /// Current expiry, updated by refreshes.
    pub expires_at: UnixMillis,
    /// CSeq of the REGISTER that last touched the binding.
    pub cseq: u32,
}

impl CachedBinding {
    fn new(binding: Arc<Binding>) -> Self {
        CachedBinding {
            expires_at: binding.expires_at,
            cseq: binding.cseq,
            binding,
        }
    }

    /// Whether the binding is still valid at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        self.expires_at > now
    }
}

/// One extension's entry: its record, its bindings and its status, any of which may be
/// missing (a binding can arrive before its extension, a status can outlive a binding).
#[derive(Debug, Default)]
struct Entry {
    record: Option<Arc<ExtensionRecord>>,
    bindings: Vec<CachedBinding>,
    status: Option<RegStatus>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.record.is_none() && self.bindings.is_empty() && self.status.is_none()
    }
}

/// Extensions, bindings and statuses known to this replica: one map entry per extension, so
/// a binding costs its shared record and a few words, not another copy of the key.
#[derive(Debug, Default)]
pub struct Location {
    entries: hashbrown::HashMap<UserKey, Entry>,
    /// Domains with at least one extension, with their extension count.
    domains: HashMap<String, usize>,
    extension_count: usize,
    binding_count: usize,
}

impl Location {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything with a store snapshot (at start, and after [`Event::Resync`]).
    pub fn load(&mut self, snapshot: Snapshot) {
        *self = Location::new();
        for record in snapshot.extensions {
            self.put_extension(record);
        }
        for binding in snapshot.bindings {
            self.put_binding(binding);
        }
        for (key, status) in snapshot.statuses {
            self.set_status(key, status);
        }
    }

    /// Applies one store event. Returns `false` for [`Event::Resync`]: the caller must reload.
    pub fn apply(&mut self, event: Event) -> bool {
        match event {
            Event::ExtensionPut(record) => self.put_extension(record),
            Event::ExtensionDeleted(key) => self.delete_extension(&key),
            Event::BindingPut(binding) => self.put_binding(binding),
            Event::BindingRefreshed { key, expires_at } => {
                self.refresh_binding(&key, expires_at, None)
            }
            Event::BindingDeleted(key) => self.delete_binding(&key),
            Event::StatusPut(key, status) => self.set_status(key, status),
            Event::Resync => return false,
        }
        true
    }

    fn entry_mut(&mut self, domain: &str, user: &str) -> Option<&mut Entry> {
        self.entries.get_mut(&UserKeyRef { domain, user })
    }

    fn entry_or_insert(&mut self, domain: &str, user: &str) -> &mut Entry {
        self.entries
            .raw_entry_mut()
            .from_key(&UserKeyRef { domain, user })
            .or_insert_with(|| (UserKey::new(domain, user), Entry::default()))
            .1
    }

    /// Drops an entry left with nothing in it.
    fn tidy(&mut self, key: &UserKey) {
        if self.entries.get(key).is_some_and(Entry::is_empty) {
            self.entries.remove(key);
        }
    }

    /// The extension record of `key`.
    pub fn extension(&self, key: &UserKey) -> Option<&Arc<ExtensionRecord>> {
        self.entries.get(key)?.record.as_ref()
    }

    /// Whether any extension lives in `domain` (exact, lowercase).
    pub fn serves_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// Extensions with this user part in any domain (for "wrong domain" diagnostics).
    pub fn extensions_named<'a>(
        &'a self,
        user: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ExtensionRecord>> {
        self.extensions().filter(move |r| r.extension == user)
    }

    /// Every extension record.
    pub fn extensions(&self) -> impl Iterator<Item = &Arc<ExtensionRecord>> {
        self.entries.values().filter_map(|e| e.record.as_ref())
    }

    /// Live and expired-but-not-yet-swept bindings of an extension.
    pub fn bindings(&self, key: &UserKey) -> &[CachedBinding] {
        self.entries.get(key).map_or(&[], |e| e.bindings.as_slice())
    }

    /// Number of bindings held.
    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// Number of extensions held.
    pub fn extension_count(&self) -> usize {
        self.extension_count
    }

    /// The registration status of an extension.
    pub fn status(&self, key: &UserKey) -> Option<&RegStatus> {
        self.entries.get(key)?.status.as_ref()
    }

    /// Sets the registration status (the endpoint also writes it to the store).
    pub fn set_status(&mut self, key: UserKey, status: RegStatus) {
        self.entries.entry(key).or_default().status = Some(status);
    }

    /// Adds or replaces a binding. A binding equal to the one held keeps the later expiry.
    pub fn put_binding(&mut self, binding: Arc<Binding>) {
        let entry = self.entry_or_insert(&binding.domain, &binding.user);
        let list = &mut entry.bindings;
        match list.iter_mut().find(|c| c.binding.id == binding.id) {
            Some(held) => {
                if Arc::ptr_eq(&held.binding, &binding)
                    || held.binding.same_except_lifetime(&binding)
                {
                    held.expires_at = held.expires_at.max(binding.expires_at);
                    held.cseq = held.cseq.max(binding.cseq);
                } else {
                    *held = CachedBinding::new(binding);
                }
            }
            None => {
                // Most phones register one contact: no room for three more.
                list.reserve_exact(1);
                list.push(CachedBinding::new(binding));
                self.binding_count += 1;
            }
        }
    }

    /// Extends a binding (never shortens it: use delete for that).
    pub fn refresh_binding(&mut self, key: &BindingKey, expires_at: UnixMillis, cseq: Option<u32>) {
        if let Some(held) = self
            .entry_mut(&key.user.domain, &key.user.user)
            .and_then(|e| e.bindings.iter_mut().find(|c| *c.binding.id == *key.id))
        {
            held.expires_at = held.expires_at.max(expires_at);
            if let Some(cseq) = cseq {
                held.cseq = held.cseq.max(cseq);
            }
        }
    }

    /// Removes a binding.
    pub fn delete_binding(&mut self, key: &BindingKey) {
        if let Some(entry) = self.entry_mut(&key.user.domain, &key.user.user) {
            let before = entry.bindings.len();
            entry.bindings.retain(|c| *c.binding.id != *key.id);
            let removed = before - entry.bindings.len();
            if entry.bindings.is_empty() {
                entry.bindings = Vec::new();
            }
            self.binding_count -= removed;
            self.tidy(&key.user);
        }
    }

    /// Every binding (for listings).
    pub fn all_bindings(&self) -> impl Iterator<Item = &CachedBinding> {
        self.entries.values().flat_map(|e| e.bindings.iter())
    }

    fn put_extension(&mut self, record: ExtensionRecord) {
        let entry = self.entry_or_insert(&record.domain, &record.extension);
        let new = entry.record.is_none();
        let domain = new.then(|| record.domain.clone());
        entry.record = Some(Arc::new(record));
        if let Some(domain) = domain {
            self.extension_count += 1;
            *self.domains.entry(domain).or_default() += 1;
        }
    }

    fn delete_extension(&mut self, key: &UserKey) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        self.binding_count -= entry.bindings.len();
        if entry.record.is_some() {
            self.extension_count -= 1;
            if let Some(n) = self.domains.get_mut(&key.domain) {
                *n -= 1;
                if *n == 0 {
                    self.domains.remove(&key.domain);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubepbx_api::Transport;

    fn binding(id: &str, expires: u64) -> Arc<Binding> {
        Arc::new(Binding {
            domain: "d".into(),
            user: "1001".into(),
            id: id.into(),
            contact: format!("sip:1001@10.0.0.1;{id}").into(),
            q: None,
            source: "10.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            replica: "r".into(),
            flow: 0,
            user_agent: None,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            registered_at: UnixMillis(0),
            expires_at: UnixMillis(expires),
            nat: false,
        })
    }

    #[test]
    fn echo_of_own_put_does_not_shorten_a_refresh() {
        let mut l = Location::new();
        let b = binding("a", 1000);
        l.put_binding(b.clone());
        l.refresh_binding(&b.key(), UnixMillis(5000), Some(2));
        // The store's echo of the first put arrives late.
        l.apply(Event::BindingPut(Arc::new((*b).clone())));
        assert_eq!(l.bindings(&b.key().user)[0].expires_at, UnixMillis(5000));
        assert_eq!(l.binding_count(), 1);
    }

    #[test]
    fn a_changed_binding_replaces_the_old_one() {
        let mut l = Location::new();
        l.put_binding(binding("a", 5000));
        let mut moved = (*binding("a", 1000)).clone();
        moved.source = "10.0.0.9:5060".parse().unwrap();
        l.put_binding(Arc::new(moved));
        let held = &l.bindings(&UserKey::new("d", "1001"))[0];
        assert_eq!(held.binding.source.port(), 5060);
        assert_eq!(held.expires_at, UnixMillis(1000));
    }

    #[test]
    fn deleting_an_extension_drops_its_bindings() {
        let mut l = Location::new();
        let snapshot = Snapshot {
            bindings: vec![binding("a", 1), binding("b", 1)],
            ..Default::default()
        };
        l.load(snapshot);
        assert_eq!(l.binding_count(), 2);
        l.apply(Event::ExtensionDeleted(UserKey::new("d", "1001")));
        assert_eq!(l.binding_count(), 0);
        l.apply(Event::BindingDeleted(binding("a", 1).key()));
        assert_eq!(l.binding_count(), 0);
        assert!(!l.apply(Event::Resync));
    }
}
