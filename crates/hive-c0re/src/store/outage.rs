//! The requests a store failed because its database was out of reach, kept
//! until the node's heartbeat tells the operator of them. A blip shorter
//! than a heartbeat interval fails requests without failing a heartbeat;
//! each caller was told, and this leaves the operator a trace as well.

use std::sync::Mutex;

use tokio::sync::watch;

use super::StoreError;
use crate::clock::now_ms;

/// A run of failures: when the first and the last were, why the first failed, how many.
#[derive(Clone, Debug, PartialEq)]
pub struct Outage {
    /// The first failure (unix ms).
    pub since: i64,
    /// The last failure (unix ms).
    pub until: i64,
    /// Why the first one failed, as a sentence.
    pub first: String,
    /// Requests failed, heartbeats included.
    pub failures: u64,
}

impl Outage {
    /// One failure at `at` (unix ms).
    pub fn new(at: i64, why: String) -> Self {
        Self {
            since: at,
            until: at,
            first: why,
            failures: 1,
        }
    }

    /// Both runs as one: the earlier start, the later end, the earlier reason.
    pub fn merge(self, other: Self) -> Self {
        let (early, late) = if other.since < self.since {
            (other, self)
        } else {
            (self, other)
        };
        Self {
            until: early.until.max(late.until),
            failures: early.failures + late.failures,
            ..early
        }
    }
}

/// The failures of one store since the last time they were taken.
#[derive(Debug, Default)]
pub struct OutageLog {
    run: Mutex<Option<Outage>>,
    /// The error of the failure that began the run, each time one begins.
    began: watch::Sender<Option<String>>,
    /// Why the database's disk is full, from the first write it refused for
    /// that until one goes through again (see [`OutageLog::wrote`]).
    full: watch::Sender<Option<String>>,
}

impl OutageLog {
    /// Notes `e` when it says the database was out of reach, or its disk full.
    pub fn note(&self, e: &StoreError) {
        if let StoreError::DiskFull(_) = e {
            self.full.send_if_modified(|f| {
                let began = f.is_none();
                if began {
                    *f = Some(e.to_string());
                }
                began
            });
            return;
        }
        let StoreError::Unreachable(why) = e else {
            return;
        };
        if self.add(Outage::new(
            now_ms(),
            format!("it could not reach it ({why})."),
        )) {
            self.began.send_replace(Some(e.to_string()));
        }
    }

    /// Adds `failures` to the run; true when they begin it.
    pub fn add(&self, failures: Outage) -> bool {
        let mut run = self.run.lock().unwrap_or_else(|p| p.into_inner());
        let (merged, began) = match run.take() {
            Some(earlier) => (earlier.merge(failures), false),
            None => (failures, true),
        };
        *run = Some(merged);
        began
    }

    /// The failures noted since the last call, if any.
    pub fn take(&self) -> Option<Outage> {
        self.run.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// True while failures are noted and not taken yet.
    pub fn is_open(&self) -> bool {
        self.run.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// A write went through: the database's disk has room (again).
    pub fn wrote(&self) {
        self.full.send_if_modified(|f| f.take().is_some());
    }

    /// Why the database's disk is full, while it is; changes when that
    /// begins and when a write goes through again.
    pub fn full(&self) -> watch::Receiver<Option<String>> {
        self.full.subscribe()
    }

    /// Changes when a run of failures begins, to the error (as a sentence)
    /// that began it, so the operator can be shown it at once.
    pub fn beginnings(&self) -> watch::Receiver<Option<String>> {
        self.began.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_lasts_from_the_first_refused_write_to_the_next_one_stored() {
        let log = OutageLog::default();
        let full = log.full();
        log.note(&StoreError::DiskFull("could not extend file".into()));
        log.note(&StoreError::DiskFull("again".into()));
        let why = full.borrow().clone().expect("on");
        assert!(why.contains("could not extend file"), "{why}");
        assert!(!log.is_open(), "not an outage: the database answers");
        log.wrote();
        assert_eq!(*full.borrow(), None);
    }

    #[test]
    fn a_run_of_failures_keeps_its_first_reason_and_spans_them_all() {
        let log = OutageLog::default();
        log.note(&StoreError::Batch("no".into()));
        assert_eq!(
            log.take(),
            None,
            "only an unreachable database is an outage"
        );
        for why in ["refused", "reset"] {
            log.note(&StoreError::Unreachable(why.into()));
        }
        assert!(log.is_open());
        let run = log.take().expect("noted");
        assert!(!log.is_open());
        assert_eq!(run.failures, 2);
        assert_eq!(run.first, "it could not reach it (refused).");
        assert!(run.since <= run.until);
        assert_eq!(log.take(), None, "taken once");
    }

    #[test]
    fn each_run_is_told_as_it_begins_with_its_first_error() {
        let log = OutageLog::default();
        let mut began = log.beginnings();
        log.note(&StoreError::Unreachable("refused".into()));
        assert!(began.has_changed().unwrap());
        let first = began.borrow_and_update().clone().expect("told");
        assert!(first.contains("(refused)"), "{first}");
        log.note(&StoreError::Unreachable("reset".into()));
        assert!(!began.has_changed().unwrap(), "the same run");
        log.take();
        log.note(&StoreError::Unreachable("again".into()));
        assert!(
            began
                .borrow_and_update()
                .as_deref()
                .unwrap()
                .contains("(again)")
        );
    }

    #[test]
    fn two_runs_merge_into_the_earlier_one() {
        let a = Outage {
            since: 10,
            until: 20,
            first: "a".into(),
            failures: 2,
        };
        let b = Outage {
            since: 5,
            until: 15,
            first: "b".into(),
            failures: 1,
        };
        let m = a.merge(b);
        assert_eq!(
            (m.since, m.until, m.first.as_str(), m.failures),
            (5, 20, "b", 3)
        );
    }
}
