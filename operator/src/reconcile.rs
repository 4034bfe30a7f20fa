//! One reconcile of one Extension: its Secret and spec become the extension record in etcd,
//! and etcd's view of it (registrations, the last failure) becomes its `.status`.
//!
//! 1. The finalizer `kubepbx.io/extension` is added first, so a deleted Extension's record and
//!    bindings are removed from etcd before Kubernetes forgets it.
//! 2. The Secret is read (or taken from the [`SecretCache`]), the other Extensions claiming the
//!    same number are looked up, and [`decide`] says which record to write and why.
//! 3. etcd gets the record when it differs from what is there; records this Extension wrote
//!    under another number (its `spec.extension` changed) are removed.
//! 4. The status is rebuilt ([`report::status`]) and patched (server-side apply) when
//!    [`report::due`] says so; each condition that changed becomes a Kubernetes Event.
//!
//! A failure to reach etcd is reported in the status (`EtcdUnavailable`) and returned as an
//! error, so the controller retries with backoff.

use crate::metrics::{ErrorReason, Metrics};
use crate::mirror::Mirror;
use crate::report::{self, Due, Etcd, Facts};
use crate::secrets::{self, SecretCache, SecretKey};
use crate::triggers::Triggers;
use crate::verdict::{Subject, Verdict, claim, decide};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as Finalize, finalizer};
use kube::runtime::reflector::{ObjectRef, Store as Reflector};
use kube::{Client, Resource, ResourceExt};
use kubepbx_api::Extension;
use kubepbx_api::records::UserKey;
use kubepbx_api::status::ExtensionStatus;
use kubepbx_api::store::{EtcdStore, Event, Store, StoreError, Write};
use kubepbx_api::time::UnixMillis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

/// The finalizer that keeps an Extension until its record is out of etcd.
pub const FINALIZER: &str = "kubepbx.io/extension";
/// The field manager of the status patches.
pub const FIELD_MANAGER: &str = "kubepbx-operator";

/// How the reconciler behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SIP domain for Extensions without `spec.domain`.
    pub domain: String,
    /// Least time between two status writes of one Extension caused by registrations.
    pub status_interval: Duration,
    /// How often a quiet Extension is reconciled anyway.
    pub resync: Duration,
    /// How often an Extension that lost its number to an older one looks again.
    pub duplicate_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            domain: "pbx.example.com".to_owned(),
            status_interval: Duration::from_secs(2),
            resync: Duration::from_secs(600),
            duplicate_retry: Duration::from_secs(30),
        }
    }
}

/// Everything a reconcile needs; shared by all reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// etcd.
    pub store: Arc<EtcdStore>,
    /// The operator's copy of etcd ([`crate::mirror::follow`] keeps it current).
    pub mirror: Arc<RwLock<Mirror>>,
    /// Every Extension (the controller's cache), to find duplicate numbers.
    pub extensions: Reflector<Extension>,
    /// Secrets already read.
    pub secrets: SecretCache,
    /// Extensions to reconcile because something outside Kubernetes changed.
    pub triggers: Triggers,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Behaviour.
    pub settings: Settings,
    books: Mutex<Books>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("queue_depth", &self.queue_depth())
            .finish_non_exhaustive()
    }
}

/// Per-Extension bookkeeping of this replica.
#[derive(Debug, Default)]
struct Books {
    /// When this replica last wrote each Extension's status.
    written: HashMap<ObjectRef<Extension>, UnixMillis>,
    /// Consecutive failures, for the retry backoff.
    failures: HashMap<ObjectRef<Extension>, u32>,
    /// Reconciles running now.
    running: usize,
}

impl Context {
    /// A context over these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        store: Arc<EtcdStore>,
        mirror: Arc<RwLock<Mirror>>,
        extensions: Reflector<Extension>,
        triggers: Triggers,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Context {
            client,
            store,
            mirror,
            extensions,
            secrets: SecretCache::default(),
            triggers,
            recorder,
            metrics,
            settings,
            books: Mutex::new(Books::default()),
        }
    }

    /// The Extensions that refer to the Secret `namespace/name` (for the Secret watch).
    pub fn secret_users(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Extension>> {
        self.secrets
            .changed(&(namespace.to_owned(), name.to_owned()));
        self.extensions
            .state()
            .iter()
            .filter(|e| {
                e.namespace().as_deref() == Some(namespace)
                    && e.spec.password_secret_ref.name == name
            })
            .map(|e| ObjectRef::from_obj(&**e))
            .collect()
    }

    /// Extensions waiting or being reconciled (the `queue_depth` metric).
    pub fn queue_depth(&self) -> usize {
        self.triggers.len() + self.books().running
    }

    fn mirror(&self) -> RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd did not take a write.
    #[error("etcd: {0}")]
    Etcd(#[from] StoreError),
    /// A Kubernetes API request failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The Extension has no namespace (the CRD is namespaced: this is not a real object).
    #[error("the Extension has no namespace")]
    NoNamespace,
}

impl Error {
    /// The `reason` label of the error metric.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Error::Etcd(_) => ErrorReason::EtcdUnavailable,
            Error::Kube(_) | Error::NoNamespace => ErrorReason::KubeApi,
            Error::Finalizer(_) => ErrorReason::Finalizer,
        }
    }
}

/// Reconciles one Extension (the controller's reconciler).
pub async fn reconcile(ext: Arc<Extension>, ctx: Arc<Context>) -> Result<Action, Error> {
    let target = ObjectRef::from_obj(&*ext);
    ctx.books().running += 1;
    let namespace = ext.namespace().ok_or(Error::NoNamespace);
    let result = match namespace {
        Ok(namespace) => {
            let api: Api<Extension> = Api::namespaced(ctx.client.clone(), &namespace);
            finalizer(&api, FINALIZER, ext, |event| async {
                match event {
                    Finalize::Apply(ext) => apply(&ext, &ctx).await,
                    Finalize::Cleanup(ext) => cleanup(&ext, &ctx).await,
                }
            })
            .await
            .map_err(|e| match e {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
                other => Error::Finalizer(other.to_string()),
            })
        }
        Err(e) => Err(e),
    };
    {
        let mut books = ctx.books();
        books.running -= 1;
        if result.is_ok() {
            books.failures.remove(&target);
        }
    }
    if result.is_ok() {
        ctx.metrics.reconciled();
    }
    ctx.metrics.set_queue_depth(ctx.queue_depth());
    result
}

/// What the controller does after a failed reconcile: count it and retry with backoff
/// (1 s doubling to 5 min).
pub fn error_policy(ext: Arc<Extension>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.reason());
    let target = ObjectRef::from_obj(&*ext);
    let mut books = ctx.books();
    let failures = books.failures.entry(target).or_default();
    *failures = failures.saturating_add(1);
    let delay = backoff(*failures);
    tracing::warn!(extension = %ext.name_any(), namespace = ?ext.namespace(), %error,
        retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The retry delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(300))
}

async fn apply(ext: &Extension, ctx: &Context) -> Result<Action, Error> {
    let namespace = ext.namespace().ok_or(Error::NoNamespace)?;
    let name = ext.name_any();
    let source = source_of(ext);
    let secret = read_secret(ctx, &namespace, &ext.spec.password_secret_ref.name).await?;
    let older = older_claim(ctx, ext);
    let generation = ext.meta().generation.unwrap_or(0);
    let subject = Subject {
        namespace: &namespace,
        name: &name,
        generation,
        spec: &ext.spec,
    };
    let verdict = decide(
        subject,
        secret.as_ref(),
        &ctx.settings.domain,
        older.as_deref(),
    );
    let written = sync_record(ctx, &source, &verdict).await;
    ctx.metrics.set_etcd_connected(ctx.store.is_connected());

    let now = UnixMillis::now();
    let record_key = verdict.record.as_ref().map(|r| r.key());
    let (bindings, registration, loaded) = {
        let mirror = ctx.mirror();
        let bindings = record_key
            .as_ref()
            .map(|k| mirror.bindings(k, now))
            .unwrap_or_default();
        let registration = record_key.as_ref().and_then(|k| mirror.status(k)).cloned();
        (bindings, registration, mirror.is_loaded())
    };
    let domain = ext
        .spec
        .domain
        .as_deref()
        .unwrap_or(&ctx.settings.domain)
        .to_ascii_lowercase();
    let facts = Facts {
        verdict: &verdict,
        generation,
        domain: &domain,
        etcd: match &written {
            Ok(()) => Etcd::Synced,
            Err(e) => Etcd::Unavailable(e.to_string()),
        },
        observed: loaded && ctx.store.is_connected(),
        bindings: &bindings,
        registration: registration.as_ref(),
        now,
    };
    let next = report::status(ext.status.as_ref(), &facts);
    let target = ObjectRef::from_obj(ext);
    let last = ctx.books().written.get(&target).copied();
    let due = report::due(
        ext.status.as_ref(),
        &next,
        last,
        ctx.settings.status_interval,
        now,
    );
    let mut again = if verdict.ready.reason == "DuplicateExtension" {
        ctx.settings.duplicate_retry
    } else {
        ctx.settings.resync
    };
    match due {
        Due::Unchanged => {}
        Due::After(wait) => again = again.min(wait.max(Duration::from_millis(100))),
        Due::Now => {
            write_status(ctx, ext, &namespace, &name, &next).await?;
            ctx.books().written.insert(target, now);
            publish_transitions(ctx, ext, ext.status.as_ref(), &next).await;
        }
    }
    // Refreshes ask for no reconcile: look again when a shown expiry passes (`After` already
    // waits for its own turn).
    if matches!(due, Due::Now | Due::Unchanged)
        && let Some(left) = report::first_expiry(&next, now)
    {
        again = again.min(left);
    }
    written?;
    Ok(Action::requeue(again))
}

async fn cleanup(ext: &Extension, ctx: &Context) -> Result<Action, Error> {
    let namespace = ext.namespace().ok_or(Error::NoNamespace)?;
    let source = source_of(ext);
    let keys = ctx.mirror().keys_of(&source);
    if !keys.is_empty() {
        let writes = keys.iter().cloned().map(Write::DeleteExtension).collect();
        ctx.store.apply(writes).await?;
        let mut mirror = ctx.mirror.write().unwrap_or_else(PoisonError::into_inner);
        for key in &keys {
            mirror.apply(Event::ExtensionDeleted(key.clone()));
        }
    }
    tracing::info!(extension = %source, records = keys.len(), "extension removed from etcd");
    // Whoever else claims the number may have it now.
    let me = ObjectRef::from_obj(ext);
    for other in claimants(ctx, ext) {
        if other != me {
            ctx.triggers.push(other);
        }
    }
    let mut books = ctx.books();
    books.written.remove(&me);
    books.failures.remove(&me);
    drop(books);
    let secret = (namespace, ext.spec.password_secret_ref.name.clone());
    let still_used = ctx.extensions.state().iter().any(|e| {
        e.namespace().as_ref() == Some(&secret.0)
            && e.spec.password_secret_ref.name == secret.1
            && ObjectRef::from_obj(&**e) != me
    });
    if !still_used {
        ctx.secrets.forget(&secret);
    }
    Ok(Action::await_change())
}

async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<secrets::Data, Error> {
    let key: SecretKey = (namespace.to_owned(), name.to_owned());
    let ticket = match ctx.secrets.get(&key) {
        Ok(data) => return Ok(data),
        Err(ticket) => ticket,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let data = api.get_opt(name).await?.map(|secret| {
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    });
    ctx.secrets.keep(ticket, data.clone());
    Ok(data)
}

/// The number and domain `ext` claims ([`claim`] of its spec).
fn claim_of(ext: &Extension, default_domain: &str) -> Option<UserKey> {
    claim(&ext.spec, default_domain)
}

/// `namespace/name` of `ext`: the `source` of the records it writes.
fn source_of(ext: &Extension) -> String {
    format!("{}/{}", ext.namespace().unwrap_or_default(), ext.name_any())
}

/// Every Extension claiming the same number as `ext` (itself included).
fn claimants(ctx: &Context, ext: &Extension) -> Vec<ObjectRef<Extension>> {
    let Some(mine) = claim_of(ext, &ctx.settings.domain) else {
        return Vec::new();
    };
    ctx.extensions
        .state()
        .iter()
        .filter(|e| claim_of(e, &ctx.settings.domain).as_ref() == Some(&mine))
        .map(|e| ObjectRef::from_obj(&**e))
        .collect()
}

/// The oldest other Extension claiming the same number when it is older than `ext`
/// (`namespace/name`). One being deleted still counts until its record is gone from etcd.
fn older_claim(ctx: &Context, ext: &Extension) -> Option<String> {
    let mine = claim_of(ext, &ctx.settings.domain)?;
    let age = |e: &Extension| {
        (
            e.meta().creation_timestamp.as_ref().map(|t| t.0),
            e.namespace().unwrap_or_default(),
            e.name_any(),
        )
    };
    let own = age(ext);
    let mirror = ctx.mirror();
    ctx.extensions
        .state()
        .into_iter()
        .filter(|e| e.uid() != ext.uid() || e.name_any() != ext.name_any())
        .filter(|e| claim_of(e, &ctx.settings.domain).as_ref() == Some(&mine))
        .filter(|e| {
            e.meta().deletion_timestamp.is_none() || !mirror.keys_of(&source_of(e)).is_empty()
        })
        .map(|e| age(&e))
        .filter(|other| *other < own)
        .min()
        .map(|(_, namespace, name)| format!("{namespace}/{name}"))
}

/// Puts the verdict's record into etcd unless it is there already, and removes the records
/// `source` wrote under other numbers.
async fn sync_record(ctx: &Context, source: &str, verdict: &Verdict) -> Result<(), StoreError> {
    let wanted = verdict.record.as_ref();
    let writes: Vec<Write> = {
        let mirror = ctx.mirror();
        let stale = mirror
            .keys_of(source)
            .into_iter()
            .filter(|k| wanted.map(|r| r.key()).as_ref() != Some(k))
            .map(Write::DeleteExtension);
        let put = wanted
            .filter(|r| mirror.record(&r.key()) != Some(*r))
            .map(|r| Write::PutExtension(r.clone()));
        stale.chain(put).collect()
    };
    if writes.is_empty() {
        return Ok(());
    }
    ctx.store.apply(writes.clone()).await?;
    // The watch will say the same; saying it now keeps the next reconcile from writing again.
    let mut mirror = ctx.mirror.write().unwrap_or_else(PoisonError::into_inner);
    for write in writes {
        match write {
            Write::PutExtension(record) => mirror.apply(Event::ExtensionPut(record)),
            Write::DeleteExtension(key) => mirror.apply(Event::ExtensionDeleted(key)),
            _ => None,
        };
    }
    tracing::info!(extension = %source, "extension record written to etcd");
    Ok(())
}

async fn write_status(
    ctx: &Context,
    ext: &Extension,
    namespace: &str,
    name: &str,
    status: &ExtensionStatus,
) -> Result<(), Error> {
    let api: Api<Extension> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": Extension::api_version(&()),
        "kind": Extension::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch))
        .await?;
    ctx.metrics.status_written();
    tracing::debug!(extension = %ext.name_any(), namespace, "status written");
    Ok(())
}

/// Publishes one Kubernetes Event per condition whose status or reason changed
/// ([`report::transitions`]).
async fn publish_transitions(
    ctx: &Context,
    ext: &Extension,
    before: Option<&ExtensionStatus>,
    after: &ExtensionStatus,
) {
    let reference = ext.object_ref(&());
    for changed in report::transitions(before, after) {
        let event = KubeEvent {
            type_: if changed.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: changed.reason.clone(),
            note: Some(truncate(
                &format!("{}={}: {}", changed.type_, changed.status, changed.message),
                1024,
            )),
            action: changed.type_.clone(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(extension = %ext.name_any(), error = %e, "cannot publish an Event");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }

    #[test]
    fn long_notes_are_cut_at_a_character() {
        let text = "é".repeat(600);
        let cut = truncate(&text, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."));
    }
}
