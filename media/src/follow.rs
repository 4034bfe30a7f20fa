//! When a session with a WebRTC leg should move to another relay thread: the one whose copy of
//! the WebRTC port receives its browser's datagrams. Sans-IO: the session task reports which
//! thread's hub read each datagram, and asks whether to move.
//!
//! ```text
//! browser ─► kernel picks hub k by the datagram's addresses (SO_REUSEPORT)
//!            hub k ─► session on thread j: k ≠ j is a hand-over between threads (queue, wake
//!                                          of another thread) for every datagram
//! Follow:    FOLLOW_AFTER datagrams in a row from hub k, none from hub j  →  move to k
//! ```
//! The kernel keeps a browser's address pair on one hub, but a session is placed before its
//! browser has sent anything, so about half of them (with two threads) start on the wrong
//! one. After the move every datagram of the leg is read and handled on one thread. A session
//! with two browsers on different hubs gets datagrams from its own hub too, which resets the
//! count: it stays. A session moves at most [`MAX_MOVES`] times (a browser that changes its
//! address, say from Wi-Fi to mobile data, may land on another hub).

/// Datagrams in a row from one other hub before the session follows it (about half a second
/// of audio; ICE checks and the DTLS handshake come first).
pub(crate) const FOLLOW_AFTER: u32 = 24;
/// Moves per session at most.
pub(crate) const MAX_MOVES: u8 = 3;

/// The decision's state (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Follow {
    /// The other hub datagrams came from lately.
    candidate: usize,
    /// How many in a row, with none from the session's own thread.
    streak: u32,
    moves: u8,
}

impl Follow {
    /// A datagram read by hub `hub` for a session running on thread `home`.
    pub(crate) fn note(&mut self, hub: usize, home: usize) {
        if hub == home {
            self.streak = 0;
        } else if hub == self.candidate && self.streak > 0 {
            self.streak = self.streak.saturating_add(1);
        } else {
            (self.candidate, self.streak) = (hub, 1);
        }
    }

    /// The thread to move to now, if any.
    pub(crate) fn due(&self) -> Option<usize> {
        (self.streak >= FOLLOW_AFTER && self.moves < MAX_MOVES).then_some(self.candidate)
    }

    /// The session moved (or could not, and stays): count starts afresh.
    pub(crate) fn moved(&mut self) {
        self.moves = self.moves.saturating_add(1);
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_steady_other_hub_only() {
        let mut f = Follow::default();
        for _ in 0..FOLLOW_AFTER - 1 {
            f.note(1, 0);
        }
        assert_eq!(f.due(), None);
        f.note(1, 0);
        assert_eq!(f.due(), Some(1));
        f.moved();
        assert_eq!(f.due(), None);
        // At home now: its datagrams keep it there.
        for _ in 0..100 {
            f.note(1, 1);
        }
        assert_eq!(f.due(), None);
    }

    #[test]
    fn datagrams_from_home_or_a_third_hub_reset_the_count() {
        let mut f = Follow::default();
        for i in 0..10 * FOLLOW_AFTER {
            // Two browsers: one lands on the session's thread, one on another.
            f.note(if i % 2 == 0 { 0 } else { 1 }, 0);
            assert_eq!(f.due(), None);
        }
        for _ in 0..FOLLOW_AFTER - 1 {
            f.note(1, 0);
        }
        f.note(2, 0);
        assert_eq!(f.due(), None);
        // The first datagram seen at all from hub 0 is no streak (candidate starts at 0).
        let mut g = Follow::default();
        g.note(0, 1);
        for _ in 1..FOLLOW_AFTER {
            g.note(0, 1);
        }
        assert_eq!(g.due(), Some(0));
    }

    #[test]
    fn moves_a_bounded_number_of_times() {
        let mut f = Follow::default();
        let mut home = 0;
        for _ in 0..2 * MAX_MOVES {
            let other = 1 - home;
            for _ in 0..FOLLOW_AFTER {
                f.note(other, home);
            }
            if let Some(to) = f.due() {
                f.moved();
                home = to;
            }
        }
        assert_eq!(f.moves, MAX_MOVES);
        for _ in 0..FOLLOW_AFTER {
            f.note(1 - home, home);
        }
        assert_eq!(f.due(), None);
    }
}
