//! Digest authentication of a request (RFC 3261 §22, RFC 7616): the one flow REGISTER (401,
//! `WWW-Authenticate`/`Authorization`) and calls (407, `Proxy-Authenticate`/
//! `Proxy-Authorization`) share, with the same failure reasons.
//!
//! [`Endpoint::authenticate`] either returns the authenticated extension or has already
//! answered the request (a challenge, 400 or 403) and recorded why it failed.

use super::{Endpoint, EndpointEvent, Now, Reply};
use crate::auth::{Algorithm, AuthFailure, Credentials, parse_credentials};
use crate::builder::ResponseBuilder;
use crate::message::Request;
use ezk_sip_types::Name;
use kubepbx_api::Transport;
use kubepbx_api::records::{ExtensionRecord, FailureReason, UserKey};
use std::sync::Arc;

/// Who is asking for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthKind {
    /// The registrar: 401, `WWW-Authenticate`, `Authorization`.
    Registrar,
    /// The proxy: 407, `Proxy-Authenticate`, `Proxy-Authorization`.
    Proxy,
}

impl AuthKind {
    fn code(self) -> (u16, &'static str) {
        match self {
            AuthKind::Registrar => (401, "Unauthorized"),
            AuthKind::Proxy => (407, "Proxy Authentication Required"),
        }
    }

    fn challenge_header(self) -> &'static str {
        match self {
            AuthKind::Registrar => "WWW-Authenticate",
            AuthKind::Proxy => "Proxy-Authenticate",
        }
    }

    fn credentials_header(self) -> Name {
        match self {
            AuthKind::Registrar => Name::AUTHORIZATION,
            AuthKind::Proxy => Name::PROXY_AUTHORIZATION,
        }
    }

    fn malformed_reason(self) -> &'static str {
        match self {
            AuthKind::Registrar => "Malformed Authorization Header",
            AuthKind::Proxy => "Malformed Proxy-Authorization Header",
        }
    }
}

impl Endpoint {
    /// Authenticates `request` for `domain` (also the realm). `aor` is the extension the
    /// request speaks for (the To of a REGISTER, the From of an INVITE): failures are recorded
    /// on it. Returns the extension whose credentials were given, or `None` when the request
    /// has been answered.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        domain: &str,
        aor: &UserKey,
        kind: AuthKind,
    ) -> Option<(UserKey, Arc<ExtensionRecord>)> {
        let source = reply.source.remote;
        let method = request.method.as_str();
        let credentials = match pick_credentials(request, kind, domain) {
            Picked::None => {
                self.stats.challenges += 1;
                self.challenge(now, reply, request, kind, domain, false);
                return None;
            }
            Picked::Malformed(detail) => {
                let owner = self.location.extension(aor).map(|r| r.key());
                self.fail(now, owner, FailureReason::Malformed, source, detail, true);
                self.respond(
                    now,
                    reply,
                    ResponseBuilder::new(request, source, 400, kind.malformed_reason()),
                );
                return None;
            }
            Picked::OtherRealm(realm) => {
                let owner = self.location.extension(aor).map(|r| r.key());
                let detail =
                    format!("the phone answered for realm {realm:?} but the realm is {domain:?}");
                self.fail(
                    now,
                    owner,
                    FailureReason::RealmMismatch,
                    source,
                    detail,
                    true,
                );
                self.challenge(now, reply, request, kind, domain, false);
                return None;
            }
            Picked::Credentials(c) => c,
        };

        let auth_key = UserKey::new(domain, credentials.username.clone());
        let Some(record) = self.location.extension(&auth_key).cloned() else {
            let detail = format!("no extension {} in domain {domain}", credentials.username);
            self.events.push_back(EndpointEvent::RegisterFailed {
                user: None,
                reason: FailureReason::UnknownUser,
                source,
                detail,
            });
            self.count_failure(now, FailureReason::UnknownUser, source);
            self.challenge(now, reply, request, kind, domain, false);
            return None;
        };
        if let Some(why) = &record.disabled_reason {
            // No password to check against: answer as for a wrong password.
            self.fail(
                now,
                Some(auth_key),
                FailureReason::Disabled,
                source,
                why.clone(),
                false,
            );
            self.challenge(now, reply, request, kind, domain, false);
            return None;
        }
        if let Err(failure) = self.auth.verify(
            &credentials,
            method,
            domain,
            &record.ha1,
            now.wall.as_secs(),
        ) {
            let reason = failure_reason(&failure);
            let stale = failure.rechallenge_stale();
            if reason != FailureReason::StaleNonce {
                self.fail(
                    now,
                    Some(auth_key),
                    reason,
                    source,
                    failure.to_string(),
                    true,
                );
            }
            self.challenge(now, reply, request, kind, domain, stale);
            return None;
        }
        if !record.enabled {
            let detail = "the extension is disabled (spec.enabled: false)".to_owned();
            self.fail(
                now,
                Some(auth_key),
                FailureReason::Disabled,
                source,
                detail,
                false,
            );
            self.respond(
                now,
                reply,
                ResponseBuilder::new(request, source, 403, "Extension Disabled"),
            );
            return None;
        }
        Some((auth_key, record))
    }

    /// Answers with one challenge per configured algorithm (SHA-256 and MD5 by default).
    pub(super) fn challenge(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        kind: AuthKind,
        realm: &str,
        stale: bool,
    ) {
        let [sha256, md5] = self.auth.challenge(realm, stale, now.wall.as_secs());
        let (code, reason) = kind.code();
        let mut builder = ResponseBuilder::new(request, reply.source.remote, code, reason);
        let configured: &[Algorithm] = if self.config.challenge.is_empty() {
            &super::DEFAULT_CHALLENGE
        } else {
            &self.config.challenge
        };
        // Browser SIP libraries know only MD5 and read one challenge of several (JsSIP the
        // last, SIP.js the first): on a WebSocket, MD5 alone (when it is offered at all).
        let browser = matches!(reply.source.transport, Transport::Ws | Transport::Wss);
        let order: &[Algorithm] = if browser && configured.contains(&Algorithm::Md5) {
            &[Algorithm::Md5]
        } else {
            configured
        };
        for algorithm in order {
            let value = match algorithm {
                Algorithm::Sha256 => &sha256,
                Algorithm::Md5 => &md5,
            };
            builder = builder.header(kind.challenge_header(), value.clone());
        }
        self.respond(now, reply, builder);
    }
}

/// The one place an authentication failure becomes a failure reason.
fn failure_reason(failure: &AuthFailure) -> FailureReason {
    match failure {
        AuthFailure::WrongPassword => FailureReason::WrongPassword,
        AuthFailure::RealmMismatch { .. } => FailureReason::RealmMismatch,
        AuthFailure::StaleNonce(_) | AuthFailure::InvalidNonce(_) => FailureReason::StaleNonce,
        AuthFailure::NonceReplay => FailureReason::NonceReplay,
        AuthFailure::UnsupportedAlgorithm(_) | AuthFailure::UnsupportedQop(_) => {
            FailureReason::UnsupportedAlgorithm
        }
        AuthFailure::MissingHa1(_) => FailureReason::Disabled,
        AuthFailure::Malformed(_) => FailureReason::Malformed,
    }
}

/// The credentials answering our realm; a phone may send several.
enum Picked {
    None,
    Malformed(String),
    OtherRealm(String),
    Credentials(Box<Credentials>),
}

fn pick_credentials(request: &Request, kind: AuthKind, realm: &str) -> Picked {
    let mut other_realm = None;
    let mut malformed = None;
    for value in request.headers.get_raw(&kind.credentials_header()) {
        match parse_credentials(value) {
            Ok(c) if c.realm == realm => return Picked::Credentials(Box::new(c)),
            Ok(c) => other_realm = Some(c.realm),
            Err(e) => malformed = Some(e.to_string()),
        }
    }
    match (other_realm, malformed) {
        (Some(realm), _) => Picked::OtherRealm(realm),
        (None, Some(detail)) => Picked::Malformed(detail),
        (None, None) => Picked::None,
    }
}
