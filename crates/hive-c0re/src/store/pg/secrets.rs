//! The `secrets` table on PostgreSQL: the operator's secrets, hive-wide
//! (agent `''`) or for one agent. Every node's role reads them, since any
//! node may run any agent (docs/postgres.md).

use std::collections::BTreeMap;

use super::PgStore;
use super::wakes::{CHANNEL, secrets_payload};
use crate::clock::now_ms;
use crate::store::{Result, SecretEntry};

impl PgStore {
    /// Sets (or replaces) a secret; `agent` None is hive-wide.
    pub async fn set_secret(&self, name: &str, agent: Option<&str>, value: &str) -> Result<()> {
        let c = self.client().await?;
        // Other nodes redact with what they read: they are told in the same
        // statement, so no node goes on without a value once it is stored.
        c.execute(
            &format!(
                "WITH u AS (INSERT INTO secrets (name, agent, value, set_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name, agent) DO UPDATE SET value = excluded.value, set_at = excluded.set_at \
                 RETURNING 1) SELECT pg_notify('{CHANNEL}', $5)::text FROM u"
            ),
            &[
                &name,
                &agent.unwrap_or(""),
                &value,
                &now_ms(),
                &secrets_payload(&self.origin),
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes a secret; false when there was none.
    pub async fn remove_secret(&self, name: &str, agent: Option<&str>) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute(
            &format!(
                "WITH d AS (DELETE FROM secrets WHERE name = $1 AND agent = $2 RETURNING 1) \
                 SELECT pg_notify('{CHANNEL}', $3)::text FROM d"
            ),
            &[&name, &agent.unwrap_or(""), &secrets_payload(&self.origin)],
        )
        .await?
            > 0)
    }

    /// Every secret without its value: hive-wide first, then by agent and name.
    pub async fn secret_entries(&self) -> Result<Vec<SecretEntry>> {
        let c = self.client().await?;
        // COLLATE "C": byte order, as sqlite sorts, so '' and names compare the same on both.
        let rows = c
            .query(
                "SELECT name, agent, set_at FROM secrets ORDER BY agent COLLATE \"C\", name COLLATE \"C\"",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let agent: String = r.get(1);
                SecretEntry {
                    name: r.get(0),
                    agent: (!agent.is_empty()).then_some(agent),
                    set_at: r.get(2),
                }
            })
            .collect())
    }

    /// What one agent's claude gets: the hive-wide secrets, its own over them.
    pub async fn secrets_for(&self, agent: &str) -> Result<BTreeMap<String, String>> {
        let c = self.client().await?;
        // '' sorts before any agent name, so the agent's own row comes last and wins.
        let rows = c
            .query(
                "SELECT name, value FROM secrets WHERE agent = '' OR agent = $1 ORDER BY agent COLLATE \"C\"",
                &[&agent],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every stored value with its name, whatever its scope (what redaction looks for).
    pub async fn secret_values(&self) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        let rows = c.query("SELECT name, value FROM secrets", &[]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Drops an agent's own secrets (it is being purged).
    pub async fn remove_secrets_of(&self, agent: &str) -> Result<usize> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM secrets WHERE agent = $1", &[&agent])
            .await? as usize)
    }
}
