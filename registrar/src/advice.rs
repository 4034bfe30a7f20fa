//! What each registration failure reason means and what fixes it, one sentence each: shown
//! with an extension's `lastFailure` in the API and the admin UI. docs/troubleshooting.md says
//! more about each.

use kubepbx_api::FailureReason;

/// The meaning of a failure reason and its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// What happened, in words.
    pub meaning: &'static str,
    /// What to do about it.
    pub fix: &'static str,
}

/// The advice for `reason`.
pub fn advice(reason: FailureReason) -> Advice {
    let (meaning, fix) = match reason {
        FailureReason::UnknownUser => (
            "No extension with this number exists in this domain.",
            "Check the user name on the phone, and that the extension exists (create it, or \
             check its manifest: invalid manifests are named in the log).",
        ),
        FailureReason::WrongPassword => (
            "The password the phone sent does not match the extension's password.",
            "Enter the extension's current password on the phone (after a change it needs the \
             new one), and set its authentication user to the extension number or leave it \
             empty.",
        ),
        FailureReason::RealmMismatch => (
            "The phone registered to a domain this PBX does not serve, or answered for another \
             server's realm.",
            "Set the phone's domain to the PBX domain (or the PBX's IP address); after moving a \
             phone between servers, create its account anew.",
        ),
        FailureReason::StaleNonce => (
            "The phone answered an expired challenge; this is routine.",
            "Nothing to do: the phone retries at once without asking for the password.",
        ),
        FailureReason::NonceReplay => (
            "A challenge was used twice: a duplicated request from a faulty phone, or captured \
             traffic replayed.",
            "If it repeats for one phone, update its firmware; from an unknown address it is an \
             attack, and the address gets banned.",
        ),
        FailureReason::UnsupportedAlgorithm => (
            "The phone used a digest algorithm the PBX does not offer.",
            "Set the phone's authentication algorithm to automatic or MD5.",
        ),
        FailureReason::Disabled => (
            "The extension is disabled, or its password cannot be read.",
            "Enable the extension, or give it a password (the detail names the missing Secret \
             or key).",
        ),
        FailureReason::Banned => (
            "The phone's address made too many failed attempts and is ignored for a while.",
            "Fix the password on the phone, then wait for the ban to end (10 minutes by \
             default) or restart the PBX.",
        ),
        FailureReason::TooManyContacts => (
            "The extension already has its maximum number of registered devices.",
            "Raise maxContacts, unregister unused devices, or wait for stale registrations to \
             expire.",
        ),
        FailureReason::Malformed => (
            "The phone sent a request the PBX could not understand.",
            "Update the phone's firmware; the debug log (RUST_LOG=sip=debug) shows the message.",
        ),
    };
    Advice { meaning, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_advice() {
        for reason in FailureReason::ALL {
            let a = advice(reason);
            assert!(a.meaning.ends_with('.') && a.fix.ends_with('.'), "{reason}");
        }
    }
}
