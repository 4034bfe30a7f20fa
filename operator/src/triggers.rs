//! Extensions waiting to be reconciled for reasons the Kubernetes watches do not see: a change in
//! etcd (a registration, a failure, a record someone else rewrote) or the removal of an
//! Extension whose number another one claims.
//!
//! Each Extension waits at most once however often it is pushed, so the queue is bounded by the
//! number of Extensions; [`Triggers::stream`] hands them to the controller
//! (`Controller::reconcile_on`). [`Triggers::len`] is the `queue_depth` metric's part.

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use kubepbx_api::Extension;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// A deduplicating queue of Extensions to reconcile; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<ObjectRef<Extension>>,
    waiting: HashSet<ObjectRef<Extension>>,
}

impl Triggers {
    /// Queues `target` unless it already waits.
    pub fn push(&self, target: ObjectRef<Extension>) {
        let mut queue = self.lock();
        if queue.waiting.insert(target.clone()) {
            queue.order.push_back(target);
            drop(queue);
            self.shared.wake.notify_one();
        }
    }

    /// Queues the Extensions named `namespace/name` (a record's `source`); anything else is
    /// ignored. A name without an Extension (a record `kubepbx apply` wrote) costs one lookup.
    pub fn push_sources(&self, sources: impl IntoIterator<Item = String>) {
        for source in sources {
            if let Some(target) = object_ref(&source) {
                self.push(target);
            }
        }
    }

    /// How many Extensions wait.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next waiting Extension, if any.
    pub fn pop(&self) -> Option<ObjectRef<Extension>> {
        let mut queue = self.lock();
        let next = queue.order.pop_front()?;
        queue.waiting.remove(&next);
        Some(next)
    }

    /// The waiting Extensions as a stream that never ends.
    pub fn stream(&self) -> impl Stream<Item = ObjectRef<Extension>> + Send + 'static {
        futures::stream::unfold(self.clone(), |triggers| async move {
            loop {
                if let Some(next) = triggers.pop() {
                    return Some((next, triggers));
                }
                // A push between `pop` and here leaves a permit: no wake-up is lost.
                let shared = Arc::clone(&triggers.shared);
                shared.wake.notified().await;
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The Extension a record's `source` (`namespace/name`) names.
pub fn object_ref(source: &str) -> Option<ObjectRef<Extension>> {
    let (namespace, name) = source.split_once('/')?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn each_extension_waits_once() {
        let t = Triggers::default();
        t.push_sources(["office/a".to_owned(), "office/b".to_owned()]);
        t.push_sources(["office/a".to_owned(), "manifests".to_owned()]);
        assert_eq!(t.len(), 2);
        let mut stream = Box::pin(t.stream());
        assert_eq!(stream.next().await, object_ref("office/a"));
        assert_eq!(stream.next().await, object_ref("office/b"));
        assert!(t.is_empty());
        let later = t.clone();
        tokio::spawn(async move { later.push_sources(["office/c".to_owned()]) });
        assert_eq!(stream.next().await, object_ref("office/c"));
    }

    #[test]
    fn only_namespaced_names_are_extensions() {
        assert!(object_ref("office/ext-1001").is_some());
        for bad in ["manifest", "/a", "a/", "a/b/c"] {
            assert!(object_ref(bad).is_none(), "{bad}");
        }
    }
}
