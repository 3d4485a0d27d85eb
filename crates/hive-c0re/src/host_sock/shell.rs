//! `shell` *ours*: a PTY shell in an agent's container, over host.sock.
//!
//! `{"cmd":"shell","name":"alice","rows":24,"cols":80,"term":"xterm-256color"}`
//! is refused like any verb (unknown agent, agent not running), or answered
//! with a bare success after which the connection carries the binary frames
//! of [`hive_sh4re::shell`]: data both ways, resize from the client, and one
//! exit (or closed) frame from the daemon before it closes the connection.
//! The client closing the connection ends the shell's whole session. An
//! agent of another node gets the same: its node runs the shell and this
//! one relays the frames (`crate::node_shell`).

use std::io;
use std::sync::Arc;

use hive_sh4re::host::{Response, verb};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{ConnReader, Handle, Reply, StreamReply};
use crate::error::Result;
use crate::hive::Hive;
use crate::node_shell::{Shell, serve_frames};
use crate::shell::WinSize;

impl Handle for verb::Shell {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let size = WinSize::new(self.rows, self.cols);
        let session = hive
            .open_shell(&self.name, size, self.term.as_deref())
            .await?;
        Ok(Reply::Stream(Box::new(ShellStream { session })))
    }
}

/// An open shell: the ack, then frames until the shell or the client ends.
struct ShellStream {
    session: Shell,
}

#[async_trait::async_trait]
impl StreamReply for ShellStream {
    async fn run(
        self: Box<Self>,
        hive: Arc<Hive>,
        r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> io::Result<()> {
        // A failed ack drops the session, whose guard kills the shell.
        w.write_all(&Response::ok().to_line()).await?;
        serve_frames(self.session, r, w, hive.shutdown_token().clone()).await
    }
}
