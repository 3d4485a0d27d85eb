//! Operator questions: the manager asks, the operator answers before a deadline.

use std::time::Duration;

use hive_sh4re::AgentName;
use hive_sh4re::host::{Question, QuestionStatus};
use hive_sh4re::limits::{ASK_DEFAULT_TTL_SECONDS, ASK_MAX_TTL_SECONDS, QUESTIONS_PER_MINUTE};

use crate::broker::Change;
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::{Db, QuestionRow};

/// Sentinel answer when the deadline passed.
pub const TIMED_OUT: &str = "[no answer: the operator did not answer before the deadline]";
/// Sentinel answer when the operator cancelled the question.
pub const CANCELLED: &str = "[no answer: the operator cancelled the question]";

impl Hive {
    /// Asks the operator and waits for the answer, the deadline, or a cancel; returns the answer or a sentinel.
    pub async fn ask_operator(
        &self,
        agent: &AgentName,
        question: &str,
        options: &[String],
        ttl: Option<u64>,
    ) -> Result<String> {
        // Shown as it is: an option button that reads "no" and is "on"
        // (a bidi override) would answer the manager otherwise than the
        // operator meant. What shows nothing is written out, and the answer
        // to an option is the option as shown. The notification takes the
        // question as asked: it drops what shows nothing before redacting,
        // where the written-out form would split a secret redaction matches.
        let asked = question;
        let question = hive_sh4re::text::visible(question);
        let options: Vec<String> = options
            .iter()
            .map(|o| hive_sh4re::text::visible(o).into_owned())
            .collect();
        let (question, options) = (question.as_ref(), options.as_slice());
        hive_sh4re::limits::check_question(question.trim(), options).map_err(Error::refused)?;
        let ttl = ttl.unwrap_or(ASK_DEFAULT_TTL_SECONDS);
        if ttl == 0 || ttl > ASK_MAX_TTL_SECONDS {
            return Err(Error::refused(format!(
                "ttl_seconds must be between 1 and {ASK_MAX_TTL_SECONDS}"
            )));
        }
        if !self.questions_rate.allow(agent.as_str()) {
            return Err(Error::refused(format!(
                "{agent} asked the operator {QUESTIONS_PER_MINUTE} questions this minute, the most hive-c0re takes: wait for their answers, or send to operator what can wait"
            )));
        }
        let id = self
            .store
            .add_question(agent.as_str(), question, options, ttl as i64)
            .await?;
        self.broker.publish(Change::Questions);
        let deadline = crate::clock::rfc3339(now_ms() + ttl as i64 * 1000);
        self.tell_operator(
            hive_sh4re::notification::NotificationKind::Question,
            Some(agent),
            &format!("Question #{id} (answer by {deadline}): {asked}"),
        )
        .await;
        let mut withdraw = Withdraw {
            hive: self,
            id,
            armed: true,
        };
        let _asking = self.asking.start(agent.as_str());
        let key = question_key(id);
        loop {
            let mut rx = self.broker.watch_inbox(&key);
            let q = self
                .store
                .question(id)
                .await?
                .ok_or_else(|| Error::refused("the question vanished"))?;
            let now = now_ms();
            let outcome = match q.status(now) {
                QuestionStatus::Answered => Some(q.answer.clone().unwrap_or_default()),
                QuestionStatus::Cancelled => Some(CANCELLED.to_owned()),
                QuestionStatus::TimedOut => Some(TIMED_OUT.to_owned()),
                _ => None,
            };
            if let Some(answer) = outcome {
                withdraw.armed = false;
                self.broker.publish(Change::Questions);
                // An answer or a cancel sent its own notice (see `Hive::ended`).
                if q.status(now) == QuestionStatus::TimedOut {
                    // Nobody to hand the error to but the log, which `ended` wrote.
                    let _ = self.ended(&q, &answer).await;
                }
                return Ok(answer);
            }
            let left = Duration::from_millis((q.deadline - now).max(0) as u64);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(left) => {}
                _ = self.shutdown.cancelled() => return Err(Error::refused("hive-c0re is shutting down; ask again later")),
            }
        }
    }

    /// Answers a pending question.
    pub async fn answer(&self, id: i64, answer: &str) -> Result<()> {
        if answer.trim().is_empty() {
            return Err(Error::refused("the answer is empty: type an answer"));
        }
        let q = self.store.question(id).await?.ok_or_else(|| {
            Error::refused(format!(
                "there is no question #{id}: see hive-c0re questions"
            ))
        })?;
        if !self.store.answer_question(id, answer).await? {
            return Err(Error::refused(format!(
                "question #{id} is {} and takes no answer",
                q.status(now_ms())
            )));
        }
        self.broker.poke(&question_key(id));
        self.broker.publish(Change::Questions);
        self.ended(&q, answer).await
    }

    /// Tells the asker of `q` (in its inbox) how its question ended. Sent by
    /// whoever ends it, not by the waiting tool call: after a restart of the
    /// asker's node nothing waits any more, and an answer the operator gave
    /// a question still listed would otherwise reach no one.
    ///
    /// The error says what the operator must do: the question is ended
    /// either way, and the asker learns it only from this message.
    async fn ended(&self, q: &QuestionRow, answer: &str) -> Result<()> {
        let Ok(asker) = AgentName::parse(&q.agent) else {
            return Ok(());
        };
        let text = format!("Question #{} ({:?}) ended: {answer}", q.id, q.question);
        self.notify(&asker, &text).await.map(drop).map_err(|e| {
            tracing::warn!(agent = %asker, "could not tell how question #{} ended: {e}", q.id);
            Error::refused(format!(
                "question #{id} ended, but {asker} could not be told: {e}. Make room in its \
                 inbox (hive-c0re recv --as {asker}), then tell it yourself: \
                 hive-c0re send {asker} 'Question #{id} ended: ...'",
                id = q.id
            ))
        })
    }

    /// Cancels a pending question.
    pub async fn cancel_question(&self, id: i64) -> Result<()> {
        let q = self.store.question(id).await?.ok_or_else(|| {
            Error::refused(format!(
                "there is no question #{id}: see hive-c0re questions"
            ))
        })?;
        if !self.store.cancel_question(id).await? {
            return Err(Error::refused(format!(
                "question #{id} is {} and cannot be cancelled",
                q.status(now_ms())
            )));
        }
        self.broker.poke(&question_key(id));
        self.broker.publish(Change::Questions);
        self.ended(&q, CANCELLED).await
    }

    /// One question, if it exists.
    pub async fn question(&self, id: i64) -> Result<Option<Question>> {
        Ok(self
            .store
            .question(id)
            .await?
            .map(|q| question_wire(&q, now_ms())))
    }

    /// The newest operator questions.
    pub async fn questions(&self) -> Result<Vec<Question>> {
        let now = now_ms();
        Ok(self
            .store
            .questions(200)
            .await?
            .iter()
            .map(|q| question_wire(q, now))
            .collect())
    }
}

/// A stored question as the wire shows it.
pub fn question_wire(q: &QuestionRow, now: i64) -> Question {
    Question {
        id: q.id,
        agent: q.agent.clone(),
        question: q.question.clone(),
        options: q.options.clone(),
        asked_at: rfc3339(q.asked_at),
        deadline: rfc3339(q.deadline),
        status: q.status(now).to_owned(),
        answer: q.answer.clone(),
        answered_at: q.answered_at.map(rfc3339),
    }
}

/// How long each agent has had a question waiting on the operator, in
/// all, while this daemon runs: the time a turn's limit does not count (the
/// harness stops its turn clock while it asks, and so does the turn slot's
/// deadline, `agent_conn`).
#[derive(Default)]
pub struct AskingClock {
    agents: std::sync::Mutex<std::collections::HashMap<String, Asking>>,
}

#[derive(Default)]
struct Asking {
    /// Questions waiting now.
    open: usize,
    /// Since when at least one waits.
    since: Option<std::time::Instant>,
    /// Time with at least one waiting, before `since`.
    total: Duration,
}

impl AskingClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Asking>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A question of `agent` waits until the returned guard drops.
    fn start(&self, agent: &str) -> AskingGuard<'_> {
        let mut g = self.lock();
        let a = g.entry(agent.to_owned()).or_default();
        a.open += 1;
        a.since.get_or_insert_with(std::time::Instant::now);
        AskingGuard {
            clock: self,
            agent: agent.to_owned(),
        }
    }

    /// The time `agent`'s questions have waited, in all, up to now.
    pub fn total(&self, agent: &str) -> Duration {
        self.lock().get(agent).map_or(Duration::ZERO, |a| {
            a.total + a.since.map_or(Duration::ZERO, |s| s.elapsed())
        })
    }
}

struct AskingGuard<'a> {
    clock: &'a AskingClock,
    agent: String,
}

impl Drop for AskingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.clock.lock();
        if let Some(a) = g.get_mut(&self.agent) {
            a.open = a.open.saturating_sub(1);
            if a.open == 0
                && let Some(s) = a.since.take()
            {
                a.total += s.elapsed();
            }
        }
    }
}

/// Withdraws a question whose asker stopped waiting (its tool call was cancelled,
/// or the daemon is stopping), so the operator is not left answering nobody.
struct Withdraw<'a> {
    hive: &'a Hive,
    id: i64,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match &self.hive.store {
            // sqlite answers on this thread, as every sqlite call does.
            Db::Sqlite(s) => {
                if s.cancel_question(self.id).unwrap_or(false) {
                    self.hive.broker.publish(Change::Questions);
                }
            }
            // A drop cannot wait for the pool: the withdrawal finishes on a task.
            db @ Db::Postgres(_) => {
                let (db, id, changes) = (db.clone(), self.id, self.hive.broker.publisher());
                // No runtime left (the daemon is ending): the question stays
                // pending, as it would had the daemon been killed.
                if tokio::runtime::Handle::try_current().is_err() {
                    return;
                }
                self.hive.spawn_task("question withdrawal", async move {
                    if db.cancel_question(id).await.unwrap_or(false) {
                        let _ = changes.send(Change::Questions);
                    }
                });
            }
        }
    }
}

// '#' cannot start an agent name, so these keys never collide with mailboxes.
pub(super) fn question_key(id: i64) -> String {
    format!("#question/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn's limit does not count the time its agent's questions wait:
    /// the clock adds up the time with at least one waiting, once.
    #[test]
    fn the_asking_clock_counts_time_with_a_question_waiting_once() {
        let clock = AskingClock::default();
        assert_eq!(clock.total("a"), Duration::ZERO);
        let first = clock.start("a");
        let second = clock.start("a");
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        std::thread::sleep(Duration::from_millis(30));
        drop(second);
        let waited = clock.total("a");
        assert!(waited >= Duration::from_millis(60), "{waited:?}");
        assert!(
            waited < Duration::from_millis(1000),
            "counted twice: {waited:?}"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(clock.total("a"), waited, "nothing waits now");
        assert_eq!(clock.total("b"), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_question_whose_asker_goes_away_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let manager = AgentName::manager();
        let asking = hive.ask_operator(&manager, "ok?", &[], Some(60));
        let waited = tokio::time::timeout(Duration::from_millis(100), asking).await;
        assert!(waited.is_err(), "the question was answered by nobody");
        let q = hive.questions().await.unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].status, QuestionStatus::Cancelled);
        let e = hive.answer(q[0].id, "yes").await.unwrap_err().to_string();
        assert!(e.contains("is cancelled"), "{e}");
    }

    #[tokio::test]
    async fn a_question_shows_what_reads_otherwise_than_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let manager = AgentName::manager();
        // "no" as the operator reads it, "on" as the manager gets it.
        let options = ["\u{202E}on\u{202C}".to_owned(), "yes".to_owned()];
        let asking = hive.ask_operator(&manager, "go\u{200B}?", &options, Some(60));
        let _ = tokio::time::timeout(Duration::from_millis(100), asking).await;
        let q = hive.questions().await.unwrap();
        assert_eq!(q[0].question, "go⟨U+200B⟩?");
        assert_eq!(q[0].options, ["⟨U+202E⟩on⟨U+202C⟩", "yes"]);
        let told = hive.notifications(false, None).await.unwrap().notifications;
        // A notification drops what shows nothing (before redacting it).
        assert!(told[0].text.ends_with("go?"), "{}", told[0].text);
    }
}
