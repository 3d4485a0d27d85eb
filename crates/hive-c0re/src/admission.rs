//! Admission control for turns: at most `limit` claude processes run at once
//! across the hive; the rest wait in one queue.
//!
//! A *slot* is one agent running claude (a turn, `/compact` or notes
//! compaction). An agent holds at most one: its harness never runs two
//! claude processes at once, and however many connections a hostile harness
//! opens, the agent counts once. A [`Slot`] is a guard: dropping it gives the
//! slot back, so a turn's end, a harness that dies (its connection, which
//! holds the guard, closes) and a stopped agent all release it; nothing is
//! leaked by a path that forgot to.
//!
//! Waiting agents are served first come, first served by the arrival of
//! their oldest unclaimed message (the key a [`Ticket`] carries), not by when
//! their harness asked: a harness that re-asks after a long poll keeps its
//! place. Waking is targeted: when a slot frees (or a waiter ahead leaves),
//! only the waiters that may now go are notified; nobody polls.
//!
//! The manager never waits for a crowd of agents: one of the `limit` slots is
//! reserved for it, and agents share the others. A reservation rather than a
//! priority, because a priority only puts the manager first in line, and the
//! line moves when some agent's turn ends, which may take up to its
//! `turn_timeout` (30 minutes by default); with a reserved slot the manager
//! starts at once whatever the agents do, and the hive still never runs more
//! than `limit` claude processes. The cost is one slot idle while the manager
//! is, which is why the limit is at least 2.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hive_sh4re::AgentName;
use tokio::sync::Notify;

/// The least `--max-concurrent-turns`: one slot for the manager, one for the agents.
pub const MIN_LIMIT: usize = 2;

/// The memory one running claude is budgeted, for the default limit. A
/// claude process (node) starts at about 100 MB resident (issue 16: 101 of
/// them took about 10 GB), and a turn grows it with its context and starts
/// tools beside it (shells, git, compilers); four times the start-up figure
/// keeps a full hive out of swap and clear of the OOM killer.
pub const MEM_PER_TURN: u64 = 400 * 1024 * 1024;

/// The default limit for `mem_available` bytes of available memory: one
/// slot per [`MEM_PER_TURN`], at least [`MIN_LIMIT`].
pub fn default_limit(mem_available: u64) -> usize {
    ((mem_available / MEM_PER_TURN) as usize).max(MIN_LIMIT)
}

/// Where a waiter stands in line: its oldest unclaimed message's arrival
/// (unix ms) and id; ties between agents go to the lower id.
pub type Key = (i64, i64);

/// The hive's turn slots and the agents waiting for one.
pub struct Admission {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Agents holding a slot, with how many guards each holds.
    holders: HashMap<String, usize>,
    /// Agents (not the manager) in line, first first.
    line: BTreeMap<(Key, u64), Waiting>,
    next_ticket: u64,
}

struct Waiting {
    agent: String,
    notify: Arc<Notify>,
}

/// An agent's place in line; leaves the line when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    agent: AgentName,
    key: Key,
    id: u64,
    notify: Arc<Notify>,
}

/// A held slot; given back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    agent: String,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("agent", &self.agent).finish()
    }
}

impl Admission {
    /// At most `limit` (at least [`MIN_LIMIT`]) claude processes at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(MIN_LIMIT),
            inner: Mutex::default(),
        })
    }

    /// The most claude processes the hive runs at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the line at `key`: the ticket may then [`Ticket::admit`] when its turn comes.
    pub fn join(self: &Arc<Self>, agent: &AgentName, key: Key) -> Ticket {
        let notify = Arc::new(Notify::new());
        let mut g = self.lock();
        g.next_ticket += 1;
        let id = g.next_ticket;
        if !agent.is_manager() {
            g.line.insert(
                (key, id),
                Waiting {
                    agent: agent.to_string(),
                    notify: notify.clone(),
                },
            );
        }
        Ticket {
            admission: self.clone(),
            agent: agent.clone(),
            key,
            id,
            notify,
        }
    }

    /// Slots the agents (all but the manager) may hold now.
    fn free(&self, g: &Inner) -> usize {
        let agents = g.holders.keys().filter(|a| !is_manager(a)).count();
        (self.limit - 1).saturating_sub(agents)
    }

    /// Wakes the waiters that may go now (each checks for itself).
    fn wake(&self, g: &Inner) {
        for w in g.line.values().take(self.free(g)) {
            w.notify.notify_one();
        }
    }

    /// Agents running claude now (the manager included).
    pub fn running(&self) -> usize {
        self.lock().holders.len()
    }

    /// When the agent's place in line was taken (its oldest waiting message's
    /// arrival, unix ms) and its 1-based position; None when it does not wait.
    pub fn queued(&self, agent: &str) -> Option<(i64, usize)> {
        let g = self.lock();
        if g.holders.contains_key(agent) {
            return None;
        }
        g.line
            .iter()
            .enumerate()
            .find(|(_, (_, w))| w.agent == agent)
            .map(|(i, (((at, _), _), _))| (*at, i + 1))
    }
}

fn is_manager(agent: &str) -> bool {
    AgentName::parse(agent).is_ok_and(|a| a.is_manager())
}

impl Ticket {
    /// Where it stands in line.
    pub fn key(&self) -> Key {
        self.key
    }

    /// True when [`Ticket::admit`] would give a slot now.
    pub fn may_go(&self) -> bool {
        let a = &self.admission;
        let g = a.lock();
        if self.agent.is_manager() || g.holders.contains_key(self.agent.as_str()) {
            return true;
        }
        let ahead = g.line.range(..(self.key, self.id)).count();
        g.line.contains_key(&(self.key, self.id)) && ahead < a.free(&g)
    }

    /// Takes a slot if this ticket's turn has come; else None (wait on [`Ticket::notified`]).
    pub fn admit(&self) -> Option<Slot> {
        if !self.may_go() {
            return None;
        }
        let a = &self.admission;
        let mut g = a.lock();
        // Another task may have taken the last slot since may_go: check again under the lock.
        let agent = self.agent.as_str();
        let holds = g.holders.contains_key(agent);
        let ahead = g.line.range(..(self.key, self.id)).count();
        if !(self.agent.is_manager() || holds || ahead < a.free(&g)) {
            return None;
        }
        g.line.remove(&(self.key, self.id));
        *g.holders.entry(agent.to_owned()).or_default() += 1;
        // Its other requests in line (a compaction asked for while its turn
        // waited) now go at once, on this slot: wake them.
        for w in g.line.values().filter(|w| w.agent == agent) {
            w.notify.notify_one();
        }
        Some(Slot {
            admission: a.clone(),
            agent: agent.to_owned(),
        })
    }

    /// Resolves when this ticket may have come to the front (a permit is kept,
    /// so a wake between [`Ticket::admit`] and this call is not lost).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut g = a.lock();
        if g.line.remove(&(self.key, self.id)).is_some() {
            // Those behind moved up: one of them may go now.
            a.wake(&g);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut g = a.lock();
        if let Some(n) = g.holders.get_mut(&self.agent) {
            *n -= 1;
            if *n == 0 {
                g.holders.remove(&self.agent);
                a.wake(&g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AgentName {
        AgentName::parse(s).unwrap()
    }

    #[test]
    fn the_default_is_one_slot_per_400_mib_and_at_least_two() {
        assert_eq!(default_limit(0), 2);
        assert_eq!(default_limit(MEM_PER_TURN * 3 - 1), 2);
        assert_eq!(default_limit(MEM_PER_TURN * 16), 16);
        assert_eq!(Admission::new(0).limit(), MIN_LIMIT);
    }

    #[test]
    fn waiters_go_in_the_order_of_their_oldest_message_not_of_asking() {
        let a = Admission::new(3); // two agents at once, one slot for the manager
        let late = a.join(&name("late"), (300, 3));
        let early = a.join(&name("early"), (100, 1));
        let mid = a.join(&name("mid"), (200, 2));
        assert!(!late.may_go(), "two are ahead of it");
        let s1 = early.admit().expect("first in line");
        let s2 = mid.admit().expect("second in line");
        assert!(late.admit().is_none(), "every agent slot is taken");
        assert_eq!(a.queued("late"), Some((300, 1)));
        assert_eq!(a.queued("early"), None, "it runs");
        assert_eq!(a.running(), 2);
        // The manager has its own slot whatever the agents hold.
        let m = a.join(&name("manager"), (999, 9));
        let ms = m.admit().expect("the manager never waits");
        assert_eq!(a.running(), 3);
        drop(s1);
        let s3 = late.admit().expect("a slot freed");
        drop((s2, s3, ms));
        assert_eq!(a.running(), 0);
    }

    #[test]
    fn an_agent_counts_once_however_many_slots_it_asks_for() {
        let a = Admission::new(2);
        let t1 = a.join(&name("alice"), (1, 1));
        let t2 = a.join(&name("alice"), (2, 2));
        let s1 = t1.admit().unwrap();
        let s2 = t2.admit().expect("alice already holds the slot");
        let bob = a.join(&name("bob"), (0, 0));
        assert!(bob.admit().is_none());
        drop(s1);
        assert!(bob.admit().is_none(), "alice still runs");
        drop(s2);
        assert!(bob.admit().is_some(), "released with its last guard");
    }

    #[tokio::test]
    async fn a_released_slot_wakes_the_first_in_line_and_a_leaver_gives_way() {
        let a = Admission::new(2);
        let first = a.join(&name("first"), (1, 1));
        let slot = first.admit().unwrap();
        let second = a.join(&name("second"), (2, 2));
        let third = a.join(&name("third"), (3, 3));
        assert!(second.admit().is_none() && third.admit().is_none());
        drop(slot);
        // The wake is a kept permit: it is there though nobody awaited yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), second.notified())
            .await
            .expect("the first in line is woken");
        assert!(!third.may_go());
        // The first in line leaves (paused, cancelled, its harness gone): the next may go.
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(1), third.notified())
            .await
            .expect("the next is woken");
        assert!(third.admit().is_some());
    }
}
