//! The RTP port pool: even RTP ports (RTCP on the odd port above) handed out as RAII leases.
//!
//! The pool itself does no I/O. The driver takes a [`PortLease`] with [`PortPool::acquire`], tries
//! to bind its sockets, and on failure (port used by another program) drops the lease with
//! [`PortLease::skip`] and asks again; [`PortPool::acquire`] never hands out the same pair twice
//! while a lease for it lives. Dropping a lease returns its pair to the back of the queue, so a
//! just-freed port is reused last (stray packets of an old call rarely reach a new one).

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many RTP/RTCP pairs (even port, next odd port) fit in `range`.
pub fn pairs_in(range: &RangeInclusive<u16>) -> usize {
    even_ports(range).count()
}

fn even_ports(range: &RangeInclusive<u16>) -> impl Iterator<Item = u16> + use<> {
    let (lo, hi) = (*range.start().max(&2), *range.end());
    let first = lo.saturating_add(lo % 2);
    (first..hi)
        .step_by(2)
        .filter(move |p| p.checked_add(1).is_some_and(|q| q <= hi))
}

/// The free pairs, shared by every session of a relay.
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    free: VecDeque<u16>,
    total: usize,
}

impl PortPool {
    /// A pool with every pair of `range` free.
    pub fn new(range: &RangeInclusive<u16>) -> PortPool {
        let free: VecDeque<u16> = even_ports(range).collect();
        let total = free.len();
        PortPool {
            inner: Arc::new(Mutex::new(Inner { free, total })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent (push/pop only).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next free pair, or `None` when all are leased.
    pub fn acquire(&self) -> Option<PortLease> {
        let rtp = self.lock().free.pop_front()?;
        Some(PortLease {
            pool: self.clone(),
            rtp,
        })
    }

    /// Pairs currently free.
    pub fn free(&self) -> usize {
        self.lock().free.len()
    }

    /// Pairs in the range.
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

/// One leased pair: `rtp` (even) and `rtp + 1`. Returned to the pool when dropped.
#[derive(Debug)]
pub struct PortLease {
    pool: PortPool,
    rtp: u16,
}

impl PortLease {
    /// The RTP port (even).
    pub fn rtp(&self) -> u16 {
        self.rtp
    }

    /// The RTCP port (`rtp + 1`).
    pub fn rtcp(&self) -> u16 {
        self.rtp + 1
    }

    /// Gives the pair back because it could not be bound; it goes to the back of the queue, so the
    /// next [`PortPool::acquire`] tries another one.
    pub fn skip(self) {
        drop(self);
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().free.push_back(self.rtp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_inside_the_range() {
        assert_eq!(pairs_in(&(20000..=20999)), 500);
        assert_eq!(pairs_in(&(20001..=20004)), 1); // 20002/20003; 20004 has no 20005
        assert_eq!(pairs_in(&(20001..=20002)), 0);
        assert_eq!(pairs_in(&(65534..=65535)), 1);
        assert_eq!(pairs_in(&(0..=3)), 1); // port 0 is never used: 2/3
        let pool = PortPool::new(&(20001..=20006));
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert_eq!(
            (a.rtp(), a.rtcp(), b.rtp(), b.rtcp()),
            (20002, 20003, 20004, 20005)
        );
        assert!(pool.acquire().is_none());
    }

    #[test]
    fn leases_return_on_drop_to_the_back() {
        let pool = PortPool::new(&(30000..=30005));
        assert_eq!((pool.total(), pool.free()), (3, 3));
        let a = pool.acquire().unwrap();
        assert_eq!(a.rtp(), 30000);
        assert_eq!(pool.free(), 2);
        drop(a);
        assert_eq!(pool.free(), 3);
        let order: Vec<u16> = (0..3)
            .map(|_| pool.acquire().unwrap())
            .map(|l| l.rtp())
            .collect();
        // Each lease was dropped right after acquire, so order rotates: 30002, 30004, 30000.
        assert_eq!(order, vec![30002, 30004, 30000]);
        assert_eq!(pool.free(), 3);
    }

    #[test]
    fn exhaustion_and_skip() {
        let pool = PortPool::new(&(40000..=40003));
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert!(pool.acquire().is_none());
        b.skip();
        let c = pool.acquire().unwrap();
        assert_eq!(c.rtp(), 40002);
        drop((a, c));
        assert_eq!(pool.free(), 2);
    }
}
