//! The CLI's side of host.sock: one connection, a line out, a line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use hive_sh4re::PROTOCOL_VERSION;
use hive_sh4re::host::{Request, Response};

/// Why the CLI could not talk to the daemon, or what the daemon refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon (exit 2).
    #[error("{0}")]
    NotRunning(String),
    /// The daemon said no (exit 1); the text is its sentence.
    #[error("{0}")]
    Refused(String),
    /// The connection broke or the answer was unreadable (exit 2).
    #[error("{0}")]
    Broken(String),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Refused(_) => 1,
            _ => 2,
        }
    }
}

/// A connection to host.sock.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects, telling apart "not running", "nothing listening" and "no permission".
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let p = path.display();
            ClientError::NotRunning(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("hive-c0re is not running (no socket at {p}): start it with hive-c0re serve")
                }
                std::io::ErrorKind::ConnectionRefused => {
                    format!("nothing listening at {p}: hive-c0re is not running; start it with hive-c0re serve")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("permission denied on {p}: using the hive needs the hive-admin group (or root)")
                }
                _ => format!("could not connect to {p}: {e}"),
            })
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| ClientError::Broken(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends a request and reads its answer; a refusal becomes `ClientError::Refused`.
    pub fn call(&mut self, req: impl Into<Request>) -> Result<Response, ClientError> {
        let mut line =
            serde_json::to_vec(&req.into()).map_err(|e| ClientError::Broken(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.broken(e))?;
        self.read()
    }

    /// Reads the next response line (streaming verbs write many).
    pub fn read(&mut self) -> Result<Response, ClientError> {
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .map_err(|e| self.broken(e))?;
        if n == 0 {
            return Err(ClientError::Broken(format!(
                "hive-c0re closed {} without answering",
                self.path.display()
            )));
        }
        let resp: Response = serde_json::from_str(&buf).map_err(|e| {
            ClientError::Broken(format!(
                "hive-c0re sent an unreadable answer ({e}): {}",
                buf.trim()
            ))
        })?;
        if resp.version > PROTOCOL_VERSION {
            return Err(ClientError::Broken(format!(
                "hive-c0re speaks protocol version {} but this CLI knows {PROTOCOL_VERSION}: upgrade the CLI",
                resp.version
            )));
        }
        if !resp.ok {
            return Err(ClientError::Refused(
                resp.error
                    .unwrap_or_else(|| "refused without a reason".into()),
            ));
        }
        Ok(resp)
    }

    /// The connection's two ends, for a verb that switches to its own framing
    /// after the answer (`shell`); the reader keeps whatever it already buffered.
    pub fn into_parts(self) -> (BufReader<UnixStream>, UnixStream) {
        (self.reader, self.writer)
    }

    fn broken(&self, e: std::io::Error) -> ClientError {
        ClientError::Broken(format!(
            "lost the connection to {}: {e}",
            self.path.display()
        ))
    }
}
