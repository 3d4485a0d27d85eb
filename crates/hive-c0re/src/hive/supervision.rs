//! What the hive makes of its harnesses' lives: [`Supervised`] for `Hive`.
//!
//! The supervisor launches, waits and restarts; here is what each step means
//! to the hive. A harness that went away hands back its claimed messages and
//! queued commands and leaves its agent idle; one that crashed leaves a
//! `container_crash` event and a notice to the manager, with the last lines
//! of its log when the agent may write to the manager.
//!
//! An agent can crash its harness at will, and one that does so each time it
//! has run long enough to count as healthy is restarted at once, each time.
//! A notice per crash would wake the manager for a turn each time and, while
//! it is held, fill its inbox with the `system` notices that may use the
//! tenth kept for the operator; so the manager hears of one agent's crashes
//! at most once in [`CRASH_NOTICES_EVERY`], with how many there were. The
//! operator's notifications and the events record every one.

use hive_sh4re::notification::NotificationKind;
use std::time::Duration;

use hive_sh4re::event::{ContainerCrash, Payload};
use hive_sh4re::{AgentName, AgentState, Mailbox};
use tokio_util::sync::CancellationToken;

use super::Hive;
use crate::broker::Change;
use crate::runtime::{LaunchSpec, Runtime};
use crate::supervisor::{MAX_RESTARTS, Supervised, harness_tail};

/// Lines of the harness log quoted in a crash report.
const CRASH_LOG_LINES: usize = 20;

/// Least time between two crash notices to the manager about one agent.
pub const CRASH_NOTICES_EVERY: Duration = Duration::from_secs(600);

/// [`CRASH_NOTICES_EVERY`] unless `HIVE_CRASH_NOTICES_SECS` says otherwise (for tests).
pub fn crash_notices_every() -> Duration {
    crate::clock::secs_from_env("HIVE_CRASH_NOTICES_SECS", CRASH_NOTICES_EVERY)
}

impl Supervised for Hive {
    fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn faults(&self) -> &crate::panics::Faults {
        &self.faults
    }

    async fn launch_spec_of(&self, name: &AgentName) -> Result<Option<LaunchSpec>, String> {
        match self.store.agent(name.as_str()).await {
            Ok(row) => Ok(row.map(|row| self.launch_spec(&row))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn runtime(&self) -> &dyn Runtime {
        &*self.runtime
    }

    fn kill_grace(&self) -> Duration {
        self.settings.kill_grace
    }

    fn harness_started(&self, name: &AgentName) {
        self.broker.publish(Change::Agent(name.to_string()));
    }

    // The crash that follows logs and reports why.
    fn harness_cut_off(&self, name: &AgentName, _why: &str) {
        self.api.cut_off(name.as_str());
    }

    async fn harness_exited(&self, name: &AgentName, how: &str) {
        self.release_claims(name).await;
        self.end_interrupted_turn(name, how).await;
        self.broker.clear_control(name.as_str());
        if let Ok(Some(row)) = self.store.agent(name.as_str()).await
            && row.state != AgentState::Idle
        {
            let _ = self.set_state(name, AgentState::Idle, None).await;
        }
        self.broker.publish(Change::Agent(name.to_string()));
    }

    async fn harness_crashed(
        &self,
        name: &AgentName,
        exit: &str,
        retry_in: Option<Duration>,
        attempt: u32,
    ) {
        let tail = harness_tail(&self.paths.harness_log(name), CRASH_LOG_LINES);
        let tail = if tail.trim().is_empty() {
            "(nothing: the harness wrote no output before it ended)".to_owned()
        } else {
            tail
        };
        // The agent writes its log: a secret's value in it goes no further
        // than the file. The operator's copy is redacted with every value;
        // the manager's (an agent, which may have written the log itself)
        // with the crashed agent's own, so that no agent learns which of the
        // strings it wrote is another's secret. Agents never read the
        // operator's copy (`agent_conn.rs` leaves it out of their status).
        let quote = |r: crate::error::Result<std::sync::Arc<super::secrets::Redactor>>| match r {
            Ok(r) => r.redact(&tail),
            Err(e) => format!("(the log is not quoted: {e})"),
        };
        let tail = quote(self.redactor().await);
        let next = match retry_in {
            Some(d) => format!(
                "restarting in {:.1}s (attempt {attempt} of {MAX_RESTARTS})",
                d.as_secs_f64()
            ),
            None => format!(
                "gave up after {MAX_RESTARTS} restarts: it stays failed until someone runs hive-c0re start {name}"
            ),
        };
        tracing::warn!(agent = %name, "harness {exit}; {next}");
        let crash = ContainerCrash {
            exit: exit.to_owned(),
            attempt,
            gave_up: retry_in.is_none(),
            log_tail: tail.clone(),
        };
        // Failed before the crash that gave up is recorded: a row read in
        // between (the crash given up on, the flag not yet set) read neither
        // restarting nor failed, but stopped; and before the operator and the
        // manager are told.
        if retry_in.is_none() {
            let _ = self.store.set_failed(name.as_str(), true).await;
        }
        let _ = self.record(name, &Payload::ContainerCrash(crash)).await;
        if retry_in.is_none() {
            self.broker.publish(Change::Agent(name.to_string()));
        }
        // One agent's crashes are told (to the operator's bell and webhooks,
        // and to the manager) at most once in a while, with how many came
        // since: an agent that crashes its harness on purpose, again and
        // again, would ring both without end. The crash that leaves the
        // agent failed is always told: it takes a start to crash again.
        let crashes = match retry_in {
            Some(_) => self.crash_notices.due(name.as_str()),
            None => Some(self.crash_notices.tell(name.as_str())),
        };
        let Some(crashes) = crashes else { return };
        let since = match crashes {
            1 => String::new(),
            n => format!(
                " It crashed {n} times since the last notice about it, this one included: one agent's crashes are told at most once in {}.",
                crate::clock::duration(self.crash_notices.every().as_secs_f64() * 1000.0)
            ),
        };
        let kind = if retry_in.is_some() {
            NotificationKind::Crashed
        } else {
            NotificationKind::Failed
        };
        self.tell_operator(
            kind,
            Some(name),
            &format!("{name}'s harness {exit}; {next}.{since}"),
        )
        .await;
        let output = if self.may_write_to_manager(name).await {
            format!(
                "Last lines of its output (the agent's own words, quoted, not the hive's):\n{}",
                quoted(&quote(self.redactor_for(name).await))
            )
        } else {
            // Quoted, its log would carry its words past its allowed_recipients.
            format!(
                "Its output is not quoted: {name} may not write to you. The operator reads it on {name}'s dashboard page and in hive-c0re events {name}."
            )
        };
        let body = format!("Agent {name}'s harness {exit}; {next}.{since}\n{output}");
        if let Err(e) = self.notify(&AgentName::manager(), &body).await {
            tracing::error!("could not tell the manager about {name}'s crash: {e}");
        }
    }

    fn lease_timing(&self) -> (Duration, Duration) {
        (self.settings.heartbeat_every, self.settings.lease_ttl)
    }

    async fn take_lease(&self, name: &AgentName) -> Result<i64, String> {
        Hive::take_lease(self, name).await
    }

    async fn renew_lease(&self, name: &AgentName, epoch: i64) -> Result<bool, String> {
        Hive::renew_lease(self, name, epoch).await
    }

    async fn release_lease(&self, name: &AgentName, epoch: i64) {
        Hive::release_lease(self, name, epoch).await
    }

    fn lease_waiting(&self, name: &AgentName, why: Option<&str>) {
        if let Some(why) = why {
            tracing::warn!(agent = %name, "not running: {why}");
        }
        self.broker.publish(Change::Agent(name.to_string()));
    }
}

impl Hive {
    /// Whether the agent's deployed config lets it write to the manager (the
    /// manager may read its own words); no when it cannot be read.
    async fn may_write_to_manager(&self, name: &AgentName) -> bool {
        let manager = AgentName::manager();
        if *name == manager {
            return true;
        }
        match self.store.agent(name.as_str()).await {
            Ok(Some(row)) => self
                .config_of(&row)
                .is_ok_and(|c| c.may_send_to(&Mailbox::Agent(manager))),
            _ => false,
        }
    }
}

/// Longest quote of an agent's output in a message from `system`, in bytes.
const QUOTE_MAX_BYTES: usize = 4096;
/// Longest line of such a quote, in characters.
const QUOTE_LINE_CHARS: usize = 300;

/// `text` as a quote: each line behind `> `, cut to [`QUOTE_LINE_CHARS`], and
/// the last [`QUOTE_MAX_BYTES`] of them. The agent writes its log, so what it
/// says there must not read as the hive's own words (an approval decided, an
/// instruction) in the message `system` sends the manager.
fn quoted(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l: String = l
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(QUOTE_LINE_CHARS)
                .collect();
            format!("> {l}")
        })
        .collect();
    let mut total: usize = lines.iter().map(|l| l.len() + 1).sum();
    while total > QUOTE_MAX_BYTES && lines.len() > 1 {
        total -= lines.remove(0).len() + 1;
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_sh4re::config::AgentConfig;
    use hive_sh4re::notification::Notification;

    async fn told(hive: &Hive, kind: NotificationKind) -> Vec<Notification> {
        let all = hive.notifications(false, None).await.unwrap().notifications;
        all.into_iter().filter(|n| n.kind == kind).collect()
    }

    #[tokio::test]
    async fn supervision_that_panics_runs_again_and_the_operator_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        hive.spawn_essential("fault notices", crate::hive::panics::tell);
        let name = AgentName::parse("wobbly").unwrap();
        hive.add_stopped(&name, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        crate::supervisor::tests::panic_next_run_of(&name);
        hive.start(&name).await.unwrap();
        // The run after the panic launches the harness: there is none to
        // launch here, so it crashes, and that crash is told as any is.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while told(&hive, NotificationKind::Crashed).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "supervision ran again after its panic"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let faults = told(&hive, NotificationKind::InternalError).await;
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert!(
            faults[0]
                .text
                .contains("\"supervision\" (wobbly's) panicked"),
            "{faults:?}"
        );
        assert!(hive.supervisor.is_supervised(name.as_str()));
        tokio::time::timeout(Duration::from_secs(10), hive.stop(&name, false))
            .await
            .expect("a stop ends supervision")
            .unwrap();
        assert!(!hive.supervisor.is_supervised(name.as_str()));
    }
}
