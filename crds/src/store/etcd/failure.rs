//! What a failed etcd request means for the store: retry later, re-grant a lease, reload, or
//! give up ([`classify`]); and error messages that keep their causes ([`chain`]).

/// How a request failed, as far as the store cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Not reachable, no leader, timed out: retry later.
    Unavailable,
    /// A lease named in the request does not exist.
    LeaseNotFound,
    /// A lease with the requested id exists already.
    LeaseExists,
    /// The requested revision was compacted.
    Compacted,
    /// Anything else etcd refused.
    Rejected,
}

pub(super) fn classify(e: &etcd_client::Error) -> Failure {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("requested lease not found") {
                Failure::LeaseNotFound
            } else if message.contains("lease already exists") {
                Failure::LeaseExists
            } else if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else {
                match status.code() {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Internal
                    | Code::Aborted
                    | Code::ResourceExhausted => Failure::Unavailable,
                    _ => Failure::Rejected,
                }
            }
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => Failure::Unavailable,
        _ => Failure::Rejected,
    }
}

/// An error with its sources, `: `-separated (tonic's own messages say little).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
