//! The model API's health as the hive sees it: each agent's trouble (what its
//! `retrying` and `waiting` states show), and the hive-wide backoff.
//!
//! When the API fails with an error that is the API's, not the agent's
//! (overloaded, rate limited, 5xx, unreachable) for several agents within a
//! short window, the hive backs off together: new turns wait, one probe turn at
//! a time may start once the backoff delay has passed, and running turns that
//! meet the failure are told to give up instead of retrying on their own. A
//! probe that fails doubles the delay; the probe succeeding clears it. So a
//! hundred agents make one request per delay while the API is down, not a
//! hundred retries each.
//!
//! That a call succeeded is the harness's word, and any agent's harness may
//! be hostile: only the probe's success ends the backoff. Another agent's
//! (a turn begun before the backoff) lets the next probe start at once, as
//! another agent's turn, so one agent lying about the API costs at most one
//! probe at a time and never makes itself the probe. (The probe's own
//! harness may still lie; it is one agent, chosen by the inbox that waits.)

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use hive_sh4re::host::ApiBackoff;
use tokio::sync::watch;

use crate::clock::{now_ms, rfc3339};

/// Distinct agents that must meet an API failure within [`WINDOW_MS`] for the hive to back off.
pub const AGENTS_TO_BACK_OFF: usize = 3;
/// How recent an agent's API failure must be to count towards the backoff.
const WINDOW_MS: i64 = 120_000;
/// The first backoff delay; it doubles with each failed probe.
const FIRST_DELAY: Duration = Duration::from_secs(15);
/// The longest backoff delay.
const MAX_DELAY: Duration = Duration::from_secs(600);
/// Least time between two notices to the operator that one agent needs a login.
const LOGIN_NOTICE_EVERY_MS: i64 = 600_000;

/// How long a probe turn holds the probe slot without the API answering it:
/// a turn that hangs, or works long after its answer, holds no one else up.
const PROBE_LEASE_MS: i64 = 120_000;

/// What one agent's state is about right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Trouble {
    /// `API 529 · 3/10`, or why the turn failed.
    pub detail: String,
    /// When a waiting agent tries again (unix ms).
    pub retry_at: Option<i64>,
}

/// The hive's view of the model API.
pub struct ApiHealth {
    inner: Mutex<Inner>,
    /// Bumped whenever a held turn may start (backoff cleared, probe slot open).
    wake: watch::Sender<u64>,
    first_delay: Duration,
}

#[derive(Default)]
struct Inner {
    trouble: HashMap<String, Trouble>,
    /// Why an agent needs a login, as the API said it.
    login: HashMap<String, String>,
    /// When the operator was last told that an agent needs a login (unix ms).
    login_told: HashMap<String, i64>,
    /// Agents whose last API failure was the API's, and when, with the error.
    recent: HashMap<String, (i64, String)>,
    backoff: Option<Backoff>,
}

struct Backoff {
    since: i64,
    last_error: String,
    next_try: i64,
    delay: Duration,
    probe: Option<String>,
    /// When the probe began (unix ms).
    probe_since: i64,
    agents: BTreeSet<String>,
    /// The agent whose word brought the next probe forward, and when it was
    /// due before: that probe is another agent's.
    forwarded: Option<(String, i64)>,
}

/// Whether a turn may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Start it (as the probe, while the hive backs off).
    Go,
    /// Wait until this time (unix ms), or until woken.
    Until(i64),
}

/// True for API failures that are the API's and hit every agent alike.
pub fn is_hive_wide(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s == 408 || s == 429 || s >= 500,
    }
}

/// True for a refused credential.
pub fn is_auth(status: Option<u16>) -> bool {
    matches!(status, Some(401 | 403))
}

/// `API 529 overloaded` (or `API unreachable: ...` without a status).
pub fn describe(status: Option<u16>, error: &str) -> String {
    match status {
        Some(s) => format!("API {s} {error}").trim_end().to_owned(),
        None => format!("API unreachable: {error}").trim_end().to_owned(),
    }
}

impl Default for ApiHealth {
    fn default() -> Self {
        Self::new(first_delay())
    }
}

/// The first backoff delay: `HIVE_API_BACKOFF_MS` (for tests), else [`FIRST_DELAY`].
fn first_delay() -> Duration {
    std::env::var("HIVE_API_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(FIRST_DELAY)
}

impl ApiHealth {
    /// A healthy API, backing off from `first_delay` when it is not.
    pub fn new(first_delay: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            wake: watch::channel(0).0,
            first_delay,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes turns held by the backoff when one may start.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn wake(&self) {
        self.wake.send_modify(|v| *v += 1);
    }

    /// What an agent's state is about, if anything.
    pub fn trouble(&self, agent: &str) -> Option<Trouble> {
        self.lock().trouble.get(agent).cloned()
    }

    /// Sets (or clears) what an agent's state is about.
    pub fn set_trouble(&self, agent: &str, t: Option<Trouble>) {
        let mut g = self.lock();
        match t {
            Some(t) => g.trouble.insert(agent.to_owned(), t),
            None => g.trouble.remove(agent),
        };
    }

    /// Why the agent needs a login, when the API refused its credentials.
    pub fn login_reason(&self, agent: &str) -> Option<String> {
        self.lock().login.get(agent).cloned()
    }

    /// Records (or clears) why the agent needs a login; true when the operator
    /// should be told: it is new, and no notice for this agent went out lately
    /// (a harness toggling its report cannot flood the operator's inbox).
    pub fn set_login_reason(&self, agent: &str, reason: Option<String>) -> bool {
        let mut g = self.lock();
        let Some(r) = reason else {
            g.login.remove(agent);
            return false;
        };
        if g.login.insert(agent.to_owned(), r).is_some() {
            return false;
        }
        let now = now_ms();
        let last = g.login_told.get(agent).copied().unwrap_or(i64::MIN / 2);
        if now - last < LOGIN_NOTICE_EVERY_MS {
            return false;
        }
        g.login_told.insert(agent.to_owned(), now);
        true
    }

    /// claude met an API failure and retries: notes it; true when the turn
    /// should give up now because the hive backs off.
    pub fn failed(&self, agent: &str, status: Option<u16>, error: &str) -> bool {
        if !is_hive_wide(status) {
            return false;
        }
        let now = now_ms();
        let what = describe(status, error);
        let mut g = self.lock();
        g.recent.insert(agent.to_owned(), (now, what.clone()));
        g.recent.retain(|_, (t, _)| now - *t <= WINDOW_MS);
        let enough = g.recent.len() >= AGENTS_TO_BACK_OFF;
        match &mut g.backoff {
            Some(b) => {
                b.last_error = what;
                b.agents.insert(agent.to_owned());
                true
            }
            None if enough => {
                tracing::warn!(
                    agents = g.recent.len(),
                    "the model API fails for several agents ({what}): the hive backs off"
                );
                let agents = g.recent.keys().cloned().collect();
                g.backoff = Some(Backoff {
                    since: now,
                    last_error: what,
                    next_try: now + self.first_delay.as_millis() as i64,
                    delay: self.first_delay,
                    probe: None,
                    probe_since: 0,
                    agents,
                    forwarded: None,
                });
                true
            }
            None => false,
        }
    }

    /// May `agent` start a turn now? While the hive backs off, one agent at a
    /// time may, as the probe, once the delay has passed.
    pub fn gate(&self, agent: &str) -> Gate {
        let mut g = self.lock();
        let Some(b) = &mut g.backoff else {
            return Gate::Go;
        };
        let now = now_ms();
        if b.probe.is_some() && now - b.probe_since > PROBE_LEASE_MS {
            tracing::warn!(probe = ?b.probe, "the probe turn holds on without an answer: another may probe");
            b.probe = None;
            b.delay = (b.delay * 2).min(MAX_DELAY);
            b.next_try = now;
        }
        match &b.probe {
            Some(p) if p == agent => Gate::Go,
            Some(_) => Gate::Until(now_ms() + b.delay.as_millis() as i64),
            None => match &b.forwarded {
                Some((by, due)) if by == agent => Gate::Until((*due).max(now + 1)),
                _ if now >= b.next_try => {
                    tracing::info!(agent, "probing the model API with one turn");
                    b.probe = Some(agent.to_owned());
                    b.probe_since = now;
                    b.forwarded = None;
                    Gate::Go
                }
                _ => Gate::Until(b.next_try),
            },
        }
    }

    /// A turn of `agent` ended (or its harness went away mid-turn: `ok` false,
    /// no status). The probe's success clears the backoff, another agent's
    /// lets a probe start now; a probe the API failed doubles the delay.
    pub fn turn_ended(&self, agent: &str, ok: bool, api_status: Option<u16>) {
        let mut g = self.lock();
        if ok {
            g.recent.remove(agent);
            let Some(b) = &mut g.backoff else { return };
            let now = now_ms();
            if b.probe.as_deref() == Some(agent) {
                g.backoff = None;
                tracing::info!(
                    agent,
                    "the probe turn succeeded: the hive's API backoff is over"
                );
                g.recent.clear();
            } else if b.probe.is_none() && b.next_try > now && b.forwarded.is_none() {
                tracing::info!(
                    agent,
                    "an agent's turn succeeded: probing the model API now"
                );
                b.forwarded = Some((agent.to_owned(), b.next_try));
                b.next_try = now;
            } else {
                return;
            }
            drop(g);
            self.wake();
            return;
        }
        let Some(b) = &mut g.backoff else { return };
        if b.probe.as_deref() != Some(agent) {
            return;
        }
        b.probe = None;
        if is_hive_wide(api_status) {
            b.delay = (b.delay * 2).min(MAX_DELAY);
        }
        b.next_try = now_ms() + b.delay.as_millis() as i64;
        drop(g);
        self.wake();
    }

    /// The agent's harness was ended because its container lost its network:
    /// the API failures it met were its own, and a probe turn it held says
    /// nothing of the API, so its slot is freed without doubling the delay.
    pub fn cut_off(&self, agent: &str) {
        let mut g = self.lock();
        g.recent.remove(agent);
        if let Some(b) = &mut g.backoff
            && b.probe.as_deref() == Some(agent)
        {
            b.probe = None;
            drop(g);
            self.wake();
        }
    }

    /// The model answered a call of `agent`'s (a real `assistant` line): the
    /// API works again, whatever the rest of the turn does.
    pub fn answered(&self, agent: &str) {
        if self.lock().backoff.is_some() {
            self.turn_ended(agent, true, None);
        }
    }

    /// A claim the gate let through found no message: the probe slot is free again.
    pub fn unclaimed(&self, agent: &str) {
        let mut g = self.lock();
        if let Some(b) = &mut g.backoff
            && b.probe.as_deref() == Some(agent)
        {
            b.probe = None;
            drop(g);
            self.wake();
        }
    }

    /// The hive-wide backoff in force, if any.
    pub fn backoff(&self) -> Option<ApiBackoff> {
        let g = self.lock();
        g.backoff.as_ref().map(|b| ApiBackoff {
            since: rfc3339(b.since),
            last_error: b.last_error.clone(),
            next_try: rfc3339(b.next_try),
            probe: b.probe.clone(),
            agents: b.agents.iter().cloned().collect(),
        })
    }

    /// When the next probe may start while the hive backs off (unix ms).
    pub fn next_try(&self) -> Option<i64> {
        self.lock().backoff.as_ref().map(|b| b.next_try)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_agents_failing_hold_turns_behind_one_probe() {
        let h = ApiHealth::new(Duration::ZERO);
        assert!(!h.failed("a", Some(529), "overloaded"));
        assert!(
            !h.failed("b", Some(401), "authentication_failed"),
            "not the API's"
        );
        assert!(!h.failed("b", Some(500), "server_error"));
        assert_eq!(h.gate("a"), Gate::Go);
        assert!(
            h.failed("c", None, "connection refused"),
            "the third backs off"
        );
        assert!(
            h.failed("a", Some(529), "overloaded"),
            "running turns give up"
        );
        let b = h.backoff().unwrap();
        assert_eq!(b.agents, ["a", "b", "c"]);
        assert_eq!(b.last_error, "API 529 overloaded");
        // One probe at a time.
        assert_eq!(h.gate("b"), Gate::Go);
        assert!(matches!(h.gate("c"), Gate::Until(_)));
        assert_eq!(h.gate("b"), Gate::Go, "the probe itself goes on");
        h.turn_ended("b", false, Some(529));
        assert_eq!(h.backoff().unwrap().probe, None);
        assert_eq!(h.gate("c"), Gate::Go, "the next probe");
        h.answered("a");
        assert!(
            h.backoff().is_some(),
            "an agent that is not the probe cannot end it"
        );
        h.answered("c");
        assert!(h.backoff().is_none(), "the probe's answer clears it");
        assert_eq!(h.gate("b"), Gate::Go);
    }

    #[test]
    fn a_probe_that_holds_on_gives_way() {
        let h = ApiHealth::new(Duration::ZERO);
        for a in ["a", "b", "c"] {
            h.failed(a, Some(429), "rate_limited");
        }
        assert_eq!(h.gate("a"), Gate::Go);
        assert!(matches!(h.gate("b"), Gate::Until(_)));
        h.lock().backoff.as_mut().unwrap().probe_since -= PROBE_LEASE_MS + 1;
        assert_eq!(h.gate("b"), Gate::Go, "the lease ran out");
        assert_eq!(h.backoff().unwrap().probe.as_deref(), Some("b"));
        h.turn_ended("a", true, None);
        assert!(h.backoff().is_some(), "only the probe's success clears it");
        h.turn_ended("b", true, None);
        assert!(h.backoff().is_none(), "the probe's success clears it");
    }

    /// A success from an agent that is not the probe (a turn from before the
    /// backoff, or a harness that lies) starts a probe now, and no more.
    #[test]
    fn another_agents_success_brings_the_next_probe_forward() {
        let h = ApiHealth::new(Duration::from_secs(600));
        for a in ["a", "b", "c"] {
            h.failed(a, Some(529), "overloaded");
        }
        assert!(matches!(h.gate("b"), Gate::Until(_)));
        h.turn_ended("mallory", true, None);
        assert!(h.backoff().is_some());
        assert!(
            matches!(h.gate("mallory"), Gate::Until(_)),
            "not the one who brought it forward"
        );
        assert_eq!(h.gate("b"), Gate::Go, "a probe at once");
        assert!(matches!(h.gate("c"), Gate::Until(_)), "one at a time");
        h.answered("mallory");
        assert_eq!(h.backoff().unwrap().probe.as_deref(), Some("b"));
        h.turn_ended("b", false, Some(529));
        assert!(matches!(h.gate("c"), Gate::Until(_)), "the delay stands");
    }

    #[test]
    fn a_failed_probe_doubles_the_delay() {
        let h = ApiHealth::new(Duration::from_secs(10));
        for a in ["a", "b", "c"] {
            h.failed(a, Some(503), "unavailable");
        }
        assert!(
            matches!(h.gate("a"), Gate::Until(_)),
            "not before the delay"
        );
        let mut g = h.lock();
        let b = g.backoff.as_mut().unwrap();
        b.next_try = 0;
        drop(g);
        assert_eq!(h.gate("a"), Gate::Go);
        h.turn_ended("a", false, Some(503));
        let g = h.lock();
        assert_eq!(g.backoff.as_ref().unwrap().delay, Duration::from_secs(20));
    }

    /// An agent whose network went away met "API unreachable" through no
    /// fault of the API's: neither its failure nor its probe's counts.
    #[test]
    fn an_agent_cut_off_from_its_network_is_no_news_of_the_api() {
        let h = ApiHealth::new(Duration::from_secs(10));
        h.failed("a", None, "connection refused");
        h.failed("b", Some(529), "overloaded");
        h.cut_off("a");
        assert!(
            !h.failed("c", Some(529), "overloaded"),
            "a's failure is gone"
        );
        assert!(h.failed("d", Some(529), "overloaded"));
        h.lock().backoff.as_mut().unwrap().next_try = 0;
        assert_eq!(h.gate("b"), Gate::Go, "b probes");
        h.cut_off("b");
        h.turn_ended("b", false, None);
        let g = h.lock();
        let backoff = g.backoff.as_ref().unwrap();
        assert_eq!(
            (backoff.probe.as_deref(), backoff.delay),
            (None, Duration::from_secs(10))
        );
    }

    #[test]
    fn login_notices_are_few() {
        let h = ApiHealth::default();
        assert!(
            h.set_login_reason("a", Some("API 401".into())),
            "the first is told"
        );
        assert!(
            !h.set_login_reason("a", Some("API 401".into())),
            "not twice"
        );
        assert!(!h.set_login_reason("a", None));
        assert!(
            !h.set_login_reason("a", Some("API 401".into())),
            "not again within ten minutes"
        );
        assert_eq!(h.login_reason("a").as_deref(), Some("API 401"));
        assert!(h.set_login_reason("b", Some("API 403".into())));
    }
}
