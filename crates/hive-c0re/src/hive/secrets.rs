//! The operator's secrets (`hive-c0re secret ...`): set, list, remove, what
//! one agent's claude gets, and redaction.
//!
//! Values live only in the store's `secrets` table. They leave the daemon in
//! one way: the `config` an agent's own socket answers `next_turn`,
//! `turn_end` and `config` with (hive-wide secrets with the agent's own over
//! them), which the harness puts in claude's environment. Everything an agent
//! reports (events, messages, its status, the manager's requests) passes
//! [`Redactor::redact`] before it is stored, so a value claude prints is kept
//! as `[secret NAME]`, whatever the harness did with it: events (the
//! operator's to read) with every value, what agents read back with the
//! agent's own ([`Hive::redactor_for`]).

use std::sync::Arc;

use hive_sh4re::AgentName;
use hive_sh4re::host::SecretRow;
use hive_sh4re::secret::{
    MIN_REDACTED_BYTES, OPERATOR_ONLY_PREFIX, SecretName, SecretValue, Secrets,
};

use super::Hive;
use crate::broker::Change;
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// The redactors made since the stored values last changed: the hive's
/// (every value) under "", each agent's (the values it is given) under its name.
#[derive(Debug, Default)]
pub struct Redactors {
    generation: u64,
    by_agent: std::collections::HashMap<String, Arc<Redactor>>,
}

/// What redaction looks for: each stored value long enough to redact, with
/// its name; longest first, so a value that contains another is replaced whole.
#[derive(Debug, Default)]
pub struct Redactor {
    /// (value as it appears inside a JSON string, value, replacement).
    values: Vec<(String, String, String)>,
}

impl Redactor {
    /// From (name, value) pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut values: Vec<(String, String, String)> = pairs
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_REDACTED_BYTES)
            .map(|(name, value)| {
                let quoted = serde_json::to_string(&value).unwrap_or_default();
                let escaped = quoted[1..quoted.len() - 1].to_owned();
                (escaped, value, format!("[secret {name}]"))
            })
            .collect();
        values.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.2.cmp(&b.2)));
        values.dedup_by(|a, b| a.1 == b.1);
        Self { values }
    }

    /// `text` with every value replaced by `[secret NAME]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (_, value, label) in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), label);
            }
        }
        out
    }

    /// A JSON text with every value replaced inside its strings (and keys).
    /// Untouched, without parsing, when no value occurs in it.
    pub fn redact_json(&self, json: &str) -> String {
        if !self
            .values
            .iter()
            .any(|(escaped, _, _)| json.contains(escaped.as_str()))
        {
            return json.to_owned();
        }
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(v) => self.redact_value(v).to_string(),
            // Not JSON: no structure to keep, the text is all there is.
            Err(_) => self.redact(json),
        }
    }

    /// A JSON value with every value replaced inside its strings (and keys).
    pub fn redact_value(&self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.redact(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.redact_value(v)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (self.redact(&k), self.redact_value(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Hive {
    /// Stores a secret, hive-wide or for one agent of this hive; its next turn has it.
    pub async fn secret_set(
        &self,
        name: &SecretName,
        agent: Option<&AgentName>,
        value: &SecretValue,
    ) -> Result<()> {
        if let Some(a) = agent {
            self.agent_row(a).await?;
        }
        self.store
            .set_secret(name.as_str(), agent.map(AgentName::as_str), value.expose())
            .await?;
        if agent.is_none() {
            self.remember_webhook_secret(name.as_str(), Some(value.expose()));
        }
        self.secrets_changed(agent).await
    }

    /// Removes a secret.
    pub async fn secret_rm(&self, name: &SecretName, agent: Option<&AgentName>) -> Result<()> {
        if !self
            .store
            .remove_secret(name.as_str(), agent.map(AgentName::as_str))
            .await?
        {
            let scope = match agent {
                Some(a) => format!("for {a}"),
                None => "hive-wide".to_owned(),
            };
            return Err(Error::refused(format!(
                "there is no secret {name} {scope}: see hive-c0re secret list"
            )));
        }
        if agent.is_none() {
            self.remember_webhook_secret(name.as_str(), None);
        }
        self.secrets_changed(agent).await
    }

    /// Every secret's name, scope and time set; never a value.
    pub async fn secret_list(&self) -> Result<Vec<SecretRow>> {
        Ok(self
            .store
            .secret_entries()
            .await?
            .into_iter()
            .map(|e| SecretRow {
                name: e.name,
                agent: e.agent,
                set_at: rfc3339(e.set_at),
            })
            .collect())
    }

    /// What the agent's claude gets: hive-wide secrets, its own over them;
    /// never hive-c0re's own (`WEBHOOK_*`).
    pub async fn secrets_for(&self, agent: &AgentName) -> Result<Secrets> {
        let mut all = self.store.secrets_for(agent.as_str()).await?;
        all.retain(|name, _| !name.starts_with(OPERATOR_ONLY_PREFIX));
        Ok(Secrets(all))
    }

    /// A hive-wide secret's value, for hive-c0re's own use (a webhook's key).
    pub(crate) async fn hive_secret(&self, name: &SecretName) -> Result<Option<String>> {
        Ok(self.store.secrets_for("").await?.remove(name.as_str()))
    }

    /// The redactor for every value stored now (read from the store once per
    /// change), for what only the operator reads: events, notifications.
    pub async fn redactor(&self) -> Result<Arc<Redactor>> {
        self.cached_redactor(None).await
    }

    /// The redactor for what `agent` says that agents read back (messages,
    /// its status, the manager's requests): only the values it is given.
    /// Redacting the others' too would tell it which of its guesses is a
    /// secret it never got; one of its own it knows already.
    pub async fn redactor_for(&self, agent: &AgentName) -> Result<Arc<Redactor>> {
        self.cached_redactor(Some(agent)).await
    }

    async fn cached_redactor(&self, agent: Option<&AgentName>) -> Result<Arc<Redactor>> {
        let key = agent.map(|a| a.to_string()).unwrap_or_default();
        let generation = {
            let cached = self.redactor.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = cached.by_agent.get(&key) {
                return Ok(r.clone());
            }
            cached.generation
        };
        // Read without the lock (the store may await); kept only if no
        // change came meanwhile, so a stale set of values is never cached.
        let values = match agent {
            Some(a) => self.secrets_for(a).await?.0.into_iter().collect(),
            None => self.store.secret_values().await?,
        };
        let r = Arc::new(Redactor::new(values));
        let mut cached = self.redactor.lock().unwrap_or_else(|p| p.into_inner());
        if cached.generation == generation {
            cached.by_agent.insert(key, r.clone());
        }
        Ok(r)
    }

    /// Drops the cached redactors: the stored values changed.
    pub(super) fn forget_redactor(&self) {
        let mut cached = self.redactor.lock().unwrap_or_else(|p| p.into_inner());
        cached.generation = cached.generation.wrapping_add(1);
        cached.by_agent.clear();
    }

    /// Forgets the cached redactor and tells watchers the agents' view changed.
    async fn secrets_changed(&self, agent: Option<&AgentName>) -> Result<()> {
        self.forget_redactor();
        // A parked agent re-reads its config when poked; a working one at its next turn.
        match agent {
            Some(a) => self.broker.publish(Change::Agent(a.to_string())),
            None => {
                for row in self.store.agents().await? {
                    self.broker.publish(Change::Agent(row.name));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(vec![
            ("API".into(), "sk-abcdef123456".into()),
            ("LONGER".into(), "sk-abcdef123456-and-more".into()),
            ("QUOTED".into(), "pa\"ss\\word!".into()),
            ("SHORT".into(), "1234".into()),
        ])
    }

    #[test]
    fn values_become_their_names() {
        let r = r();
        assert_eq!(
            r.redact("key sk-abcdef123456 and sk-abcdef123456-and-more, 1234"),
            "key [secret API] and [secret LONGER], 1234"
        );
    }

    #[test]
    fn json_stays_json_and_escaped_values_are_found() {
        let r = r();
        let v = serde_json::json!({"text": "say pa\"ss\\word!", "sk-abcdef123456": ["x sk-abcdef123456"]});
        let out: serde_json::Value = serde_json::from_str(&r.redact_json(&v.to_string())).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"text": "say [secret QUOTED]", "[secret API]": ["x [secret API]"]})
        );
        let clean = r#"{"a":"nothing here"}"#;
        assert_eq!(r.redact_json(clean), clean);
    }
}
