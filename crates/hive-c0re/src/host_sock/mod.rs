//! host.sock: the operator's admin socket (`docs/host-sock.md`).
//!
//! JSON lines, many requests per connection, answered in order. Bad input
//! costs only its own connection a refusal: lines are bounded, an idle
//! client is dropped, and the number of connections is capped.

mod agents;
mod approvals;
mod control;
mod messages;
mod shell;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::MAX_LINE_BYTES;
use hive_sh4re::host::{Request, Response};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::lines::{Line, read_line};

/// Group whose members may use host.sock, where it exists.
pub const ADMIN_GROUP: &str = "hive-admin";
/// A connection that sends no complete line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle limit in force: `HIVE_IDLE_TIMEOUT_SECS` (for tests and unusual clients), else [`IDLE_TIMEOUT`].
fn idle_timeout() -> Duration {
    std::env::var("HIVE_IDLE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(IDLE_TIMEOUT)
}
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;

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

/// Serves host.sock until the hive shuts down.
pub async fn serve(hive: Arc<Hive>, listener: UnixListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = hive.shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("host.sock accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = hive.shutdown.cancelled() => return,
        };
        let hive = hive.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            if let Err(e) = serve_conn(&hive, &mut r, &mut w).await {
                tracing::debug!("host.sock connection ended: {e}");
            }
        });
    }
}

async fn serve_conn(
    hive: &Arc<Hive>,
    r: &mut ConnReader,
    w: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let idle = idle_timeout();
    loop {
        let line = tokio::select! {
            l = tokio::time::timeout(idle, read_line(r, MAX_LINE_BYTES)) => match l {
                Ok(l) => l?,
                Err(_) => return Ok(()),
            },
            _ = hive.shutdown.cancelled() => return Ok(()),
        };
        let reply = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => Response::refusal(format!(
                "the request line is over {} MiB and was skipped: send one compact JSON object per line",
                MAX_LINE_BYTES / (1024 * 1024)
            ))
            .into(),
            Line::Data(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Data(bytes) => match Request::from_line(&bytes) {
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
        Request::Approve(r) => r.handle(hive).await,
        Request::Deny(r) => r.handle(hive).await,
        Request::InitConfig(r) => r.handle(hive).await,
        Request::RequestSpawn(r) => r.handle(hive).await,
        Request::RequestApplyCommit(r) => r.handle(hive).await,
        Request::Questions(r) => r.handle(hive).await,
        Request::Answer(r) => r.handle(hive).await,
        Request::CancelQuestion(r) => r.handle(hive).await,
        Request::Urls(r) => r.handle(hive).await,
        Request::Cancel(r) => r.handle(hive).await,
        Request::Compact(r) => r.handle(hive).await,
        Request::CompactNotes(r) => r.handle(hive).await,
        Request::SetModel(r) => r.handle(hive).await,
        Request::Stats(r) => r.handle(hive).await,
        Request::ScheduleAdd(r) => r.handle(hive).await,
        Request::ScheduleList(r) => r.handle(hive).await,
        Request::ScheduleRm(r) => r.handle(hive).await,
        Request::Shell(r) => r.handle(hive).await,
    };
    result.unwrap_or_else(|e| {
        if !matches!(e, Error::Refused(_)) {
            tracing::error!("request failed: {e}");
        }
        Response::refusal(e.to_string()).into()
    })
}
