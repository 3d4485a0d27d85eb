//! The `secrets` table: the operator's secrets, hive-wide (agent `''`) or for
//! one agent. The only place their values are kept: the database is the
//! daemon's alone (0600, in a state dir only root enters).

use std::collections::BTreeMap;

use rusqlite::params;

use super::{Result, Store};
use crate::clock::now_ms;

/// A stored secret's name, scope and time set (no value).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretEntry {
    pub name: String,
    /// None: hive-wide.
    pub agent: Option<String>,
    pub set_at: i64,
}

impl Store {
    /// Sets (or replaces) a secret; `agent` None is hive-wide.
    pub fn set_secret(&self, name: &str, agent: Option<&str>, value: &str) -> Result<()> {
        self.lock().conn.execute(
            "INSERT INTO secrets (name, agent, value, set_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name, agent) DO UPDATE SET value = excluded.value, set_at = excluded.set_at",
            params![name, agent.unwrap_or(""), value, now_ms()],
        )?;
        Ok(())
    }

    /// Removes a secret; false when there was none.
    pub fn remove_secret(&self, name: &str, agent: Option<&str>) -> Result<bool> {
        Ok(self.lock().conn.execute(
            "DELETE FROM secrets WHERE name = ?1 AND agent = ?2",
            params![name, agent.unwrap_or("")],
        )? > 0)
    }

    /// Every secret without its value: hive-wide first, then by agent and name.
    pub fn secret_entries(&self) -> Result<Vec<SecretEntry>> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare_cached("SELECT name, agent, set_at FROM secrets ORDER BY agent, name")?;
        let rows = st.query_map([], |r| {
            let agent: String = r.get(1)?;
            Ok(SecretEntry {
                name: r.get(0)?,
                agent: (!agent.is_empty()).then_some(agent),
                set_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// What one agent's claude gets: the hive-wide secrets, its own over them.
    pub fn secrets_for(&self, agent: &str) -> Result<BTreeMap<String, String>> {
        let g = self.lock();
        // '' sorts before any agent name, so the agent's own row comes last and wins.
        let mut st = g.conn.prepare_cached(
            "SELECT name, value FROM secrets WHERE agent = '' OR agent = ?1 ORDER BY agent",
        )?;
        let rows = st.query_map(params![agent], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every stored value with its name, whatever its scope (what redaction looks for).
    pub fn secret_values(&self) -> Result<Vec<(String, String)>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached("SELECT name, value FROM secrets")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drops an agent's own secrets (it is being purged).
    pub fn remove_secrets_of(&self, agent: &str) -> Result<usize> {
        Ok(self
            .lock()
            .conn
            .execute("DELETE FROM secrets WHERE agent = ?1", params![agent])?)
    }
}
