//! Bringing a store in line with a manifest folder: the writes that turn the extensions held
//! into the extensions wanted. Used by `kubepbx up` on every change of its folder (and by
//! `kubepbx apply --prune` later).

use crate::records::{ExtensionRecord, UserKey};
use crate::store::Write;
use std::collections::{BTreeMap, HashMap};

/// What [`plan`] decided, for logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Writes to apply, in order: puts first, then deletes.
    pub writes: Vec<Write>,
    /// Extensions created.
    pub added: Vec<UserKey>,
    /// Extensions whose record changed (spec, domain or password).
    pub changed: Vec<UserKey>,
    /// Extensions removed (with their bindings).
    pub removed: Vec<UserKey>,
}

impl Plan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The writes turning `held` into `wanted`. With `prune`, extensions held but not wanted are
/// deleted; without, they are kept. Records equal to the held ones are not rewritten.
pub fn plan<'a>(
    held: impl IntoIterator<Item = &'a ExtensionRecord>,
    wanted: &[ExtensionRecord],
    prune: bool,
) -> Plan {
    let held: HashMap<UserKey, &ExtensionRecord> = held.into_iter().map(|r| (r.key(), r)).collect();
    let mut plan = Plan::default();
    let mut wanted_keys = BTreeMap::new();
    for record in wanted {
        let key = record.key();
        match held.get(&key) {
            Some(old) if *old == record => {}
            Some(_) => {
                plan.changed.push(key.clone());
                plan.writes.push(Write::PutExtension(record.clone()));
            }
            None => {
                plan.added.push(key.clone());
                plan.writes.push(Write::PutExtension(record.clone()));
            }
        }
        wanted_keys.insert(key, ());
    }
    if prune {
        let mut gone: Vec<&UserKey> = held
            .keys()
            .filter(|k| !wanted_keys.contains_key(*k))
            .collect();
        gone.sort();
        for key in gone {
            plan.removed.push(key.clone());
            plan.writes.push(Write::DeleteExtension(key.clone()));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingPolicy;
    use crate::ha1::Ha1Set;

    fn record(user: &str, password: &str) -> ExtensionRecord {
        ExtensionRecord {
            domain: "pbx.example.com".into(),
            extension: user.into(),
            display_name: None,
            ha1: Ha1Set::derive(user, "pbx.example.com", password),
            enabled: true,
            disabled_reason: None,
            max_contacts: 5,
            recording: RecordingPolicy::Never,
            source: format!("default/ext-{user}"),
            generation: 1,
        }
    }

    #[test]
    fn adds_changes_and_prunes() {
        let held = [
            record("1001", "a"),
            record("1002", "b"),
            record("1003", "c"),
        ];
        let wanted = [
            record("1001", "a"),
            record("1002", "new"),
            record("1004", "d"),
        ];
        let p = plan(&held, &wanted, true);
        let k = |u: &str| UserKey::new("pbx.example.com", u);
        assert_eq!(p.added, [k("1004")]);
        assert_eq!(p.changed, [k("1002")]);
        assert_eq!(p.removed, [k("1003")]);
        assert_eq!(
            p.writes,
            [
                Write::PutExtension(wanted[1].clone()),
                Write::PutExtension(wanted[2].clone()),
                Write::DeleteExtension(k("1003")),
            ]
        );
    }

    #[test]
    fn unchanged_is_empty_and_without_prune_nothing_is_deleted() {
        let held = [record("1001", "a"), record("1002", "b")];
        assert!(plan(&held, &held, true).is_empty());
        assert!(plan(&held, &held[..1], false).is_empty());
        assert_eq!(plan(&held, &held[..1], true).removed.len(), 1);
    }
}
