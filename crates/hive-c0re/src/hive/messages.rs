//! The message lifecycle, in one place. A message is committed by `send`
//! (or `notify`, the hive's own notices) and stays until acknowledged:
//! - `recv` reads and acknowledges at once (the operator, an agent's `recv` tool);
//! - a harness's turn *claims* its inbox (`claim`), and ending the turn
//!   settles the claim in the transaction that stores the turn's end
//!   (`Hive::end_turn`): acknowledged, released to run again, or held after
//!   a cancel (it waits for the next turn and starts none itself);
//! - a harness that goes away before it ends its turn gives its claims back
//!   (`release_claims`).
//!
//! Every change wakes the waiters of the inbox it touched. A message from the
//! operator is also noted in the agent's history (an `operator` event).

use std::time::Duration;

use hive_sh4re::event::{EventKind, Operator, Payload};
use hive_sh4re::host::Message;
use hive_sh4re::notification::NotificationKind;
use hive_sh4re::{AgentName, Mailbox};

use super::Hive;
use crate::broker::Change;
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::hive::event_row;
use crate::store::{MessageRow, SendError, SendNote, Sent};
use hive_sh4re::limits::{
    MAX_BODY_BYTES, MAX_SEND_KEY_BYTES, RECV_MAX, SEND_BYTES_PER_MINUTE, SEND_MIN_BYTES,
};

/// Characters of an operator's message repeated in the agent's history.
const NOTED_CHARS: usize = 300;

/// Most characters of a body a list of messages shows (the dashboard's
/// inboxes); `recv` reads it whole.
pub const SHOWN_BODY_CHARS: usize = 8000;

impl Hive {
    /// Sends `body` from `from` to `to`, enforcing the sender's allow-list; returns the message id.
    pub async fn send(&self, from: &Mailbox, to: &Mailbox, body: &str) -> Result<i64> {
        self.send_keyed(from, to, body, None).await
    }

    /// [`Hive::send`] under the sender's `key`: a send repeated with it after
    /// an `unavailable` answer is stored once (see [`crate::store::Db::send_keyed`]).
    pub async fn send_keyed(
        &self,
        from: &Mailbox,
        to: &Mailbox,
        body: &str,
        key: Option<&str>,
    ) -> Result<i64> {
        if body.trim().is_empty() {
            return Err(Error::refused(
                "the message body is empty: write something to send",
            ));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(Error::refused(format!(
                "the message body is {} bytes, over the limit of {MAX_BODY_BYTES}: shorten it or put it in a file",
                body.len()
            )));
        }
        if key.is_some_and(|k| k.len() > MAX_SEND_KEY_BYTES) {
            return Err(Error::refused(format!(
                "the send's key is over {MAX_SEND_KEY_BYTES} bytes: use a shorter one, or none"
            )));
        }
        match to {
            Mailbox::System => {
                return Err(Error::refused(
                    "\"system\" is the hive's own notice board and takes no messages",
                ));
            }
            Mailbox::Agent(n) if self.store.agent(n.as_str()).await?.is_none() => {
                return Err(Error::refused(format!(
                    "there is no agent {:?} in this hive: see the status tool (or hive-c0re status) for who is here",
                    n.as_str()
                )));
            }
            _ => {}
        }
        if let Mailbox::Agent(sender) = from {
            let config = self.config_of(&self.agent_row(sender).await?)?;
            if !config.may_send_to(to) {
                return Err(Error::refused(format!(
                    "{sender} may not send to {to}: its allowed_recipients are {:?}; ask the manager or the operator to change the config",
                    config.allowed_recipients
                )));
            }
            if !self.take_send(sender.as_str(), body.len()) {
                return Err(Error::refused(format!(
                    "{sender} sent {} MiB of messages this minute, the most the hive takes from one agent: send again next minute, or put long text in a file",
                    SEND_BYTES_PER_MINUTE >> 20
                )));
            }
        }
        self.space.refuse_if_low()?;
        let note = match (from, to) {
            (Mailbox::Operator, Mailbox::Agent(_)) => Some(self.operator_note(body).await?),
            _ => None,
        };
        let sent = match self
            .store
            .send_keyed(from.as_str(), to.as_str(), body, key, note)
            .await
        {
            Ok(sent) => sent,
            Err(e) => {
                if let (
                    Mailbox::Operator,
                    Mailbox::Agent(sender),
                    SendError::InboxFull { cap, .. },
                ) = (to, from, &e)
                {
                    self.operator_inbox_full(sender, *cap).await;
                }
                return Err(crate::space::full_or(&self.space, e.into()));
            }
        };
        self.broker.poke(to.as_str());
        self.broker.publish(Change::Message {
            to: to.as_str().to_owned(),
            from: from.as_str().to_owned(),
        });
        if let (Mailbox::Operator, Mailbox::Agent(sender)) = (to, from) {
            self.tell_operator(NotificationKind::Message, Some(sender), body)
                .await;
        }
        if let Mailbox::Agent(n) = to {
            self.sent_to(n, &sent).await;
            self.broker.publish(Change::Agent(n.to_string()));
            if let Some(last_id) = sent.event {
                self.broker.publish(Change::Events {
                    agent: n.to_string(),
                    last_id,
                });
            }
        }
        Ok(sent.id)
    }

    /// Counts `bytes` of a message from agent `sender` against its minute's
    /// [`SEND_BYTES_PER_MINUTE`] (a message as at least [`SEND_MIN_BYTES`]);
    /// false when it is over. A schedule's firing counts as its maker's send.
    pub(super) fn take_send(&self, sender: &str, bytes: usize) -> bool {
        let cost = bytes.max(SEND_MIN_BYTES) as u64;
        matches!(
            self.send_rate.take(sender, cost),
            crate::throttle::Take::Taken
        )
    }

    /// Tells the operator that `sender`'s message to them was refused, their
    /// inbox at its cap: only `recv` acknowledges the operator's messages (the
    /// dashboard shows them without), and an operator who reads them there
    /// alone heard of the refusals from no one, weeks in. Once in ten minutes
    /// at most, with how many were refused since, and never held back with
    /// the chatty agent's own messages (`flood.rs`): it names no agent.
    async fn operator_inbox_full(&self, sender: &AgentName, cap: u64) {
        let Some(refused) = self.operator_inbox_full.due() else {
            return;
        };
        let text = format!(
            "Messages to you are refused: your inbox holds {cap} unacknowledged messages, its limit \
             ({refused} refused since the last notice, the last from {sender}). `hive-c0re recv` reads \
             and acknowledges them (the dashboard shows them without acknowledging); until then agents \
             cannot write to you."
        );
        self.tell_operator(NotificationKind::Message, None, &text)
            .await;
    }

    /// Samples the inbox depth a send to `agent` left, for its next turn's figures.
    async fn sent_to(&self, agent: &AgentName, sent: &Sent) {
        match sent.depth {
            Some(depth) => self.note_inbox_depth(agent.as_str(), depth),
            None => self.sample_inbox(agent.as_str()).await,
        }
    }

    /// The `operator` event an operator's message to an agent leaves in the
    /// agent's history, stored with the message (the event names its id).
    async fn operator_note(&self, body: &str) -> Result<SendNote> {
        let redactor = self.redactor().await?;
        let shown: String = body.chars().take(NOTED_CHARS).collect();
        Ok(SendNote {
            kind: EventKind::Operator.as_str().to_owned(),
            payload: Box::new(move |id| {
                let (_, payload) = event_row(&Payload::Operator(Operator {
                    message: Some(shown.clone()),
                    message_id: Some(id),
                    ..Operator::default()
                }));
                redactor.redact_json(&payload)
            }),
        })
    }

    /// A notice from hive-c0re itself; it waits in the inbox even if the agent does not exist yet.
    pub async fn notify(&self, to: &AgentName, body: &str) -> Result<i64> {
        let sent = self
            .store
            .send_keyed("system", to.as_str(), body, None, None)
            .await?;
        self.sent_to(to, &sent).await;
        self.broker.poke(to.as_str());
        self.broker.publish(Change::Agent(to.to_string()));
        Ok(sent.id)
    }

    /// Reads and acknowledges up to `max` messages of `mailbox`, waiting up to `wait` for the first.
    pub async fn recv(&self, mailbox: &Mailbox, max: u32, wait: Duration) -> Result<Vec<Message>> {
        let never = std::pin::pin!(std::future::pending::<()>());
        let got = self.recv_unless(mailbox, max, wait, never).await?;
        Ok(got.unwrap_or_default())
    }

    /// An agent's own `recv` (its MCP tool): during a turn, what it reads is
    /// claimed for the turn, acknowledged with the turn's messages when it
    /// ends well and back in the inbox when it fails, as a crash or a failed
    /// model call leaves the model nothing of it; outside a turn (a
    /// compaction) acknowledged at once, as the operator's `recv` is.
    pub async fn agent_recv(&self, agent: &AgentName, max: u32) -> Result<Vec<Message>> {
        let in_turn = self.reads().contains_key(agent.as_str());
        if !in_turn {
            return self
                .recv(&Mailbox::Agent(agent.clone()), max, Duration::ZERO)
                .await;
        }
        let fence = self.fence(agent)?;
        let got = self
            .store
            .claim_read_fenced(agent.as_str(), max.clamp(1, RECV_MAX), fence)
            .await
            .map_err(|e| crate::space::full_or(&self.space, e.into()))?;
        let ids: Vec<i64> = got.iter().map(|m| m.id).collect();
        let kept = match self.reads().get_mut(agent.as_str()) {
            Some(reads) => {
                reads.extend(&ids);
                true
            }
            None => false,
        };
        if !kept && !ids.is_empty() {
            // The turn ended while they were claimed: no turn will settle
            // them, and the agent has read them.
            let fence = self.fence(agent)?;
            self.store.ack_fenced(agent.as_str(), &ids, fence).await?;
        }
        if !got.is_empty() {
            self.broker.publish(Change::Agent(agent.to_string()));
        }
        Ok(got.iter().map(message_wire).collect())
    }

    /// The agents in a turn, with what their `recv` claimed during it.
    fn reads(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<i64>>> {
        self.turn_reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins the agent's turn for [`Hive::agent_recv`]: what it reads is claimed from now.
    pub(super) fn turn_began(&self, agent: &AgentName) {
        self.reads().insert(agent.to_string(), vec![]);
    }

    /// Ends the agent's turn for [`Hive::agent_recv`]: the ids its `recv`
    /// claimed during it, to settle with the turn's own.
    pub(super) fn turn_ended_reads(&self, agent: &AgentName) -> Vec<i64> {
        self.reads().remove(agent.as_str()).unwrap_or_default()
    }

    /// [`Hive::recv`] for a reader that may go away while it waits: once
    /// `gone` resolves, nothing is taken (None), since what was taken would
    /// be acknowledged and then written to no one.
    pub async fn recv_unless(
        &self,
        mailbox: &Mailbox,
        max: u32,
        wait: Duration,
        mut gone: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
    ) -> Result<Option<Vec<Message>>> {
        use futures::FutureExt;
        let max = max.clamp(1, RECV_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if gone.as_mut().now_or_never().is_some() {
                return Ok(None);
            }
            let mut rx = self.broker.watch_inbox(mailbox.as_str());
            let got = self
                .store
                .recv(mailbox.as_str(), max)
                .await
                .map_err(|e| crate::space::full_or(&self.space, e.into()))?;
            if !got.is_empty() {
                if let Mailbox::Agent(n) = mailbox {
                    self.broker.publish(Change::Agent(n.to_string()));
                }
                return Ok(Some(got.iter().map(message_wire).collect()));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(Some(vec![])) },
                _ = tokio::time::sleep_until(deadline) => return Ok(Some(vec![])),
                _ = self.shutdown.cancelled() => return Ok(Some(vec![])),
                () = gone.as_mut() => return Ok(None),
            }
        }
    }

    /// The newest `limit` messages to or from `mailbox`, oldest first,
    /// acknowledging none, each body shown to [`SHOWN_BODY_CHARS`].
    /// (Each says whether it is still pending: the dashboard labels them.)
    pub async fn recent_messages(&self, mailbox: &Mailbox, limit: u32) -> Result<Vec<Message>> {
        Ok(self
            .store
            .recent_messages(mailbox.as_str(), limit)
            .await?
            .iter()
            .map(|m| Message {
                pending: Some(m.delivered_at.is_none()),
                // What reads otherwise than it is (a bidi override, a
                // zero-width character) is written out on the dashboard,
                // then clipped: written out, a body of control characters
                // is twelve times its size, and the dashboard sends the
                // list anew at each message.
                body: hive_sh4re::text::clip(&hive_sh4re::text::visible(&m.body), SHOWN_BODY_CHARS)
                    .into_owned(),
                ..message_wire(m)
            })
            .collect())
    }

    /// Messages waiting in `mailbox`: not yet acknowledged (claimed and held ones count).
    pub async fn inbox_depth(&self, mailbox: &Mailbox) -> Result<u64> {
        Ok(self.store.inbox_depth(mailbox.as_str()).await?)
    }

    /// When a message waits for the agent that is neither claimed nor held:
    /// the arrival and id of its oldest unclaimed message (its place in the
    /// turn queue); of `from`'s messages only when it is given.
    pub(super) async fn oldest_unclaimed(
        &self,
        agent: &AgentName,
        from: Option<&str>,
    ) -> Result<Option<(i64, i64)>> {
        Ok(self.store.oldest_unclaimed(agent.as_str(), from).await?)
    }

    /// Claims up to `max` waiting messages of the agent for a turn, held ones
    /// included; only those of `from` when given.
    pub(super) async fn claim(
        &self,
        agent: &AgentName,
        from: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        self.sample_inbox(agent.as_str()).await;
        let fence = self.fence(agent)?;
        Ok(self
            .store
            .claim_fenced(agent.as_str(), from, max, fence)
            .await?)
    }

    /// Gives back what the agent's harness claimed and did not settle: it went
    /// away (its connection closed, or it died), so the messages come again.
    /// Only under this daemon's lease: once it is lost, the claims are the
    /// next holder's to take back (it does when it takes the lease).
    pub async fn release_claims(&self, agent: &AgentName) {
        // Its `recv` reads go back with the turn's own messages (every claim of the agent).
        self.turn_ended_reads(agent);
        let released = match self.fence(agent) {
            Ok(fence) => {
                self.store
                    .release_claims_fenced(agent.as_str(), fence)
                    .await
            }
            Err(_) => Ok(0),
        };
        if let Err(e) = released {
            tracing::warn!(agent = %agent, "could not hand back claimed messages: {e}");
        }
        // A probe turn that went away frees the probe slot of the API backoff.
        self.api.turn_ended(agent.as_str(), false, None);
        self.broker.poke(agent.as_str());
    }
}

/// A stored message as the wire shows it.
pub fn message_wire(m: &MessageRow) -> Message {
    Message {
        id: m.id,
        from: m.sender.clone(),
        to: m.recipient.clone(),
        body: m.body.clone(),
        sent_at: rfc3339(m.created_at),
        pending: None,
    }
}

#[cfg(test)]
mod tests {
    use hive_sh4re::config::AgentConfig;
    use hive_sh4re::secret::{SecretName, SecretValue};

    use super::*;

    #[tokio::test]
    async fn an_operators_message_is_noted_in_the_agents_history_with_its_id_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        hive.add_stopped(&alice, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        let name = SecretName::parse("GITHUB_TOKEN").unwrap();
        let value = SecretValue::parse("ghp_s3cr3t".into()).unwrap();
        hive.secret_set(&name, None, &value).await.unwrap();
        let mut changes = hive.subscribe();
        let to = Mailbox::Agent(alice.clone());
        let id = hive
            .send(&Mailbox::Operator, &to, "use ghp_s3cr3t for the push")
            .await
            .unwrap();
        let noted: Vec<_> = hive
            .events(&alice, None, None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "operator")
            .collect();
        assert_eq!(noted.len(), 1, "{noted:?}");
        assert_eq!(noted[0].payload["message_id"], id);
        assert_eq!(
            noted[0].payload["message"],
            "use [secret GITHUB_TOKEN] for the push"
        );
        // The live feeds hear of it.
        let mut told = false;
        while let Ok(c) = changes.try_recv() {
            told |= c
                == Change::Events {
                    agent: "alice".into(),
                    last_id: noted[0].id,
                };
        }
        assert!(told, "no Change::Events for the noted message");
        // An agent's message to another agent notes nothing.
        let bob = AgentName::parse("bob").unwrap();
        hive.add_stopped(&bob, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        hive.send(&to, &Mailbox::Agent(bob.clone()), "hi")
            .await
            .unwrap();
        let bobs = hive.events(&bob, None, None, 100).await.unwrap();
        assert!(bobs.iter().all(|e| e.kind != "operator"), "{bobs:?}");
    }

    /// The dashboard shows a message as it is: a bidi override in it would
    /// turn what follows around on the page. The stored message, and what
    /// `recv` hands a script, keep the very text.
    #[tokio::test]
    async fn the_dashboard_writes_out_what_reads_otherwise_than_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        hive.add_stopped(&alice, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        let body = "run \u{202E}fr- mr\u{202C}";
        hive.send(&Mailbox::Agent(alice), &Mailbox::Operator, body)
            .await
            .unwrap();
        let shown = hive.recent_messages(&Mailbox::Operator, 10).await.unwrap();
        assert_eq!(shown[0].body, "run ⟨U+202E⟩fr- mr⟨U+202C⟩");
        let stored = hive.store.recent_messages("operator", 10).await.unwrap();
        assert_eq!(stored[0].body, body);
    }
}
