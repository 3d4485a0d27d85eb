//! This node's agent leases: exactly one daemon runs an agent, the holder of
//! its lease (`store/leases.rs` keeps them, fenced by epoch).
//!
//! - **The holder** is `NODE#ID`: the node's name and an id kept in the state
//!   dir (`node-id`). A daemon restarted on the same state takes its own
//!   leases back at once (same holder, same epoch). A second daemon under a
//!   live node's name is refused at start (`hive/nodes.rs`); one that takes
//!   the name of a node down (a host replaced) runs none of its agents
//!   while the old holder's leases last.
//!   On sqlite one daemon owns the file whatever name it runs under, so the
//!   holder is the id alone: a host renamed keeps its leases.
//! - **Timing.** The supervisor takes an agent's lease before it launches the
//!   harness and renews it every heartbeat from then on, through the launch;
//!   a lease lasts [`LEASE_TTL`] (six heartbeats, twice the 15 s after which
//!   a node is listed down; `HIVE_LEASE_TTL_SECS` for tests). A renewal that
//!   fails (another daemon took the lease, or it could not be renewed for the
//!   TTL less a heartbeat) kills the harness at once, and the agent waits to
//!   take its lease again; status says why (see `supervisor.rs`). A stop on
//!   purpose releases it.
//! - **Fencing.** The turn's claim and the settling of its messages
//!   (`hive/messages.rs`) carry the epoch: a daemon that lost the lease can
//!   neither take nor acknowledge a message.
//! - **A dead node's claims come back**: on each heartbeat a node returns the
//!   claims of agents whose lease ran out to their inboxes (once for the
//!   hive: a conditional UPDATE), and the lease goes to nobody at a new
//!   epoch; the agent's node takes it when it is back and delivers them.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use hive_sh4re::{AgentName, NodeName};

use super::Hive;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store::Fence;

/// How long a lease lasts unless renewed, unless `HIVE_LEASE_TTL_SECS` says otherwise.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// The lease's time to live: `HIVE_LEASE_TTL_SECS` (whole seconds, at least
/// three heartbeats) or [`LEASE_TTL`]. It is renewed every heartbeat and the
/// harness killed a heartbeat before it would run out: with two, that kill
/// fell due as the next renewal began, and every harness died a heartbeat
/// after its start.
pub fn lease_ttl(heartbeat: Duration) -> Result<Duration> {
    let ttl = match std::env::var("HIVE_LEASE_TTL_SECS") {
        Err(_) => return Ok(LEASE_TTL.max(heartbeat * 3)),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) => Duration::from_secs(n),
            Err(_) => Duration::ZERO,
        },
    };
    if ttl < heartbeat * 3 {
        return Err(Error::refused(format!(
            "HIVE_LEASE_TTL_SECS must be a whole number of seconds of at least three heartbeats ({} s): a lease is renewed every heartbeat, and its harness stopped a heartbeat before it would run out",
            (heartbeat * 3).as_secs()
        )));
    }
    Ok(ttl)
}

/// The file in the state dir that holds this daemon's lease holder id.
const ID_FILE: &str = "node-id";

/// Who holds leases for this daemon: `NODE#ID` on a shared store, `#ID` on
/// one it owns, the id read from the state dir (made on first start).
pub fn holder(paths: &Paths, node: &NodeName, shared: bool) -> Result<String> {
    let path = paths.state.join(ID_FILE);
    let id = match read_id(&path) {
        Ok(id) => id,
        Err(e) => {
            // A new id is a new holder: this daemon's leases taken under
            // the old one wait out their time before it runs its agents.
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "this daemon's lease id {} is unreadable ({e}): made a new one",
                    path.display()
                );
            }
            make_id(&path)?
        }
    };
    Ok(if shared {
        format!("{node}#{id}")
    } else {
        format!("#{id}")
    })
}

/// The id in `path`: a regular file (no link followed) of hex digits.
fn read_id(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut text = String::new();
    Read::by_ref(&mut f).take(64).read_to_string(&mut text)?;
    let id = text.trim();
    if f.metadata()?.is_file() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_owned())
    } else {
        Err(std::io::Error::other("not a lease holder id"))
    }
}

/// Makes a new random id in `path`, replacing whatever unreadable was there.
fn make_id(path: &std::path::Path) -> Result<String> {
    let what = || format!("could not write this daemon's lease id {}", path.display());
    let id = crate::hex::random(6).map_err(Error::io(what()))?;
    crate::paths::write_private(path, &id).map_err(Error::io(what()))?;
    Ok(id)
}

impl Hive {
    /// Who holds leases for this daemon (see [`holder`]).
    pub fn lease_holder(&self) -> &str {
        &self.settings.lease_holder
    }

    /// The fence of this daemon's lease on `agent`; refused with a sentence
    /// when it holds none (it lost it, or never took it).
    pub(super) fn fence(&self, agent: &AgentName) -> Result<Fence<'_>> {
        match self.supervisor.lease_epoch(agent.as_str()) {
            Some(epoch) => Ok(Fence {
                node: self.lease_holder(),
                epoch,
            }),
            None => Err(Error::refused(format!(
                "this hive-c0re ({}) does not hold {agent}'s lease, so it may not take or acknowledge its messages: the harness is being stopped",
                self.lease_holder()
            ))),
        }
    }

    /// Takes the agent's lease for this daemon, and hands back what a
    /// previous holder left claimed (no harness of it runs here now, and none
    /// elsewhere while this daemon holds the lease). Its epoch, or why not.
    pub(super) async fn take_lease(&self, agent: &AgentName) -> std::result::Result<i64, String> {
        let holder = self.lease_holder();
        let ttl = self.settings.lease_ttl;
        match self.store.acquire_lease(agent.as_str(), holder, ttl).await {
            Ok(Some(lease)) => {
                let fence = Fence {
                    node: holder,
                    epoch: lease.epoch,
                };
                match self
                    .store
                    .release_claims_fenced(agent.as_str(), fence)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(agent = %agent, n, "returned messages of an interrupted turn to the inbox");
                        self.broker.poke(agent.as_str());
                    }
                    Err(e) => return Err(format!("could not take back its claimed messages: {e}")),
                }
                // No harness of the agent runs yet: a turn its history shows
                // open was a previous daemon's, which died before ending it.
                self.end_interrupted_turn(
                    agent,
                    "the hive-c0re running it stopped before the harness did (killed, or its host went down)",
                )
                .await;
                Ok(lease.epoch)
            }
            Ok(None) => Err(format!(
                "waiting for its lease: another hive-c0re holds it (a second daemon named {}, or this node's previous daemon on another state dir); it starts here once that one stops or {} after its last renewal",
                self.node(),
                crate::clock::duration(ttl.as_millis() as f64)
            )),
            Err(e) => Err(format!("could not take its lease ({e}); trying again")),
        }
    }

    /// Renews this daemon's lease on the agent at `epoch`: false when another
    /// holder took it or it ran out to nobody.
    pub(super) async fn renew_lease(
        &self,
        agent: &AgentName,
        epoch: i64,
    ) -> std::result::Result<bool, String> {
        let renewed = self
            .store
            .renew_lease(
                agent.as_str(),
                self.lease_holder(),
                epoch,
                self.settings.lease_ttl,
            )
            .await;
        match renewed {
            Ok(held) => Ok(held),
            // One daemon owns a sqlite file: nobody can take the lease from
            // it, so a write that failed (a full disk) must not stop its
            // agents; the next renewal after it brings the row up to date.
            Err(e) if !self.store.shared() => {
                tracing::warn!(agent = %agent, "could not renew the lease in the store: {e}");
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Lets the agent's lease go: it was stopped on purpose.
    pub(super) async fn release_lease(&self, agent: &AgentName, epoch: i64) {
        if let Err(e) = self
            .store
            .release_lease(agent.as_str(), self.lease_holder(), epoch)
            .await
        {
            tracing::warn!(agent = %agent, "could not release the lease (it runs out by itself): {e}");
        }
    }

    /// Takes the agent's lease as its supervision would, for unit tests that
    /// take turns without a harness.
    #[cfg(test)]
    pub(crate) async fn take_lease_for_tests(&self, agent: &AgentName) {
        let epoch = self.take_lease(agent).await.expect("a free lease");
        self.supervisor.hold_lease_for_tests(agent.as_str(), epoch);
    }

    /// One heartbeat's sweep: the claims of agents whose lease ran out come
    /// back to their inboxes, so they show queued rather than in a turn; the
    /// waiters of those inboxes are woken. Only on a shared store.
    pub(super) async fn reclaim_expired_leases(&self) -> Result<()> {
        if !self.store.shared() {
            return Ok(());
        }
        for (agent, n) in self.store.reclaim_expired_leases().await? {
            tracing::warn!(
                agent,
                returned = n,
                "its lease ran out unrenewed: its claimed messages went back to its inbox"
            );
            // Its node killed the harness before the lease ran out.
            if let Ok(name) = AgentName::parse(&agent) {
                self.end_interrupted_turn(
                    &name,
                    "its node stopped renewing its lease (the node went down or lost its link to the database)",
                )
                .await;
            }
            self.broker.poke(&agent);
            self.broker.publish(crate::broker::Change::Agent(agent));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_id_is_kept_in_the_state_dir_and_a_link_there_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            state: dir.path().to_path_buf(),
            run: dir.path().join("run"),
        };
        let alpha = NodeName::parse("alpha").unwrap();
        let first = holder(&paths, &alpha, true).unwrap();
        assert!(
            first.starts_with("alpha#") && first.len() == "alpha#".len() + 12,
            "{first}"
        );
        assert_eq!(
            holder(&paths, &alpha, true).unwrap(),
            first,
            "a restart is the same holder"
        );
        assert_eq!(
            holder(&paths, &alpha, false).unwrap(),
            first["alpha".len()..]
        );
        let other = tempfile::tempdir().unwrap();
        let elsewhere = Paths {
            state: other.path().to_path_buf(),
            run: other.path().join("run"),
        };
        assert_ne!(
            holder(&elsewhere, &alpha, true).unwrap(),
            first,
            "another state dir, another holder"
        );
        // A link in its place is replaced, not read through.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "abcdef\n").unwrap();
        std::fs::remove_file(dir.path().join(ID_FILE)).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join(ID_FILE)).unwrap();
        let made = holder(&paths, &alpha, true).unwrap();
        assert_ne!(made, "alpha#abcdef");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "abcdef\n");
        // An empty file (a power cut before its write reached the disk)
        // gives a new id, written whole, private, and no temp file left.
        std::fs::write(dir.path().join(ID_FILE), "").unwrap();
        let again = holder(&paths, &alpha, true).unwrap();
        assert_eq!(holder(&paths, &alpha, true).unwrap(), again);
        let meta = std::fs::metadata(dir.path().join(ID_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    }
}
