//! The header fields of a received message: each value kept as the bytes received (a slice of
//! the message's buffer), rows of one name together in order, names in order of first
//! appearance.
//!
//! Typed decoding uses `ezk-sip-types` ([`DecodeValues`]); the table is kubepbx's own. The
//! library's `Headers` prints every value into a new `String` when it is inserted and compares
//! names through all their spellings on each lookup, which cost about a fifth of the CPU of a
//! registration. Here a name is compared by its canonical spelling
//! ([`Name::as_print_str`]: `v` and `Via` are both `Via`, unknown names as received), ignoring
//! ASCII case — the same equality as the library's for every name a parser produces.

use bytesstr::BytesStr;
use ezk_sip_types::Name;
use ezk_sip_types::header::{DecodeValues, HeaderError};

/// The header fields of a message (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    entries: Vec<Entry>,
}

/// The values of one header name.
#[derive(Debug, Clone)]
struct Entry {
    /// [`name_key`] of `name`: lookups compare these first.
    key: u64,
    name: Name,
    first: BytesStr,
    /// Values after the first (most headers have one).
    more: Vec<BytesStr>,
}

impl Entry {
    fn values(&self) -> impl Iterator<Item = &BytesStr> {
        std::iter::once(&self.first).chain(&self.more)
    }
}

/// Whether two names are the same header (the library's `==` for parsed names, without
/// trying every spelling).
pub fn same(a: &Name, b: &Name) -> bool {
    let (a, b) = (a.as_print_str(), b.as_print_str());
    std::ptr::eq(a, b) || a.eq_ignore_ascii_case(b)
}

/// A hash of a name's canonical spelling, ASCII case folded (FNV-1a): equal for names that
/// are [`same`], so a lookup compares a number with each row and the names only where it
/// matches.
fn name_key(name: &Name) -> u64 {
    name.as_print_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
        })
}

impl Headers {
    /// An empty table with room for `capacity` names.
    pub fn with_capacity(capacity: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Adds a value after the others of its name, unless the name is new and the table already
    /// has `max_names` names (`false`: not added). Each call looks the name up among those
    /// before it, so the bound is also what keeps a crafted message's cost linear.
    pub fn insert_within(&mut self, name: Name, value: BytesStr, max_names: usize) -> bool {
        let names = self.entries.len();
        let key = name_key(&name);
        match self
            .entries
            .iter_mut()
            .find(|e| e.key == key && same(&e.name, &name))
        {
            Some(entry) => entry.more.push(value),
            None if names >= max_names => return false,
            None => self.entries.push(Entry {
                key,
                name,
                first: value,
                more: Vec::new(),
            }),
        }
        true
    }

    fn entry(&self, name: &Name) -> Option<&Entry> {
        let key = name_key(name);
        self.entries
            .iter()
            .find(|e| e.key == key && same(&e.name, name))
    }

    /// Whether the message has a header `name`.
    pub fn contains(&self, name: &Name) -> bool {
        self.entry(name).is_some()
    }

    /// The values of header `name` as received, in order (none when absent).
    pub fn get_raw(&self, name: &Name) -> impl Iterator<Item = &BytesStr> {
        self.entry(name).into_iter().flat_map(Entry::values)
    }

    /// Every value with its name: names in order of first appearance, each name's values
    /// together and in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &BytesStr)> {
        self.entries
            .iter()
            .flat_map(|e| e.values().map(move |v| (&e.name, v)))
    }

    /// Header `name` decoded as `H`; `None` when absent.
    pub fn try_get<H: DecodeValues>(&self, name: Name) -> Option<Result<H, HeaderError>> {
        let entry = self.entry(&name)?;
        Some(match H::decode(&mut entry.values()) {
            Ok((_, header)) => Ok(header),
            Err(_) => Err(HeaderError::malformed_adhoc(
                name,
                "value cannot be decoded",
            )),
        })
    }

    /// Header `name` decoded as `H`; an error when absent.
    pub fn get<H: DecodeValues>(&self, name: Name) -> Result<H, HeaderError> {
        self.try_get(name.clone())
            .unwrap_or_else(|| Err(HeaderError::missing(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezk_sip_types::header::typed::{Contact, Via};

    fn table(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::with_capacity(4);
        for (name, value) in lines {
            assert!(h.insert_within(
                Name::from(name.to_string()),
                BytesStr::from(value.to_string()),
                usize::MAX,
            ));
        }
        h
    }

    #[test]
    fn rows_of_a_name_stay_together_in_order() {
        let h = table(&[
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("From", "<sip:1001@x>;tag=1"),
            ("v", "SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("X-Thing", "one"),
            ("x-THING", "two"),
        ]);
        let rows: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| (n.as_print_str().to_owned(), v.to_string()))
            .collect();
        assert_eq!(
            rows,
            [
                ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
                ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
                ("From", "<sip:1001@x>;tag=1"),
                ("X-Thing", "one"),
                ("X-Thing", "two"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(h.get_raw(&Name::VIA).count(), 2);
        assert_eq!(
            h.get_raw(&Name::from("x-thing".to_owned()))
                .map(BytesStr::as_str)
                .collect::<Vec<_>>(),
            ["one", "two"]
        );
    }

    #[test]
    fn a_full_table_takes_more_values_of_its_names_but_no_new_name() {
        let mut h = table(&[("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-A", "1")]);
        let value = |v: &str| BytesStr::from(v.to_owned());
        assert!(h.insert_within(Name::from("x-a".to_owned()), value("2"), 2));
        assert!(h.insert_within(Name::VIA, value("SIP/2.0/UDP b;branch=z9hG4bK2"), 2));
        assert!(!h.insert_within(Name::from("X-B".to_owned()), value("3"), 2));
        assert_eq!(h.iter().count(), 4);
        assert!(!h.contains(&Name::from("X-B".to_owned())));
        assert!(h.insert_within(Name::from("X-B".to_owned()), value("3"), 3));
    }

    #[test]
    fn compact_and_case_variants_are_the_same_name() {
        let h = table(&[("m", "<sip:1001@10.0.0.5>"), ("CALL-id", "abc")]);
        assert!(h.contains(&Name::CONTACT));
        assert_eq!(
            h.get_raw(&Name::CALL_ID).next().map(BytesStr::as_str),
            Some("abc")
        );
        assert!(!h.contains(&Name::TO));
        assert_eq!(h.get_raw(&Name::TO).count(), 0);
    }

    #[test]
    fn typed_values_decode_absent_and_broken_ones_say_so() {
        let h = table(&[
            ("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport"),
            ("Contact", "<sip:1001@10.0.0.5>, <sip:1001@10.0.0.6>"),
            ("Max-Forwards", "seventy"),
        ]);
        let via: Via = h.get(Name::VIA).expect("via");
        assert_eq!(
            via.params.get_val("branch").map(|b| b.as_str()),
            Some("z9hG4bKx")
        );
        let contacts: Vec<Contact> = h.get(Name::CONTACT).expect("contacts");
        assert_eq!(contacts.len(), 2);
        assert!(h.try_get::<Via>(Name::TO).is_none());
        assert!(h.get::<Via>(Name::TO).is_err_and(|e| e.is_missing()));
        let broken = h.try_get::<ezk_sip_types::header::typed::MaxForwards>(Name::MAX_FORWARDS);
        assert!(broken.is_some_and(|r| r.is_err_and(|e| !e.is_missing())));
    }
}
