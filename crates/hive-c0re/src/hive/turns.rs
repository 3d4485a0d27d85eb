//! A harness's turn as hive-c0re sees it: `next_turn` waits until the agent
//! may work and claims its inbox for the turn; `end_turn` settles it in one
//! transaction, in a fixed order: the messages first (acknowledged, released
//! or held), so the figures recorded next are the true ones, then the
//! session, the idle state, the `turn_end` event and the state's. All of it
//! is stored or none: a turn whose end failed has its messages come again.

use std::time::Duration;

use hive_sh4re::agent::{EffectiveConfig, ExitClass, TurnOutcome, TurnStats};
use hive_sh4re::event::{EventKind, Payload, TurnEnd, TurnStart};
use hive_sh4re::notification::NotificationKind;
use hive_sh4re::{AgentName, AgentState};

use crate::admission::{Slot, Ticket};
use crate::api_health::Gate;
use crate::broker::Change;
use crate::clock::{now_ms, sleep_until};
use crate::error::Result;
use crate::hive::telemetry::borrow_figures;
use crate::hive::{Hive, budget, event_row};
use crate::store::{MessageRow, Settle, TurnEndWrite};

/// Most messages one turn takes from the inbox.
const TURN_BATCH: u32 = 100;

/// Turns failed in a row after which the operator hears of it (`turns_failing`).
pub const FAILING_TURNS_TOLD: u32 = 5;
/// Least time between two `turns_failing` notices of one agent.
pub const FAILING_NOTICES_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long past its time limit a turn slot may be held (the harness's own
/// stop of claude, and its report); `HIVE_SLOT_GRACE_SECS` for tests.
const SLOT_GRACE: Duration = Duration::from_secs(60);
/// The least time claude may hold a slot outside a turn (a compaction);
/// `HIVE_COMPACTION_SLOT_SECS` for tests.
const COMPACTION_LIMIT_SECS: u64 = 3600;

/// A turn that has begun: its messages, the config it runs with, and its
/// turn slot (given back when dropped).
#[derive(Debug)]
pub struct Turn {
    pub messages: Vec<MessageRow>,
    pub config: EffectiveConfig,
    pub slot: Slot,
}

/// What a running turn holds, for `end_turn` to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The messages claimed for the turn.
    pub ids: Vec<i64>,
    /// The session the turn was told to resume.
    pub resumed: Option<String>,
}

impl Turn {
    /// What ending this turn settles.
    pub fn claim(&self) -> Claim {
        Claim {
            ids: self.messages.iter().map(|m| m.id).collect(),
            resumed: self.config.session_id.clone(),
        }
    }
}

impl Hive {
    /// The config the agent's next turn runs with.
    pub async fn effective_config(&self, name: &AgentName) -> Result<EffectiveConfig> {
        let row = self.agent_row(name).await?;
        Ok(EffectiveConfig {
            name: name.to_string(),
            is_manager: name.is_manager(),
            model: self.effective_model(&row)?,
            config: self.config_of(&row)?,
            session_id: row.session_id.clone(),
            turn_timeout_secs: Some(self.turn_timeout_of(name).await?),
            secrets: self.secrets_for(name).await?,
        })
    }

    /// The agent's turn time limit in seconds: its config's `turn_timeout`, else the hive's.
    pub async fn turn_timeout_of(&self, name: &AgentName) -> Result<u64> {
        let cfg = self.config_of(&self.agent_row(name).await?)?;
        Ok(match cfg.turn_timeout.map(|t| t.seconds()) {
            Some(Ok(s)) => s,
            _ => self.settings.turn_timeout.as_secs(),
        })
    }

    /// How long a harness connection may hold a turn slot: for a turn, the
    /// agent's turn time limit, which its harness enforces; for claude
    /// outside a turn (`admit`: a compaction, which has no limit of its
    /// own), at least an hour. Then a grace for the harness to stop claude
    /// and say so.
    pub async fn slot_limit(&self, name: &AgentName, turn: bool) -> Duration {
        let limit = self
            .turn_timeout_of(name)
            .await
            .unwrap_or(self.settings.turn_timeout.as_secs());
        let limit = if turn {
            limit
        } else {
            let least = crate::clock::secs_from_env(
                "HIVE_COMPACTION_SLOT_SECS",
                Duration::from_secs(COMPACTION_LIMIT_SECS),
            );
            limit.max(least.as_secs())
        };
        Duration::from_secs(limit) + crate::clock::secs_from_env("HIVE_SLOT_GRACE_SECS", SLOT_GRACE)
    }

    /// How long the agent's questions have waited on the operator, in all:
    /// a slot's deadline moves on by what this grows while it is held.
    pub fn asking_time(&self, name: &AgentName) -> Duration {
        self.asking.total(name.as_str())
    }

    /// A harness connection held a turn slot past [`Hive::slot_limit`] (a
    /// hung harness, or an agent holding the hive's turns): its connection
    /// was ended, giving the slot and the turn's messages back. Logged, and
    /// told to the operator at most once a minute per agent.
    pub async fn slot_overheld(&self, name: &AgentName, held: Duration, turn: bool) {
        let what = if turn {
            "without ending its turn: hive-c0re took the slot back (the turn's messages wait in its inbox again)"
        } else {
            "outside a turn (a compaction) without giving it back: hive-c0re took the slot back"
        };
        let text = format!(
            "{name} held a turn slot for {} {what}; if its harness is stuck, restart it (hive-c0re restart {name})",
            crate::clock::duration(held.as_millis() as f64)
        );
        tracing::warn!(agent = %name, "{text}");
        if self.overheld_notices.allow(name.as_str()) {
            self.tell_operator(NotificationKind::Crashed, Some(name), &text)
                .await;
        }
    }

    /// Counts the turns of `name` that failed in a row (claude could not
    /// start, the model API refused it, it ran out of time: its messages go
    /// back to be tried again, and again) and tells the operator at the
    /// [`FAILING_TURNS_TOLD`]th and every 50th after: a model retired, credit
    /// run out or a message that always fails a turn kept an agent busy for
    /// weeks with nothing done, seen only on its row. A turn that handled
    /// its messages ends the count; so does a restart of the daemon. At
    /// most one notice an agent in [`FAILING_NOTICES_EVERY`]: the harness
    /// reports its turns' ends, so a hostile agent fails turns at will, and
    /// each notice is urgent (a push that pages the operator). The agent's
    /// error is quoted: it is the agent's word inside the hive's sentence.
    async fn count_failing_turns(&self, name: &AgentName, stats: &TurnStats, outcome: TurnOutcome) {
        let failed = outcome == TurnOutcome::Release
            && matches!(
                stats.exit_class,
                ExitClass::Failure | ExitClass::ApiError | ExitClass::Timeout
            );
        let n = {
            let mut counts = self.failing_turns.lock().unwrap_or_else(|p| p.into_inner());
            if !failed {
                counts.remove(name.as_str());
                return;
            }
            let n = counts.entry(name.to_string()).or_default();
            *n += 1;
            *n
        };
        if (n != FAILING_TURNS_TOLD && n % 50 != 0) || !self.failing_notices.allow(name.as_str()) {
            return;
        }
        let why: String = stats
            .error
            .as_deref()
            .unwrap_or("no reason given")
            .chars()
            .take(200)
            .collect();
        let text = format!(
            "{name}'s last {n} turns failed in a row ({}; the last: {why:?}). Its messages go back to be \
             tried again, and each try may cost: see `hive-c0re events {name}`, and `hive-c0re pause {name}` \
             holds it until it can work.",
            stats.exit_class
        );
        self.tell_operator(NotificationKind::TurnsFailing, Some(name), &text)
            .await;
    }

    /// True when `name` began [`TURNS_PER_MINUTE`](hive_sh4re::limits::TURNS_PER_MINUTE)
    /// turns this minute already (logged once a minute). Counts nothing:
    /// a turn counts when its messages are claimed.
    fn turns_paced(&self, name: &AgentName) -> bool {
        match self.turns_rate.full(name.as_str()) {
            None => false,
            Some(first) => {
                if first {
                    tracing::warn!(agent = %name, "began {} turns this minute, the most the hive runs: its next turn waits for the next minute", hive_sh4re::limits::TURNS_PER_MINUTE);
                }
                true
            }
        }
    }

    /// Waits up to `wait` until the agent may take a turn (not over a budget,
    /// not paused, not napping, admitted to a turn slot, not held by the
    /// hive-wide API backoff) and a message that is neither claimed nor held
    /// waits; then claims its inbox, held messages included. While it waits
    /// for a slot the agent is in line (`queued`), placed by its oldest
    /// unclaimed message.
    pub async fn next_turn(&self, name: &AgentName, wait: Duration) -> Result<Option<Turn>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut ticket: Option<Ticket> = None;
        loop {
            let mut rx = self.broker.watch_inbox(name.as_str());
            let mut api = self.api.watch();
            let mut held_until = None;
            let row = self.agent_row(name).await?;
            let nap_left = self.nap_left(name.as_str(), row.nap_until, now_ms());
            if row.nap_until.is_some() && nap_left.is_none() {
                self.store.set_nap_until(name.as_str(), None).await?;
                self.broker.publish(Change::Agent(name.to_string()));
            }
            let nap_end = nap_left.map(|l| tokio::time::Instant::now() + l);
            // Over a budget: held (the manager, over the hive's, takes only the operator's messages).
            let budget = self.budget_gate(name, &row).await?;
            let from = budget.only_from();
            let held = budget == budget::Gate::Held;
            let oldest = match !held && !row.paused && nap_left.is_none() {
                true => self.oldest_unclaimed(name, from).await?,
                false => None,
            };
            // A harness that ends each turn at once (its messages released,
            // to claim again) would loop as fast as the store writes: past
            // the minute's turns, the next waits, out of the line (it holds
            // no other agent's slot, nor the API backoff's probe).
            let oldest = match oldest {
                Some(_) if self.turns_paced(name) => {
                    if ticket.take().is_some() {
                        self.broker.publish(Change::Agent(name.to_string()));
                    }
                    let paced = tokio::time::Instant::now() + Duration::from_secs(1);
                    if !self
                        .wait_for_turn(&mut rx, &mut api, Some(paced), None, None, deadline)
                        .await
                    {
                        return Ok(None);
                    }
                    continue;
                }
                other => other,
            };
            let Some(key) = oldest else {
                // Held, paused, napping, cancelled or nothing to do: out of line, if it was in.
                if ticket.take().is_some() {
                    self.broker.publish(Change::Agent(name.to_string()));
                }
                let budget_end =
                    held.then(|| tokio::time::Instant::now() + budget::until_tomorrow());
                if !self
                    .wait_for_turn(&mut rx, &mut api, nap_end, budget_end, None, deadline)
                    .await
                {
                    return Ok(None);
                }
                continue;
            };
            if ticket.as_ref().is_none_or(|t| t.key() != key) {
                ticket = Some(self.admission.join(name, key));
                if !name.is_manager() {
                    self.broker.publish(Change::Agent(name.to_string()));
                }
            }
            let t = ticket.as_ref().expect("joined above");
            if t.may_go() {
                match self.api.gate(name.as_str()) {
                    Gate::Go => match t.admit() {
                        Some(slot) => {
                            // No turn without a readable config: its messages wait for one, unclaimed.
                            let claimed = match self.effective_config(name).await {
                                Ok(config) => self
                                    .claim(name, from, TURN_BATCH)
                                    .await
                                    .map(|messages| (messages, config)),
                                Err(e) => Err(e),
                            };
                            match claimed {
                                Ok((messages, config)) if !messages.is_empty() => {
                                    let _ = self.turns_rate.take(name.as_str(), 1);
                                    self.turn_began(name);
                                    return Ok(Some(Turn {
                                        messages,
                                        config,
                                        slot,
                                    }));
                                }
                                other => {
                                    // Out of line with the slot dropped: joins again if still due.
                                    ticket = None;
                                    self.api.unclaimed(name.as_str());
                                    other?;
                                }
                            }
                        }
                        None => self.api.unclaimed(name.as_str()),
                    },
                    Gate::Until(t) => {
                        let left = Duration::from_millis((t - now_ms()).max(0) as u64);
                        held_until = Some(tokio::time::Instant::now() + left);
                    }
                }
            }
            if !self
                .wait_for_turn(
                    &mut rx,
                    &mut api,
                    nap_end,
                    held_until,
                    ticket.as_ref(),
                    deadline,
                )
                .await
            {
                return Ok(None);
            }
        }
    }

    /// Waits for whatever may let `next_turn` go on: a message or a pause
    /// lifted (the inbox is poked), a nap's end, the API backoff, a turn slot.
    /// False when `next_turn` waits no longer: its time is up, or the hive stops.
    async fn wait_for_turn(
        &self,
        rx: &mut tokio::sync::watch::Receiver<u64>,
        api: &mut tokio::sync::watch::Receiver<u64>,
        nap_end: Option<tokio::time::Instant>,
        held_until: Option<tokio::time::Instant>,
        ticket: Option<&Ticket>,
        deadline: tokio::time::Instant,
    ) -> bool {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return false },
            _ = tokio::time::sleep_until(deadline) => return false,
            _ = sleep_until(nap_end) => {}
            _ = sleep_until(held_until) => {}
            _ = api.changed() => {}
            _ = async { match ticket { Some(t) => t.notified().await, None => std::future::pending().await } } => {}
            _ = self.shutdown.cancelled() => return false,
        }
        true
    }

    /// Waits up to `wait` for a turn slot for claude outside a turn (`/compact`,
    /// notes compaction), in line from `since` (unix ms: when the harness first
    /// asked); None when the time is up, the hive stops, or the agent's inbox
    /// is poked (a cancel among others: the harness looks whether it still wants one).
    pub async fn run_slot(&self, name: &AgentName, since: i64, wait: Duration) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.broker.watch_inbox(name.as_str());
        // After every message that arrived in the same millisecond.
        let ticket = self.admission.join(name, (since, i64::MAX));
        self.broker.publish(Change::Agent(name.to_string()));
        loop {
            if let Some(slot) = ticket.admit() {
                return Some(slot);
            }
            tokio::select! {
                _ = ticket.notified() => {}
                _ = rx.changed() => return None,
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// The turn slots: the limit, who runs, who waits.
    pub fn admission(&self) -> &crate::admission::Admission {
        &self.admission
    }

    /// Ends a turn: settles its messages, records its figures (with the inbox
    /// depth that is left), keeps its session unless the operator started a
    /// fresh one meanwhile, marks the agent idle, and records the `turn_end`
    /// event and then the state's: all in one transaction, fenced by the
    /// agent's lease ([`crate::store::Db::end_turn`]), so whoever sees
    /// `turn_end` reads the whole turn. When it fails nothing of it is
    /// stored: the harness, refused, goes away, and its claims come back to
    /// the inbox as a dropped harness's do. What is not the store's (wakes,
    /// the API's health, the budgets' and failing turns' notices) follows
    /// the commit and fails nothing: an error means the turn did not end.
    pub async fn end_turn(
        &self,
        name: &AgentName,
        claim: &Claim,
        stats: &TurnStats,
        outcome: TurnOutcome,
        session: Option<&str>,
    ) -> Result<()> {
        let agent = name.as_str();
        // Under this daemon's lease only: one that lost it must not settle
        // what the new holder claimed again (the store checks it again).
        let fence = self.fence(name)?;
        // What its `recv` read during the turn is settled with the turn's own.
        let mut ids = claim.ids.clone();
        ids.extend(self.turn_ended_reads(name));
        let redactor = self.redactor().await?;
        let turn_end = |held: &[i64]| {
            let (_, payload) = event_row(&Payload::TurnEnd(turn_end_of(stats, held.to_vec())));
            redactor.redact_json(&payload)
        };
        let (_, idle) = crate::hive::state_event(AgentState::Idle, None);
        let idle = redactor.redact_json(&idle);
        let figures = super::telemetry::turn_figures(stats);
        let ended = self
            .store
            .end_turn(&TurnEndWrite {
                agent,
                fence,
                settle: match outcome {
                    TurnOutcome::Ack => Settle::Ack(&ids),
                    TurnOutcome::Release => Settle::Release,
                    TurnOutcome::Hold => Settle::Hold,
                },
                figures: &borrow_figures(&figures),
                inbox_peak: self.inbox_peak(agent),
                session,
                resumed: claim.resumed.as_deref(),
                turn_end: &turn_end,
                idle: &idle,
            })
            .await?;
        self.take_inbox_peak(agent, ended.inbox_depth);
        if outcome == TurnOutcome::Release {
            self.broker.poke(agent);
        }
        if outcome == TurnOutcome::Release && stats.exit_class == ExitClass::ApiError {
            // Also when claude did not retry (CLAUDE_CODE_MAX_RETRIES=0): the hive learns of it.
            self.api.failed(agent, stats.api_status, "");
        }
        self.api
            .turn_ended(agent, outcome == TurnOutcome::Ack, stats.api_status);
        self.broker.publish(Change::Events {
            agent: name.to_string(),
            last_id: ended.state,
        });
        self.broker.publish(Change::Agent(name.to_string()));
        self.spent(name, ended.spend).await;
        self.count_failing_turns(name, stats, outcome).await;
        Ok(())
    }

    /// Ends the agent's open turn, when its history has one, as `interrupted`:
    /// the harness that ran it went away without ending it (`how`), and what
    /// it claimed went back to the inbox. Called only while no harness of the
    /// agent runs anywhere (after one ended, before one starts under a lease
    /// just taken), so the open turn cannot be one still running.
    pub(super) async fn end_interrupted_turn(&self, name: &AgentName, how: &str) {
        match self.try_end_interrupted_turn(name, how).await {
            Ok(false) => {}
            Ok(true) => tracing::warn!(agent = %name, "its turn was interrupted: {how}"),
            Err(e) => {
                tracing::warn!(agent = %name, "could not record the end of its interrupted turn ({how}): {e}")
            }
        }
    }

    async fn try_end_interrupted_turn(&self, name: &AgentName, how: &str) -> Result<bool> {
        let Some(last) = self.store.last_turn_event(name.as_str()).await? else {
            return Ok(false);
        };
        if last.kind != EventKind::TurnStart.as_str() {
            return Ok(false);
        }
        let start: TurnStart = serde_json::from_str(&last.payload_json).unwrap_or_default();
        let duration_ms = u64::try_from(now_ms() - last.ts).unwrap_or(0);
        let error = format!(
            "the turn did not end: {how}; the messages it had not acknowledged went back to the inbox"
        );
        let stats = TurnStats {
            duration_ms,
            exit_class: ExitClass::Interrupted,
            messages_received: start.messages.len() as u64,
            error: Some(error),
            ..TurnStats::default()
        };
        let (_, payload) = event_row(&Payload::TurnEnd(turn_end_of(&stats, vec![])));
        let payload = self.redactor().await?.redact_json(&payload);
        let (figures, depth) = self.turn_rows(name, &stats).await?;
        // Conditional: on PostgreSQL a node back from a cut link and the node
        // that took back its lease may both find the turn open; it ends once,
        // its figures with it.
        let Some(last_id) = self
            .store
            .end_open_turn(name.as_str(), last.id, &payload, &borrow_figures(&figures))
            .await?
        else {
            return Ok(false);
        };
        self.take_inbox_peak(name.as_str(), depth);
        self.broker.publish(Change::Events {
            agent: name.to_string(),
            last_id,
        });
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(true)
    }
}

/// The `turn_end` event of a turn with these figures; `held`: the messages a cancel held.
fn turn_end_of(stats: &TurnStats, held: Vec<i64>) -> TurnEnd {
    TurnEnd {
        exit_code: stats.exit_code,
        exit_class: stats.exit_class,
        duration_ms: stats.duration_ms,
        held,
        error: stats.error.clone(),
        api_status: stats.api_status,
    }
}

#[cfg(test)]
mod tests {
    use hive_sh4re::Mailbox;
    use hive_sh4re::config::AgentConfig;

    use super::*;
    use crate::clock::day_of;
    use crate::store::{Db, Spend};
    use crate::supervisor::Supervised;

    /// A turn that read its message and spent 100 tokens.
    fn spent_100() -> TurnStats {
        TurnStats {
            messages_received: 1,
            input_tokens: Some(100),
            ..TurnStats::default()
        }
    }

    /// The kinds of the events alice's history holds, oldest first.
    async fn kinds(hive: &Hive, alice: &AgentName) -> Vec<String> {
        let events = hive.events(alice, None, None, 100).await.unwrap();
        events.into_iter().map(|e| e.kind).collect()
    }

    async fn spend(hive: &Hive, alice: &AgentName) -> Spend {
        let today = day_of(now_ms());
        hive.store
            .spend_on(Some(alice.as_str()), today)
            .await
            .unwrap()
    }

    /// A hive with alice, her lease taken, and one message from the operator
    /// claimed by her turn.
    async fn alice_in_a_turn(dir: &std::path::Path) -> (std::sync::Arc<Hive>, AgentName, Turn) {
        let hive = Hive::for_tests(dir, None);
        let alice = AgentName::parse("alice").unwrap();
        hive.add_stopped(&alice, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        hive.take_lease_for_tests(&alice).await;
        hive.send(&Mailbox::Operator, &Mailbox::Agent(alice.clone()), "work")
            .await
            .unwrap();
        let turn = hive
            .next_turn(&alice, Duration::ZERO)
            .await
            .unwrap()
            .expect("a turn");
        (hive, alice, turn)
    }

    /// The database fails the turn's end at its `turn_end` event: nothing of
    /// the turn is stored, neither its acknowledgement nor its spend. Its
    /// harness goes away (refused), the message comes again, and the turn
    /// that then ends it counts its spend once.
    #[tokio::test]
    async fn a_turn_whose_end_failed_has_its_messages_come_again() {
        let dir = tempfile::tempdir().unwrap();
        let (hive, alice, turn) = alice_in_a_turn(dir.path()).await;
        let Db::Sqlite(store) = &hive.store else {
            unreachable!("tests' hives are on sqlite")
        };
        store.execute_for_tests(
            "CREATE TRIGGER broken BEFORE INSERT ON events WHEN NEW.kind = 'turn_end' \
             BEGIN SELECT RAISE(ABORT, 'the database went away'); END;",
        );
        let failed = hive
            .end_turn(
                &alice,
                &turn.claim(),
                &spent_100(),
                TurnOutcome::Ack,
                Some("s1"),
            )
            .await;
        assert!(failed.is_err(), "{failed:?}");
        drop(turn);
        assert_eq!(spend(&hive, &alice).await, Spend::default());
        assert!(!kinds(&hive, &alice).await.contains(&"turn_end".to_owned()));
        assert_eq!(hive.agent_row(&alice).await.unwrap().session_id, None);
        assert!(
            hive.next_turn(&alice, Duration::ZERO)
                .await
                .unwrap()
                .is_none(),
            "the message is still the failed turn's"
        );

        hive.harness_exited(&alice, "the harness exited").await;
        store.execute_for_tests("DROP TRIGGER broken;");
        let again = hive
            .next_turn(&alice, Duration::ZERO)
            .await
            .unwrap()
            .expect("the message comes again");
        assert_eq!(again.messages.len(), 1);
        assert_eq!(again.messages[0].body, "work");
        hive.end_turn(
            &alice,
            &again.claim(),
            &spent_100(),
            TurnOutcome::Ack,
            Some("s1"),
        )
        .await
        .unwrap();
        assert_eq!(
            spend(&hive, &alice).await,
            Spend {
                usd: 0.0,
                tokens: 100.0
            }
        );
        let ended: Vec<String> = kinds(&hive, &alice)
            .await
            .into_iter()
            .filter(|k| k == "turn_end")
            .collect();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            hive.inbox_depth(&Mailbox::Agent(alice.clone()))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            hive.agent_row(&alice).await.unwrap().session_id.as_deref(),
            Some("s1")
        );
    }

    /// A daemon that lost the agent's lease ends none of its turn: the
    /// message stays the turn's until the lease is taken again, which gives
    /// it back to the inbox for the next turn.
    #[tokio::test]
    async fn a_turns_end_under_a_lost_lease_stores_nothing_and_its_message_comes_again() {
        let dir = tempfile::tempdir().unwrap();
        let (hive, alice, turn) = alice_in_a_turn(dir.path()).await;
        let epoch = hive.supervisor.lease_epoch("alice").unwrap();
        assert!(
            hive.store
                .release_lease("alice", hive.lease_holder(), epoch)
                .await
                .unwrap()
        );
        let failed = hive
            .end_turn(&alice, &turn.claim(), &spent_100(), TurnOutcome::Ack, None)
            .await;
        assert!(
            matches!(
                failed,
                Err(crate::error::Error::Store(
                    crate::store::StoreError::Fenced { .. }
                ))
            ),
            "{failed:?}"
        );
        drop(turn);
        assert_eq!(spend(&hive, &alice).await, Spend::default());
        // The operator's message is noted in her history; nothing of the turn.
        assert_eq!(kinds(&hive, &alice).await, ["operator"]);
        assert_eq!(
            hive.inbox_depth(&Mailbox::Agent(alice.clone()))
                .await
                .unwrap(),
            1
        );

        hive.take_lease_for_tests(&alice).await;
        let again = hive
            .next_turn(&alice, Duration::ZERO)
            .await
            .unwrap()
            .expect("the message comes again");
        assert_eq!(again.messages[0].body, "work");
        hive.end_turn(&alice, &again.claim(), &spent_100(), TurnOutcome::Ack, None)
            .await
            .unwrap();
        assert_eq!(spend(&hive, &alice).await.tokens, 100.0);
        assert_eq!(
            kinds(&hive, &alice).await,
            ["operator", "turn_end", "state"]
        );
    }
}
