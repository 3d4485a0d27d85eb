//! The harness's side of agent.sock: JSON lines, one request and one answer at a time.

use std::path::{Path, PathBuf};

use hive_sh4re::agent::{AgentRequest, AgentResponse};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long a request that may be repeated is sent again while hive-c0re
/// cannot reach its store. The harness is stopped sooner if its lease cannot
/// be renewed meanwhile (see hive-c0re's supervisor).
const UNAVAILABLE_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Errors talking to hive-c0re.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is gone or the connection broke: hive-c0re is not there.
    #[error("lost hive-c0re at {path}: {source}")]
    Gone {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// hive-c0re refused the request; the text says why.
    #[error("{0}")]
    Refused(String),
    /// The answer was not readable.
    #[error("hive-c0re sent an unreadable answer: {0}")]
    Protocol(String),
}

/// A connection to the agent's socket.
pub struct Client {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the agent socket.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Gone {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = stream.into_split();
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends a request and waits for its answer; a refusal is an error
    /// carrying hive-c0re's sentence. A request that may be repeated is sent
    /// again every second while hive-c0re cannot reach its store (for up to
    /// [`UNAVAILABLE_FOR`]): a database blip pauses the turn instead of
    /// ending it.
    pub async fn call(&mut self, req: &AgentRequest) -> Result<AgentResponse, ClientError> {
        let since = std::time::Instant::now();
        let mut said = false;
        loop {
            let resp = self.call_once(req).await?;
            if !resp.ok && resp.unavailable && req.may_repeat() && since.elapsed() < UNAVAILABLE_FOR
            {
                if !said {
                    say!(
                        "hive-c0re cannot reach its store; sending the request again every second: {}",
                        resp.error.as_deref().unwrap_or("no reason given")
                    );
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            if !resp.ok {
                return Err(ClientError::Refused(
                    resp.error
                        .unwrap_or_else(|| "refused without a reason".into()),
                ));
            }
            if said {
                say!("hive-c0re reaches its store again");
            }
            return Ok(resp);
        }
    }

    /// One request and its answer line, refusal or not.
    async fn call_once(&mut self, req: &AgentRequest) -> Result<AgentResponse, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let gone = |source| ClientError::Gone {
            path: self.path.clone(),
            source,
        };
        self.writer.write_all(&line).await.map_err(gone)?;
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .await
            .map_err(|source| ClientError::Gone {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Gone {
                path: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"),
            });
        }
        serde_json::from_str(&buf)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", buf.trim())))
    }
}

/// The agent socket path: `--socket`, else `HIVE_AGENT_SOCK`.
pub fn socket_path(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    flag.or_else(|| std::env::var_os("HIVE_AGENT_SOCK").map(PathBuf::from)).ok_or_else(|| {
        "no agent socket given: pass --socket PATH or set HIVE_AGENT_SOCK (hive-c0re sets it when it starts the harness)"
            .to_owned()
    })
}
