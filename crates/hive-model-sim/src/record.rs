//! The request log behind `GET /_sim/requests` and `--log FILE`.
//!
//! Tests use it to check which model a claude run asked for, which tools it was
//! offered and which rule answered. It keeps the newest [`MAX_RECORDS`] entries
//! so a long demo does not grow without bound; the file gets every entry.

use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Entries kept in memory.
pub const MAX_RECORDS: usize = 1000;

/// One `/v1/messages` request and how it was answered.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// 1-based sequence number since start (not reset by `/_sim/reset`).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Request path without the query.
    pub path: String,
    /// Model name as sent.
    pub model: String,
    /// Whether SSE was asked for.
    pub stream: bool,
    /// Characters of system prompt.
    pub system_len: usize,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// `user_text`, `tool_result`, `compact` or `other`.
    pub step: &'static str,
    /// The user text of the current turn.
    pub user_text: String,
    /// Sender of the newest inbox message, if any.
    pub sender: Option<String>,
    /// Rules that answered.
    pub rules: Vec<String>,
    /// `rule`, `default`, `compact` or `max_steps`.
    pub why: &'static str,
    /// `end_turn` or `tool_use`.
    pub stop_reason: &'static str,
    /// The answer's content blocks.
    pub reply: Vec<Value>,
    /// The request's `messages`, verbatim.
    pub messages: Value,
    /// The credential it carried (`x-api-key`, or the `authorization` bearer
    /// token): tests check which agent's key reached the model.
    pub credential: Option<String>,
}

/// Thread-safe log: a bounded in-memory list plus an optional JSON-lines file.
#[derive(Debug)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    entries: VecDeque<RequestRecord>,
    file: Option<File>,
}

impl Recorder {
    /// A recorder that appends to `log` when given.
    pub fn new(log: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match log {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Recorder {
            inner: Mutex::new(Inner {
                seq: 0,
                entries: VecDeque::new(),
                file,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-written in a
        // way that matters, so keep serving instead of poisoning every request.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Assigns the next sequence number, stores the record and appends it to the file.
    pub fn push(&self, mut record: RequestRecord) {
        let mut inner = self.lock();
        inner.seq += 1;
        record.seq = inner.seq;
        if let Some(file) = inner.file.as_mut() {
            let line = serde_json::to_string(&record).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}") {
                tracing::warn!("cannot append to the request log file: {e}");
            }
        }
        if inner.entries.len() == MAX_RECORDS {
            inner.entries.pop_front();
        }
        inner.entries.push_back(record);
    }

    /// All kept records, oldest first.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Forgets the in-memory records (the file is left alone).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str) -> RequestRecord {
        RequestRecord {
            seq: 0,
            unix_ms: 0,
            path: "/v1/messages".into(),
            model: model.into(),
            stream: true,
            system_len: 0,
            tools: vec![],
            step: "user_text",
            user_text: String::new(),
            sender: None,
            rules: vec![],
            why: "default",
            stop_reason: "end_turn",
            reply: vec![],
            messages: Value::Null,
            credential: None,
        }
    }

    #[test]
    fn keeps_order_numbers_and_file() {
        let dir =
            std::env::temp_dir().join(format!("hive-model-sim-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.jsonl");
        let _ = std::fs::remove_file(&path);
        let rec = Recorder::new(Some(&path)).expect("open log");
        rec.push(record("a"));
        rec.push(record("b"));
        let all = rec.all();
        assert_eq!(
            all.iter()
                .map(|r| (r.seq, r.model.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "a"), (2, "b")]
        );
        rec.clear();
        assert!(rec.all().is_empty());
        rec.push(record("c"));
        assert_eq!(rec.all()[0].seq, 3);
        let text = std::fs::read_to_string(&path).expect("log file");
        assert_eq!(text.lines().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_is_bounded() {
        let rec = Recorder::new(None).expect("no file");
        for _ in 0..MAX_RECORDS + 5 {
            rec.push(record("m"));
        }
        let all = rec.all();
        assert_eq!(all.len(), MAX_RECORDS);
        assert_eq!(all[0].seq, 6);
    }
}
