//! A blocking host.sock client on the standard library alone, for the
//! operator's CLI, a desktop sidebar or a script (`docs/host-sock.md`).
//!
//! ```no_run
//! use hive_sh4re::host::{client::Client, verb};
//!
//! let mut c = Client::connect("/run/hyperhive/host.sock")?;
//! for row in c.call(verb::AgentStatus {})?.agent_statuses.unwrap_or_default() {
//!     println!("{} running={}", row.name, row.running);
//! }
//! # Ok::<(), hive_sh4re::host::client::Error>(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, Response};
use crate::PROTOCOL_VERSION;

/// Why a call did not succeed; each carries a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No daemon: no socket, or nothing listening on it.
    #[error("{0}")]
    NotRunning(String),
    /// The socket is there but this user may not use it.
    #[error("{0}")]
    NoPermission(String),
    /// The daemon answered `ok: false`; the text is its sentence.
    #[error("{0}")]
    Refused(String),
    /// The connection broke, timed out, or the answer was unreadable or too new.
    #[error("{0}")]
    Broken(String),
}

/// A connection to host.sock: a request line out, an answer line back, as
/// many times as wanted; streaming verbs then [`Client::read`] more lines.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects, telling apart "not running", "nothing listening" and "no permission".
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let p = path.display();
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotRunning(format!(
                "hive-c0re is not running (no socket at {p}): start it with hive-c0re serve"
            )),
            std::io::ErrorKind::ConnectionRefused => Error::NotRunning(format!(
                "nothing listening at {p}: hive-c0re is not running; start it with hive-c0re serve"
            )),
            std::io::ErrorKind::PermissionDenied => Error::NoPermission(format!(
                "permission denied on {p}: using the hive needs the hive-admin group (or root)"
            )),
            _ => Error::NotRunning(format!("could not connect to {p}: {e}")),
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::Broken(format!("could not use the connection to {p}: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Gives up on a read or write after `limit` (none: wait as long as it takes,
    /// which streaming verbs and long `recv` waits need).
    pub fn set_timeout(&mut self, limit: Option<Duration>) -> Result<(), Error> {
        self.writer
            .set_read_timeout(limit)
            .and_then(|()| self.writer.set_write_timeout(limit))
            .map_err(|e| self.broken(e))
    }

    /// Sends a request and reads its answer; a refusal is [`Error::Refused`].
    pub fn call(&mut self, req: impl Into<Request>) -> Result<Response, Error> {
        let mut line = serde_json::to_vec(&req.into())
            .map_err(|e| Error::Broken(format!("could not encode the request: {e}")))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.broken(e))?;
        self.read()
    }

    /// Reads the next answer line (streaming verbs write many).
    pub fn read(&mut self) -> Result<Response, Error> {
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .map_err(|e| self.broken(e))?;
        if n == 0 {
            return Err(Error::Broken(format!(
                "hive-c0re closed {} without answering",
                self.path.display()
            )));
        }
        let resp: Response = serde_json::from_str(&buf).map_err(|e| {
            Error::Broken(format!(
                "hive-c0re sent an unreadable answer ({e}): {}",
                buf.trim()
            ))
        })?;
        if resp.version > PROTOCOL_VERSION {
            return Err(Error::Broken(format!(
                "hive-c0re speaks protocol version {} but this client knows {PROTOCOL_VERSION}: upgrade the client",
                resp.version
            )));
        }
        if !resp.ok {
            return Err(Error::Refused(
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

    fn broken(&self, e: std::io::Error) -> Error {
        let p = self.path.display();
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                Error::Broken(format!(
                    "hive-c0re did not answer in time on {p}: it may be stuck; its log says on what (journalctl -u hyperhive)"
                ))
            }
            _ => Error::Broken(format!("lost the connection to {p}: {e}")),
        }
    }
}

/// One request on a connection of its own, closed after the answer, with
/// the 5 s budget hyperhive's clients use: the simplest way to ask one thing.
pub fn request(path: impl AsRef<Path>, req: impl Into<Request>) -> Result<Response, Error> {
    let mut c = Client::connect(path)?;
    c.set_timeout(Some(Duration::from_secs(5)))?;
    c.call(req)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::host::verb;

    /// A temp dir for a socket.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn sock(&self) -> PathBuf {
            self.0.path().join("host.sock")
        }
    }

    /// A fake daemon: answers each request line with the next canned line, and
    /// hands back the request lines it read.
    fn fake(answers: &'static [&'static str]) -> (Dir, std::thread::JoinHandle<Vec<String>>) {
        let dir = Dir::new();
        let listener = UnixListener::bind(dir.sock()).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut seen = vec![];
            for a in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line);
                w.write_all(a.as_bytes()).unwrap();
            }
            seen
        });
        (dir, t)
    }

    #[test]
    fn calls_write_one_line_and_read_one_answer() {
        let (dir, t) = fake(&[
            "{\"version\":1,\"ok\":true,\"agents\":[\"alice\"]}\n",
            "{\"version\":1,\"ok\":false,\"error\":\"agent \\\"ghost\\\" is not managed by this hive\"}\n",
            "{\"version\":1,\"ok\":true}\n{\"version\":1,\"ok\":true,\"agent_statuses\":[]}\n",
        ]);
        let mut c = Client::connect(dir.sock()).unwrap();
        let r = c.call(verb::List {}).unwrap();
        assert_eq!(r.agents, Some(vec!["alice".to_owned()]));
        let ghost = crate::AgentName::parse("ghost").unwrap();
        assert_eq!(
            c.call(verb::Restart { name: ghost }),
            Err(Error::Refused(
                "agent \"ghost\" is not managed by this hive".into()
            ))
        );
        // A stream: the ack, then more lines read one by one.
        c.call(verb::SubscribeAgentStatus {}).unwrap();
        assert_eq!(c.read().unwrap().agent_statuses, Some(vec![]));
        assert_eq!(
            t.join().unwrap(),
            [
                "{\"cmd\":\"list\"}\n",
                "{\"cmd\":\"restart\",\"name\":\"ghost\"}\n",
                "{\"cmd\":\"subscribe_agent_status\"}\n"
            ]
        );
    }

    #[test]
    fn a_newer_protocol_or_a_garbled_answer_is_broken() {
        let (dir, _t) = fake(&["{\"version\":2,\"ok\":true}\n", "nope\n"]);
        let mut c = Client::connect(dir.sock()).unwrap();
        let e = c.call(verb::List {}).unwrap_err();
        assert!(e.to_string().contains("protocol version 2"), "{e}");
        let e = c.call(verb::List {}).unwrap_err();
        assert!(e.to_string().contains("unreadable answer"), "{e}");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let dir = Dir::new();
        let _listener = UnixListener::bind(dir.sock()).unwrap();
        let mut c = Client::connect(dir.sock()).unwrap();
        c.set_timeout(Some(Duration::from_millis(50))).unwrap();
        let e = c.call(verb::List {}).unwrap_err();
        assert!(
            matches!(&e, Error::Broken(s) if s.contains("did not answer in time")),
            "{e}"
        );
    }

    #[test]
    fn no_daemon_is_not_running() {
        let dir = Dir::new();
        let e = request(dir.sock(), verb::List {}).err().unwrap();
        assert!(
            matches!(&e, Error::NotRunning(s) if s.contains("no socket at")),
            "{e}"
        );
        // A socket file nobody listens on (a daemon that died).
        drop(UnixListener::bind(dir.sock()).unwrap());
        let e = request(dir.sock(), verb::List {}).err().unwrap();
        assert!(
            matches!(&e, Error::NotRunning(s) if s.contains("nothing listening")),
            "{e}"
        );
    }
}
