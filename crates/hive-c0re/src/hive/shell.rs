//! The operator's shell in an agent's container: which agent, whether it
//! runs, and the runtime's command inside it. What the shell is and how its
//! PTY is relayed is `crate::shell`'s; the shell of another node's agent
//! runs on that node, reached through `crate::node_shell`.

use hive_sh4re::AgentName;

use super::Hive;
use super::nodes::runs_here;
use super::steer::Steer;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::node_shell::{self, Shell, TICKET_TTL_MS};
use crate::runtime::RuntimeError;
use crate::shell::{Session, WinSize, operator_command};
use crate::store::AgentRow;
use crate::throttle::Throttle;

/// Refused node shells: anyone who reaches the dashboard can ask, so they are logged at most once a minute.
static REFUSALS: Throttle = Throttle::new(std::time::Duration::from_secs(60));
/// Knocks the store could not check, logged at most once a minute for the same reason.
static UNCHECKED: Throttle = Throttle::new(std::time::Duration::from_secs(60));

impl Hive {
    /// Opens an interactive shell in a running agent's container on a new
    /// PTY: here, or on the agent's home node, which this node relays.
    ///
    /// Refused with a sentence when the agent is unknown or not running, or
    /// its home node is down or cannot be reached.
    pub async fn open_shell(
        &self,
        name: &AgentName,
        size: WinSize,
        term: Option<&str>,
    ) -> Result<Shell> {
        let row = self.agent_row(name).await?;
        if runs_here(&self.store, &row, self.node()) {
            return self.open_local(&row, size, term).map(Shell::Local);
        }
        self.open_remote(&row, size, term).await.map(Shell::Remote)
    }

    /// Refused unless `name`, an agent of this node, runs.
    pub(super) fn check_shell(&self, name: &AgentName) -> Result<()> {
        if !self.supervisor.is_running(name.as_str()) {
            return Err(Error::Refused(
                RuntimeError::NotRunning(name.clone()).to_string(),
            ));
        }
        Ok(())
    }

    /// The shell in the container of `row`, an agent of this node.
    fn open_local(&self, row: &AgentRow, size: WinSize, term: Option<&str>) -> Result<Session> {
        let name = AgentName::parse(&row.name)?;
        self.check_shell(&name)?;
        let spec = self.launch_spec(row);
        let cmd = self
            .runtime
            .command_inside(&spec, &operator_command(term))
            .map_err(|e| match e {
                RuntimeError::NotRunning(_) => Error::Refused(e.to_string()),
                other => other.into(),
            })?;
        let session = Session::spawn(cmd, size).map_err(Error::io(format!(
            "could not start a shell in {name}'s container"
        )))?;
        tracing::info!(agent = %name, pid = session.leader(), "shell opened");
        Ok(session)
    }

    /// The shell of another node's agent: a `shell` request to its home
    /// node with a fresh ticket's hash, then the channel that ticket opens.
    async fn open_remote(
        &self,
        row: &AgentRow,
        size: WinSize,
        term: Option<&str>,
    ) -> Result<node_shell::Remote> {
        let name = AgentName::parse(&row.name)?;
        let home = row.node.clone().unwrap_or_default();
        let command = format!("shell {name}");
        self.check_up(&home, &command).await?;
        let address = self
            .store
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.name == home)
            .map(|n| n.address)
            .unwrap_or_default();
        if address.is_empty() {
            return Err(Error::refused(format!(
                "{name} lives on node {home}, which serves no dashboard: the shell of its agents can be reached only on that host (its host.sock), or start it with --dashboard ADDR"
            )));
        }
        let target = node_shell::Target::parse(&address).map_err(|e| {
            Error::refused(format!(
                "could not open {name}'s shell on node {home} at {address}: {e}"
            ))
        })?;
        let ticket = node_shell::new_ticket()
            .map_err(Error::io("could not read random bytes for a shell ticket"))?;
        let grant = Steer::Shell {
            rows: size.rows,
            cols: size.cols,
            term: term.map(str::to_owned),
            ticket_sha256: node_shell::ticket_hash(&ticket),
        };
        let (id, fingerprint) = self.ask_for_reply(&home, &name, &grant).await?;
        let gone = Box::pin(self.node_gone(home.clone(), "ran the shell"));
        let grant = node_shell::Grant {
            id,
            ticket: &ticket,
            fingerprint: fingerprint.trim(),
        };
        let remote = node_shell::connect(&home, &target, grant, gone)
            .await
            .map_err(|e| {
                Error::refused(format!(
                    "could not open {name}'s shell on node {home} at {address}: {e}; check that this host reaches that address (see `hive-c0re nodes`)"
                ))
            })?;
        tracing::info!(agent = %name, node = %home, request = id, "relaying the shell of an agent of another node");
        Ok(remote)
    }

    /// Notes that this node granted shell request `id`, whose ticket hashes
    /// to `ticket_sha256` (see [`Hive::node_shell`]).
    pub(super) fn grant_shell(&self, id: i64, ticket_sha256: String) {
        let mut grants = self.shell_grants.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = std::time::Duration::from_millis(TICKET_TTL_MS as u64);
        grants.retain(|_, (at, _)| at.elapsed() <= ttl);
        grants.insert(id, (std::time::Instant::now(), ticket_sha256));
    }

    /// True when this node granted shell request `id` within
    /// [`TICKET_TTL_MS`], it was not used yet, and `knock` is its ticket's
    /// hash. A knock does not take it: only the ticket, inside TLS, does.
    fn shell_granted(&self, id: i64, knock: &str) -> bool {
        let grants = self.shell_grants.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = std::time::Duration::from_millis(TICKET_TTL_MS as u64);
        grants.get(&id).is_some_and(|(at, hash)| {
            at.elapsed() <= ttl && crate::hex::same_secret(hash.as_bytes(), knock.as_bytes())
        })
    }

    /// A knock on the channel of shell request `id`, before its upgrade:
    /// refused unless this node granted that shell lately and `knock` is
    /// the hash of its ticket (what the asking node stored; no stranger off
    /// the path knows it). Reads nothing of the store: anyone who reaches
    /// the dashboard can knock, and an upgraded connection holds a socket
    /// until its ticket comes.
    pub fn shell_knock(&self, id: i64, knock: &str) -> Result<()> {
        if self.store.shared() && self.shell_granted(id, knock) {
            return Ok(());
        }
        if let Some(n) = REFUSALS.due() {
            tracing::warn!(
                request = id,
                "refused a node shell: this node granted no such shell lately ({n} refused since the last such line)"
            );
        }
        Err(Error::refused(format!(
            "no shell: this node granted no shell request {id} lately"
        )))
    }

    /// The shell request `id`'s channel, for the node that presents
    /// `ticket`: only for a `shell` request to this node that this node took
    /// and granted within [`TICKET_TTL_MS`], whose ticket hash matches and
    /// that was not used before, of an agent that still runs here. The
    /// refusal says nothing about which check failed (the log does). With
    /// the session comes what resolves once the asking node is down: a
    /// frozen or cut-off asker leaves no shell running here for ever.
    pub async fn node_shell(&self, id: i64, ticket: &str) -> Result<(Session, node_shell::Gone)> {
        let refuse = |why: &str| {
            if let Some(n) = REFUSALS.due() {
                tracing::warn!(
                    request = id,
                    "refused a node shell: {why} ({n} refused since the last such line)"
                );
            }
            Error::refused(format!(
                "no shell: request {id} is no valid shell grant for this ticket on this node"
            ))
        };
        // Anyone who reaches the dashboard gets this far: a store shared with
        // no other node holds no grant to look up, and a store that fails is
        // told in the log, not to a stranger.
        if !self.store.shared() {
            return Err(refuse("this node shares its store with no other node"));
        }
        if !self.shell_granted(id, &node_shell::ticket_hash(ticket)) {
            return Err(refuse(
                "this node granted no such shell lately, or not for this ticket",
            ));
        }
        let me = self.node().as_str();
        let req = match self.store.request(id).await {
            Ok(Some(req)) => req,
            Ok(None) => return Err(refuse("no such request")),
            Err(e) => {
                if let Some(n) = UNCHECKED.due() {
                    tracing::error!(
                        request = id,
                        "could not read a node shell's request ({n} since the last such line): {e}"
                    );
                }
                return Err(Error::refused(
                    "no shell: this node cannot check tickets now (its log says why)",
                ));
            }
        };
        if req.verb != "shell" || req.node != me {
            return Err(refuse("not a shell request for this node"));
        }
        // Aged by this node's own clock: it set taken_at, the asking node created_at.
        let Some(taken) = req.taken_at else {
            return Err(refuse("not taken"));
        };
        if !matches!(req.outcome(), Some((true, _))) {
            return Err(refuse("not granted"));
        }
        if now_ms() - taken > TICKET_TTL_MS {
            return Err(refuse("expired"));
        }
        let Ok(Steer::Shell {
            rows,
            cols,
            term,
            ticket_sha256,
        }) = Steer::parse(&req.verb, &req.args_json)
        else {
            return Err(refuse("its arguments do not parse"));
        };
        if !node_shell::ticket_matches(ticket, &ticket_sha256) {
            return Err(refuse("wrong ticket"));
        }
        if !self.store.use_request(id, me).await? {
            return Err(refuse("used before"));
        }
        self.shell_grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let row = self.agent_row(&AgentName::parse(&req.agent)?).await?;
        if !runs_here(&self.store, &row, self.node()) {
            return Err(refuse("the agent does not live here"));
        }
        tracing::info!(request = id, asked_by = %req.asked_by, agent = %req.agent, "opening a shell for another node");
        let session =
            self.open_local(&row, WinSize::new(Some(rows), Some(cols)), term.as_deref())?;
        let gone: node_shell::Gone = Box::pin(self.node_gone(req.asked_by, "asked for the shell"));
        Ok((session, gone))
    }
}
