//! What others can make hive-c0re do at will, at most so often.
//!
//! [`Throttle`]: a refusal a stranger can provoke (a connection past the
//! dashboard's bound, a forged shell ticket) is worth a line in the journal,
//! but one per attempt lets them flood it, and journald then drops lines
//! that matter. So the first of a minute is logged with how many came since.
//! [`PerMinute`]: a request an agent may make now and then (its harness's
//! figures) but that writes the store, taken at most so many times a minute.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// At most `limit` of something per key (an agent) in each minute.
pub struct PerMinute {
    limit: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl PerMinute {
    /// At most `limit` a minute per key.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::default(),
        }
    }

    /// Counts one for `key`; false when it is over the limit this minute.
    pub fn allow(&self, key: &str) -> bool {
        // Every critical section leaves the map whole, so a poisoned lock is still usable.
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Old windows go, so the map holds only keys seen this minute.
        w.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        let (_, n) = w.entry(key.to_owned()).or_insert((now, 0));
        *n += 1;
        *n <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn per_minute_counts_each_key_apart() {
        let r = PerMinute::new(2);
        assert!(r.allow("a") && r.allow("a"));
        assert!(!r.allow("a"));
        assert!(r.allow("b"));
    }
}
