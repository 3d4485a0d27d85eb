//! The `agents` table on PostgreSQL.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::wakes::CHANNEL;
use crate::clock::now_ms;
use crate::store::{AgentRow, NewAgent, Result, StoreError};
use hive_sh4re::AgentState;

const COLUMNS: &str = "name, harness, config_toml, model_override, model_switched_at, active_model, uid_base, \
     want_running, paused, failed, needs_login, deployed_sha, parent, status_text, status_set_at, state, state_since, \
     last_turn_at, nap_until, session_id, created_at, node, config_head";

fn row(r: &Row) -> Result<AgentRow> {
    let uid_base: i64 = r.get(6);
    Ok(AgentRow {
        name: r.get(0),
        harness: r.get(1),
        config_toml: r.get(2),
        model_override: r.get(3),
        model_switched_at: r.get(4),
        active_model: r.get(5),
        uid_base: u32::try_from(uid_base)
            .map_err(|_| StoreError::Batch(format!("agent uid_base {uid_base} is out of range")))?,
        want_running: r.get(7),
        paused: r.get(8),
        failed: r.get(9),
        needs_login: r.get(10),
        deployed_sha: r.get(11),
        parent: r.get(12),
        status_text: r.get(13),
        status_set_at: r.get(14),
        state: AgentState::parse(r.get::<_, &str>(15)),
        state_since: r.get(16),
        last_turn_at: r.get(17),
        nap_until: r.get(18),
        session_id: r.get(19),
        created_at: r.get(20),
        node: r.get(21),
        config_head: r.get(22),
    })
}

type Param<'a> = &'a (dyn ToSql + Sync);

impl PgStore {
    /// Creates an agent; fails if the name or the uid range is taken.
    pub async fn create_agent(&self, new: &NewAgent<'_>) -> Result<AgentRow> {
        let c = self.client().await?;
        let now = now_ms();
        let wake = self.agent_wake_prefix();
        let r = c
            .query_one(
                &format!(
                    "WITH i AS (INSERT INTO agents (name, harness, config_toml, uid_base, want_running, deployed_sha, parent, state_since, created_at, node) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING {COLUMNS}) \
                     SELECT i.*, pg_notify('{CHANNEL}', $10::text || i.name)::text FROM i"
                ),
                &[&new.name, &new.harness, &new.config_toml, &i64::from(new.uid_base), &new.want_running, &new.deployed_sha, &new.parent, &now, &new.node, &wake],
            )
            .await?;
        row(&r)
    }

    /// One agent, if it exists.
    pub async fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM agents WHERE name = $1"))
            .await?;
        c.query_opt(&st, &[&name])
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    /// Every agent, by name.
    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM agents ORDER BY name"))
            .await?;
        c.query(&st, &[]).await?.iter().map(row).collect()
    }

    /// Deletes an agent row (messages and events stay unless purged).
    pub async fn delete_agent(&self, name: &str) -> Result<bool> {
        let c = self.client().await?;
        let wake = self.agent_wake_prefix();
        let st = c
            .prepare_cached(&format!(
                "WITH d AS (DELETE FROM agents WHERE name = $1 RETURNING name) \
                 SELECT pg_notify('{CHANNEL}', $2::text || name)::text FROM d"
            ))
            .await?;
        Ok(!c.query(&st, &[&name, &wake]).await?.is_empty())
    }

    /// `UPDATE agents SET {assignments} WHERE name = $n AND {condition}`;
    /// true when a row changed. A changed row wakes the other nodes' status
    /// surfaces in the same statement (`Wake::Agent`).
    async fn set_agent(
        &self,
        name: &str,
        assignments: &str,
        condition: &str,
        values: &[Param<'_>],
    ) -> Result<bool> {
        self.update_agent(name, assignments, condition, values, None)
            .await
    }

    /// [`Self::set_agent`] that also wakes the agent itself on its node
    /// (`Wake::Mailbox`): it may run again.
    async fn set_agent_waking(
        &self,
        name: &str,
        assignments: &str,
        values: &[Param<'_>],
    ) -> Result<bool> {
        let prefix = self.wake_prefix();
        self.update_agent(name, assignments, "TRUE", values, Some(&prefix))
            .await
    }

    async fn update_agent(
        &self,
        name: &str,
        assignments: &str,
        condition: &str,
        values: &[Param<'_>],
        mailbox_wake: Option<&String>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let row_wake = self.agent_wake_prefix();
        let mut all: Vec<Param<'_>> = values.to_vec();
        all.push(&name);
        let name_at = all.len();
        all.push(&row_wake);
        let mut wakes = format!("pg_notify('{CHANNEL}', ${}::text || name)::text", all.len());
        if let Some(prefix) = &mailbox_wake {
            all.push(prefix);
            wakes.push_str(&format!(
                ", pg_notify('{CHANNEL}', ${}::text || name)::text",
                all.len()
            ));
        }
        let sql = format!(
            "WITH u AS (UPDATE agents SET {assignments} WHERE name = ${name_at} AND {condition} RETURNING name) \
             SELECT {wakes} FROM u"
        );
        let st = c.prepare_cached(&sql).await?;
        Ok(!c.query(&st, &all).await?.is_empty())
    }

    /// Records whether the agent should be running (survives restarts of hive-c0re).
    pub async fn set_want_running(&self, name: &str, want: bool) -> Result<bool> {
        self.set_agent(name, "want_running = $1", "TRUE", &[&want])
            .await
    }

    /// Parks or resumes the agent's turn loop.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        if paused {
            self.set_agent(name, "paused = $1", "TRUE", &[&paused])
                .await
        } else {
            self.set_agent_waking(name, "paused = $1", &[&paused]).await
        }
    }

    /// Marks the agent failed (gave up restarting) or clears it.
    pub async fn set_failed(&self, name: &str, failed: bool) -> Result<bool> {
        self.set_agent(name, "failed = $1", "TRUE", &[&failed])
            .await
    }

    /// Records that the agent has (no) usable claude credentials.
    pub async fn set_needs_login(&self, name: &str, needs: bool) -> Result<bool> {
        self.set_agent(name, "needs_login = $1", "TRUE", &[&needs])
            .await
    }

    /// Records a state change, and the model of the turn when one starts.
    pub async fn set_state(
        &self,
        name: &str,
        state: AgentState,
        model: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let s = state.as_str();
        match (state, model) {
            (AgentState::Thinking, Some(m)) => {
                self.set_agent(
                    name,
                    "state = $1, state_since = $2, active_model = $3",
                    "TRUE",
                    &[&s, &now, &m],
                )
                .await
            }
            // The end of a turn is recorded in the same statement that reads that one ran.
            (AgentState::Idle, _) => {
                self.set_agent(
                    name,
                    "state = $1, state_since = $2, \
                     last_turn_at = CASE WHEN state IN ('thinking', 'retrying') THEN $2 ELSE last_turn_at END",
                    "TRUE",
                    &[&s, &now],
                )
                .await
            }
            _ => {
                self.set_agent(name, "state = $1, state_since = $2", "TRUE", &[&s, &now])
                    .await
            }
        }
    }

    /// Sets the agent's own one-line status.
    pub async fn set_status_text(&self, name: &str, text: &str) -> Result<bool> {
        self.set_agent(
            name,
            "status_text = $1, status_set_at = $2",
            "TRUE",
            &[&text, &now_ms()],
        )
        .await
    }

    /// Records the config repo's head the node keeping the repos read; true when it changed.
    pub async fn set_config_head(&self, name: &str, head: Option<&str>) -> Result<bool> {
        self.set_agent(
            name,
            "config_head = $1",
            "config_head IS DISTINCT FROM $1",
            &[&head],
        )
        .await
    }

    /// Names `sha` as the deployed commit of an agent deployed from no commit.
    pub async fn adopt_deployed_sha(&self, name: &str, sha: &str) -> Result<bool> {
        self.set_agent(name, "deployed_sha = $1", "deployed_sha IS NULL", &[&sha])
            .await
    }

    /// Sets (or clears) the time before which no turn starts.
    pub async fn set_nap_until(&self, name: &str, until: Option<i64>) -> Result<bool> {
        // The agent's node sleeps until the nap's end: a shorter nap, or none, wakes it.
        self.set_agent_waking(name, "nap_until = $1", &[&until])
            .await
    }

    /// Remembers the claude session the next turn resumes.
    pub async fn set_session(&self, name: &str, session: Option<&str>) -> Result<bool> {
        self.set_agent(name, "session_id = $1", "TRUE", &[&session])
            .await
    }

    /// Sets the session to resume unless it changed since `expected` was read; true when it was set.
    pub async fn replace_session(
        &self,
        name: &str,
        expected: Option<&str>,
        session: Option<&str>,
    ) -> Result<bool> {
        self.set_agent(
            name,
            "session_id = $1",
            "session_id IS NOT DISTINCT FROM $2",
            &[&session, &expected],
        )
        .await
    }

    /// Sets or clears the operator's model override.
    pub async fn set_model_override(&self, name: &str, model: Option<&str>) -> Result<bool> {
        self.set_agent(
            name,
            "model_override = $1, model_switched_at = $2",
            "TRUE",
            &[&model, &now_ms()],
        )
        .await
    }

    /// Deploys a config: its text and the commit it came from.
    pub async fn set_config(
        &self,
        name: &str,
        config_toml: &str,
        sha: Option<&str>,
    ) -> Result<bool> {
        self.set_agent(
            name,
            "config_toml = $1, deployed_sha = $2",
            "TRUE",
            &[&config_toml, &sha],
        )
        .await
    }

    /// [`Self::set_config`] only while the deployed text is `was`.
    pub async fn set_config_over(
        &self,
        name: &str,
        config_toml: &str,
        sha: Option<&str>,
        was: &str,
    ) -> Result<bool> {
        self.set_agent(
            name,
            "config_toml = $1, deployed_sha = $2",
            "config_toml = $3",
            &[&config_toml, &sha, &was],
        )
        .await
    }
}
