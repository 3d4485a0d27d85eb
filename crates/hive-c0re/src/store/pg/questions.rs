//! The `questions` table on PostgreSQL. An answer is a conditional UPDATE:
//! a question is answered (or cancelled) once, whichever node asks first.

use tokio_postgres::Row;

use super::wakes::{CHANNEL, question_payload, question_prefix};
use super::{PgStore, delete_chunked, vacuum_unlock};
use crate::clock::now_ms;
use crate::store::questions::QUESTIONS_KEEP;
use crate::store::{QuestionRow, Result};

const COLUMNS: &str = "id, agent, question, options_json, ttl_seconds, asked_at, deadline, answer, answered_at, cancelled";

fn row(r: &Row) -> QuestionRow {
    QuestionRow {
        id: r.get(0),
        agent: r.get(1),
        question: r.get(2),
        options: serde_json::from_str(r.get(3)).unwrap_or_default(),
        ttl_seconds: r.get(4),
        asked_at: r.get(5),
        deadline: r.get(6),
        answer: r.get(7),
        answered_at: r.get(8),
        cancelled: r.get(9),
    }
}

impl PgStore {
    /// Records a question and returns its id.
    pub async fn add_question(
        &self,
        agent: &str,
        question: &str,
        options: &[String],
        ttl_seconds: i64,
    ) -> Result<i64> {
        let c = self.client().await?;
        let now = now_ms();
        let options = serde_json::to_string(options).unwrap_or_else(|_| "[]".into());
        // Every node's operator surfaces list it (`Wake::Question`).
        let wake = question_prefix(&self.origin);
        Ok(c.query_one(
            &format!(
                "WITH i AS (INSERT INTO questions (agent, question, options_json, ttl_seconds, asked_at, deadline) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
                 SELECT id, pg_notify('{CHANNEL}', $7::text || id)::text FROM i"
            ),
            &[&agent, &question, &options, &ttl_seconds, &now, &(now + ttl_seconds * 1000), &wake],
        )
        .await?
        .get(0))
    }

    /// One question.
    pub async fn question(&self, id: i64) -> Result<Option<QuestionRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM questions WHERE id = $1"))
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(row))
    }

    /// The newest `limit` questions, oldest first.
    pub async fn questions(&self, limit: u32) -> Result<Vec<QuestionRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM questions ORDER BY id DESC LIMIT $1"
            ))
            .await?;
        let mut v: Vec<QuestionRow> = c
            .query(&st, &[&i64::from(limit)])
            .await?
            .iter()
            .map(row)
            .collect();
        v.reverse();
        Ok(v)
    }

    /// Answers a pending question before its deadline; false if it was not pending.
    /// The asking agent's node, which waits for the answer, is woken.
    pub async fn answer_question(&self, id: i64, answer: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH u AS (UPDATE questions SET answer = $1, answered_at = $2 \
                   WHERE id = $3 AND answer IS NULL AND NOT cancelled AND deadline > $2 RETURNING 1) \
                 SELECT pg_notify('{CHANNEL}', $4)::text FROM u"
            ))
            .await?;
        let payload = question_payload(&self.origin, id);
        Ok(!c
            .query(&st, &[&answer, &now_ms(), &id, &payload])
            .await?
            .is_empty())
    }

    /// Drops ended questions past the age limit or beyond the newest
    /// `QUESTIONS_KEEP` (as the sqlite store does); one that waits stays. One node at a time.
    pub async fn vacuum_questions(&self) -> Result<usize> {
        let now = now_ms();
        let cutoff = now - self.limits.max_age_ms;
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        let ended = "(answer IS NOT NULL OR cancelled OR deadline <= $1)";
        let result: Result<usize> = async {
            let mut n = delete_chunked(
                c,
                "questions",
                &format!("{ended} AND COALESCE(answered_at, deadline) < $2"),
                &[&now, &cutoff],
            )
            .await?;
            let last_kept: Option<i64> = c
                .query_opt(
                    &format!(
                        "SELECT id FROM questions WHERE {ended} ORDER BY id DESC LIMIT 1 OFFSET $2"
                    ),
                    &[&now, &(QUESTIONS_KEEP - 1)],
                )
                .await?
                .map(|r| r.get(0));
            if let Some(id) = last_kept {
                n += delete_chunked(
                    c,
                    "questions",
                    &format!("{ended} AND id < $2"),
                    &[&now, &id],
                )
                .await?;
            }
            Ok(n)
        }
        .await;
        vacuum_unlock(client, &result).await;
        result
    }

    /// Cancels a pending question; false if it was not pending.
    /// The asking agent's node, which waits for the answer, is woken.
    pub async fn cancel_question(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH u AS (UPDATE questions SET cancelled = TRUE, answered_at = $1 \
                   WHERE id = $2 AND answer IS NULL AND NOT cancelled AND deadline > $1 RETURNING 1) \
                 SELECT pg_notify('{CHANNEL}', $3)::text FROM u"
            ))
            .await?;
        let payload = question_payload(&self.origin, id);
        Ok(!c.query(&st, &[&now_ms(), &id, &payload]).await?.is_empty())
    }
}
