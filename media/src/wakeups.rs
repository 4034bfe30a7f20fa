//! Which of a task's event sources woke it: one [`Waker`] per source, so a task that waits on
//! several (a session: commands, shutdown, its deadline, the hub's queue, four sockets) polls
//! only the ones that fired instead of all of them on every wake-up.
//!
//! ```text
//! source i fires ──► its waker: set bit i, wake the task ──► task: pending() → bit i set
//!                                                              → poll source i only
//! ```
//! Polling a source registers interest (a socket's reader slot, a channel's receiver waker, a
//! timer entry) and, for a shared source like a cancellation token, touches memory other
//! threads write: a session woken by one packet used to spend about as long polling the seven
//! other sources as relaying the packet. With a waker per source, a source is polled once to
//! register and then only when it has fired; a source that returned `Ready` must be marked
//! again with [`Wakeups::mark`] so it is polled (and re-registered) next time.

use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Wake, Waker};

/// What the per-source wakers share with the task.
#[derive(Debug, Default)]
struct Shared {
    fired: AtomicU32,
    task: AtomicWaker,
}

#[derive(Debug)]
struct SourceWaker {
    shared: Arc<Shared>,
    bit: u32,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.fired.fetch_or(self.bit, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

/// The wakers of the `N` sources (at most 32) of one task (see the module docs); kept inline,
/// in the task.
#[derive(Debug)]
pub(crate) struct Wakeups<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
    /// Sources to poll that no waker reported (new, or `Ready` last time).
    marked: u32,
}

impl<const N: usize> Wakeups<N> {
    /// Wakers for the sources, all marked for a first poll.
    pub(crate) fn new() -> Wakeups<N> {
        const { assert!(N >= 1 && N <= 32) };
        let shared = Arc::new(Shared::default());
        let wakers = std::array::from_fn(|i| {
            Waker::from(Arc::new(SourceWaker {
                shared: shared.clone(),
                bit: 1 << i,
            }))
        });
        Wakeups {
            shared,
            wakers,
            marked: u32::MAX >> (32 - N),
        }
    }

    /// The sources to poll now (a bit per source), with the task's waker (`cx`) registered for
    /// the next wake-up. The caller polls each with [`Self::context`], and hands back with
    /// [`Self::mark`] those it did not get to or that were ready.
    pub(crate) fn pending(&mut self, cx: &Context<'_>) -> u32 {
        self.shared.task.register(cx.waker());
        let fired = self.shared.fired.swap(0, Ordering::AcqRel);
        std::mem::take(&mut self.marked) | fired
    }

    /// Has the sources of `bits` polled at the next [`Self::pending`] whether or not they fire.
    pub(crate) fn mark(&mut self, bits: u32) {
        self.marked |= bits;
    }

    /// The context to poll source `i` with.
    pub(crate) fn context(&self, i: usize) -> Context<'_> {
        Context::from_waker(&self.wakers[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    pub(crate) struct Count(pub(crate) AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_fired_and_marked_sources_are_polled() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let mut w = Wakeups::<3>::new();
        assert_eq!(w.pending(&cx), 0b111);
        assert_eq!(w.pending(&cx), 0);
        w.context(1).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        let owned = w.context(2).waker().clone();
        owned.wake(); // by value, as a waker handed to a source would be
        assert_eq!(w.pending(&cx), 0b110);
        w.mark(0b001);
        assert_eq!(w.pending(&cx), 0b001);
        assert_eq!(w.pending(&cx), 0);
    }
}
