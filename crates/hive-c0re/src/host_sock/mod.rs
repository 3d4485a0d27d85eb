//! host.sock: the operator's admin socket (`docs/host-sock.md`).
//!
//! JSON lines, many requests per connection, answered in order. Bad input
//! costs only its own connection a refusal: lines are bounded, an idle
//! client is dropped, and the number of connections is capped without idle
//! ones ever keeping a newcomer waiting (`conns.rs`).

mod agents;
mod approvals;
mod budget;
mod conns;
mod control;
mod messages;
mod nodes;
mod notifications;
mod secrets;
mod shell;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::host::{Request, Response};
use hive_sh4re::limits::MAX_LINE_BYTES;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;

use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::lines::{Line, read_line};

/// Group whose members may use host.sock, where it exists.
pub const ADMIN_GROUP: &str = "hive-admin";
/// A connection that sends no complete line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle limit in force: `HIVE_IDLE_TIMEOUT_SECS` (for tests and unusual clients), else [`IDLE_TIMEOUT`].
fn idle_timeout() -> Duration {
    crate::clock::secs_from_env("HIVE_IDLE_TIMEOUT_SECS", IDLE_TIMEOUT)
}
/// Most connections served at once, whatever the descriptor limit allows.
pub const MAX_CONNECTIONS: usize = 4096;

/// The connection bound in force: `HIVE_MAX_CONNECTIONS` (for tests), else
/// [`MAX_CONNECTIONS`] or half the open-file limit if that is lower, so
/// agents, the store and children keep the other half.
fn max_connections() -> usize {
    if let Some(n) = std::env::var("HIVE_MAX_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    MAX_CONNECTIONS.min(usize::try_from(files / 2).unwrap_or(usize::MAX).max(16))
}

/// What a verb answers: one line, or one line and then a stream.
pub(crate) enum Reply {
    One(Box<Response>),
    /// Keep writing lines until the client goes away.
    Stream(Box<dyn StreamReply>),
}

/// The reading end of a host.sock connection.
pub(crate) type ConnReader = BufReader<tokio::net::unix::OwnedReadHalf>;

/// A streaming verb: writes its lines until the client leaves or the hive stops.
///
/// It owns the rest of the connection: `r` holds whatever the client sent
/// after the request line (the `shell` verb reads its frames there).
#[async_trait::async_trait]
pub(crate) trait StreamReply: Send {
    async fn run(
        self: Box<Self>,
        hive: Arc<Hive>,
        r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()>;
}

/// Resolves when a streaming client has closed the connection, so its place
/// is freed without waiting for a write to fail. A client that only shut down
/// its sending side still reads, and keeps its stream. What it sends is dropped.
pub(crate) async fn client_gone(r: &mut ConnReader, w: &OwnedWriteHalf) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = tokio::io::AsyncReadExt::read(r, &mut sink).await {
        if n == 0 {
            break;
        }
    }
    // The read side is over; an empty write fails only when the peer closed both.
    let stream: &tokio::net::UnixStream = w.as_ref();
    if nix::unistd::write(stream, &[]).is_err() {
        return;
    }
    std::future::pending().await
}

/// Resolves once the client of a request still being answered has closed
/// its socket, reading nothing of what it sent (a next request stays for
/// its turn). An empty write fails only then: a client that shut down its
/// sending side alone still reads its answer.
async fn peer_gone(r: &mut ConnReader, w: &OwnedWriteHalf) {
    use tokio::io::AsyncBufReadExt;
    let stream: &tokio::net::UnixStream = w.as_ref();
    // With nothing of the client's buffered, its leaving shows at once as
    // an end of file; after that (or behind a request it sent ahead), it is
    // looked at every second.
    if r.buffer().is_empty() {
        let _ = r.fill_buf().await;
    }
    while nix::unistd::write(stream, &[]).is_ok() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Self::One(Box::new(r))
    }
}

/// Binds host.sock with the operator's permissions (0660, group `hive-admin`, dir 0751).
pub fn bind(path: &Path) -> Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .map_err(Error::io(format!("could not create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o751)).map_err(Error::io(
        format!("could not set the mode of {}", dir.display()),
    ))?;
    // The caller holds the daemon lock, so a socket file here is a dead daemon's.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(Error::io(format!("could not listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(Error::io(
        format!("could not set the mode of {}", path.display()),
    ))?;
    if let Ok(Some(g)) = nix::unistd::Group::from_name(ADMIN_GROUP)
        && let Err(e) = nix::unistd::chown(path, None, Some(g.gid))
    {
        tracing::warn!(
            "could not give {} to group {ADMIN_GROUP}: {e}",
            path.display()
        );
    }
    Ok(listener)
}

/// Serves host.sock until the hive shuts down. Its accept loop is
/// essential: one that panics is told and accepts again after a pause (see
/// `panics.rs`), on the same socket and with the same connections counted.
pub async fn serve(hive: Arc<Hive>, listener: UnixListener) {
    let (listener, conns) = (Arc::new(listener), conns::Conns::new(max_connections()));
    tracing::debug!("host.sock serves up to {} connections", conns.cap());
    hive.clone()
        .keep_running("host.sock accept loop", move |hive| {
            accept(hive, listener.clone(), conns.clone())
        })
        .await
}

async fn accept(hive: Arc<Hive>, listener: Arc<UnixListener>, conns: Arc<conns::Conns>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors: an idle client gives way; else wait for one to close.
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_fds && conns.evict_oldest() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        tracing::warn!("host.sock accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = hive.shutdown_token().cancelled() => return,
        };
        let slot = conns.admit();
        let hive = hive.clone();
        let cap = conns.cap();
        hive.clone().spawn_task("host.sock connection", async move {
            let (r, mut w) = stream.into_split();
            let Some(mut slot) = slot else {
                let busy = Response::refusal(format!(
                    "host.sock has all {cap} connections busy (streams, shells, waits): close some and try again"
                ));
                let _ = tokio::time::timeout(IDLE_TIMEOUT, w.write_all(&busy.to_line())).await;
                return;
            };
            let mut r = BufReader::new(r);
            if let Err(e) = serve_conn(&hive, &mut slot, &mut r, &mut w).await {
                tracing::debug!("host.sock connection ended: {e}");
            }
        });
    }
}

async fn serve_conn(
    hive: &Arc<Hive>,
    slot: &mut conns::Slot,
    r: &mut ConnReader,
    w: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let idle = idle_timeout();
    loop {
        let evicted = slot.idle();
        let line = tokio::select! {
            l = tokio::time::timeout(idle, read_line(r, MAX_LINE_BYTES)) => match l {
                Ok(l) => l?,
                Err(_) => return Ok(()),
            },
            _ = evicted.cancelled() => return Ok(()),
            _ = hive.shutdown_token().cancelled() => return Ok(()),
        };
        if !slot.busy() {
            return Ok(());
        }
        let reply = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => Response::refusal(format!(
                "the request line is over {} MiB and was skipped: send one compact JSON object per line",
                MAX_LINE_BYTES / (1024 * 1024)
            ))
            .into(),
            Line::Data(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Data(bytes) => match Request::from_line(&bytes) {
                // A `recv` waits on the client too: one that left takes nothing.
                Ok(Request::Recv(req)) => {
                    let gone = std::pin::pin!(peer_gone(r, w));
                    match messages::recv_unless(req, hive, gone).await.transpose() {
                        Some(result) => answer(result),
                        None => return Ok(()),
                    }
                }
                Ok(req) => dispatch(hive, req).await,
                Err(e) => Response::refusal(e).into(),
            },
        };
        match reply {
            Reply::One(resp) => w.write_all(&resp.to_line()).await?,
            Reply::Stream(s) => return s.run(hive.clone(), r, w).await,
        }
    }
}

/// One verb's handler: what the daemon does with that verb's request.
///
/// Each verb family's file implements it for its verbs' structs.
pub(crate) trait Handle {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply>;
}

/// Runs one request; errors become refusals carrying their sentence.
pub(crate) async fn dispatch(hive: &Arc<Hive>, req: Request) -> Reply {
    let result: Result<Reply> = match req {
        Request::List(r) => r.handle(hive).await,
        Request::AgentStatus(r) => r.handle(hive).await,
        Request::SubscribeAgentStatus(r) => r.handle(hive).await,
        Request::SetPaused(r) => r.handle(hive).await,
        Request::Start(r) => r.handle(hive).await,
        Request::Stop(r) => r.handle(hive).await,
        Request::Restart(r) => r.handle(hive).await,
        Request::Spawn(r) => r.handle(hive).await,
        Request::Kill(r) => r.handle(hive).await,
        Request::Destroy(r) => r.handle(hive).await,
        Request::Send(r) => r.handle(hive).await,
        Request::Recv(r) => r.handle(hive).await,
        Request::Events(r) => r.handle(hive).await,
        Request::Pending(r) => r.handle(hive).await,
        Request::ApprovalDiff(r) => r.handle(hive).await,
        Request::Approve(r) => r.handle(hive).await,
        Request::Deny(r) => r.handle(hive).await,
        Request::InitConfig(r) => r.handle(hive).await,
        Request::ConfigShow(r) => r.handle(hive).await,
        Request::ConfigCommit(r) => r.handle(hive).await,
        Request::RequestSpawn(r) => r.handle(hive).await,
        Request::RequestApplyCommit(r) => r.handle(hive).await,
        Request::Questions(r) => r.handle(hive).await,
        Request::NeedsYou(r) => r.handle(hive).await,
        Request::Answer(r) => r.handle(hive).await,
        Request::CancelQuestion(r) => r.handle(hive).await,
        Request::Urls(r) => r.handle(hive).await,
        Request::Logout(r) => r.handle(hive).await,
        Request::Cancel(r) => r.handle(hive).await,
        Request::Compact(r) => r.handle(hive).await,
        Request::CompactNotes(r) => r.handle(hive).await,
        Request::NewSession(r) => r.handle(hive).await,
        Request::SetModel(r) => r.handle(hive).await,
        Request::Stats(r) => r.handle(hive).await,
        Request::ScheduleAdd(r) => r.handle(hive).await,
        Request::ScheduleList(r) => r.handle(hive).await,
        Request::ScheduleRm(r) => r.handle(hive).await,
        Request::Shell(r) => r.handle(hive).await,
        Request::SecretSet(r) => r.handle(hive).await,
        Request::SecretList(r) => r.handle(hive).await,
        Request::SecretRm(r) => r.handle(hive).await,
        Request::Notifications(r) => r.handle(hive).await,
        Request::NotificationsRead(r) => r.handle(hive).await,
        Request::Webhooks(r) => r.handle(hive).await,
        Request::BudgetSet(r) => r.handle(hive).await,
        Request::BudgetList(r) => r.handle(hive).await,
        Request::Nodes(r) => r.handle(hive).await,
    };
    answer(result)
}

/// A handler's result as the client gets it: errors become refusals carrying their sentence.
fn answer(result: Result<Reply>) -> Reply {
    result.unwrap_or_else(|e| {
        if !matches!(e, Error::Refused(_)) {
            tracing::error!("request failed: {e}");
        }
        Response::refusal(e.to_string()).into()
    })
}
