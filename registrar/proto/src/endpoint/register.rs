//! REGISTER at the endpoint: domain, digest authentication, binding changes, status.
//!
//! 1. The `To` URI names the address of record. Its host must be a domain the PBX serves, or
//!    one of the PBX's own addresses/names (then the default domain applies); otherwise
//!    `404 Domain Not Served` (and `RealmMismatch` on the extension of that number, if only one
//!    domain has it).
//! 2. No credentials for the realm → `401` with two challenges (SHA-256, then MD5).
//!    Unknown user and wrong password are answered identically (a fresh `401`) but recorded
//!    with their own reason; stale nonces are re-challenged with `stale=true` and not counted as
//!    failures. Counted failures feed the ban table.
//! 3. Authenticated: disabled → 403; credentials of another user → 403; otherwise the bindings
//!    change as [`crate::registrar::process`] decides, the location view and the store are
//!    updated, and the 200 lists every contact.

use super::auth_flow::AuthKind;
use super::{Endpoint, EndpointEvent, Now, Reply};
use crate::ban::FailureVerdict;
use crate::builder::ResponseBuilder;
use crate::endpoint::events::BindingChange;
use crate::message::{Essentials, Request};
use crate::registrar::{self, Change, RegisterInput};
use ezk_sip_types::uri::SipUriUserPart;
use kubepbx_api::records::{
    Binding, ExtensionRecord, Failure, FailureReason, UserKey, Warning, WarningReason,
};
use kubepbx_api::store::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// A NAT warning is written to the store at most this often per extension and source.
const WARNING_WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// Identical failures (same reason and source) are written at most this often.
const FAILURE_WRITE_INTERVAL: Duration = Duration::from_secs(1);

impl Endpoint {
    pub(super) fn handle_register(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        e: &Essentials,
    ) {
        let source = reply.source.remote;
        let to = &e.to.uri.uri;
        let user = match &to.user_part {
            SipUriUserPart::User(u) => u.to_string(),
            _ => String::new(),
        };
        let host = to.host_port.host.to_string().to_ascii_lowercase();
        let Some(domain) = self.resolve_domain(&host) else {
            let detail = format!(
                "the phone registers to domain {host:?}, which this PBX does not serve; set the phone's domain to {:?}",
                self.config.default_domain
            );
            let owner = self.sole_extension_named(&user);
            self.fail(
                now,
                owner,
                FailureReason::RealmMismatch,
                source,
                detail,
                true,
            );
            self.respond(
                now,
                reply,
                ResponseBuilder::new(request, source, 404, "Domain Not Served"),
            );
            return;
        };
        let aor = UserKey::new(domain.clone(), user);

        let Some((auth_key, record)) =
            self.authenticate(now, reply, request, &domain, &aor, AuthKind::Registrar)
        else {
            return;
        };
        if auth_key.user != aor.user {
            let detail = format!(
                "authenticated as {} but registering {}; set the phone's authentication user to {}",
                auth_key.user, aor.user, aor.user
            );
            let owner = self
                .location
                .extension(&aor)
                .map(|r| r.key())
                .unwrap_or(auth_key);
            self.fail(
                now,
                Some(owner),
                FailureReason::WrongPassword,
                source,
                detail,
                true,
            );
            self.respond(
                now,
                reply,
                ResponseBuilder::new(request, source, 403, "Forbidden"),
            );
            return;
        }
        self.apply_register(now, reply, request, e, &record);
    }

    fn apply_register(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        e: &Essentials,
        record: &ExtensionRecord,
    ) {
        let source = reply.source.remote;
        let key = record.key();
        let input = RegisterInput {
            request,
            call_id: &e.call_id,
            cseq: e.cseq.seq,
            flow: reply.source,
            record,
            current: self.location.bindings(&key),
            replica: &self.config.replica,
            now: now.wall,
            config: self.config.registrar,
        };
        let accepted = match registrar::process(&input) {
            Ok(a) => a,
            Err(rejected) => {
                if let Some(reason) = rejected.failure {
                    self.fail(
                        now,
                        Some(key),
                        reason,
                        source,
                        rejected.detail.clone(),
                        false,
                    );
                }
                let mut builder =
                    ResponseBuilder::new(request, source, rejected.code, &rejected.reason);
                if let Some(min) = rejected.min_expires {
                    builder = builder.header("Min-Expires", min.to_string());
                }
                self.respond(now, reply, builder);
                return;
            }
        };
        for change in accepted.changes {
            match change {
                Change::Put(binding) => {
                    // A new Call-ID for the same device is stored but is not news: the
                    // phone (or a load generator) started a new registration session.
                    let change = match self
                        .location
                        .bindings(&key)
                        .iter()
                        .find(|c| c.binding.id == binding.id)
                    {
                        None => BindingChange::Added,
                        Some(held) if same_device(&held.binding, &binding) => {
                            BindingChange::Refreshed
                        }
                        Some(_) => BindingChange::Updated,
                    };
                    self.location.put_binding(binding.clone());
                    self.writes.push(Write::PutBinding(binding.clone()));
                    let expires = now.wall.until(binding.expires_at);
                    self.events.push_back(EndpointEvent::Registered {
                        binding,
                        change,
                        expires,
                    });
                }
                Change::Refresh {
                    key: bkey,
                    expires_at,
                    cseq,
                } => {
                    self.location.refresh_binding(&bkey, expires_at, Some(cseq));
                    if let Some(held) = self
                        .location
                        .bindings(&key)
                        .iter()
                        .find(|c| *c.binding.id == *bkey.id)
                    {
                        let expires = now.wall.until(expires_at);
                        let binding = held.binding.clone();
                        self.events.push_back(EndpointEvent::Registered {
                            binding,
                            change: BindingChange::Refreshed,
                            expires,
                        });
                    }
                    self.writes.push(Write::RefreshBinding {
                        key: bkey,
                        expires_at,
                    });
                }
                Change::Remove(bkey) => {
                    let contact = self
                        .location
                        .bindings(&key)
                        .iter()
                        .find(|c| *c.binding.id == *bkey.id)
                        .map(|c| c.binding.contact.to_string())
                        .unwrap_or_default();
                    self.location.delete_binding(&bkey);
                    self.writes.push(Write::DeleteBinding(bkey.clone()));
                    self.events.push_back(EndpointEvent::Unregistered {
                        key: bkey,
                        contact,
                        source,
                    });
                }
            }
        }
        let nat = accepted.nat.last().cloned();
        for (contact, real) in accepted.nat {
            self.events.push_back(EndpointEvent::NatDetected {
                user: key.clone(),
                contact,
                source: real,
            });
        }
        if !accepted.query {
            self.note_success(now, &key, source, nat);
        }
        self.stats.registers_ok += 1;
        let mut builder =
            ResponseBuilder::new(request, source, 200, "OK").header("Date", now.wall.to_sip_date());
        for contact in accepted.contacts {
            builder = builder.header("Contact", contact);
        }
        self.respond(now, reply, builder);
    }

    /// The domain a request for `host` belongs to.
    pub(super) fn resolve_domain(&self, host: &str) -> Option<String> {
        if self.location.serves_domain(host) || host == self.config.default_domain {
            return Some(host.to_owned());
        }
        let is_ours = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
            || host == "localhost"
            || self
                .config
                .local_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host));
        is_ours.then(|| self.config.default_domain.clone())
    }

    pub(super) fn sole_extension_named(&self, user: &str) -> Option<UserKey> {
        let mut found = self.location.extensions_named(user);
        match (found.next(), found.next()) {
            (Some(only), None) => Some(only.key()),
            _ => None,
        }
    }

    /// Records a classified failure: event, counters, the extension's status, the ban table.
    pub(super) fn fail(
        &mut self,
        now: Now,
        user: Option<UserKey>,
        reason: FailureReason,
        source: SocketAddr,
        detail: String,
        counts_for_ban: bool,
    ) {
        self.events.push_back(EndpointEvent::RegisterFailed {
            user: user.clone(),
            reason,
            source,
            detail: detail.clone(),
        });
        if counts_for_ban {
            self.count_failure(now, reason, source);
        } else {
            self.stats.failure(reason);
        }
        let Some(user) = user else { return };
        let mut status = self.location.status(&user).cloned().unwrap_or_default();
        let source = source.to_string();
        if let Some(last) = &status.last_failure
            && last.reason == reason
            && last.source == source
            && now.wall < last.at.plus(FAILURE_WRITE_INTERVAL)
        {
            return;
        }
        status.last_failure = Some(Failure {
            reason,
            at: now.wall,
            source,
            detail,
        });
        self.location.set_status(user.clone(), status.clone());
        self.writes.push(Write::PutStatus(user, status));
    }

    pub(super) fn count_failure(&mut self, now: Now, reason: FailureReason, source: SocketAddr) {
        self.stats.failure(reason);
        if let FailureVerdict::NowBanned(until) = self.bans.record_failure(source.ip(), now.mono) {
            self.stats.bans += 1;
            self.events.push_back(EndpointEvent::Banned {
                ip: source.ip(),
                duration: until - now.mono,
            });
        }
    }

    /// A successful registration is written nowhere but in its binding; only a NAT warning
    /// becomes part of the extension's status (at most once a minute per source).
    fn note_success(
        &mut self,
        now: Now,
        user: &UserKey,
        source: SocketAddr,
        nat: Option<(String, String)>,
    ) {
        let Some((contact, real)) = nat else { return };
        let mut status = self.location.status(user).cloned().unwrap_or_default();
        let source = source.to_string();
        let fresh = status
            .last_warning
            .as_ref()
            .is_some_and(|w| w.source == source && now.wall < w.at.plus(WARNING_WRITE_INTERVAL));
        if fresh {
            return;
        }
        status.last_warning = Some(Warning {
            reason: WarningReason::NatDetected,
            at: now.wall,
            source,
            detail: format!(
                "the phone advertises {contact} but its packets come from {real}; kubepbx answers to {real}"
            ),
        });
        self.location.set_status(user.clone(), status.clone());
        self.writes.push(Write::PutStatus(user.clone(), status));
    }
}

/// Same contact, path and phone: only the registration session (Call-ID, CSeq) or lifetime
/// differ.
fn same_device(a: &Binding, b: &Binding) -> bool {
    a.contact == b.contact
        && a.source == b.source
        && a.transport == b.transport
        && a.flow == b.flow
        && a.user_agent == b.user_agent
        && a.nat == b.nat
}
