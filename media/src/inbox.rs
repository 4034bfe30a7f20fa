//! A bounded queue from the WebRTC hubs to one session task: what `tokio::sync::mpsc` does for
//! it, at less cost per datagram.
//!
//! ```text
//! hub ── try_send: lock, push (or Full / Closed), unlock; wake only if it was empty ──► queue
//! session task ── poll_recv: register waker, lock, pop ──► datagram
//! ```
//! Each datagram through a tokio channel took a semaphore permit, a slot in a block list and a
//! wake-up, and gave the permit back on receipt: about 4 to 5 % of a busy relay thread's time
//! for browser calls. Here a datagram costs one uncontended lock on each side, and a wake-up
//! only when the queue was empty (the task drains what is queued when it runs). The hub and the
//! session usually run on the same thread (a session follows its browser), so the lock is
//! never contended for long. Dropping the [`Receiver`] closes the queue: the hubs forget routes
//! to it.

use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Debug)]
struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    waker: AtomicWaker,
    closed: AtomicBool,
}

/// The hubs' end (cloned into each route).
#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

/// The session task's end.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

/// Why [`Sender::try_send`] did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// `capacity` items wait already.
    Full,
    /// The receiver is gone.
    Closed,
}

/// A queue of at most `capacity` items.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        capacity,
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` now, or says why not.
    pub fn try_send(&self, item: T) -> Result<(), SendError> {
        let was_empty = {
            let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_closed() {
                return Err(SendError::Closed);
            }
            if queue.len() >= self.0.capacity {
                return Err(SendError::Full);
            }
            queue.push_back(item);
            queue.len() == 1
        };
        // A non-empty queue has a wake-up pending already, or its task is running and will
        // look again (it polls until it finds the queue empty, registered first).
        if was_empty {
            self.0.waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }
}

impl<T> Receiver<T> {
    /// The next item, or `Pending` (and a wake-up when one is queued).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        self.0.waker.register(cx.waker());
        match self.try_recv() {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next item, if one waits.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        // What waits is dropped with the queue's last owner.
        let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wakeups::tests::Count;
    use std::task::Waker;

    #[test]
    fn bounded_in_order_and_one_wake_up_per_empty_to_non_empty() {
        let (tx, mut rx) = channel(3);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(3), Err(SendError::Full));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one wake-up for three items"
        );
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(0));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(2));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.clone().try_send(4).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "empty again: woken again"
        );
        assert_eq!(rx.try_recv(), Some(4));
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(5), Err(SendError::Closed));
    }

    #[test]
    fn nothing_is_stranded_across_threads() {
        let (tx, mut rx) = channel::<u32>(64);
        const N: u32 = 20_000;
        let producer = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < N {
                match tx.try_send(sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(SendError::Closed) => panic!("closed"),
                }
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = runtime.block_on(async {
            let mut next = 0;
            while next < N {
                let item = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    std::future::poll_fn(|cx| rx.poll_recv(cx)),
                )
                .await
                .expect("a wake-up was lost");
                assert_eq!(item, next);
                next += 1;
            }
            next
        });
        producer.join().unwrap();
        assert_eq!(got, N);
    }
}
