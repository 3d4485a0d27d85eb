//! The model API's trouble as the agents report it (`api_retry`, `backoff`,
//! `needs_login` with a reason): the states it shows, the notice to the
//! operator, and what the hive-wide backoff ([`crate::api_health`]) learns.

use std::time::Duration;

use hive_sh4re::event::{Payload, StateChange};
use hive_sh4re::host::ApiBackoff;
use hive_sh4re::{AgentName, AgentState, Mailbox};

use crate::api_health::{Trouble, is_auth};
use crate::broker::Change;
use crate::clock::{now_ms, rfc3339};
use crate::error::Result;
use crate::hive::Hive;

impl Hive {
    /// The hive-wide backoff from the model API, while one holds turns.
    pub fn api_backoff_status(&self) -> Option<ApiBackoff> {
        self.api.backoff()
    }

    /// The model answered one of the agent's calls: any hive-wide backoff is over.
    pub fn api_answered(&self, agent: &AgentName) {
        self.api.answered(agent.as_str());
    }

    /// claude retries a model call the API failed: the agent shows
    /// `retrying · API 529 · 3/10`. Returns true when the turn should give up
    /// now: the credential was refused (the harness parks for a login), or the
    /// hive backs off from the API.
    pub async fn api_retry(
        &self,
        agent: &AgentName,
        status: Option<u16>,
        error: &str,
        attempt: u32,
        max_retries: u32,
    ) -> Result<bool> {
        let code = status.map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
        let trouble = Trouble {
            detail: format!("API {code} · {attempt}/{max_retries}"),
            retry_at: None,
        };
        self.set_trouble_state(agent, AgentState::Retrying, trouble)
            .await?;
        Ok(is_auth(status) || self.api.failed(agent.as_str(), status, error))
    }

    /// A failed turn's harness waits `retry_in` before trying its messages
    /// again: the agent shows `waiting · retry in 40s`.
    pub async fn api_backoff(
        &self,
        agent: &AgentName,
        retry_in: Duration,
        reason: &str,
    ) -> Result<()> {
        let trouble = Trouble {
            // One line: other agents' status tools show it.
            detail: reason
                .chars()
                .map(|c| {
                    if c.is_control() || hive_sh4re::text::shows_nothing(c) {
                        ' '
                    } else {
                        c
                    }
                })
                .take(200)
                .collect(),
            retry_at: Some(now_ms() + retry_in.as_millis() as i64),
        };
        self.set_trouble_state(agent, AgentState::Waiting, trouble)
            .await
    }

    async fn set_trouble_state(
        &self,
        agent: &AgentName,
        state: AgentState,
        t: Trouble,
    ) -> Result<()> {
        let event = Payload::State(StateChange {
            state,
            model: None,
            detail: Some(t.detail.clone()),
            retry_at: t.retry_at.map(rfc3339),
        });
        self.api.set_trouble(agent.as_str(), Some(t));
        self.store.set_state(agent.as_str(), state, None).await?;
        self.record(agent, &event).await?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// The harness reports whether the agent lacks usable credentials. A
    /// refusal by the API (`reason`) is told to the operator, once, by `system`.
    pub async fn report_needs_login(
        &self,
        agent: &AgentName,
        needed: bool,
        reason: Option<String>,
    ) -> Result<()> {
        self.store.set_needs_login(agent.as_str(), needed).await?;
        // The reason is the harness's report: one line of plain text, and quoted
        // as the agent's words in a notice that `system` signs.
        let reason = reason.map(|r| {
            let line = r.lines().next().unwrap_or("").replace('"', "'");
            line.chars()
                .filter(|&c| !c.is_control() && !hive_sh4re::text::shows_nothing(c))
                .take(200)
                .collect::<String>()
        });
        let told = match (needed, reason) {
            (true, Some(r)) => self
                .api
                .set_login_reason(agent.as_str(), Some(r.clone()))
                .then_some(r),
            (true, None) => None,
            (false, _) => {
                self.api.set_login_reason(agent.as_str(), None);
                None
            }
        };
        self.broker.publish(Change::Agent(agent.to_string()));
        if let Some(reason) = told {
            self.tell_operator(
                hive_sh4re::notification::NotificationKind::NeedsLogin,
                Some(agent),
                &format!(
                    "{agent} needs a login: the model API refused its credentials ({reason})."
                ),
            )
            .await;
            let body = format!(
                "{agent} needs a login: its harness reports that the model API refused its \
                 credentials (\"{reason}\"). \
                 Its turns are parked and its messages wait in its inbox. Log in inside its \
                 container (hive-c0re shell {agent}, then claude /login) or give the hive a new \
                 key and restart {agent}; it resumes by itself when its credentials change."
            );
            if let Err(e) = self.send(&Mailbox::System, &Mailbox::Operator, &body).await {
                tracing::warn!(%agent, "could not tell the operator that it needs a login: {e}");
            }
        }
        Ok(())
    }
}
