//! The store boundary: one async API over both backends.
//!
//! `Db` is what `Hive` will hold once every store access goes through it.
//! Each method matches once: the sqlite arm runs its short statement on the
//! caller's thread as today (sends through the group-commit writer), the
//! PostgreSQL arm awaits its pool. Both return the same row types.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use hive_sh4re::AgentState;
use hive_sh4re::host::ApprovalStatus;

use super::messages::Outgoing;
use super::pg::{PgSettings, PgStore};
use super::{
    AgentFacts, AgentRow, ApprovalRow, BudgetOverride, DeliveryRow, EventRow, Fence, Lease, Limits,
    MessageRow, NewAgent, NewApproval, NewRequest, NodeDown, NodeRow, NotificationRow, Outage,
    QuestionRow, Registration, RequestRow, Result, ScheduleRow, SecretEntry, SendError, SendNote,
    Sent, Spend, StatRow, Store, Tail, TurnEndWrite, TurnEnded, Wakes, WebhookStats,
};

/// The hive's store on either backend; cheap to clone.
#[derive(Clone)]
pub enum Db {
    /// One sqlite file: a hive on one host (the default).
    Sqlite(Store),
    /// A PostgreSQL database that several nodes share.
    Postgres(PgStore),
}

/// Calls the same method on either backend; the sqlite one is synchronous.
/// A PostgreSQL error that says the database is out of reach is noted for
/// the heartbeat to tell the operator ([`Db::take_outage`]).
macro_rules! both {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Sqlite($s) => $call,
            Db::Postgres($s) => $s.noted($call.await),
        }
    };
}

impl Db {
    /// Opens (creating if needed) a sqlite database and applies pending migrations.
    pub fn open_sqlite(path: &Path, limits: Limits) -> Result<Self> {
        Store::open(path, limits).map(Self::Sqlite)
    }

    /// Connects to a PostgreSQL database and applies pending migrations.
    pub async fn connect_postgres(settings: &PgSettings, limits: Limits) -> Result<Self> {
        PgStore::connect(settings, limits).await.map(Self::Postgres)
    }

    /// Where this store's own tasks (its writers, its wake listener) report
    /// their panics; the hive that owns it reports its tasks' there too.
    pub fn faults(&self) -> &crate::panics::Faults {
        match self {
            Db::Sqlite(s) => s.faults(),
            Db::Postgres(s) => s.faults(),
        }
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> &Limits {
        match self {
            Db::Sqlite(s) => s.limits(),
            Db::Postgres(s) => s.limits(),
        }
    }

    /// The requests failed since the last call because the database was out
    /// of reach (PostgreSQL; a sqlite file is never out of reach).
    pub fn take_outage(&self) -> Option<Outage> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => s.outages().take(),
        }
    }

    /// Changes when a run of requests failed for the database out of reach
    /// begins (see [`super::OutageLog::beginnings`]); None on sqlite.
    pub fn outage_beginnings(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => Some(s.outages().beginnings()),
        }
    }

    /// Why the database's disk is full, while it is (see
    /// [`super::OutageLog::full`]); None on sqlite, whose disk is the
    /// node's own and watched as such.
    pub fn database_full(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => Some(s.outages().full()),
        }
    }

    /// True while requests failed for the database out of reach have not
    /// been told yet ([`Db::take_outage`]).
    pub fn outage_open(&self) -> bool {
        match self {
            Db::Sqlite(_) => false,
            Db::Postgres(s) => s.outages().is_open(),
        }
    }

    /// Gives freed space back to the file system (sqlite); PostgreSQL's autovacuum does that itself.
    pub async fn checkpoint(&self) -> Result<()> {
        match self {
            Db::Sqlite(s) => s.checkpoint(),
            Db::Postgres(_) => Ok(()),
        }
    }

    // ---- agents -----------------------------------------------------------

    /// Creates an agent; fails if the name or the uid range is taken.
    pub async fn create_agent(&self, new: &NewAgent<'_>) -> Result<AgentRow> {
        both!(self, s => s.create_agent(new))
    }

    /// One agent, if it exists.
    pub async fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        both!(self, s => s.agent(name))
    }

    /// Every agent, by name.
    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        both!(self, s => s.agents())
    }

    /// Deletes an agent row (messages and events stay unless purged).
    pub async fn delete_agent(&self, name: &str) -> Result<bool> {
        both!(self, s => s.delete_agent(name))
    }

    /// Records whether the agent should be running.
    pub async fn set_want_running(&self, name: &str, want: bool) -> Result<bool> {
        both!(self, s => s.set_want_running(name, want))
    }

    /// Parks or resumes the agent's turn loop.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        both!(self, s => s.set_paused(name, paused))
    }

    /// Marks the agent failed (gave up restarting) or clears it.
    pub async fn set_failed(&self, name: &str, failed: bool) -> Result<bool> {
        both!(self, s => s.set_failed(name, failed))
    }

    /// Records that the agent has (no) usable claude credentials.
    pub async fn set_needs_login(&self, name: &str, needs: bool) -> Result<bool> {
        both!(self, s => s.set_needs_login(name, needs))
    }

    /// Records a state change, and the model of the turn when one starts.
    pub async fn set_state(
        &self,
        name: &str,
        state: AgentState,
        model: Option<&str>,
    ) -> Result<bool> {
        both!(self, s => s.set_state(name, state, model))
    }

    /// Sets the agent's own one-line status.
    pub async fn set_status_text(&self, name: &str, text: &str) -> Result<bool> {
        both!(self, s => s.set_status_text(name, text))
    }

    /// Records the config repo's head the node keeping the repos read; true when it changed.
    pub async fn set_config_head(&self, name: &str, head: Option<&str>) -> Result<bool> {
        both!(self, s => s.set_config_head(name, head))
    }

    /// Names `sha` as the deployed commit of an agent deployed from no
    /// commit (its repo was made after it, on the manager's node); true when
    /// it did, false when the agent has a deployed commit already.
    pub async fn adopt_deployed_sha(&self, name: &str, sha: &str) -> Result<bool> {
        both!(self, s => s.adopt_deployed_sha(name, sha))
    }

    /// Sets (or clears) the time before which no turn starts.
    pub async fn set_nap_until(&self, name: &str, until: Option<i64>) -> Result<bool> {
        both!(self, s => s.set_nap_until(name, until))
    }

    /// Remembers the claude session the next turn resumes.
    pub async fn set_session(&self, name: &str, session: Option<&str>) -> Result<bool> {
        both!(self, s => s.set_session(name, session))
    }

    /// Sets the session to resume unless it changed since `expected` was read;
    /// true when it was set. A turn's end does it in its transaction ([`Db::end_turn`]).
    #[cfg(test)]
    pub async fn replace_session(
        &self,
        name: &str,
        expected: Option<&str>,
        session: Option<&str>,
    ) -> Result<bool> {
        both!(self, s => s.replace_session(name, expected, session))
    }

    /// Sets or clears the operator's model override.
    pub async fn set_model_override(&self, name: &str, model: Option<&str>) -> Result<bool> {
        both!(self, s => s.set_model_override(name, model))
    }

    /// Deploys a config: its text and the commit it came from.
    pub async fn set_config(
        &self,
        name: &str,
        config_toml: &str,
        sha: Option<&str>,
    ) -> Result<bool> {
        both!(self, s => s.set_config(name, config_toml, sha))
    }

    /// [`Self::set_config`] only while the deployed text is `was` (what the
    /// operator's diff was made against); true when it did.
    pub async fn set_config_over(
        &self,
        name: &str,
        config_toml: &str,
        sha: Option<&str>,
        was: &str,
    ) -> Result<bool> {
        both!(self, s => s.set_config_over(name, config_toml, sha, was))
    }

    // ---- messages ---------------------------------------------------------

    /// Commits a message through the backend's group commit and returns its
    /// id once it is committed; refuses when the recipient's queue is at its
    /// cap, or when the message holds a NUL byte.
    pub async fn send(&self, sender: &str, recipient: &str, body: &str) -> Result<i64, SendError> {
        Ok(self
            .send_keyed(sender, recipient, body, None, None)
            .await?
            .id)
    }

    /// [`Db::send`] under the sender's `key`, with a `note`: an event its
    /// recipient's history takes in the send's own transaction (both stored
    /// or neither). On PostgreSQL a send whose every try failed for the
    /// database out of reach may have committed all the same; the node keeps
    /// the id it was tried under, and a repeat with the same sender and key
    /// goes under that id: stored once, reported sent. A failed sqlite commit
    /// is rolled back, so there the key changes nothing.
    pub async fn send_keyed(
        &self,
        sender: &str,
        recipient: &str,
        body: &str,
        key: Option<&str>,
        note: Option<SendNote>,
    ) -> Result<Sent, SendError> {
        // PostgreSQL's text takes no NUL, and one such row would fail the
        // whole group commit: every other sender's message batched with it.
        // Refused here, before any batch, on both backends alike.
        if [sender, recipient, body].iter().any(|t| t.contains('\0')) {
            return Err(SendError::Nul);
        }
        match self {
            Db::Sqlite(s) => {
                s.send_grouped(Outgoing {
                    sender: sender.to_owned(),
                    recipient: recipient.to_owned(),
                    body: body.to_owned(),
                    note,
                })
                .await
            }
            Db::Postgres(s) => {
                let r = s.send(sender, recipient, body, key, note).await;
                match &r {
                    Ok(_) => s.outages().wrote(),
                    Err(SendError::Store(e)) => s.outages().note(e),
                    Err(_) => {}
                }
                r
            }
        }
    }

    /// Reads and acknowledges up to `max` unclaimed messages of `recipient`, oldest first.
    pub async fn recv(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        both!(self, s => s.recv(recipient, max))
    }

    /// Claims every undelivered, unclaimed message of `recipient` for a turn (at most `max`), held ones too.
    pub async fn claim(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        both!(self, s => s.claim(recipient, max))
    }

    /// [`Db::claim`], of one sender's messages only when `sender` is given.
    pub async fn claim_from(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        both!(self, s => s.claim_from(recipient, sender, max))
    }

    /// Acknowledges messages of `recipient`; ids of others or already acknowledged ones are ignored.
    pub async fn ack(&self, recipient: &str, ids: &[i64]) -> Result<usize> {
        both!(self, s => s.ack(recipient, ids))
    }

    /// Returns claimed but unacknowledged messages of `recipient` to its queue.
    pub async fn release_claims(&self, recipient: &str) -> Result<usize> {
        both!(self, s => s.release_claims(recipient))
    }

    /// Returns claimed messages of `recipient` to its queue as held: they wait for the next new message.
    pub async fn hold_claims(&self, recipient: &str) -> Result<Vec<i64>> {
        both!(self, s => s.hold_claims(recipient))
    }

    /// Undelivered messages of `recipient` held after a cancelled turn.
    pub async fn held_count(&self, recipient: &str) -> Result<u64> {
        both!(self, s => s.held_count(recipient))
    }

    /// Releases every claim; run at start, when no harness is connected, on
    /// a store no other node uses (see [`Db::shared`]).
    pub async fn release_all_claims(&self) -> Result<usize> {
        both!(self, s => s.release_all_claims())
    }

    /// Releases the claims of node `node`'s agents (those without a home node
    /// too) and of mailboxes no agent owns; run when the node starts, before
    /// any of its harnesses connects. Another node's agents keep theirs:
    /// their harnesses may be mid-turn.
    pub async fn release_node_claims(&self, node: &str) -> Result<usize> {
        both!(self, s => s.release_node_claims(node))
    }

    /// What a node takes back when it starts: every claim when it owns the
    /// whole store (sqlite); nothing on a shared store, where another daemon
    /// under the same node name may be mid-turn: there each agent's claims
    /// come back when its lease is taken (fenced, see `hive/leases.rs`).
    pub async fn release_claims_at_start(&self) -> Result<usize> {
        if self.shared() {
            Ok(0)
        } else {
            self.release_all_claims().await
        }
    }

    /// True when several nodes may use this store at once (PostgreSQL); a
    /// sqlite file is one daemon's, whatever node name its agents were given.
    pub fn shared(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Undelivered messages waiting for `recipient`.
    pub async fn inbox_depth(&self, recipient: &str) -> Result<u64> {
        match self {
            Db::Sqlite(s) => Ok(s.inbox_depth(recipient)),
            Db::Postgres(s) => s.noted(s.inbox_depth(recipient).await),
        }
    }

    /// True when `recipient` has a message that may start a turn: nobody claimed it and it is not held.
    pub async fn has_unclaimed(&self, recipient: &str) -> Result<bool> {
        both!(self, s => s.has_unclaimed(recipient))
    }

    /// The arrival (unix ms) and id of `recipient`'s oldest unclaimed message,
    /// held ones included, when one of them may start a turn; of `sender`'s
    /// messages only when it is given.
    pub async fn oldest_unclaimed(
        &self,
        recipient: &str,
        sender: Option<&str>,
    ) -> Result<Option<(i64, i64)>> {
        both!(self, s => s.oldest_unclaimed(recipient, sender))
    }

    /// Holds every unclaimed message of `recipient` (the operator cancelled a queued turn).
    pub async fn hold_unclaimed(&self, recipient: &str) -> Result<usize> {
        both!(self, s => s.hold_unclaimed(recipient))
    }

    /// Every mailbox's messages with id < `before`, newest first (the feed).
    pub async fn messages_before(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<MessageRow>> {
        both!(self, s => s.messages_before(before, limit))
    }

    /// Where a live tail of every mailbox starts now.
    pub async fn message_tail(&self) -> Result<i64> {
        both!(self, s => s.message_tail())
    }

    /// Every mailbox's messages that committed after tail position `after`, oldest first (the live feed).
    pub async fn messages_after(&self, after: i64, limit: u32) -> Result<Tail<MessageRow>> {
        both!(self, s => s.messages_after(after, limit))
    }

    /// The newest `limit` messages to or from `mailbox`, oldest first.
    pub async fn recent_messages(&self, mailbox: &str, limit: u32) -> Result<Vec<MessageRow>> {
        both!(self, s => s.recent_messages(mailbox, limit))
    }

    /// Drops delivered messages past the age limit or beyond the per-recipient cap; returns how many.
    pub async fn vacuum_messages(&self) -> Result<usize> {
        both!(self, s => s.vacuum_messages())
    }

    /// Forgets a purged agent's inbox and the messages it sent that were
    /// delivered; what it sent that another mailbox has yet to receive stays.
    pub async fn purge_messages(&self, mailbox: &str) -> Result<usize> {
        both!(self, s => s.purge_messages(mailbox))
    }

    // ---- approvals --------------------------------------------------------

    /// Queues a pending approval and returns its id; None when
    /// `while_fewer_than` approvals wait already.
    pub async fn add_approval(&self, a: &NewApproval<'_>) -> Result<Option<i64>> {
        both!(self, s => s.add_approval(a))
    }

    /// One approval.
    pub async fn approval(&self, id: i64) -> Result<Option<ApprovalRow>> {
        both!(self, s => s.approval(id))
    }

    /// Every approval, oldest first.
    pub async fn approvals(&self) -> Result<Vec<ApprovalRow>> {
        both!(self, s => s.approvals())
    }

    /// Moves a pending approval to `status`, decided on node `node`; false if
    /// it was not pending (decided once only).
    pub async fn decide_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
        node: &str,
    ) -> Result<bool> {
        both!(self, s => s.decide_approval(id, status, note, node))
    }

    /// Records, while it is pending, where the agent's config repo head is
    /// past the approval's commit (None, None: it is not); true when that changed.
    pub async fn set_approval_head(
        &self,
        id: i64,
        head: Option<&str>,
        ahead: Option<i64>,
    ) -> Result<bool> {
        both!(self, s => s.set_approval_head(id, head, ahead))
    }

    /// Settles an approval already decided: its action ended with `status` and `note`.
    pub async fn settle_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
    ) -> Result<bool> {
        both!(self, s => s.settle_approval(id, status, note))
    }

    /// Marks approved approval `id` failed with `note` unless its end was stored meanwhile.
    pub async fn settle_cut_off(&self, id: i64, note: &str) -> Result<bool> {
        both!(self, s => s.settle_cut_off(id, note))
    }

    /// The approvals `node` approved whose action never ended (cut off by a crash).
    pub async fn unsettled_approvals(&self, node: &str) -> Result<Vec<ApprovalRow>> {
        both!(self, s => s.unsettled_approvals(node))
    }

    /// Where a live tail of approvals starts now.
    pub async fn approval_tail(&self) -> Result<i64> {
        both!(self, s => s.approval_tail())
    }

    /// Approvals that committed after tail position `after`, oldest first.
    pub async fn approvals_after(&self, after: i64) -> Result<Tail<ApprovalRow>> {
        both!(self, s => s.approvals_after(after))
    }

    /// Pending approvals, hive-wide.
    pub async fn pending_approvals(&self) -> Result<u64> {
        both!(self, s => s.pending_approvals())
    }

    // ---- events -----------------------------------------------------------

    /// Appends events of one agent in one transaction; returns their ids.
    pub async fn add_events<K: AsRef<str>, P: AsRef<str>>(
        &self,
        agent: &str,
        items: &[(K, P)],
    ) -> Result<Vec<i64>> {
        match self {
            Db::Sqlite(s) => {
                s.add_events(agent, items.iter().map(|(k, p)| (k.as_ref(), p.as_ref())))
            }
            Db::Postgres(s) => s.written(s.add_events(agent, items).await),
        }
    }

    /// Events of `agent` with id > `since`, oldest first, at most `limit`.
    pub async fn events_since(&self, agent: &str, since: i64, limit: u32) -> Result<Vec<EventRow>> {
        both!(self, s => s.events_since(agent, since, limit))
    }

    /// The `limit` events of `agent` just before id `before` (all if None), oldest first.
    pub async fn events_before(
        &self,
        agent: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        both!(self, s => s.events_before(agent, before, limit))
    }

    /// Stores `turn_end` with `payload`, and the turn's `figures` in the same
    /// transaction, only while the agent's newest turn event is still the
    /// `turn_start` with id `start`, so a turn ends once however many nodes
    /// find it open, and its figures count once; its id, or None when it had ended.
    pub async fn end_open_turn(
        &self,
        agent: &str,
        start: i64,
        payload: &str,
        figures: &[(&str, f64)],
    ) -> Result<Option<i64>> {
        both!(self, s => s.end_open_turn(agent, start, payload, figures))
    }

    /// The agent's newest `turn_start` or `turn_end`: a start means its turn is open.
    pub async fn last_turn_event(&self, agent: &str) -> Result<Option<EventRow>> {
        both!(self, s => s.last_turn_event(agent))
    }

    /// The newest feed events (turn starts and ends, crashes) of every agent
    /// with id < `before`, newest first, through the partial index `events_feed`.
    pub async fn feed_events_before(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        both!(self, s => s.feed_events_before(before, limit))
    }

    /// Feed events that committed after tail position `after`, oldest first (the live feed's next rows).
    pub async fn feed_events_after(&self, after: i64, limit: u32) -> Result<Tail<EventRow>> {
        both!(self, s => s.feed_events_after(after, limit))
    }

    /// Where a live tail of the feed's events starts now.
    pub async fn event_tail(&self) -> Result<i64> {
        both!(self, s => s.event_tail())
    }

    /// Drops events past the age limit or beyond the per-agent cap; returns how many.
    pub async fn vacuum_events(&self) -> Result<usize> {
        both!(self, s => s.vacuum_events())
    }

    /// Forgets every event of a purged agent.
    pub async fn purge_events(&self, agent: &str) -> Result<usize> {
        both!(self, s => s.purge_events(agent))
    }

    // ---- steering requests between nodes -----------------------------------

    /// Stores a steering request for its node and returns its id; the node
    /// is woken once it commits.
    pub async fn enqueue_request(&self, new: &NewRequest<'_>) -> Result<i64> {
        both!(self, s => s.enqueue_request(new))
    }

    /// Takes every pending request for `node` made within `within_ms`, each
    /// once whoever else takes, oldest first; older ones are cancelled.
    pub async fn take_requests(&self, node: &str, within_ms: i64) -> Result<Vec<RequestRow>> {
        both!(self, s => s.take_requests(node, within_ms))
    }

    /// Stores a taken request's outcome (the reply's text, or the error's
    /// sentence) and wakes the asking node; false when not taken or done already.
    pub async fn finish_request(&self, id: i64, ok: bool, reply: &str) -> Result<bool> {
        both!(self, s => s.finish_request(id, ok, reply))
    }

    /// Cancels a request no node took yet; false when one took it.
    pub async fn cancel_request(&self, id: i64) -> Result<bool> {
        both!(self, s => s.cancel_request(id))
    }

    /// Marks a finished, successful shell request for `node` used, once;
    /// false when it was used before (a replayed ticket).
    pub async fn use_request(&self, id: i64, node: &str) -> Result<bool> {
        both!(self, s => s.use_request(id, node))
    }

    /// One request, with its outcome once done.
    pub async fn request(&self, id: i64) -> Result<Option<RequestRow>> {
        both!(self, s => s.request(id))
    }

    // ---- questions --------------------------------------------------------

    /// Records a question and returns its id.
    pub async fn add_question(
        &self,
        agent: &str,
        question: &str,
        options: &[String],
        ttl_seconds: i64,
    ) -> Result<i64> {
        both!(self, s => s.add_question(agent, question, options, ttl_seconds))
    }

    /// One question.
    pub async fn question(&self, id: i64) -> Result<Option<QuestionRow>> {
        both!(self, s => s.question(id))
    }

    /// The newest `limit` questions, oldest first.
    pub async fn questions(&self, limit: u32) -> Result<Vec<QuestionRow>> {
        both!(self, s => s.questions(limit))
    }

    /// Drops ended questions past the age limit or beyond the newest 1,000; returns how many.
    pub async fn vacuum_questions(&self) -> Result<usize> {
        both!(self, s => s.vacuum_questions())
    }

    /// Drops decided approvals past the bounds; returns how many.
    pub async fn vacuum_approvals(&self) -> Result<usize> {
        both!(self, s => s.vacuum_approvals())
    }

    /// Answers a pending question before its deadline; false if it was not pending.
    pub async fn answer_question(&self, id: i64, answer: &str) -> Result<bool> {
        both!(self, s => s.answer_question(id, answer))
    }

    /// Cancels a pending question; false if it was not pending.
    pub async fn cancel_question(&self, id: i64) -> Result<bool> {
        both!(self, s => s.cancel_question(id))
    }

    // ---- schedules --------------------------------------------------------

    /// Adds a schedule; returns its id.
    pub async fn add_schedule(
        &self,
        agent: &str,
        spec: &str,
        text: &str,
        repeating: bool,
        next_due: i64,
        by: &str,
    ) -> Result<i64> {
        both!(self, s => s.add_schedule(agent, spec, text, repeating, next_due, by))
    }

    /// Every schedule, soonest first.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        both!(self, s => s.schedules())
    }

    /// The soonest due time of a schedule node `node` fires, if any.
    pub async fn next_schedule_due(&self, node: Option<&str>) -> Result<Option<i64>> {
        both!(self, s => s.next_schedule_due(node))
    }

    /// Schedules due at `now` that node `node` fires: the operator's
    /// anywhere, an agent's only on its maker's home node, whose memory
    /// counts the maker's sends (`Hive::take_send`). Fired by every node,
    /// they were each node's minute of sends, N of them with N nodes. With
    /// `node` None, every one: a hive of one node fires all, as its name
    /// may have changed since its agents were made (a host renamed).
    pub async fn due_schedules(&self, now: i64, node: Option<&str>) -> Result<Vec<ScheduleRow>> {
        both!(self, s => s.due_schedules(now, node))
    }

    /// Delivers a due schedule (the message, then its next slot) in one
    /// transaction. None when nothing was delivered: the inbox is at its cap
    /// (the schedule moves to `when_full`) or, on PostgreSQL, another node
    /// took the slot `sched.next_due` already. `now` is the firing's time.
    pub async fn fire_schedule(
        &self,
        sched: &ScheduleRow,
        next_due: Option<i64>,
        when_full: i64,
        now: i64,
    ) -> Result<Option<i64>> {
        both!(self, s => s.fire_schedule(sched, next_due, when_full, now))
    }

    /// Moves a schedule's next due time (the wall clock stepped back past it).
    pub async fn set_schedule_due(&self, id: i64, next_due: i64) -> Result<()> {
        both!(self, s => s.set_schedule_due(id, next_due))
    }

    /// Removes a schedule; false if there was none.
    pub async fn remove_schedule(&self, id: i64) -> Result<bool> {
        both!(self, s => s.remove_schedule(id))
    }

    /// Schedules pending for one agent.
    pub async fn schedule_count(&self, agent: &str) -> Result<u32> {
        both!(self, s => s.schedule_count(agent))
    }

    /// Schedules made by `creator` (`operator` or an agent's name).
    pub async fn schedule_count_by(&self, creator: &str) -> Result<u32> {
        both!(self, s => s.schedule_count_by(creator))
    }

    /// Removes every schedule of a destroyed agent.
    pub async fn remove_schedules_of(&self, agent: &str) -> Result<usize> {
        both!(self, s => s.remove_schedules_of(agent))
    }

    // ---- stats ------------------------------------------------------------

    /// Records figures of one agent at one instant; returns the spending among
    /// them, added to the agent's total for today in the same transaction.
    pub async fn add_stats(&self, agent: &str, items: &[(&str, f64)]) -> Result<Spend> {
        match self {
            Db::Sqlite(s) => s.add_stats(agent, items.iter().copied()),
            Db::Postgres(s) => s.noted(s.add_stats(agent, items).await),
        }
    }

    /// Figures since `since` (ms), of one agent or all, oldest first.
    pub async fn stats_since(&self, agent: Option<&str>, since: i64) -> Result<Vec<StatRow>> {
        both!(self, s => s.stats_since(agent, since))
    }

    /// Drops figures past the age limit, and the days' spend totals with them.
    pub async fn vacuum_stats(&self) -> Result<usize> {
        both!(self, s => s.vacuum_stats())
    }

    // ---- budgets ----------------------------------------------------------

    /// What `agent` (or, with None, every agent together) spent on a UTC day
    /// (days since the epoch), as `add_stats` summed it.
    pub async fn spend_on(&self, agent: Option<&str>, day: i64) -> Result<Spend> {
        both!(self, s => s.spend_on(agent, day))
    }

    /// The facts a status row reads beyond `agents` (last crash, with
    /// `crashes`; schedules, open question, spend on `day`, budget override)
    /// of `agent`, or of every agent with None, keyed by name; a query per
    /// table, not per agent.
    pub async fn agent_facts(
        &self,
        agent: Option<&str>,
        now: i64,
        day: i64,
        crashes: bool,
    ) -> Result<HashMap<String, AgentFacts>> {
        both!(self, s => s.agent_facts(agent, now, day, crashes))
    }

    /// Stores the operator's budget for a scope and day, replacing the last one.
    pub async fn set_budget_override(&self, o: &BudgetOverride) -> Result<()> {
        both!(self, s => s.set_budget_override(o))
    }

    /// The operator's last budget for a scope, whatever its day.
    pub async fn budget_override(&self, scope: &str) -> Result<Option<BudgetOverride>> {
        both!(self, s => s.budget_override(scope))
    }

    /// Drops the operator's budget and the notices told for a scope (its agent is destroyed).
    pub async fn remove_budget_override(&self, scope: &str) -> Result<()> {
        both!(self, s => s.remove_budget_override(scope))
    }

    /// Claims telling notice `key` about `scope` (an agent, or a name
    /// starting with '#') on `day`: true for the one caller that claims it,
    /// of any node; each notice is told at most once a day.
    pub async fn claim_notice(&self, scope: &str, key: &str, day: i64) -> Result<bool> {
        both!(self, s => s.claim_notice(scope, key, day))
    }

    // ---- notifications and webhooks ---------------------------------------

    /// Stores a notification and queues it for each of `webhooks`; returns it.
    pub async fn add_notification(
        &self,
        kind: &str,
        agent: Option<&str>,
        text: &str,
        link: &str,
        webhooks: &[&str],
    ) -> Result<NotificationRow> {
        both!(self, s => s.add_notification(kind, agent, text, link, webhooks))
    }

    /// The newest `limit` notifications (only unread ones if `unread`), newest first.
    pub async fn notifications(&self, unread: bool, limit: u32) -> Result<Vec<NotificationRow>> {
        both!(self, s => s.notifications(unread, limit))
    }

    /// One notification.
    pub async fn notification(&self, id: i64) -> Result<Option<NotificationRow>> {
        both!(self, s => s.notification(id))
    }

    /// How many notifications are unread.
    pub async fn unread_notifications(&self) -> Result<u64> {
        both!(self, s => s.unread_notifications())
    }

    /// Marks one notification read (None: every one); returns how many changed.
    pub async fn mark_notifications_read(&self, id: Option<i64>) -> Result<usize> {
        both!(self, s => s.mark_notifications_read(id))
    }

    /// Takes a webhook's deliveries due at `now`, oldest first, at most
    /// `limit`: each is then not due again before `until`, so of nodes
    /// serving the same webhook one sends it, and a node that dies sending
    /// it leaves it for a retry then.
    pub async fn take_deliveries(
        &self,
        webhook: &str,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        both!(self, s => s.take_deliveries(webhook, now, until, limit))
    }

    /// When a webhook's next delivery is due, if any waits.
    pub async fn next_delivery_at(&self, webhook: &str) -> Result<Option<i64>> {
        both!(self, s => s.next_delivery_at(webhook))
    }

    /// A delivery succeeded: it leaves the queue.
    pub async fn delivery_done(&self, webhook: &str, notification: i64) -> Result<()> {
        both!(self, s => s.delivery_done(webhook, notification))
    }

    /// A delivery given up: it leaves the queue, and `error` says why in
    /// the webhook's status.
    pub async fn delivery_dropped(
        &self,
        webhook: &str,
        notification: i64,
        error: &str,
    ) -> Result<()> {
        both!(self, s => s.delivery_dropped(webhook, notification, error))
    }

    /// A delivery failed: it is tried again at `next_at`. Returns when the
    /// webhook last delivered anything, if ever.
    pub async fn delivery_failed(
        &self,
        webhook: &str,
        notification: i64,
        next_at: i64,
        error: &str,
    ) -> Result<Option<i64>> {
        both!(self, s => s.delivery_failed(webhook, notification, next_at, error))
    }

    /// One webhook's queue and last results.
    pub async fn webhook_stats(&self, webhook: &str) -> Result<WebhookStats> {
        both!(self, s => s.webhook_stats(webhook))
    }

    /// Drops the queues of webhooks no longer configured; returns how many deliveries went.
    pub async fn forget_webhooks_except(&self, keep: &[&str]) -> Result<usize> {
        both!(self, s => s.forget_webhooks_except(keep))
    }

    /// Drops notifications past the age limit or beyond the cap, except those a webhook has yet to take.
    pub async fn vacuum_notifications(&self) -> Result<usize> {
        both!(self, s => s.vacuum_notifications())
    }

    // ---- nodes ------------------------------------------------------------

    /// Records that node `name` started at `address`, served by `holder` (a
    /// restart replaces the last start); its first heartbeat is now. Agents
    /// without a home node (stored before nodes existed) become this node's.
    /// Refused ([`Registration::Served`]) while another holder beat for
    /// `name` within `alive_ms`.
    pub async fn register_node(
        &self,
        name: &str,
        address: &str,
        holder: &str,
        alive_ms: i64,
    ) -> Result<Registration> {
        both!(self, s => s.register_node(name, address, holder, alive_ms))
    }

    /// Records a heartbeat of node `name` by `holder` now (the database's
    /// clock on PostgreSQL); false when it never registered or another
    /// daemon registered it since.
    pub async fn heartbeat(&self, name: &str, holder: &str) -> Result<bool> {
        both!(self, s => s.heartbeat(name, holder))
    }

    /// Marks down every node but `me` silent for more than `silent_ms` and
    /// not marked yet; returns those this call marked (each node is marked,
    /// and so announced, by one caller only, whichever comes first).
    pub async fn mark_down_nodes(&self, me: &str, silent_ms: i64) -> Result<Vec<NodeDown>> {
        both!(self, s => s.mark_down_nodes(me, silent_ms))
    }

    /// How long node `name` has been marked down; None when it is not. Leaves the mark.
    pub async fn node_down_for(&self, name: &str) -> Result<Option<i64>> {
        both!(self, s => s.node_down_for(name))
    }

    /// Clears node `name`'s down mark; how long it was down when it was marked.
    pub async fn node_back(&self, name: &str) -> Result<Option<i64>> {
        both!(self, s => s.node_back(name))
    }

    /// Every node, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        both!(self, s => s.nodes())
    }

    // ---- wakes and leases -------------------------------------------------

    /// Wakes from other nodes' commits (a message arrived, claims came back,
    /// a question was answered...), and [`super::Wake::Resync`] when some may
    /// have been lost. This node's own writes are not among them: the caller
    /// wakes its own waiters, as the broker does today. On sqlite there is
    /// one node, so the subscription yields nothing.
    pub fn wakes(&self) -> Wakes {
        match self {
            Db::Sqlite(_) => Wakes::none(),
            Db::Postgres(s) => s.wakes(),
        }
    }

    /// Takes `agent`'s lease for `node` for `ttl`: when nobody holds it, when
    /// it ran out, or when `node` holds it already (renewed, same epoch).
    /// Taken over from another node, the epoch grows and that node's claims
    /// go back to the inbox in the same transaction. None while another node
    /// holds it. Expiry is the database's clock.
    pub async fn acquire_lease(
        &self,
        agent: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        both!(self, s => s.acquire_lease(agent, node, ttl))
    }

    /// Extends `node`'s lease on `agent` at `epoch` to `ttl` from now; false
    /// when another node took it, and the caller must stop the agent.
    pub async fn renew_lease(
        &self,
        agent: &str,
        node: &str,
        epoch: i64,
        ttl: Duration,
    ) -> Result<bool> {
        both!(self, s => s.renew_lease(agent, node, epoch, ttl))
    }

    /// Gives up `node`'s lease on `agent` at `epoch` (it stopped the agent);
    /// false when it was not this node's at that epoch.
    pub async fn release_lease(&self, agent: &str, node: &str, epoch: i64) -> Result<bool> {
        both!(self, s => s.release_lease(agent, node, epoch))
    }

    /// [`Db::claim_from`] by the holder of `recipient`'s lease: refused with
    /// `StoreError::Fenced`, claiming nothing, unless `fence` holds it now.
    pub async fn claim_fenced(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        both!(self, s => s.claim_fenced(recipient, sender, max, fence))
    }

    /// What [`Db::recv`] would take, claimed for the agent's turn in
    /// progress (to be acknowledged when it ends well, released when it
    /// fails) by the holder of `recipient`'s lease: refused with
    /// `StoreError::Fenced`, claiming nothing, unless `fence` holds it now.
    pub async fn claim_read_fenced(
        &self,
        recipient: &str,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        both!(self, s => s.claim_read_fenced(recipient, max, fence))
    }

    /// [`Db::ack`] by the holder of `recipient`'s lease: refused with
    /// `StoreError::Fenced`, acknowledging nothing, unless `fence` holds it now.
    pub async fn ack_fenced(
        &self,
        recipient: &str,
        ids: &[i64],
        fence: Fence<'_>,
    ) -> Result<usize> {
        both!(self, s => s.ack_fenced(recipient, ids, fence))
    }

    /// [`Db::release_claims`] by the holder of `recipient`'s lease: refused
    /// with `StoreError::Fenced`, releasing nothing, unless `fence` holds it now.
    pub async fn release_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<usize> {
        both!(self, s => s.release_claims_fenced(recipient, fence))
    }

    /// [`Db::hold_claims`] by the holder of `recipient`'s lease: refused with
    /// `StoreError::Fenced`, holding nothing, unless `fence` holds it now.
    /// A cancelled turn's end holds in its transaction ([`Db::end_turn`]).
    #[cfg(test)]
    pub async fn hold_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<Vec<i64>> {
        both!(self, s => s.hold_claims_fenced(recipient, fence))
    }

    /// Writes a turn's end in one transaction: its messages settled, its
    /// figures and spend, the session, the idle state, then its `turn_end`
    /// and `state` events, so that whoever sees `turn_end` reads the whole
    /// turn. All or nothing: when it fails the turn's claims stay, and come
    /// back to the inbox as a dropped harness's do. Refused with
    /// `StoreError::Fenced`, writing nothing, unless `w.fence` holds the
    /// agent's lease, checked in the transaction (no takeover comes in
    /// between on PostgreSQL: the lease row is locked until it ends).
    pub async fn end_turn(&self, w: &TurnEndWrite<'_>) -> Result<TurnEnded> {
        match self {
            Db::Sqlite(s) => s.end_turn(w),
            Db::Postgres(s) => s.written(s.end_turn(w).await),
        }
    }

    /// Returns the claims of every agent whose lease ran out unreleased (its
    /// node died or lost its link) to their inboxes, and leaves those leases
    /// to nobody at a new epoch, so their old holder is fenced off; once for
    /// the hive however many nodes call it. Each agent with its count.
    pub async fn reclaim_expired_leases(&self) -> Result<Vec<(String, usize)>> {
        both!(self, s => s.reclaim_expired_leases())
    }

    // ---- hive-wide jobs ---------------------------------------------------

    /// Takes hive-wide job `name` (vacuum) for `node` when it is due and no
    /// node holds it: it is then `node`'s for at most `hold`, until
    /// [`Db::finish_job`], and due again `every` from now. False when another
    /// node holds it or ran it less than `every` ago: of nodes trying at the
    /// same moment, one wins.
    pub async fn take_job(
        &self,
        name: &str,
        node: &str,
        every: Duration,
        hold: Duration,
    ) -> Result<bool> {
        both!(self, s => s.take_job(name, node, every, hold))
    }

    /// `node` finished job `name`: another node may take it once it is due.
    pub async fn finish_job(&self, name: &str, node: &str) -> Result<()> {
        both!(self, s => s.finish_job(name, node))
    }

    // ---- secrets ----------------------------------------------------------

    /// Sets (or replaces) a secret; `agent` None is hive-wide.
    pub async fn set_secret(&self, name: &str, agent: Option<&str>, value: &str) -> Result<()> {
        both!(self, s => s.set_secret(name, agent, value))
    }

    /// Removes a secret; false when there was none.
    pub async fn remove_secret(&self, name: &str, agent: Option<&str>) -> Result<bool> {
        both!(self, s => s.remove_secret(name, agent))
    }

    /// Every secret without its value: hive-wide first, then by agent and name.
    pub async fn secret_entries(&self) -> Result<Vec<SecretEntry>> {
        both!(self, s => s.secret_entries())
    }

    /// What one agent's claude gets: the hive-wide secrets, its own over them.
    pub async fn secrets_for(&self, agent: &str) -> Result<BTreeMap<String, String>> {
        both!(self, s => s.secrets_for(agent))
    }

    /// Every stored value with its name, whatever its scope (what redaction looks for).
    pub async fn secret_values(&self) -> Result<Vec<(String, String)>> {
        both!(self, s => s.secret_values())
    }

    /// Drops an agent's own secrets (it is being purged).
    pub async fn remove_secrets_of(&self, agent: &str) -> Result<usize> {
        both!(self, s => s.remove_secrets_of(agent))
    }
}
