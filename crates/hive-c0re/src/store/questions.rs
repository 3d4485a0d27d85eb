//! The `questions` table: the manager's questions to the operator, each with a deadline.

use hive_sh4re::host::QuestionStatus;
use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// A stored question.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRow {
    pub id: i64,
    pub agent: String,
    pub question: String,
    pub options: Vec<String>,
    pub ttl_seconds: i64,
    pub asked_at: i64,
    pub deadline: i64,
    pub answer: Option<String>,
    pub answered_at: Option<i64>,
    pub cancelled: bool,
}

impl QuestionRow {
    /// pending, answered, timed_out or cancelled, as of `now`.
    pub fn status(&self, now: i64) -> QuestionStatus {
        if self.cancelled {
            QuestionStatus::Cancelled
        } else if self.answer.is_some() {
            QuestionStatus::Answered
        } else if now >= self.deadline {
            QuestionStatus::TimedOut
        } else {
            QuestionStatus::Pending
        }
    }
}

const COLUMNS: &str = "id, agent, question, options_json, ttl_seconds, asked_at, deadline, answer, answered_at, cancelled";

/// Ended questions kept (the newest), beside the age limit.
pub(super) const QUESTIONS_KEEP: i64 = 1000;

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuestionRow> {
    let options: String = r.get(3)?;
    Ok(QuestionRow {
        id: r.get(0)?,
        agent: r.get(1)?,
        question: r.get(2)?,
        options: serde_json::from_str(&options).unwrap_or_default(),
        ttl_seconds: r.get(4)?,
        asked_at: r.get(5)?,
        deadline: r.get(6)?,
        answer: r.get(7)?,
        answered_at: r.get(8)?,
        cancelled: r.get(9)?,
    })
}

impl Store {
    /// Records a question and returns its id.
    pub fn add_question(
        &self,
        agent: &str,
        question: &str,
        options: &[String],
        ttl_seconds: i64,
    ) -> Result<i64> {
        let g = self.lock();
        let now = now_ms();
        let options = serde_json::to_string(options).unwrap_or_else(|_| "[]".into());
        g.conn.execute(
            "INSERT INTO questions (agent, question, options_json, ttl_seconds, asked_at, deadline) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![agent, question, options, ttl_seconds, now, now + ttl_seconds * 1000],
        )?;
        Ok(g.conn.last_insert_rowid())
    }

    /// One question.
    pub fn question(&self, id: i64) -> Result<Option<QuestionRow>> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM questions WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// The newest `limit` questions, oldest first.
    pub fn questions(&self, limit: u32) -> Result<Vec<QuestionRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM questions ORDER BY id DESC LIMIT ?1) ORDER BY id"
        ))?;
        let rows = st.query_map(params![limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Answers a pending question before its deadline; false if it was not pending.
    pub fn answer_question(&self, id: i64, answer: &str) -> Result<bool> {
        let g = self.lock();
        let now = now_ms();
        Ok(g.conn.execute(
            "UPDATE questions SET answer = ?1, answered_at = ?2 WHERE id = ?3 AND answer IS NULL AND cancelled = 0 AND deadline > ?2",
            params![answer, now, id],
        )? > 0)
    }

    /// Drops ended questions (answered, cancelled or past their deadline)
    /// past the age limit or beyond the newest [`QUESTIONS_KEEP`]; one that
    /// waits stays. Returns how many.
    pub fn vacuum_questions(&self) -> Result<usize> {
        let now = now_ms();
        let ended = "(answer IS NOT NULL OR cancelled = 1 OR deadline <= ?1)";
        let mut n = self.delete_chunked(
            "questions",
            &format!("{ended} AND COALESCE(answered_at, deadline) < ?2"),
            params![now, now - self.limits.max_age_ms],
        )?;
        let last_kept: Option<i64> = self
            .lock()
            .conn
            .query_row(
                &format!(
                    "SELECT id FROM questions WHERE {ended} ORDER BY id DESC LIMIT 1 OFFSET ?2"
                ),
                params![now, QUESTIONS_KEEP - 1],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = last_kept {
            n += self.delete_chunked(
                "questions",
                &format!("{ended} AND id < ?2"),
                params![now, id],
            )?;
        }
        Ok(n)
    }

    /// Cancels a pending question; false if it was not pending.
    pub fn cancel_question(&self, id: i64) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE questions SET cancelled = 1, answered_at = ?1 WHERE id = ?2 AND answer IS NULL AND cancelled = 0 AND deadline > ?1",
            params![now_ms(), id],
        )? > 0)
    }
}
