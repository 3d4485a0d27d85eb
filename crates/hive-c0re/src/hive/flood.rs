//! How many notifications an agent can cause: a message to the operator or
//! a question is a notification on the bell and on every webhook, and an
//! agent (hostile, or looping) can send hundreds a minute. Per agent and
//! kind, the first [`BURST`] within a window are told one by one; the rest
//! are held back and told as one summary when the window ends. Only the
//! notifications are held: the messages and questions themselves are stored
//! and listed as always. The count lives in memory; a restart forgets the
//! held count, never a message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hive_sh4re::notification::NotificationKind;

/// Notifications of one kind about one agent told one by one within a window.
pub const BURST: u32 = 5;

/// How long a window lasts unless `HIVE_NOTIFY_WINDOW_SECS` says otherwise (for tests).
pub const WINDOW: Duration = Duration::from_secs(60);

/// The window in force.
pub fn window() -> Duration {
    crate::clock::secs_from_env("HIVE_NOTIFY_WINDOW_SECS", WINDOW)
}

/// What to do with one notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tell it.
    Tell,
    /// Hold it back: it is counted for the window's summary.
    Hold,
    /// A window with held notifications ended: tell their summary, then this one.
    SummaryThenTell(u32),
}

#[derive(Debug)]
struct Window {
    start: Instant,
    told: u32,
    held: u32,
}

/// The windows of every agent and kind.
#[derive(Debug)]
pub struct Flood {
    window: Duration,
    windows: Mutex<HashMap<(String, NotificationKind), Window>>,
    /// Woken when a window starts holding back, so its summary gets a timer.
    pub(crate) holding: tokio::sync::Notify,
}

impl Default for Flood {
    fn default() -> Self {
        Self::new(window())
    }
}

impl Flood {
    /// The length of a window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Windows of the given length.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            windows: Mutex::default(),
            holding: tokio::sync::Notify::new(),
        }
    }

    /// Counts one notification of `kind` about `agent` at `now` and says what to do with it.
    pub fn admit(&self, agent: &str, kind: NotificationKind, now: Instant) -> Verdict {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry((agent.to_owned(), kind)).or_insert(Window {
            start: now,
            told: 0,
            held: 0,
        });
        if now.duration_since(w.start) >= self.window {
            let held = w.held;
            *w = Window {
                start: now,
                told: 1,
                held: 0,
            };
            return if held > 0 {
                Verdict::SummaryThenTell(held)
            } else {
                Verdict::Tell
            };
        }
        if w.told < BURST {
            w.told += 1;
            Verdict::Tell
        } else {
            w.held += 1;
            if w.held == 1 {
                self.holding.notify_one();
            }
            Verdict::Hold
        }
    }

    /// The summaries due at `now` (windows that ended with notifications held
    /// back: agent, kind, how many), forgotten once returned; and when the
    /// next one falls due.
    pub fn due(&self, now: Instant) -> (Vec<(String, NotificationKind, u32)>, Option<Instant>) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = vec![];
        let mut next: Option<Instant> = None;
        windows.retain(|(agent, kind), w| {
            let end = w.start + self.window;
            if now < end {
                if w.held > 0 {
                    next = Some(next.map_or(end, |n| n.min(end)));
                }
                return true;
            }
            if w.held > 0 {
                due.push((agent.clone(), *kind, w.held));
            }
            false
        });
        (due, next)
    }
}

/// The text of a summary of `n` held-back notifications of `kind` about `agent`.
pub fn summary(agent: &str, kind: NotificationKind, n: u32, window: Duration) -> String {
    let secs = window.as_secs_f64().round();
    let what = match (kind, n) {
        (NotificationKind::Question, 1) => "asked 1 more question".to_owned(),
        (NotificationKind::Question, n) => format!("asked {n} more questions"),
        (_, 1) => "sent 1 more message to the operator".to_owned(),
        (_, n) => format!("sent {n} more messages to the operator"),
    };
    format!(
        "{agent} {what} within {secs}s; the notifications were held back (at most {BURST} a window \
         per agent), the {} themselves are in the dashboard",
        if kind == NotificationKind::Question {
            "questions"
        } else {
            "messages"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_burst_is_told_and_the_rest_summed_once_the_window_ends() {
        let f = Flood::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let m = NotificationKind::Message;
        for i in 0..BURST {
            assert_eq!(f.admit("alice", m, t0), Verdict::Tell, "#{i}");
        }
        for _ in 0..7 {
            assert_eq!(f.admit("alice", m, t0), Verdict::Hold);
        }
        // Another agent, and another kind of the same agent, count apart.
        assert_eq!(f.admit("bob", m, t0), Verdict::Tell);
        assert_eq!(
            f.admit("alice", NotificationKind::Question, t0),
            Verdict::Tell
        );
        let (due, next) = f.due(t0 + Duration::from_secs(59));
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_secs(60)));
        let (due, next) = f.due(t0 + Duration::from_secs(60));
        assert_eq!(due, [("alice".to_owned(), m, 7)]);
        assert_eq!(next, None);
        assert_eq!(
            f.admit("alice", m, t0 + Duration::from_secs(61)),
            Verdict::Tell
        );
    }

    #[test]
    fn a_notification_after_the_window_carries_its_summary() {
        let f = Flood::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let q = NotificationKind::Question;
        for _ in 0..BURST + 2 {
            f.admit("alice", q, t0);
        }
        assert_eq!(
            f.admit("alice", q, t0 + Duration::from_secs(10)),
            Verdict::SummaryThenTell(2)
        );
        assert!(
            f.due(t0 + Duration::from_secs(30)).0.is_empty(),
            "told once"
        );
        let s = summary("alice", q, 2, Duration::from_secs(10));
        assert!(
            s.starts_with("alice asked 2 more questions within 10s"),
            "{s}"
        );
    }
}
