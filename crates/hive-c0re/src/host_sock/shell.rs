//! `shell` *ours*: a PTY shell in an agent's container, over host.sock.
//!
//! `{"cmd":"shell","name":"alice","rows":24,"cols":80,"term":"xterm-256color"}`
//! is refused like any verb (unknown agent, agent not running), or answered
//! with a bare success after which the connection carries the binary frames
//! of [`hive_sh4re::shell`]: data both ways, resize from the client, and one
//! exit (or closed) frame from the daemon before it closes the connection.
//! The client closing the connection ends the shell's whole session.

use std::io;
use std::sync::Arc;

use hive_sh4re::host::{Response, verb};
use hive_sh4re::shell::{Frame, HEADER_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::{ConnReader, Handle, Reply, StreamReply};
use crate::error::Result;
use crate::hive::Hive;
use crate::shell::{Input, Output, Session, WinSize};

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
    session: Session,
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
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let session = self
            .session
            .run(in_rx, out_tx, hive.shutdown_token().clone());
        let writer = async {
            while let Some(out) = out_rx.recv().await {
                let bytes = match out {
                    Output::Data(d) => Frame::data(&d),
                    Output::Exit(code) => Frame::Exit(code).encode(),
                    Output::Closed(why) => Frame::Closed(why).encode(),
                };
                w.write_all(&bytes).await?;
            }
            w.flush().await
        };
        let reader = async move {
            loop {
                let input = match read_frame(r).await {
                    Ok(Some(Frame::Data(d))) => Input::Data(d),
                    Ok(Some(Frame::Resize { rows, cols })) => {
                        Input::Resize(WinSize::new(Some(rows), Some(cols)))
                    }
                    Ok(Some(other)) => {
                        tracing::debug!(
                            "a shell client sent a daemon's frame ({other:?}): closing"
                        );
                        return;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!("a shell client's stream ended: {e}");
                        return;
                    }
                };
                if in_tx.send(input).await.is_err() {
                    return;
                }
            }
        };
        // The shell and the writer end together; a client that stops sending
        // (closed, or broke the framing) ends the shell, which ends the writer.
        let both = async {
            let (_, written) = tokio::join!(session, writer);
            written
        };
        tokio::pin!(both, reader);
        tokio::select! {
            written = &mut both => return written,
            () = &mut reader => {}
        }
        both.await
    }
}

/// One frame from the client; `Ok(None)` when it closed the connection.
async fn read_frame(r: &mut ConnReader) -> io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_BYTES];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    let (kind, len) = Frame::header(header).map_err(invalid)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Frame::from_parts(kind, payload).map(Some).map_err(invalid)
}
