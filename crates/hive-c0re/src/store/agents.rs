//! The `agents` table: who is in the hive, what they should be doing and what they are doing.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;
use hive_sh4re::AgentState;

/// A stored agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub name: String,
    /// `ag3nt` or `m1nd`.
    pub harness: String,
    /// The deployed `agent.toml`.
    pub config_toml: String,
    pub model_override: Option<String>,
    pub model_switched_at: Option<i64>,
    pub active_model: Option<String>,
    pub uid_base: u32,
    pub want_running: bool,
    pub paused: bool,
    pub failed: bool,
    pub needs_login: bool,
    pub deployed_sha: Option<String>,
    pub parent: Option<String>,
    pub status_text: Option<String>,
    pub status_set_at: Option<i64>,
    pub state: AgentState,
    pub state_since: i64,
    pub last_turn_at: Option<i64>,
    pub nap_until: Option<i64>,
    pub session_id: Option<String>,
    pub created_at: i64,
    /// Its home node, the daemon that runs it; None for an agent stored
    /// before nodes existed, until a node registers and claims it.
    pub node: Option<String>,
    /// The head of its config repo when its home node last read it (None:
    /// not read yet, or no repo).
    pub config_head: Option<String>,
}

/// What creating an agent needs.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub harness: &'a str,
    pub config_toml: &'a str,
    pub deployed_sha: Option<&'a str>,
    pub parent: Option<&'a str>,
    pub want_running: bool,
    /// First uid of the agent's range, which the runtime's `UidRanges` picked.
    pub uid_base: u32,
    /// Its home node.
    pub node: &'a str,
}

const COLUMNS: &str = "name, harness, config_toml, model_override, model_switched_at, active_model, uid_base, \
     want_running, paused, failed, needs_login, deployed_sha, parent, status_text, status_set_at, state, state_since, \
     last_turn_at, nap_until, session_id, created_at, node, config_head";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        name: r.get(0)?,
        harness: r.get(1)?,
        config_toml: r.get(2)?,
        model_override: r.get(3)?,
        model_switched_at: r.get(4)?,
        active_model: r.get(5)?,
        uid_base: r.get(6)?,
        want_running: r.get(7)?,
        paused: r.get(8)?,
        failed: r.get(9)?,
        needs_login: r.get(10)?,
        deployed_sha: r.get(11)?,
        parent: r.get(12)?,
        status_text: r.get(13)?,
        status_set_at: r.get(14)?,
        state: AgentState::parse(&r.get::<_, String>(15)?),
        state_since: r.get(16)?,
        last_turn_at: r.get(17)?,
        nap_until: r.get(18)?,
        session_id: r.get(19)?,
        created_at: r.get(20)?,
        node: r.get(21)?,
        config_head: r.get(22)?,
    })
}

impl Store {
    /// Creates an agent; fails if the name or the uid range is taken.
    pub fn create_agent(&self, new: &NewAgent<'_>) -> Result<AgentRow> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO agents (name, harness, config_toml, uid_base, want_running, deployed_sha, parent, state_since, created_at, node) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
            params![new.name, new.harness, new.config_toml, new.uid_base, new.want_running, new.deployed_sha, new.parent, now, new.node],
        )?;
        let r = tx.query_row(
            &format!("SELECT {COLUMNS} FROM agents WHERE name = ?1"),
            params![new.name],
            row,
        )?;
        tx.commit()?;
        Ok(r)
    }

    /// One agent, if it exists.
    pub fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        let g = self.lock();
        Ok(g.conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM agents WHERE name = ?1"))?
            .query_row(params![name], row)
            .optional()?)
    }

    /// Every agent, by name.
    pub fn agents(&self) -> Result<Vec<AgentRow>> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM agents ORDER BY name"))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes an agent row (messages and events stay unless purged).
    pub fn delete_agent(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .conn
            .execute("DELETE FROM agents WHERE name = ?1", params![name])?
            > 0)
    }

    fn set_agent(
        &self,
        name: &str,
        assignments: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<bool> {
        self.set_agent_where(name, assignments, "1", values)
    }

    fn set_agent_where(
        &self,
        name: &str,
        assignments: &str,
        condition: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<bool> {
        let g = self.lock();
        let mut all: Vec<&dyn rusqlite::ToSql> = values.to_vec();
        all.push(&name);
        let sql = format!(
            "UPDATE agents SET {assignments} WHERE name = ?{} AND {condition}",
            all.len()
        );
        Ok(g.conn.prepare_cached(&sql)?.execute(all.as_slice())? > 0)
    }

    /// Records whether the agent should be running (survives restarts of hive-c0re).
    pub fn set_want_running(&self, name: &str, want: bool) -> Result<bool> {
        self.set_agent(name, "want_running = ?1", &[&want])
    }

    /// Parks or resumes the agent's turn loop.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        self.set_agent(name, "paused = ?1", &[&paused])
    }

    /// Marks the agent failed (gave up restarting) or clears it.
    pub fn set_failed(&self, name: &str, failed: bool) -> Result<bool> {
        self.set_agent(name, "failed = ?1", &[&failed])
    }

    /// Records that the agent has (no) usable claude credentials.
    pub fn set_needs_login(&self, name: &str, needs: bool) -> Result<bool> {
        self.set_agent(name, "needs_login = ?1", &[&needs])
    }

    /// Records a state change, and the model of the turn when one starts.
    pub fn set_state(&self, name: &str, state: AgentState, model: Option<&str>) -> Result<bool> {
        let now = now_ms();
        match (state, model) {
            (AgentState::Thinking, Some(m)) => self.set_agent(
                name,
                "state = ?1, state_since = ?2, active_model = ?3",
                &[&state.as_str(), &now, &m],
            ),
            (AgentState::Idle, _) => {
                let was_thinking = self.agent(name)?.is_some_and(|a| {
                    matches!(a.state, AgentState::Thinking | AgentState::Retrying)
                });
                if was_thinking {
                    self.set_agent(
                        name,
                        "state = ?1, state_since = ?2, last_turn_at = ?2",
                        &[&state.as_str(), &now],
                    )
                } else {
                    self.set_agent(
                        name,
                        "state = ?1, state_since = ?2",
                        &[&state.as_str(), &now],
                    )
                }
            }
            _ => self.set_agent(
                name,
                "state = ?1, state_since = ?2",
                &[&state.as_str(), &now],
            ),
        }
    }

    /// Sets the agent's own one-line status.
    pub fn set_status_text(&self, name: &str, text: &str) -> Result<bool> {
        self.set_agent(
            name,
            "status_text = ?1, status_set_at = ?2",
            &[&text, &now_ms()],
        )
    }

    /// Records the config repo's head the node keeping the repos read; true when it changed.
    pub fn set_config_head(&self, name: &str, head: Option<&str>) -> Result<bool> {
        self.set_agent_where(name, "config_head = ?1", "config_head IS NOT ?1", &[&head])
    }

    /// Names `sha` as the deployed commit of an agent deployed from no
    /// commit (a repo was made for its config after it); true when it did.
    pub fn adopt_deployed_sha(&self, name: &str, sha: &str) -> Result<bool> {
        self.set_agent_where(name, "deployed_sha = ?1", "deployed_sha IS NULL", &[&sha])
    }

    /// Sets (or clears) the time before which no turn starts.
    pub fn set_nap_until(&self, name: &str, until: Option<i64>) -> Result<bool> {
        self.set_agent(name, "nap_until = ?1", &[&until])
    }

    /// Remembers the claude session the next turn resumes.
    pub fn set_session(&self, name: &str, session: Option<&str>) -> Result<bool> {
        self.set_agent(name, "session_id = ?1", &[&session])
    }

    /// Sets the session to resume unless it changed since `expected` was read
    /// (the operator started a fresh one meanwhile); true when it was set.
    pub fn replace_session(
        &self,
        name: &str,
        expected: Option<&str>,
        session: Option<&str>,
    ) -> Result<bool> {
        self.set_agent_where(
            name,
            "session_id = ?1",
            "session_id IS ?2",
            &[&session, &expected],
        )
    }

    /// Sets or clears the operator's model override.
    pub fn set_model_override(&self, name: &str, model: Option<&str>) -> Result<bool> {
        self.set_agent(
            name,
            "model_override = ?1, model_switched_at = ?2",
            &[&model, &now_ms()],
        )
    }

    /// Deploys a config: its text and the commit it came from.
    pub fn set_config(&self, name: &str, config_toml: &str, sha: Option<&str>) -> Result<bool> {
        self.set_agent(
            name,
            "config_toml = ?1, deployed_sha = ?2",
            &[&config_toml, &sha],
        )
    }

    /// [`Self::set_config`] only while the deployed text is `was`; true when it did.
    pub fn set_config_over(
        &self,
        name: &str,
        config_toml: &str,
        sha: Option<&str>,
        was: &str,
    ) -> Result<bool> {
        self.set_agent_where(
            name,
            "config_toml = ?1, deployed_sha = ?2",
            "config_toml = ?3",
            &[&config_toml, &sha, &was],
        )
    }
}
