//! Versioned migrations, applied in order at start; `PRAGMA user_version` records the last.

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

/// Each entry moves the schema one version up; never edit a shipped entry, append.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of DESIGN.md.
    r#"
CREATE TABLE agents (
    name              TEXT PRIMARY KEY,
    harness           TEXT NOT NULL,
    config_toml       TEXT NOT NULL,
    model_override    TEXT,
    model_switched_at INTEGER,
    active_model      TEXT,
    uid_base          INTEGER NOT NULL UNIQUE,
    want_running      INTEGER NOT NULL DEFAULT 1,
    paused            INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    needs_login       INTEGER NOT NULL DEFAULT 0,
    deployed_sha      TEXT,
    parent            TEXT,
    status_text       TEXT,
    status_set_at     INTEGER,
    state             TEXT NOT NULL DEFAULT 'idle',
    state_since       INTEGER NOT NULL,
    last_turn_at      INTEGER,
    nap_until         INTEGER,
    session_id        TEXT,
    created_at        INTEGER NOT NULL
);
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    claimed_at   INTEGER,
    delivered_at INTEGER
);
CREATE INDEX messages_inbox ON messages (recipient, delivered_at, id);
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    agent        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL DEFAULT '{}',
    commit_ref   TEXT NOT NULL DEFAULT '',
    description  TEXT,
    status       TEXT NOT NULL DEFAULT 'pending',
    note         TEXT,
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER
);
CREATE TABLE questions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    agent        TEXT NOT NULL,
    question     TEXT NOT NULL,
    options_json TEXT NOT NULL DEFAULT '[]',
    ttl_seconds  INTEGER NOT NULL,
    asked_at     INTEGER NOT NULL,
    deadline     INTEGER NOT NULL,
    answer       TEXT,
    answered_at  INTEGER,
    cancelled    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
    agent        TEXT NOT NULL,
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    ts           INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL
);
CREATE INDEX events_agent ON events (agent, id);
CREATE TABLE stats (
    agent TEXT NOT NULL,
    ts    INTEGER NOT NULL,
    key   TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX stats_agent ON stats (agent, ts);
"#,
    // 2: scheduled prompts.
    r#"
CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    agent         TEXT NOT NULL,
    spec          TEXT NOT NULL,
    text          TEXT NOT NULL,
    repeating     INTEGER NOT NULL,
    next_due      INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_fired_at INTEGER
);
CREATE INDEX schedules_due ON schedules (next_due);
"#,
    // 3: messages of a cancelled turn, held until a new message starts the next one.
    r#"
ALTER TABLE messages ADD COLUMN held_at INTEGER;
"#,
    // 4: the operator's secrets; agent '' is hive-wide.
    r#"
CREATE TABLE secrets (
    name   TEXT NOT NULL,
    agent  TEXT NOT NULL DEFAULT '',
    value  TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    PRIMARY KEY (name, agent)
);
"#,
    // 5: the operator's notifications, and their deliveries to webhooks.
    r#"
CREATE TABLE notifications (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    agent   TEXT,
    text    TEXT NOT NULL,
    link    TEXT NOT NULL,
    read_at INTEGER
);
CREATE INDEX notifications_unread ON notifications (read_at, id);
CREATE TABLE webhook_deliveries (
    webhook         TEXT NOT NULL,
    notification    INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_at         INTEGER NOT NULL,
    last_error      TEXT,
    PRIMARY KEY (webhook, notification)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at);
CREATE TABLE webhook_status (
    webhook    TEXT PRIMARY KEY,
    last_ok    INTEGER,
    last_error TEXT
);
"#,
    // 6: the hive-wide activity feed and each agent's last crash, read newest
    // first without scanning whole histories (the queries repeat these WHEREs).
    r#"
CREATE INDEX events_feed ON events (id) WHERE kind IN ('turn_start', 'turn_end', 'container_crash');
CREATE INDEX events_crash ON events (agent, id) WHERE kind = 'container_crash';
"#,
    // 7: the operator's budget for today (scope '#hive' is the hive's); spend by time for the hive's.
    r#"
CREATE TABLE budget_overrides (
    scope  TEXT PRIMARY KEY,
    day    INTEGER NOT NULL,
    usd    REAL,
    tokens INTEGER,
    lifted INTEGER NOT NULL DEFAULT 0,
    set_at INTEGER NOT NULL
);
CREATE INDEX stats_ts ON stats (ts);
"#,
    // 8: each agent's spending per UTC day, summed as figures arrive, so a
    // budget or a status row reads one row instead of a day of figures;
    // filled from the figures already stored (the rule is Spend::of's).
    r#"
CREATE TABLE spend_days (
    agent  TEXT NOT NULL,
    day    INTEGER NOT NULL,
    usd    REAL NOT NULL DEFAULT 0,
    tokens REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, agent)
) WITHOUT ROWID;
INSERT INTO spend_days (agent, day, usd, tokens)
SELECT agent, ts / 86400000,
       SUM(CASE WHEN key = 'cost.usd' THEN MAX(value, 0) ELSE 0 END),
       SUM(CASE WHEN key IN ('tokens.in', 'tokens.out') THEN MAX(value, 0) ELSE 0 END)
FROM stats WHERE key IN ('cost.usd', 'tokens.in', 'tokens.out') AND ts >= 0
GROUP BY agent, ts / 86400000;
"#,
    // 9: the hive's nodes (hive-c0re daemons) and their heartbeats; on sqlite
    // one host, one node.
    r#"
CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,
    address        TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);
"#,
    // 10: each agent's home node. Agents stored before nodes existed have
    // none (NULL) until a node registers: the first to open the database
    // after this migration makes them its own (see `register_node`).
    r#"
ALTER TABLE agents ADD COLUMN node TEXT;
"#,
    // 11: a node found down: its last heartbeat when the first node to notice
    // marked it (NULL while it is up), so the hive announces it once.
    r#"
ALTER TABLE nodes ADD COLUMN down_since INTEGER;
"#,
    // 12: which node runs each agent, until when, and the epoch that fences
    // a node that lost it (see `leases.rs`); on sqlite one node holds them all.
    r#"
CREATE TABLE agent_leases (
    agent      TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // 13: hive-wide chores (vacuum) one node at a time runs, about once per
    // interval for the whole hive (see `jobs.rs`).
    r#"
CREATE TABLE hive_jobs (
    name       TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    held_until INTEGER,
    next_at    INTEGER NOT NULL
);
"#,
    // 14: steering verbs for an agent whose home is another node, carried
    // through the store (see `requests.rs`); on sqlite one node, none. And
    // the node whose operator decided each approval.
    r#"
CREATE TABLE node_requests (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node       TEXT NOT NULL,
    agent      TEXT NOT NULL,
    verb       TEXT NOT NULL,
    args_json  TEXT NOT NULL,
    asked_by   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    taken_at   INTEGER,
    cancelled  INTEGER NOT NULL DEFAULT 0,
    done_at    INTEGER,
    ok         INTEGER,
    reply      TEXT
);
CREATE INDEX node_requests_pending ON node_requests (node) WHERE taken_at IS NULL AND cancelled = 0;
ALTER TABLE approvals ADD COLUMN decided_on TEXT;
"#,
    // 15: when a shell request's one-time ticket was used (see `requests.rs`).
    r#"
ALTER TABLE node_requests ADD COLUMN used_at INTEGER;
"#,
    // 16: what the agent's home node last read of its config repo: the head,
    // and for a pending approval the head past its commit and how far, so
    // every node shows them (see `hive/status.rs`, `hive/approvals.rs`).
    r#"
ALTER TABLE agents ADD COLUMN config_head TEXT;
ALTER TABLE approvals ADD COLUMN repo_head TEXT;
ALTER TABLE approvals ADD COLUMN repo_ahead INTEGER;
"#,
    // 17: when an approved approval's action ended (carried out or failed):
    // one approved and never settled was cut off by a crash (`hive/approvals.rs`).
    r#"
ALTER TABLE approvals ADD COLUMN settled_at INTEGER;
UPDATE approvals SET settled_at = decided_at WHERE status <> 'pending';
"#,
    // 18: which daemon serves each node (its lease holder, `NODE#ID`), so a
    // second daemon started under a live node's name is refused (`nodes.rs`).
    r#"
ALTER TABLE nodes ADD COLUMN holder TEXT;
"#,
    // 19: notices told once a day, claimed by whoever tells them: a budget's
    // marks (80 %, 100 %) per scope, measure and limit, so two turns ending
    // together tell one once and never both miss it (`hive/budget.rs`); a
    // webhook failing (`hive/notifications.rs`). `scope` is an agent's name,
    // or starts with '#'.
    r#"
CREATE TABLE notices_told (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    day   INTEGER NOT NULL,
    PRIMARY KEY (scope, key, day)
);
"#,
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration newer than the database, each in its own transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}
