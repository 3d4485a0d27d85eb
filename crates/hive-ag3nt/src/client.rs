//! The harness's side of agent.sock: JSON lines, one request and one answer at a time.

use std::path::{Path, PathBuf};

use hive_sh4re::agent::{AgentRequest, AgentResponse};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

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

    /// Sends a request and waits for its answer; a refusal is an error carrying hive-c0re's sentence.
    pub async fn call(&mut self, req: &AgentRequest) -> Result<AgentResponse, ClientError> {
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
        let resp: AgentResponse = serde_json::from_str(&buf)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", buf.trim())))?;
        if !resp.ok {
            return Err(ClientError::Refused(
                resp.error
                    .unwrap_or_else(|| "refused without a reason".into()),
            ));
        }
        Ok(resp)
    }
}

/// The agent socket path: `--socket`, else `HIVE_AGENT_SOCK`.
pub fn socket_path(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    flag.or_else(|| std::env::var_os("HIVE_AGENT_SOCK").map(PathBuf::from)).ok_or_else(|| {
        "no agent socket given: pass --socket PATH or set HIVE_AGENT_SOCK (hive-c0re sets it when it starts the harness)"
            .to_owned()
    })
}
