//! agent.sock: one listener per agent at `<run>/agents/<name>/agent.sock`, and
//! [`AgentSockets`], the registry of those listeners.
//!
//! A listener knows which agent it serves, so every connection it accepts
//! comes tagged with that agent ([`Accepted::agent`]): a harness cannot speak
//! for another. What a connection may ask is `agent_conn.rs`'s business.
//!
//! No other host user may reach a socket, not even for a moment: its
//! directory is made 0700 and handed to the agent's uid before the socket is
//! bound in it (under the daemon's umask, 077), and no mode is ever widened
//! afterwards. The directory is the agent's, so hive-c0re touches nothing in
//! it but the socket, and never through a link.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hive_sh4re::AgentName;
use hive_sh4re::agent::AgentResponse;
use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::unistd::{Gid, Uid, fchownat};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::throttle::Throttle;

/// Connections accepted but not yet taken by the server before accepting waits.
const BACKLOG: usize = 64;
/// Most connections one agent holds to its socket at once. A harness needs
/// a handful (its control poll, its turn, claude's MCP server); each is a
/// descriptor of the daemon and may buffer a request line of up to 1 MiB,
/// so an agent that opened them without end would starve every socket of
/// descriptors and the daemon of memory.
pub const CONNECTIONS_PER_AGENT: usize = 32;
/// How often a refused connection is logged at most.
static REFUSALS: Throttle = Throttle::new(Duration::from_secs(60));
/// How often a failed accept is logged at most.
static ACCEPT_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// A connection to an agent's socket: whose it is, and when its listener closed.
#[derive(Debug)]
pub struct Accepted {
    /// The agent whose socket accepted the connection: the connection's identity.
    pub agent: AgentName,
    pub stream: UnixStream,
    /// Cancelled when the agent's socket is closed (the agent was destroyed).
    pub closed: CancellationToken,
    /// The connection's place among its agent's [`CONNECTIONS_PER_AGENT`]; dropped with it.
    pub place: OwnedSemaphorePermit,
}

/// Where [`AgentSockets`] hands every accepted connection.
pub type Incoming = mpsc::Receiver<Accepted>;

/// The agents' sockets: which are listening, and where their connections go.
#[derive(Debug)]
pub struct AgentSockets {
    paths: Paths,
    listening: Mutex<HashMap<String, CancellationToken>>,
    incoming: mpsc::Sender<Accepted>,
}

impl AgentSockets {
    /// A registry with no socket open yet, and the receiving end of its connections.
    ///
    /// Listeners stop when the receiver is dropped.
    pub fn new(paths: Paths) -> (Self, Incoming) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let sockets = Self {
            paths,
            listening: Mutex::default(),
            incoming: tx,
        };
        (sockets, rx)
    }

    /// Opens the agent's socket unless it is open, in a directory only `owner`
    /// (the agent's host uid; `None`: the daemon's own user) may enter. Its
    /// accept loop is essential: one that panics is told to `faults` and
    /// accepts again after a pause (see `panics.rs`).
    pub fn listen(
        &self,
        name: &AgentName,
        owner: Option<u32>,
        faults: &crate::panics::Faults,
    ) -> Result<()> {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if listening
            .get(name.as_str())
            .is_some_and(|t| !t.is_cancelled())
        {
            return Ok(());
        }
        self.private_dir(name, owner)?;
        let path = self.paths.agent_sock(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(format!(
                    "could not remove the old {}",
                    path.display()
                ))(e));
            }
            _ => {}
        }
        let listener = UnixListener::bind(&path)
            .map_err(Error::io(format!("could not listen on {}", path.display())))?;
        if let Some(uid) = owner {
            // The harness connects as the agent: the socket is its, in its own directory.
            chown_no_follow(&path, uid)?;
        }
        let closed = CancellationToken::new();
        listening.insert(name.to_string(), closed.clone());
        let (name, incoming, faults) = (name.clone(), self.incoming.clone(), faults.clone());
        // Both outlive a run of the loop: the socket stays bound, and the
        // connections still open keep their places.
        let listener = Arc::new(listener);
        let places = Arc::new(Semaphore::new(CONNECTIONS_PER_AGENT));
        tokio::spawn(async move {
            let stop = closed.clone();
            crate::panics::keep_running(
                &faults,
                "agent socket accept loop",
                Some(&name),
                Some(&stop),
                || {
                    accept(
                        name.clone(),
                        listener.clone(),
                        places.clone(),
                        closed.clone(),
                        incoming.clone(),
                    )
                },
            )
            .await
        });
        Ok(())
    }

    /// Closes the agent's socket (on destroy); its open connections end too.
    pub fn close(&self, name: &AgentName) {
        if let Some(t) = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name.as_str())
        {
            t.cancel();
        }
        let _ = fs::remove_file(self.paths.agent_sock(name));
    }

    /// `<run>/agents/<name>`, 0700 and the owner's, made so before anything is bound in it.
    fn private_dir(&self, name: &AgentName, owner: Option<u32>) -> Result<()> {
        let root = self.paths.agents_run_root();
        fs::create_dir_all(&root)
            .map_err(Error::io(format!("could not create {}", root.display())))?;
        // Searchable, not listable: an agent running as its own uid reaches its directory.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).map_err(Error::io(
            format!("could not set the mode of {}", root.display()),
        ))?;
        let dir = self.paths.agent_sock_dir(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::io(format!("could not create {}", dir.display()))(e));
            }
            _ => {}
        }
        let meta = fs::symlink_metadata(&dir)
            .map_err(Error::io(format!("could not stat {}", dir.display())))?;
        if !meta.is_dir() {
            return Err(Error::io(format!(
                "{} is not a directory: remove it, then start the agent again",
                dir.display()
            ))(io::Error::from(
                io::ErrorKind::AlreadyExists,
            )));
        }
        // A directory of an older daemon may be wider: narrow it before it is handed over.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("could not restrict {}", dir.display())))?;
        if let Some(uid) = owner {
            chown_no_follow(&dir, uid)?;
        }
        Ok(())
    }
}

/// Gives `path` itself (never what a link there points to) to `uid` and its like-numbered group.
fn chown_no_follow(path: &Path, uid: u32) -> Result<()> {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(uid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io(format!("could not hand {} to uid {uid}", path.display()))(e.into()))
}

async fn accept(
    name: AgentName,
    listener: Arc<UnixListener>,
    places: Arc<Semaphore>,
    closed: CancellationToken,
    incoming: mpsc::Sender<Accepted>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let Ok(place) = places.clone().try_acquire_owned() else {
                        refuse(&name, stream);
                        continue;
                    };
                    let conn = Accepted { agent: name.clone(), stream, closed: closed.clone(), place };
                    if incoming.send(conn).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if let Some(n) = ACCEPT_FAILURES.due() {
                        tracing::warn!(agent = %name, "agent socket accept failed ({n} since the last such line): {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = closed.cancelled() => return,
            _ = incoming.closed() => return,
        }
    }
}

/// Tells a connection past [`CONNECTIONS_PER_AGENT`] why, without waiting
/// on it, and closes it.
fn refuse(name: &AgentName, stream: UnixStream) {
    if let Some(n) = REFUSALS.due() {
        tracing::warn!(agent = %name, "refused {n} connection(s) to an agent socket: the agent holds {CONNECTIONS_PER_AGENT}, the most served");
    }
    let refusal = AgentResponse::refusal(format!(
        "{name} holds {CONNECTIONS_PER_AGENT} connections to its socket, the most hive-c0re serves: close some, then connect again"
    ));
    let mut line = serde_json::to_vec(&refusal).unwrap_or_default();
    line.push(b'\n');
    // The socket's buffer takes a line this short at once; a full one drops it.
    let _ = stream.try_write(&line);
}
