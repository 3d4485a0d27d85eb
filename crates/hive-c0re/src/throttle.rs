//! Log lines that anyone on the network can cause, at most one a minute.
//!
//! A refusal a stranger can provoke at will (a connection past the
//! dashboard's bound, a forged shell ticket) is worth a line in the journal,
//! but one per attempt lets them flood it, and journald then drops lines
//! that matter. So the first of a minute is logged with how many came since.

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
}
