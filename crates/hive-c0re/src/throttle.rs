//! What others can make hive-c0re do at will, at most so often.
//!
//! [`Throttle`]: a refusal a stranger can provoke (a connection past the
//! dashboard's bound, a forged shell ticket) is worth a line in the journal,
//! but one per attempt lets them flood it, and journald then drops lines
//! that matter. So the first of a minute is logged with how many came since.
//! [`PerMinute`]: a request an agent may make now and then (its harness's
//! figures) but that writes the store, taken at most so many times a minute;
//! or an amount (the bytes of its history) taken at most so much a minute.
//! [`Spaced`]: a notice an agent can set off at will (its turns failing, its
//! harness crashing), told at most once an interval per agent, the next one
//! with how many were held back.
//! [`Paced`]: what an agent may ask at will (every request on its socket),
//! served at most at a pace; past it the asker waits its turn instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts occurrences and says when one should be logged.
pub struct Throttle {
    every: Duration,
    state: Mutex<(u64, Option<Instant>)>,
}

impl Throttle {
    /// At most one log line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((0, None)),
        }
    }

    /// Counts one occurrence; when a line is due, how many occurred since the
    /// last one (this one included).
    pub fn due(&self) -> Option<u64> {
        // Every critical section leaves the state whole, so a poisoned lock is still usable.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        if st.1.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        let n = std::mem::take(&mut st.0);
        st.1 = Some(Instant::now());
        Some(n)
    }
}

/// At most `limit` of something (requests, bytes) per key (an agent) in each minute.
pub struct PerMinute {
    limit: u64,
    /// Each key's minute: when it began, what it took, whether a refusal came yet.
    windows: Mutex<HashMap<String, (Instant, u64, bool)>>,
}

/// What [`PerMinute::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// It fits in this minute, and is counted.
    Taken,
    /// It does not fit; `first` when it is this minute's first refusal for the key.
    Refused { first: bool },
}

impl PerMinute {
    /// At most `limit` a minute per key.
    pub fn new(limit: impl Into<u64>) -> Self {
        Self {
            limit: limit.into(),
            windows: Mutex::default(),
        }
    }

    /// Counts one for `key`; false when it is over the limit this minute.
    pub fn allow(&self, key: &str) -> bool {
        self.take(key, 1) == Take::Taken
    }

    /// Counts `amount` for `key` when it fits in what is left of this minute's limit.
    pub fn take(&self, key: &str, amount: u64) -> Take {
        // Every critical section leaves the map whole, so a poisoned lock is still usable.
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Old windows go, so the map holds only keys seen this minute.
        w.retain(|_, (start, _, _)| now.duration_since(*start) < Duration::from_secs(60));
        let (_, used, refused) = w.entry(key.to_owned()).or_insert((now, 0, false));
        if used.saturating_add(amount) <= self.limit {
            *used += amount;
            return Take::Taken;
        }
        let first = !std::mem::replace(refused, true);
        Take::Refused { first }
    }

    /// Whether `key` used this minute's whole limit, counting nothing: None
    /// while there is room, else whether this is the minute's first refusal.
    pub fn full(&self, key: &str) -> Option<bool> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        w.retain(|_, (start, _, _)| now.duration_since(*start) < Duration::from_secs(60));
        match w.get_mut(key) {
            Some((_, used, refused)) if *used >= self.limit => {
                Some(!std::mem::replace(refused, true))
            }
            _ => None,
        }
    }
}

/// At most one per key (an agent) in each `every`: a notice an agent can
/// set off at will, which would otherwise page the operator (or wake the
/// manager) as often. Those held back are counted, so that the next one told
/// can say how many there were.
pub struct Spaced {
    every: Duration,
    /// Each key's last one told, and how many were held back since.
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Spaced {
    /// At most one per key in each `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::default(),
        }
    }

    /// The interval between two told.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// True, and counted, when `key` had none in the last `every`.
    pub fn allow(&self, key: &str) -> bool {
        self.due(key).is_some()
    }

    /// Counts one for `key`; when `key` had none told in the last `every`,
    /// how many were counted since the last one told, this one included.
    pub fn due(&self, key: &str) -> Option<u64> {
        self.count(key, false)
    }

    /// Counts one for `key` that is told whatever the interval says (a new
    /// interval starts with it): how many were counted since the last one
    /// told, this one included.
    pub fn tell(&self, key: &str) -> u64 {
        self.count(key, true).unwrap_or(1)
    }

    fn count(&self, key: &str, at_once: bool) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Old ones go, so the map holds only keys seen within `every`, and
        // those with a count still to tell.
        last.retain(|_, (t, held)| *held > 0 || now.duration_since(*t) < self.every);
        let held = match last.get_mut(key) {
            Some((t, held)) if !at_once && now.duration_since(*t) < self.every => {
                *held += 1;
                return None;
            }
            Some((_, held)) => *held,
            None => 0,
        };
        last.insert(key.to_owned(), (now, 0));
        Some(held + 1)
    }
}

/// At most `limit` per key (an agent) in any stretch of `every`, at once or
/// spread: a bucket of `limit` that fills evenly over `every`. Past it a
/// taker waits until its share is due, so it is slowed, never refused.
pub struct Paced {
    /// How far apart takers go once the bucket is empty.
    interval: Duration,
    /// How far ahead of now a key's next due time may be and still go at once.
    ahead: Duration,
    /// Each key's next due time (when its bucket would be empty again), behind
    /// a lock its takers queue on, first come first served.
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<tokio::time::Instant>>>>,
}

impl Paced {
    /// At most `limit` per key in any stretch of `every`.
    pub fn new(limit: u32, every: Duration) -> Self {
        let interval = every / limit.max(1);
        Self {
            interval,
            ahead: every.saturating_sub(interval),
            keys: Mutex::default(),
        }
    }

    /// Waits until `key` may go, and counts it; true when it had to wait.
    /// A taker dropped while it waits takes nothing (its connection went away).
    pub async fn take(&self, key: &str) -> bool {
        let due = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            // A key whose bucket is full again, and that nobody waits on, is
            // as a fresh one: it goes, so the map holds only keys heard lately.
            keys.retain(|_, due| {
                Arc::strong_count(due) > 1 || due.try_lock().is_ok_and(|due| *due > now)
            });
            keys.entry(key.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(now)))
                .clone()
        };
        let mut due = due.lock().await;
        let now = tokio::time::Instant::now();
        let at = due.checked_sub(self.ahead).unwrap_or(now);
        let waited = at > now;
        if waited {
            tokio::time::sleep_until(at).await;
        }
        *due = (*due).max(tokio::time::Instant::now()) + self.interval;
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_lets_a_bucket_through_at_once_then_one_an_interval() {
        let p = Paced::new(3, Duration::from_millis(600));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            assert!(!p.take("a").await, "the bucket goes at once");
        }
        assert!(!p.take("b").await, "each key has its own");
        assert!(p.take("a").await);
        assert!(p.take("a").await);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(390) && took < Duration::from_millis(1000),
            "two takes past the bucket waited {took:?}, 200 ms apart"
        );
    }

    #[tokio::test]
    async fn a_taker_that_stops_waiting_takes_nothing() {
        let p = Paced::new(1, Duration::from_millis(400));
        assert!(!p.take("a").await);
        for _ in 0..5 {
            let gave_up = tokio::time::timeout(Duration::from_millis(10), p.take("a")).await;
            assert!(gave_up.is_err(), "it waits");
        }
        let start = tokio::time::Instant::now();
        assert!(p.take("a").await);
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "the abandoned takes were not counted: waited {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn spaced_allows_one_per_key_in_each_interval() {
        let s = Spaced::new(Duration::from_millis(50));
        assert!(s.allow("a") && s.allow("b"));
        assert!(!s.allow("a") && !s.allow("b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.allow("a"));
        assert!(!s.allow("a"));
    }

    #[test]
    fn spaced_counts_what_it_held_back_for_the_next_one_told() {
        let s = Spaced::new(Duration::from_millis(50));
        assert_eq!(s.due("a"), Some(1));
        assert_eq!(s.due("a"), None);
        assert_eq!(s.due("a"), None);
        assert_eq!(s.due("b"), Some(1));
        // Past the interval the count is still told, however long it waited.
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.due("a"), Some(3));
        assert_eq!(s.due("a"), None);
        // One told at once takes the count and starts a new interval.
        assert_eq!(s.tell("a"), 2);
        assert_eq!(s.due("a"), None);
        assert_eq!(s.tell("b"), 1);
    }

    #[test]
    fn the_first_is_due_then_none_until_the_interval_passed_with_the_count() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.due(), Some(1));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.due(), Some(3));
    }

    #[test]
    fn per_minute_says_full_without_counting() {
        let r = PerMinute::new(2u32);
        assert_eq!(r.full("a"), None);
        assert!(r.allow("a") && r.allow("a"));
        assert_eq!(r.full("a"), Some(true), "the first refusal");
        assert_eq!(r.full("a"), Some(false));
        assert_eq!(r.full("b"), None);
    }

    #[test]
    fn per_minute_counts_each_key_apart() {
        let r = PerMinute::new(2u32);
        assert!(r.allow("a") && r.allow("a"));
        assert!(!r.allow("a"));
        assert!(r.allow("b"));
    }

    #[test]
    fn an_amount_is_taken_only_when_it_fits_and_the_first_refusal_is_told() {
        let r = PerMinute::new(100u64);
        assert_eq!(r.take("a", 60), Take::Taken);
        assert_eq!(r.take("a", 50), Take::Refused { first: true });
        assert_eq!(r.take("a", 50), Take::Refused { first: false });
        // A refused amount is not counted: what still fits is taken.
        assert_eq!(r.take("a", 40), Take::Taken);
        assert_eq!(r.take("a", 1), Take::Refused { first: false });
        assert_eq!(r.take("b", 100), Take::Taken);
    }
}
