//! What a follower keeps of a prefix (see `follow`): every record, or a window of the `n`
//! records with the greatest keys — the newest, where keys sort by time, as finished calls' do.
//!
//! A window is filled by one read of the newest `n` keys and kept current by the watch:
//!
//! - a put at or above the window's *floor* enters it, and pushes the oldest record out once
//!   there are more than `n`; a put below the floor is not kept (records that were never read
//!   may lie between it and the window);
//! - a deletion of a record the window holds is applied; when etcd holds more records than the
//!   window (there is a floor), the one that now belongs in the window was never read, so the
//!   follower reads the window again.
//!
//! The floor is the smallest key read or pushed out while the prefix holds more than the
//! window; `None` while the window holds every record of the prefix.

use std::collections::BTreeMap;

/// How many records of a prefix a follower keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Every record.
    All,
    /// The `n` (at least 1) with the greatest keys.
    Newest(usize),
}

/// The bounds of the records a follower holds (the records themselves are its map).
#[derive(Debug)]
pub(super) struct Window {
    keep: Keep,
    /// Keys below it are not kept; `None` while the map holds every record of the prefix.
    floor: Option<String>,
}

impl Window {
    /// A window keeping `keep` (`Newest(0)` keeps one record).
    pub(super) fn new(keep: Keep) -> Window {
        let keep = match keep {
            Keep::Newest(n) => Keep::Newest(n.max(1)),
            Keep::All => Keep::All,
        };
        Window { keep, floor: None }
    }

    /// The most records a read should return (`None`: all of them).
    pub(super) fn limit(&self) -> Option<usize> {
        match self.keep {
            Keep::All => None,
            Keep::Newest(n) => Some(n),
        }
    }

    /// After a read: `cut_at` is the smallest key read when the prefix held more records than
    /// the read returned, `None` when the read returned every record.
    pub(super) fn read(&mut self, cut_at: Option<String>) {
        self.floor = cut_at;
    }

    /// Applies a put of `record` under `id` (the rest of its key).
    pub(super) fn put<T>(&mut self, map: &mut BTreeMap<String, T>, id: String, record: T) {
        if self.floor.as_ref().is_some_and(|floor| id < *floor) {
            return;
        }
        map.insert(id, record);
        if let Keep::Newest(n) = self.keep {
            while map.len() > n {
                self.floor = map.pop_first().map(|(oldest, _)| oldest);
            }
        }
    }

    /// Applies the deletion of `id` (or a value under it that does not decode); `true` when the
    /// window must be read again to hold what it should.
    pub(super) fn remove<T>(&mut self, map: &mut BTreeMap<String, T>, id: &str) -> bool {
        map.remove(id).is_some() && self.floor.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(map: &BTreeMap<String, u32>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    #[test]
    fn every_record_is_kept_without_a_bound() {
        let mut window = Window::new(Keep::All);
        let mut map = BTreeMap::new();
        for (i, id) in ["b", "a", "c"].into_iter().enumerate() {
            window.put(&mut map, id.to_owned(), u32::try_from(i).unwrap());
        }
        assert!(!window.remove(&mut map, "b"), "no reread without a bound");
        assert_eq!(keys(&map), ["a", "c"]);
        assert_eq!(window.limit(), None);
    }

    #[test]
    fn the_newest_stay_and_the_oldest_are_pushed_out() {
        let mut window = Window::new(Keep::Newest(2));
        assert_eq!(window.limit(), Some(2));
        let mut map = BTreeMap::new();
        window.read(None);
        window.put(&mut map, "2".to_owned(), 2);
        window.put(&mut map, "4".to_owned(), 4);
        window.put(&mut map, "3".to_owned(), 3);
        assert_eq!(keys(&map), ["3", "4"], "2 was pushed out");
        // Older than what was pushed out: never among the newest two.
        window.put(&mut map, "1".to_owned(), 1);
        assert_eq!(keys(&map), ["3", "4"]);
        // A change of a record the window holds is kept.
        window.put(&mut map, "4".to_owned(), 40);
        assert_eq!(map["4"], 40);
        // 2 is still in etcd: deleting 4 leaves the window one short of it.
        assert!(window.remove(&mut map, "4"));
        assert_eq!(keys(&map), ["3"]);
    }

    #[test]
    fn a_window_that_holds_everything_needs_no_reread() {
        let mut window = Window::new(Keep::Newest(3));
        let mut map = BTreeMap::from([("1".to_owned(), 1), ("2".to_owned(), 2)]);
        window.read(None);
        assert!(!window.remove(&mut map, "2"));
        window.put(&mut map, "0".to_owned(), 0);
        assert_eq!(
            keys(&map),
            ["0", "1"],
            "older records enter while there is room"
        );
        assert!(!window.remove(&mut map, "9"), "not held: nothing to do");
    }

    #[test]
    fn below_the_floor_of_a_read_nothing_enters_and_deletions_cost_nothing() {
        let mut window = Window::new(Keep::Newest(2));
        // The read returned 5 and 7 (a corrupt 6 was skipped); 4 and older exist.
        let mut map = BTreeMap::from([("5".to_owned(), 5), ("7".to_owned(), 7)]);
        window.read(Some("5".to_owned()));
        window.put(&mut map, "3".to_owned(), 3);
        assert_eq!(keys(&map), ["5", "7"], "4 may lie between: 3 is not kept");
        assert!(!window.remove(&mut map, "4"), "trimming below the window");
        window.put(&mut map, "8".to_owned(), 8);
        assert_eq!(keys(&map), ["7", "8"]);
        assert!(window.remove(&mut map, "7"), "5 now belongs in the window");
    }

    #[test]
    fn a_window_of_nothing_keeps_one() {
        let mut window = Window::new(Keep::Newest(0));
        let mut map = BTreeMap::new();
        window.put(&mut map, "1".to_owned(), 1);
        window.put(&mut map, "2".to_owned(), 2);
        assert_eq!(keys(&map), ["2"]);
        assert_eq!(window.limit(), Some(1));
    }
}
