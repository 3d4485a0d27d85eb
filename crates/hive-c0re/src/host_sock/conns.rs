//! Who holds a host.sock connection, and who gives one up when they run out.
//!
//! Connections are bounded, since each is a file descriptor. But a bound that
//! makes a newcomer wait while idle connections sit on their places is what
//! left the operator's CLI waiting behind a thousand idle clients. So an idle
//! connection (between requests) keeps its place only until a newcomer needs
//! it: at the bound, the connection idle the longest is closed. A busy one (a
//! request running, or a stream) is never closed for a newcomer; when every
//! connection is busy, the newcomer is refused with a sentence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The open connections and the bound on them.
pub(super) struct Conns {
    cap: usize,
    state: Mutex<State>,
}

struct State {
    /// Connections holding a place (an evicted one gives its place up at once).
    open: usize,
    /// Ticket of the next connection to go idle: later idle, larger ticket.
    next: u64,
    /// Idle connections, longest idle first.
    idle: BTreeMap<u64, CancellationToken>,
}

/// One connection's place; dropping it frees the place.
pub(super) struct Slot {
    conns: Arc<Conns>,
    /// The ticket and eviction signal while idle.
    idle: Option<(u64, CancellationToken)>,
    evicted: bool,
}

impl Conns {
    /// Room for `cap` connections at once.
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::new(State {
                open: 0,
                next: 0,
                idle: BTreeMap::new(),
            }),
        })
    }

    /// The bound.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// A place for a new connection, closing the longest-idle one when at the
    /// bound; `None` when every connection is busy.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.lock();
        if st.open >= self.cap && !Self::evict_locked(&mut st) {
            return None;
        }
        st.open += 1;
        Some(Slot {
            conns: self.clone(),
            idle: None,
            evicted: false,
        })
    }

    /// Closes the longest-idle connection (the process ran out of descriptors);
    /// false when none is idle.
    pub(super) fn evict_oldest(&self) -> bool {
        Self::evict_locked(&mut self.lock())
    }

    fn evict_locked(st: &mut State) -> bool {
        let Some((_, token)) = st.idle.pop_first() else {
            return false;
        };
        token.cancel();
        st.open -= 1;
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slot {
    /// Marks the connection idle until [`Slot::busy`]; the token is cancelled
    /// if a newcomer takes its place.
    pub(super) fn idle(&mut self) -> CancellationToken {
        let mut st = self.conns.lock();
        if let Some((_, token)) = &self.idle {
            return token.clone();
        }
        let token = CancellationToken::new();
        if self.evicted {
            token.cancel();
            return token;
        }
        let ticket = st.next;
        st.next += 1;
        st.idle.insert(ticket, token.clone());
        self.idle = Some((ticket, token.clone()));
        token
    }

    /// Marks the connection busy; false when it was evicted meanwhile (then it must close).
    pub(super) fn busy(&mut self) -> bool {
        let mut st = self.conns.lock();
        if let Some((ticket, token)) = self.idle.take() {
            if token.is_cancelled() {
                self.evicted = true;
            } else {
                st.idle.remove(&ticket);
            }
        }
        !self.evicted
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.conns.lock();
        if let Some((ticket, token)) = self.idle.take() {
            if token.is_cancelled() {
                self.evicted = true;
            } else {
                st.idle.remove(&ticket);
            }
        }
        if !self.evicted {
            st.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_gives_way_and_busy_ones_never_do() {
        let conns = Conns::new(3);
        let mut a = conns.admit().unwrap();
        let mut b = conns.admit().unwrap();
        let mut c = conns.admit().unwrap();
        let b_idle = b.idle();
        let a_idle = a.idle();
        c.idle();
        assert!(c.busy());
        // Full: the newcomer takes b's place (idle longest), not a's or busy c's.
        let d = conns.admit().unwrap();
        assert!(b_idle.is_cancelled());
        assert!(!a_idle.is_cancelled());
        assert!(!b.busy(), "an evicted connection must close");
        drop(b);
        let e = conns.admit().unwrap();
        assert!(a_idle.is_cancelled());
        // a, c busy... a was evicted: its drop frees nothing twice.
        drop(a);
        // c, d and e are busy: no place for another.
        assert!(conns.admit().is_none());
        drop(d);
        assert!(conns.admit().is_some());
        drop((c, e));
        assert_eq!(conns.lock().open, 0);
        assert!(conns.lock().idle.is_empty());
    }

    #[test]
    fn running_out_of_descriptors_closes_the_longest_idle() {
        let conns = Conns::new(10);
        let mut a = conns.admit().unwrap();
        assert!(!conns.evict_oldest(), "nothing idle to close");
        let t = a.idle();
        assert!(conns.evict_oldest());
        assert!(t.is_cancelled());
        drop(a);
        assert_eq!(conns.lock().open, 0);
    }
}
