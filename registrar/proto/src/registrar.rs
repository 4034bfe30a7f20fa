//! REGISTER processing after authentication (RFC 3261 §10.3 steps 6–8, RFC 5626 §6).
//!
//! [`process`] is a pure function: the request, the extension, its current bindings, the flow
//! it arrived on and the time go in; either the binding changes and the contact list for the 200
//! come out, or a rejection with its status code and failure reason. The endpoint applies the
//! changes to its location view and sends them to the store.
//!
//! Rules:
//! - `Contact: *` with `Expires: 0` removes every binding; `*` in any other form is a 400.
//! - Each contact's lifetime is its `expires` parameter, else the `Expires` header, else the
//!   default; lifetimes above the maximum are lowered to it; 0 removes; a lifetime below
//!   `Min-Expires` is answered with 423.
//! - A device that sends `+sip.instance` (and `reg-id`) is identified by them, so its new contact
//!   replaces its old binding (RFC 5626); otherwise the contact URI identifies the binding.
//! - A REGISTER with the same Call-ID as the binding and a CSeq not higher is out of order: 500.
//! - More bindings than `maxContacts` afterwards: 403, nothing changed.
//! - A contact naming a private address while the request came from another address is flagged
//!   as behind NAT; requests are then sent to the source address (they always are).

use crate::flow::Flow;
use crate::location::CachedBinding;
use crate::message::Request;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::print::AppendCtx;
use kubepbx_api::records::{Binding, BindingKey, ExtensionRecord, FailureReason};
use kubepbx_api::time::UnixMillis;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Registration lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest lifetime accepted (answered with 423 below it).
    pub min_expires: u32,
    /// Longest lifetime granted.
    pub max_expires: u32,
    /// Lifetime when the phone asks for none.
    pub default_expires: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
        }
    }
}

/// Everything [`process`] looks at.
#[derive(Debug)]
pub struct RegisterInput<'a> {
    /// The REGISTER.
    pub request: &'a Request,
    /// Its Call-ID.
    pub call_id: &'a str,
    /// Its CSeq number.
    pub cseq: u32,
    /// The flow it arrived on.
    pub flow: Flow,
    /// The authenticated extension.
    pub record: &'a ExtensionRecord,
    /// The extension's current bindings.
    pub current: &'a [CachedBinding],
    /// This replica's id (owner of the flow).
    pub replica: &'a str,
    /// Wall-clock time.
    pub now: UnixMillis,
    /// Lifetimes.
    pub config: RegistrarConfig,
}

/// One change to an extension's bindings.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new binding, or one whose contact, flow or device data changed.
    Put(Arc<Binding>),
    /// Only the lifetime (and CSeq) changed.
    Refresh {
        /// The binding.
        key: BindingKey,
        /// New expiry.
        expires_at: UnixMillis,
        /// CSeq of the refreshing REGISTER.
        cseq: u32,
    },
    /// The binding is removed.
    Remove(BindingKey),
}

/// A successful REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Changes to apply, in order.
    pub changes: Vec<Change>,
    /// `Contact` header values for the 200 OK: every binding after the changes, with `expires`.
    pub contacts: Vec<String>,
    /// Bindings flagged as behind NAT by this request: (contact, source).
    pub nat: Vec<(String, String)>,
    /// Whether the request was a query (no Contact).
    pub query: bool,
}

/// A rejected REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: String,
    /// Failure to record on the extension, if the rejection is one.
    pub failure: Option<FailureReason>,
    /// Detail for the status and logs.
    pub detail: String,
    /// `Min-Expires` value for a 423.
    pub min_expires: Option<u32>,
}

impl Rejected {
    fn new(code: u16, reason: &str, failure: Option<FailureReason>, detail: String) -> Self {
        Rejected {
            code,
            reason: reason.to_owned(),
            failure,
            detail,
            min_expires: None,
        }
    }
}

/// Decides what a REGISTER does to the extension's bindings.
pub fn process(input: &RegisterInput<'_>) -> Result<Accepted, Rejected> {
    let header_expires = match input.request.header(&Name::EXPIRES) {
        None => None,
        Some(v) => Some(v.trim().parse::<u32>().map_err(|_| {
            Rejected::new(
                400,
                "Malformed Expires Header",
                Some(FailureReason::Malformed),
                format!("Expires: {v}"),
            )
        })?),
    };
    let raw_contacts: Vec<&str> = input
        .request
        .headers
        .get_raw(&Name::CONTACT)
        .map(|v| v.as_str())
        .collect();
    let live: Vec<&CachedBinding> = input
        .current
        .iter()
        .filter(|c| c.is_live(input.now))
        .collect();

    if raw_contacts.is_empty() {
        return Ok(Accepted {
            changes: Vec::new(),
            contacts: contact_list(&live, &[], input.now),
            nat: Vec::new(),
            query: true,
        });
    }
    if raw_contacts.iter().any(|c| c.trim() == "*") {
        if raw_contacts.len() != 1 || header_expires != Some(0) {
            return Err(Rejected::new(
                400,
                "Invalid Wildcard Contact",
                Some(FailureReason::Malformed),
                "Contact: * needs Expires: 0 and no other contact".to_owned(),
            ));
        }
        let changes = live
            .iter()
            .map(|c| Change::Remove(c.binding.key()))
            .collect();
        return Ok(Accepted {
            changes,
            contacts: Vec::new(),
            nat: Vec::new(),
            query: false,
        });
    }

    let contacts: Vec<Contact> = input
        .request
        .headers
        .get::<Vec<Contact>>(Name::CONTACT)
        .map_err(|_| {
            Rejected::new(
                400,
                "Malformed Contact Header",
                Some(FailureReason::Malformed),
                raw_contacts.join(", "),
            )
        })?;
    let user_agent = input
        .request
        .header(&Name::USER_AGENT)
        .map(|v| v.to_string());

    let mut changes = Vec::new();
    let mut nat = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for contact in &contacts {
        let uri = contact.uri.uri.default_print_ctx().to_string();
        let instance = contact
            .params
            .get_val("+sip.instance")
            .map(|v| v.trim_matches('"').to_owned());
        let reg_id = contact
            .params
            .get_val("reg-id")
            .and_then(|v| v.parse::<u32>().ok());
        let id = binding_id(instance.as_deref(), reg_id, &uri);
        if touched.contains(&id) {
            continue; // the same contact twice in one request: first wins
        }
        touched.push(id.clone());

        let requested = match contact.params.get_val("expires") {
            Some(v) => v.parse::<u32>().map_err(|_| {
                Rejected::new(
                    400,
                    "Malformed Contact Expires",
                    Some(FailureReason::Malformed),
                    format!("expires={v}"),
                )
            })?,
            None => header_expires.unwrap_or(input.config.default_expires),
        };
        if requested != 0 && requested < input.config.min_expires {
            return Err(Rejected {
                min_expires: Some(input.config.min_expires),
                ..Rejected::new(
                    423,
                    "Interval Too Brief",
                    None,
                    format!(
                        "asked for {requested} s, minimum is {} s",
                        input.config.min_expires
                    ),
                )
            });
        }
        let expires = requested.min(input.config.max_expires);
        let existing = live.iter().find(|c| *c.binding.id == *id);
        if let Some(held) = existing
            && *held.binding.call_id == *input.call_id
            && input.cseq <= held.cseq
        {
            return Err(Rejected::new(
                500,
                "Out Of Order Request",
                None,
                format!(
                    "CSeq {} is not above {} for this Call-ID",
                    input.cseq, held.cseq
                ),
            ));
        }
        if expires == 0 {
            if let Some(held) = existing {
                changes.push(Change::Remove(held.binding.key()));
            }
            continue;
        }
        let expires_at = input.now.plus(Duration::from_secs(u64::from(expires)));
        let behind_nat = is_behind_nat(&contact.uri.uri.host_port.ip(), input.flow.remote.ip());
        if behind_nat {
            nat.push((uri.clone(), input.flow.remote.to_string()));
        }
        let binding = Binding {
            domain: input.record.domain.as_str().into(),
            user: input.record.extension.as_str().into(),
            id: id.into(),
            contact: uri.into(),
            q: contact.params.get_val("q").and_then(|q| parse_q(q)),
            source: input.flow.remote,
            transport: input.flow.transport,
            replica: input.replica.into(),
            flow: input.flow.id,
            user_agent: user_agent.as_deref().map(Into::into),
            instance: instance.map(String::into_boxed_str),
            reg_id,
            call_id: input.call_id.into(),
            cseq: input.cseq,
            registered_at: existing.map_or(input.now, |h| h.binding.registered_at),
            expires_at,
            nat: behind_nat,
        };
        match existing {
            Some(held) if held.binding.same_except_lifetime(&binding) => {
                changes.push(Change::Refresh {
                    key: binding.key(),
                    expires_at,
                    cseq: input.cseq,
                })
            }
            _ => changes.push(Change::Put(Arc::new(binding))),
        }
    }

    let removed = |id: &str| {
        changes
            .iter()
            .any(|c| matches!(c, Change::Remove(k) if k.id == id))
    };
    let kept = live
        .iter()
        .filter(|c| !removed(&c.binding.id) && !touched.iter().any(|t| **t == *c.binding.id))
        .count();
    let added = changes
        .iter()
        .filter(|c| !matches!(c, Change::Remove(_)))
        .count();
    let max = usize::try_from(input.record.max_contacts).unwrap_or(usize::MAX);
    if kept + added > max {
        return Err(Rejected::new(
            403,
            "Too Many Contacts",
            Some(FailureReason::TooManyContacts),
            format!(
                "{} contacts would exceed maxContacts {}",
                kept + added,
                input.record.max_contacts
            ),
        ));
    }
    let contacts = contact_list(&live, &changes, input.now);
    Ok(Accepted {
        changes,
        contacts,
        nat,
        query: false,
    })
}

/// The binding id: from the device identity when given (RFC 5626), else from the contact URI.
pub fn binding_id(instance: Option<&str>, reg_id: Option<u32>, contact_uri: &str) -> String {
    let mut h = Sha256::new();
    match instance {
        Some(instance) => {
            h.update(b"i\0");
            h.update(instance.as_bytes());
            h.update(b"\0");
            h.update(reg_id.unwrap_or(0).to_be_bytes());
        }
        None => {
            h.update(b"c\0");
            h.update(contact_uri.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// Contact values for the 200: live bindings not removed, with their remaining lifetime.
fn contact_list(live: &[&CachedBinding], changes: &[Change], now: UnixMillis) -> Vec<String> {
    let mut out = Vec::new();
    for held in live {
        let id = &held.binding.id;
        if changes.iter().any(|c| match c {
            Change::Remove(k) | Change::Refresh { key: k, .. } => *k.id == **id,
            Change::Put(b) => b.id == *id,
        }) {
            continue;
        }
        out.push(contact_value(&held.binding, held.expires_at, now));
    }
    for change in changes {
        match change {
            Change::Put(b) => out.push(contact_value(b, b.expires_at, now)),
            Change::Refresh {
                key, expires_at, ..
            } => {
                if let Some(held) = live.iter().find(|c| *c.binding.id == *key.id) {
                    out.push(contact_value(&held.binding, *expires_at, now));
                }
            }
            Change::Remove(_) => {}
        }
    }
    out
}

fn contact_value(b: &Binding, expires_at: UnixMillis, now: UnixMillis) -> String {
    let remaining = now.until(expires_at).as_secs();
    let mut v = format!("<{}>;expires={remaining}", b.contact);
    if let Some(instance) = &b.instance {
        v.push_str(&format!(";+sip.instance=\"{instance}\""));
    }
    if let Some(reg_id) = b.reg_id {
        v.push_str(&format!(";reg-id={reg_id}"));
    }
    v
}

/// `q` as thousandths: "0.7" → 700, "1" → 1000.
fn parse_q(q: &str) -> Option<u16> {
    let value: f32 = q.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&value) {
        return None;
    }
    // In range 0..=1000 after the check above.
    Some((value * 1000.0).round() as u16)
}

/// A contact naming a private (RFC 1918, CGNAT, link-local, ULA) address that is not the source.
fn is_behind_nat(contact_ip: &Option<IpAddr>, source: IpAddr) -> bool {
    match contact_ip {
        Some(ip) if *ip != source => is_private(*ip),
        _ => false,
    }
}

/// Private-use address ranges a phone behind NAT typically advertises.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}
