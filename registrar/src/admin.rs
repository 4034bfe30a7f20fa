//! Writing extensions through the admin API.
//!
//! Where extensions are kept decides how they are written, so the deployment hands the HTTP
//! side an [`ExtensionAdmin`]: `kubepbx up` one that edits its manifest folder. A cluster has
//! none — its extensions are Extension resources (`kubectl apply`) or a folder applied to etcd
//! (`kubepbx apply -f DIR`) — and the write routes answer `405` saying so. A cluster
//! implementation (writing Extension resources, say) would only add another `ExtensionAdmin`.

use kubepbx_api::UserKey;
use kubepbx_api::admin::{ExtensionChange, NewExtension, RequestError};

/// Creates, changes and deletes extensions where a deployment keeps them.
///
/// Every method returns once the change is visible to the registrar: a query sent to it
/// afterwards (`GET /api/v1/extensions`) answers with the new state.
#[async_trait::async_trait]
pub trait ExtensionAdmin: Send + Sync + std::fmt::Debug + 'static {
    /// Creates an extension; answers its key (the domain defaulted and in lower case).
    async fn create(&self, new: NewExtension) -> Result<UserKey, AdminError>;

    /// Changes extension `key` (a change that changes nothing writes nothing).
    async fn change(&self, key: &UserKey, change: ExtensionChange) -> Result<(), AdminError>;

    /// Deletes extension `key`; its registrations go with it.
    async fn delete(&self, key: &UserKey) -> Result<(), AdminError>;
}

/// Why a write was refused or failed. Messages say what to do and never hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No such extension (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The extension to create exists (HTTP 409).
    #[error("{0}")]
    Exists(String),
    /// A field breaks a rule (HTTP 422).
    #[error("{field}: {problem}")]
    Invalid {
        /// The request's JSON field.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// What is stored prevents the change; nothing was written (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Where extensions are kept cannot be read or written right now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<RequestError> for AdminError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid { field, problem } => AdminError::Invalid { field, problem },
            RequestError::NotJson(_) => AdminError::Invalid {
                field: "body".to_owned(),
                problem: e.to_string(),
            },
        }
    }
}
