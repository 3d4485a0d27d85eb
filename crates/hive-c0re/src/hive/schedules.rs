//! Scheduled prompts: a message from `system` to an agent, once or on a repeat.
//!
//! One task sleeps until the soonest due time (or a change) and delivers.
//! A schedule that fell due while hive-c0re was down is delivered once at
//! start, and its next time is computed from now: missed slots are not replayed.
//!
//! Due times are wall-clock times, and the wall clock can step (an NTP
//! correction, an operator's `date -s`). Forwards, each late schedule fires
//! once and computes its next time from the new now: no burst of the slots
//! jumped over. Backwards, a repeat never waits out the step: an `every:`
//! schedule due more than one interval ahead is due one interval from now,
//! and a cron schedule keeps its next slot (the slots before it were served)
//! unless the step was more than [`CRON_STEP_BACK_MAX_MS`], when it starts
//! again from the new now (cronie's rule). The task never sleeps longer than
//! [`MAX_SLEEP`], so a step is noticed within that, whichever way it goes.
//! One-shots fire when the wall clock reaches their time.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::duration::{self, DurationError};
use hive_sh4re::host::Schedule;
use hive_sh4re::limits::{
    MAX_BODY_BYTES, SCHEDULE_MIN_INTERVAL_MS, SCHEDULES_PER_AGENT, SCHEDULES_PER_CREATOR,
};
use hive_sh4re::notification::NotificationKind;
use hive_sh4re::{AgentName, Mailbox};

use crate::broker::Change;
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::ScheduleRow;

/// How long a one-shot whose inbox was full waits before it tries again.
const FULL_RETRY_MS: i64 = 60_000;
/// Longest delay or repeat interval (a century): far from overflowing a time.
const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;
/// Wake-up key of the scheduler ('#' never starts a mailbox).
const SCHEDULER_KEY: &str = "#scheduler";
/// A wall-clock step back longer than this restarts cron schedules from the new now.
pub const CRON_STEP_BACK_MAX_MS: i64 = 3 * 3_600_000;
/// Longest sleep of the scheduler: how soon it notices a step of the wall clock
/// (its sleeps run on the monotonic clock, which does not step).
const MAX_SLEEP: Duration = Duration::from_secs(10);
/// How often the scheduler looks again while the disk is nearly full.
const LOW_SPACE_RETRY: Duration = Duration::from_secs(1);
/// Log lines of schedules held back for their maker's send rate: one a minute.
static SEND_RATE_SKIPS: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(60));

/// Whether a due schedule may fire now.
enum MayFire {
    Yes,
    /// Never again (why): it is removed.
    No(String),
    /// Not now (why): its slot is skipped, or a one-shot waits a minute.
    NotNow(String),
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum When {
    /// Once, at this unix-ms time.
    At(i64),
    /// Every this many ms.
    Every(i64),
    /// On a cron expression (with seconds: `sec min hour dom month dow`).
    Cron(Box<cron::Schedule>),
}

impl When {
    /// Parses `30s`/`15m`/`2h`/`1d` (once, from now), an RFC 3339 time (once),
    /// `every:DURATION` or `cron:EXPR`.
    pub fn parse(spec: &str, now: i64) -> Result<Self> {
        let spec = spec.trim();
        let bad = |why: &str| {
            Error::refused(format!(
                "{spec:?} is not a schedule time ({why}): write 30s or 2h (once, from now), an RFC 3339 time such as \
                 2026-12-01T09:00:00Z, every:15m (repeating), or cron:\"0 0 9 * * Mon-Fri\" (sec min hour day month weekday)"
            ))
        };
        if let Some(expr) = spec.strip_prefix("cron:") {
            let s = cron::Schedule::from_str(expr.trim().trim_matches('"'))
                .map_err(|e| bad(&e.to_string()))?;
            return Ok(Self::Cron(Box::new(s)));
        }
        if let Some(d) = spec.strip_prefix("every:") {
            let ms = duration_ms(d.trim()).map_err(|e| bad(&e.to_string()))?;
            if ms < SCHEDULE_MIN_INTERVAL_MS {
                return Err(bad("the shortest interval is 1s"));
            }
            if ms > MAX_DURATION_MS {
                return Err(bad("the longest interval is 100 years"));
            }
            return Ok(Self::Every(ms));
        }
        let once = match duration_ms(spec) {
            Ok(ms) if ms > MAX_DURATION_MS => return Err(bad("the longest delay is 100 years")),
            Ok(ms) => return Ok(Self::At(now.saturating_add(ms))),
            Err(e) => e,
        };
        match chrono::DateTime::parse_from_rfc3339(spec) {
            Ok(t) => Ok(Self::At(t.timestamp_millis())),
            // A number alone is most likely a duration without its unit: say so.
            Err(_) if matches!(once, DurationError::NoUnit(_)) => Err(bad(&once.to_string())),
            Err(_) => Err(bad("unknown form")),
        }
    }

    /// True for schedules that fire more than once.
    pub fn repeating(&self) -> bool {
        !matches!(self, Self::At(_))
    }

    /// The first due time after `now` for a new schedule.
    pub fn first(&self, now: i64) -> Option<i64> {
        match self {
            Self::At(t) => Some(*t),
            _ => self.after(now),
        }
    }

    /// The next due time strictly after `now` (None for a one-shot).
    pub fn after(&self, now: i64) -> Option<i64> {
        match self {
            Self::At(_) => None,
            Self::Every(ms) => Some(now.saturating_add(*ms)),
            Self::Cron(s) => {
                let from = chrono::DateTime::from_timestamp_millis(now)?;
                s.after(&from).next().map(|t| t.timestamp_millis())
            }
        }
    }
}

/// A duration (`hive_sh4re::duration`: `90s`, `15m`, `2h`, `1d`, a unit required) in milliseconds.
fn duration_ms(s: &str) -> std::result::Result<i64, DurationError> {
    let d = duration::parse(s)?;
    i64::try_from(d.as_millis()).map_err(|_| DurationError::TooLong(s.to_owned()))
}

impl Hive {
    /// Schedules `text` to reach `agent` from `system` at `when` (behind
    /// `[scheduled by NAME]` when an agent asked); returns the schedule id.
    ///
    /// `by` is `operator` or the agent that asks (the manager); an agent may
    /// schedule only for whom it may send to, and both the target and the
    /// creator have a cap, since each firing lands in an inbox.
    pub async fn schedule_add(
        &self,
        agent: &AgentName,
        when: &str,
        text: &str,
        by: &str,
    ) -> Result<i64> {
        self.agent_row(agent).await?;
        if let Ok(creator) = AgentName::parse(by) {
            let config = self.config_of(&self.agent_row(&creator).await?)?;
            if !config.may_send_to(&hive_sh4re::Mailbox::Agent(agent.clone())) {
                return Err(Error::refused(format!(
                    "{creator} may not schedule prompts for {agent}: its allowed_recipients are {:?}; ask the operator to change the config",
                    config.allowed_recipients
                )));
            }
        }
        if self.store.schedule_count(agent.as_str()).await? >= SCHEDULES_PER_AGENT {
            return Err(Error::refused(format!(
                "{agent} has {SCHEDULES_PER_AGENT} schedules waiting, the limit: remove some (hive-c0re schedule rm ID) first"
            )));
        }
        if self.store.schedule_count_by(by).await? >= SCHEDULES_PER_CREATOR {
            return Err(Error::refused(format!(
                "{by} keeps {SCHEDULES_PER_CREATOR} schedules, the limit: remove some (hive-c0re schedule rm ID) first"
            )));
        }
        self.space.refuse_if_low()?;
        if text.trim().is_empty() {
            return Err(Error::refused(
                "the scheduled text is empty: write what the agent should be told",
            ));
        }
        if text.len() > MAX_BODY_BYTES {
            return Err(Error::refused(
                "the scheduled text is over 64 KiB: shorten it",
            ));
        }
        let now = now_ms();
        let w = When::parse(when, now)?;
        let first = w
            .first(now)
            .ok_or_else(|| Error::refused(format!("{when:?} never fires")))?;
        // A firing comes from `system`: what an agent (the manager) scheduled
        // says whose words it is, so it cannot speak as the hive.
        let text = match AgentName::parse(by) {
            Ok(creator) => format!("[scheduled by {creator}] {text}"),
            Err(_) => text.to_owned(),
        };
        let id = self
            .store
            .add_schedule(agent.as_str(), when.trim(), &text, w.repeating(), first, by)
            .await?;
        self.broker.poke(SCHEDULER_KEY);
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(id)
    }

    /// Every schedule, soonest first.
    pub async fn schedule_list(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .store
            .schedules()
            .await?
            .iter()
            .map(schedule_wire)
            .collect())
    }

    /// Every schedule as the dashboard shows it: in a text, what reads
    /// otherwise than it is (a tag character the target's model reads and
    /// no screen shows, a zero-width one) is written out, as `⟨U+E0041⟩`.
    pub async fn schedule_list_shown(&self) -> Result<Vec<Schedule>> {
        let mut list = self.schedule_list().await?;
        for s in &mut list {
            s.text = hive_sh4re::text::visible(&s.text).into_owned();
        }
        Ok(list)
    }

    /// Removes a schedule.
    pub async fn schedule_rm(&self, id: i64) -> Result<()> {
        let agent = self
            .store
            .schedules()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.agent);
        if !self.store.remove_schedule(id).await? {
            return Err(Error::refused(format!(
                "there is no schedule #{id}: see hive-c0re schedule list"
            )));
        }
        self.broker.poke(SCHEDULER_KEY);
        if let Some(agent) = agent {
            // Its status row's pending_reminders changed.
            self.broker.publish(Change::Agent(agent));
        }
        Ok(())
    }

    /// Repeats the wall clock stepped back past: see the module docs.
    async fn realign(&self, now: i64) -> Result<()> {
        for s in self.store.schedules().await? {
            if !s.repeating || s.next_due <= now {
                continue;
            }
            let next = match When::parse(&s.spec, s.created_at) {
                Ok(When::Every(ms)) if s.next_due > now + ms => now + ms,
                Ok(w @ When::Cron(_))
                    if s.last_fired_at
                        .is_some_and(|t| t > now + CRON_STEP_BACK_MAX_MS) =>
                {
                    match w.after(now) {
                        Some(t) if t < s.next_due => t,
                        _ => continue,
                    }
                }
                _ => continue,
            };
            tracing::info!(
                schedule = s.id,
                agent = %s.agent,
                "the wall clock stepped back: schedule #{} is now due at {} (was {})",
                s.id,
                rfc3339(next),
                rfc3339(s.next_due)
            );
            self.store.set_schedule_due(s.id, next).await?;
        }
        Ok(())
    }

    /// Whether `s` may fire: always when the operator made it; when an
    /// agent (the manager) did, only while that agent is in the hive and its
    /// deployed config lets it send to the target. Each firing speaks for
    /// its maker, so this is asked at each firing, not only when it was made.
    async fn may_fire(&self, s: &ScheduleRow) -> Result<MayFire> {
        let (Ok(maker), Ok(target)) = (AgentName::parse(&s.created_by), AgentName::parse(&s.agent))
        else {
            return Ok(MayFire::Yes);
        };
        let Some(row) = self.store.agent(maker.as_str()).await? else {
            return Ok(MayFire::No(format!(
                "{maker}, who made it, is no longer in the hive"
            )));
        };
        Ok(match self.config_of(&row) {
            Ok(c) if c.may_send_to(&Mailbox::Agent(target)) => MayFire::Yes,
            Ok(c) => MayFire::No(format!(
                "{maker} may no longer send to {} (its allowed_recipients are {:?})",
                s.agent, c.allowed_recipients
            )),
            // Perhaps this version reads configs more strictly than the one
            // that deployed it: not a reason to drop the operator's approval.
            Err(e) => MayFire::NotNow(e.to_string()),
        })
    }

    /// Removes every schedule that may no longer fire, and tells the
    /// operator once for all of them (which removes each, whichever node).
    /// Run when one that is due may not: the maker's others go with it, in
    /// one notice, rather than one notice each as they come due.
    async fn remove_unfit_schedules(&self) -> Result<()> {
        let mut removed = vec![];
        for s in self.store.schedules().await? {
            if let MayFire::No(why) = self.may_fire(&s).await?
                && self.store.remove_schedule(s.id).await?
            {
                tracing::warn!(schedule = s.id, agent = %s.agent, "removed a schedule: {why}");
                self.broker.publish(Change::Agent(s.agent.clone()));
                removed.push(format!(
                    "#{} ({:?} for {}, made by {}): {why}",
                    s.id, s.spec, s.agent, s.created_by
                ));
            }
        }
        let text = match removed.len() {
            0 => return Ok(()),
            1 => format!("A schedule was removed instead of firing: {}.", removed[0]),
            n => format!(
                "{n} schedules were removed instead of firing: {}.",
                removed.join("; ")
            ),
        };
        self.tell_operator(NotificationKind::ScheduleRemoved, None, &text)
            .await;
        Ok(())
    }

    /// The node whose agents' schedules this one fires (see
    /// [`Db::due_schedules`](crate::store::Db::due_schedules)); None for a
    /// hive of one node, which fires all.
    fn firing_node(&self) -> Option<&str> {
        self.store.shared().then_some(self.settings.node.as_str())
    }

    /// Delivers what is due at `now` (the wall clock); returns how many.
    /// While the disk is nearly full nothing fires: schedules wait, and fire
    /// once when space is back.
    async fn fire_due(&self, now: i64) -> Result<usize> {
        if self.space.is_low() {
            return Ok(0);
        }
        self.realign(now).await?;
        let due = self.store.due_schedules(now, self.firing_node()).await?;
        let mut swept = false;
        for s in &due {
            let next = When::parse(&s.spec, s.created_at)
                .ok()
                .and_then(|w| w.after(now))
                .filter(|_| s.repeating);
            match self.may_fire(s).await? {
                MayFire::Yes => {}
                MayFire::No(_) => {
                    // One sweep a pass removes every unfit one, due or not.
                    if !swept {
                        self.remove_unfit_schedules().await?;
                        swept = true;
                    }
                    continue;
                }
                MayFire::NotNow(why) => {
                    tracing::warn!(schedule = s.id, agent = %s.agent, "a scheduled prompt waits: {why}");
                    self.store
                        .set_schedule_due(s.id, next.unwrap_or(now + FULL_RETRY_MS))
                        .await?;
                    continue;
                }
            }
            // An agent's schedule fires as its sends: past its minute's bytes
            // a repeat's slot is skipped, a one-shot waits.
            if !hive_sh4re::name::RESERVED.contains(&s.created_by.as_str())
                && !self.take_send(&s.created_by, s.text.len())
            {
                if let Some(n) = SEND_RATE_SKIPS.due() {
                    tracing::warn!(
                        schedule = s.id,
                        creator = %s.created_by,
                        "a scheduled prompt of an agent that sent its minute's bytes waits ({n} since the last such line)"
                    );
                }
                self.store
                    .set_schedule_due(s.id, next.unwrap_or(now + FULL_RETRY_MS))
                    .await?;
                continue;
            }
            // A full inbox skips a repeat's slot; a one-shot waits for room.
            let when_full = next.unwrap_or(now + FULL_RETRY_MS);
            if self
                .store
                .fire_schedule(s, next, when_full, now)
                .await?
                .is_none()
            {
                tracing::warn!(
                    schedule = s.id,
                    agent = %s.agent,
                    "{}'s inbox is full: a scheduled prompt waits",
                    s.agent
                );
                continue;
            }
            self.sample_inbox(&s.agent).await;
            self.broker.poke(&s.agent);
            self.broker.publish(Change::Agent(s.agent.clone()));
        }
        Ok(due.len())
    }
}

/// Runs the scheduler until shutdown.
pub async fn run(hive: Arc<Hive>) {
    loop {
        let mut rx = hive.broker.watch_inbox(SCHEDULER_KEY);
        if let Err(e) = hive.fire_due(now_ms()).await {
            tracing::warn!("could not deliver scheduled prompts: {e}");
        }
        let wait = match hive.store.next_schedule_due(hive.firing_node()).await {
            _ if hive.space.is_low() => LOW_SPACE_RETRY,
            Ok(Some(t)) => Duration::from_millis((t - now_ms()).max(0) as u64).min(MAX_SLEEP),
            _ => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rx.changed() => {}
            _ = hive.shutdown.cancelled() => return,
        }
    }
}

/// A stored schedule as the wire shows it.
pub fn schedule_wire(s: &ScheduleRow) -> Schedule {
    Schedule {
        id: s.id,
        agent: s.agent.clone(),
        when: s.spec.clone(),
        text: s.text.clone(),
        next_due: rfc3339(s.next_due),
        repeating: s.repeating,
        created_by: s.created_by.clone(),
        last_fired_at: s.last_fired_at.map(rfc3339),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let now = 1_000_000;
        assert!(matches!(When::parse("30s", now).unwrap(), When::At(t) if t == now + 30_000));
        assert!(matches!(
            When::parse("every:15m", now).unwrap(),
            When::Every(900_000)
        ));
        assert!(matches!(
            When::parse("2026-12-01T09:00:00Z", now).unwrap(),
            When::At(_)
        ));
        let c = When::parse("cron:0 0 9 * * *", now).unwrap();
        assert!(c.repeating());
        let next = c.after(0).unwrap();
        assert_eq!(next % 86_400_000, 9 * 3_600_000);
    }

    #[test]
    fn refuses_nonsense_with_the_forms() {
        for bad in ["soon", "every:0s", "every:xs", "cron:not a cron", "", "30"] {
            let e = When::parse(bad, 0).unwrap_err().to_string();
            assert!(e.contains("every:15m"), "{bad}: {e}");
        }
        let e = When::parse("30", 0).unwrap_err().to_string();
        assert!(e.contains("has no unit: write 30s"), "{e}");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/schedule_when.rs): a `when` that
    /// starts with a multi-byte character panicked the parser.
    #[test]
    fn a_multibyte_when_is_refused_not_a_panic() {
        for bad in ["Ϙ", "every:Ϙ", "éh", "1é"] {
            let e = When::parse(bad, 0).unwrap_err().to_string();
            assert!(e.contains("every:15m"), "{bad}: {e}");
        }
    }

    /// Found by fuzzing: a huge duration overflowed the milliseconds (a
    /// panic in debug builds, a wrapped time in release ones).
    #[test]
    fn a_huge_duration_is_refused_not_overflowed() {
        for bad in [
            "99999999999999d",
            "every:99999999999999d",
            "9223372036854775807ms",
            "every:9223372036854775s",
            "101000d",
        ] {
            let e = When::parse(bad, 1_780_000_000_000).unwrap_err().to_string();
            assert!(e.contains("every:15m"), "{bad}: {e}");
        }
        let w = When::parse("every:36500d", 1_780_000_000_000).unwrap();
        assert_eq!(w.after(0), Some(36_500 * 86_400_000));
    }

    #[tokio::test]
    async fn each_target_and_each_creator_has_a_cap() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let per_creator = (SCHEDULES_PER_CREATOR / SCHEDULES_PER_AGENT) as usize;
        let names: Vec<AgentName> = (0..=per_creator)
            .map(|i| AgentName::parse(&format!("a{i}")).unwrap())
            .collect();
        for n in &names {
            hive.add_stopped(n, "").await.unwrap();
        }
        for n in &names[..per_creator] {
            for _ in 0..SCHEDULES_PER_AGENT {
                hive.schedule_add(n, "1h", "x", "operator").await.unwrap();
            }
        }
        let e = hive
            .schedule_add(&names[0], "1h", "x", "operator")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("a0 has 50 schedules waiting"), "{e}");
        let e = hive
            .schedule_add(&names[per_creator], "1h", "x", "operator")
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("operator keeps 200 schedules"),
            "{e}"
        );
    }

    /// A schedule the manager made fires only while the manager may send
    /// to its target: once an approved config takes that away, or the
    /// manager is gone, it is removed at its next slot instead of firing,
    /// with the manager's others that may no longer fire, and the operator
    /// hears why in one notice. A config this version cannot read holds
    /// the schedule, and removes nothing.
    #[tokio::test]
    async fn a_schedule_fires_only_while_its_maker_may_send_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| AgentName::parse(n).unwrap());
        for n in [&alice, &bob, &carol, &AgentName::manager()] {
            hive.add_stopped(n, "").await.unwrap();
        }
        let made = |to: &AgentName, when: &'static str| {
            let (hive, to) = (&hive, to.clone());
            async move {
                hive.schedule_add(&to, when, "check in", "manager")
                    .await
                    .unwrap()
            }
        };
        let to_alice = made(&alice, "every:1h").await;
        let to_bob = made(&bob, "every:1h").await;
        let to_bob_later = made(&bob, "every:5h").await;
        let by_operator = hive
            .schedule_add(&carol, "every:1h", "check in", "operator")
            .await
            .unwrap();
        let depths = || async {
            let mut d = vec![];
            for n in ["alice", "bob", "carol"] {
                d.push(hive.store.inbox_depth(n).await.unwrap());
            }
            d
        };
        let left = || async {
            let mut ids: Vec<i64> = hive
                .schedule_list()
                .await
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect();
            ids.sort();
            ids
        };
        let told = || async {
            let l = hive.notifications(false, None).await.unwrap().notifications;
            assert!(
                l.iter()
                    .all(|n| n.kind == NotificationKind::ScheduleRemoved && n.agent.is_none())
            );
            l.into_iter().map(|n| n.text).collect::<Vec<_>>()
        };
        let now = now_ms();
        let hour = 3_600_000;
        hive.fire_due(now + hour + 100_000).await.unwrap();
        assert_eq!(depths().await, [1, 1, 1]);

        // A config this version cannot read: the manager's wait, and stay.
        hive.store
            .set_config("manager", "allowed_recipients = 5\n", None)
            .await
            .unwrap();
        hive.fire_due(now + 2 * hour + 200_000).await.unwrap();
        assert_eq!(depths().await, [1, 1, 2]);
        assert_eq!(left().await, [to_alice, to_bob, to_bob_later, by_operator]);
        assert!(told().await.is_empty());

        hive.store
            .set_config("manager", "allowed_recipients = [\"bob\"]\n", None)
            .await
            .unwrap();
        hive.fire_due(now + 3 * hour + 300_000).await.unwrap();
        assert_eq!(depths().await, [1, 2, 3], "alice's was not fired");
        assert_eq!(left().await, [to_bob, to_bob_later, by_operator]);
        let t = told().await;
        assert_eq!(t.len(), 1);
        assert!(
            t[0].starts_with(&format!(
                "A schedule was removed instead of firing: #{to_alice} (\"every:1h\" for alice, made by manager): manager may no longer send to alice"
            )),
            "{}",
            t[0]
        );

        // The manager gone: what it made goes, in one notice, due or not;
        // what the operator made stays.
        hive.store.delete_agent("manager").await.unwrap();
        hive.fire_due(now + 4 * hour + 400_000).await.unwrap();
        assert_eq!(depths().await, [1, 2, 4]);
        assert_eq!(left().await, [by_operator]);
        let t = told().await;
        assert_eq!(t.len(), 2);
        assert!(
            t[0].starts_with(&format!("2 schedules were removed instead of firing: #{to_bob} ("))
                && t[0].contains(&format!("; #{to_bob_later} (\"every:5h\" for bob, made by manager): manager, who made it, is no longer in the hive")),
            "{}",
            t[0]
        );
    }

    /// A hive with one agent, `a0`.
    async fn hive_with_agent(dir: &std::path::Path) -> Arc<Hive> {
        let hive = Hive::for_tests(dir, None);
        let uid_base = hive.runtime.uid_ranges().allocate(&[]).unwrap();
        hive.store
            .create_agent(&crate::store::NewAgent {
                name: "a0",
                harness: "ag3nt",
                config_toml: "",
                deployed_sha: None,
                parent: None,
                want_running: false,
                uid_base,
                node: "test",
            })
            .await
            .unwrap();
        hive
    }

    /// Runs the scheduler once a second of real time over `real` (seconds),
    /// the wall clock reading `wall(r)` at real second `r`; returns the real
    /// seconds at which a0 got a prompt.
    async fn drive(
        hive: &Hive,
        real: std::ops::RangeInclusive<i64>,
        wall: impl Fn(i64) -> i64,
    ) -> Vec<i64> {
        let mut fired = vec![];
        for r in real {
            let before = hive.store.inbox_depth("a0").await.unwrap();
            hive.fire_due(wall(r)).await.unwrap();
            let after = hive.store.inbox_depth("a0").await.unwrap();
            assert!(after <= before + 1, "two prompts at real second {r}");
            if after > before {
                fired.push(r);
            }
        }
        fired
    }

    const T0: i64 = 1_800_000_000_000;

    #[tokio::test]
    async fn an_every_schedule_fires_once_per_slot_across_wall_clock_steps() {
        let dir = tempfile::tempdir().unwrap();
        let hive = hive_with_agent(dir.path()).await;
        hive.store
            .add_schedule("a0", "every:10s", "tick", true, T0 + 10_000, "operator")
            .await
            .unwrap();
        let fired = drive(&hive, 0..=35, |r| T0 + r * 1000).await;
        assert_eq!(fired, [10, 20, 30]);
        // The wall clock steps back a minute at real second 36.
        let fired = drive(&hive, 36..=80, |r| T0 + (r - 60) * 1000).await;
        // No slot twice, and no waiting out the minute: one interval after the step at the latest.
        assert_eq!(fired, [46, 56, 66, 76], "after a step back");
        // Forwards by an hour at real second 81: one late firing, no burst of the 360 slots jumped over.
        let fired = drive(&hive, 81..=100, |r| T0 + (r - 60) * 1000 + 3_600_000).await;
        assert_eq!(fired, [81, 91], "after a step forward");
    }

    #[tokio::test]
    async fn a_cron_schedule_serves_no_slot_twice_and_survives_a_long_step_back() {
        let dir = tempfile::tempdir().unwrap();
        let hive = hive_with_agent(dir.path()).await;
        let w = When::parse("cron:*/10 * * * * *", T0).unwrap();
        hive.store
            .add_schedule(
                "a0",
                "cron:*/10 * * * * *",
                "tick",
                true,
                w.first(T0).unwrap(),
                "operator",
            )
            .await
            .unwrap();
        // T0 is a whole 10 s: the slots are at real 10, 20, 30.
        assert_eq!(T0 % 10_000, 0);
        let fired = drive(&hive, 1..=35, |r| T0 + r * 1000).await;
        assert_eq!(fired, [10, 20, 30]);
        // Back 25 s at real 36 (wall T0+11): the slots 20 and 30 were served, the next is 40.
        let fired = drive(&hive, 36..=70, |r| T0 + (r - 25) * 1000).await;
        assert_eq!(
            fired,
            [65],
            "the wall reaches the next unserved slot (40) at real 65"
        );
        // Back a day at real 71: cron starts again from the new now instead of waiting a day.
        let fired = drive(&hive, 71..=95, |r| T0 + (r - 25) * 1000 - 86_400_000).await;
        assert_eq!(fired, [75, 85, 95], "after a step back of a day");
        // Forward a day: one firing at the next slot, no burst.
        let fired = drive(&hive, 96..=110, |r| T0 + (r - 25) * 1000).await;
        assert_eq!(fired, [96, 105], "after a step forward");
    }

    #[tokio::test]
    async fn a_nearly_full_disk_refuses_new_schedules_and_holds_due_ones_until_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let hive = hive_with_agent(dir.path()).await;
        let a0 = AgentName::parse("a0").unwrap();
        hive.store
            .add_schedule("a0", "every:10s", "tick", true, T0, "operator")
            .await
            .unwrap();
        hive.space.raise_for_test();
        let e = hive
            .schedule_add(&a0, "1h", "x", "operator")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("the disk is nearly full"), "{e}");
        assert_eq!(hive.fire_due(T0 + 60_000).await.unwrap(), 0);
        assert_eq!(hive.store.inbox_depth("a0").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_nap_keeps_its_length_whatever_the_wall_clock_does() {
        let dir = tempfile::tempdir().unwrap();
        let hive = hive_with_agent(dir.path()).await;
        let a0 = AgentName::parse("a0").unwrap();
        hive.nap(&a0, 600).await.unwrap();
        let until = hive.agent_row(&a0).await.unwrap().nap_until;
        let now = now_ms();
        for wall in [now, now - 86_400_000, now + 86_400_000] {
            let left = hive.nap_left("a0", until, wall).expect("still napping");
            assert!(
                left > Duration::from_secs(590) && left <= Duration::from_secs(600),
                "{left:?} at {wall}"
            );
        }
        // A nap stored by an earlier daemon counts from the wall clock, at most the longest nap.
        let far = Some(now + 30 * 86_400_000);
        let left = hive.nap_left("b0", far, now).unwrap();
        assert_eq!(
            left,
            Duration::from_secs(hive_sh4re::limits::NAP_MAX_SECONDS)
        );
        assert_eq!(hive.nap_left("b0", Some(now - 1), now), None);
    }

    #[test]
    fn a_repeat_computes_from_now_so_missed_slots_are_not_replayed() {
        let w = When::parse("every:1s", 0).unwrap();
        assert_eq!(w.after(10_500), Some(11_500));
    }
}
