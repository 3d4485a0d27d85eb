//! The node-to-node shell channel: the operator asked node alpha for the
//! shell of an agent whose home is node beta (several nodes on one
//! PostgreSQL store), and beta runs it.
//!
//! Nothing on the network may open a shell on beta, so the store, which
//! only nodes write, hands over a one-time ticket: alpha makes 32 random
//! bytes and stores a `shell` request for beta (`hive::steer`) holding the
//! ticket's SHA-256, never the ticket. Beta takes it, checks that the agent
//! is its own and running, and answers with the fingerprint of its
//! [`Identity`], a TLS key it made at start and keeps in memory. Alpha then
//! connects to beta's dashboard listener (its address in `nodes`) with
//! `GET /node/shell/{request}`, `Upgrade: hive-shell` and the ticket's hash
//! in [`KNOCK_HEADER`]; beta upgrades only for a request it granted lately
//! with that hash. Over the upgraded connection the two
//! speak TLS 1.3, alpha taking only the certificate whose fingerprint came
//! through the store; inside it alpha sends the ticket (one line), and beta
//! (`dashboard/node_shell.rs`, `Hive::node_shell`) answers `ok` only for a
//! request of verb shell that it took and granted, not older than
//! [`TICKET_TTL_MS`], whose hash matches and that was not used before
//! (marked used with a conditional UPDATE), else `no: ` and why. No login
//! cookie or token is involved. Then the TLS stream carries the frames of
//! [`hive_sh4re::shell`], as host.sock's `shell` does.
//!
//! The store, which only nodes read and write, is what the two trust: a
//! machine on the path (ARP, DNS), or a program that took beta's port while
//! its hive-c0re restarted (an agent of beta's, sharing its address), gets
//! neither the ticket nor the shell's bytes, and cannot pose as beta.
//!
//! A relay never waits on a home node that is gone: the asking end probes
//! the connection (TCP keepalive) and drops it when what it sent stays
//! unacknowledged or unread for [`UNANSWERED`] (a cut link, a node that
//! stopped reading), and it ends the shell with a sentence once the home
//! node's heartbeats stop (a node hung or stopped, whose kernel still
//! answers for it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hive_sh4re::shell::{Frame, HEADER_BYTES};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::shell::{Input, Output, STOPPING, Session, WinSize};

/// The `Upgrade` protocol of the channel.
pub const PROTOCOL: &str = "hive-shell";
/// The header an older asking node sent its ticket in, in the clear: refused.
pub const TICKET_HEADER: &str = "x-hive-node-ticket";
/// The header of a knock: the ticket's SHA-256 (what the store holds), so
/// only who knows the grant gets an upgrade and the socket it holds.
pub const KNOCK_HEADER: &str = "x-hive-node-knock";
/// The home node's answer to a ticket it takes.
const TICKET_OK: &[u8] = b"ok\n";
/// Longest answer line to a ticket, in bytes.
const MAX_ANSWER: usize = 1024;
/// How long after the home node took the request its ticket is good.
pub const TICKET_TTL_MS: i64 = 30_000;
/// The path of the channel for request `id`.
pub fn path(id: i64) -> String {
    format!("/node/shell/{id}")
}
/// How long connecting to the home node and its answer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay's bytes may stay unacknowledged or unread by the home
/// node, and an idle connection unanswered, before the relay drops it.
pub const UNANSWERED: Duration = Duration::from_secs(30);

/// Resolves, with the sentence to end the shell with, once the home node is gone.
pub type Gone = Pin<Box<dyn Future<Output = String> + Send>>;

/// Has the kernel drop `tcp` once what it sent stays unacknowledged (or
/// unread: a zero window counts) for `unanswered`, and probe it when idle so
/// a silent peer is noticed within about that time too.
fn watch_peer(tcp: &tokio::net::TcpStream, unanswered: Duration) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = u32::try_from(unanswered.as_secs())
        .unwrap_or(u32::MAX)
        .max(3);
    let ms = u32::try_from(unanswered.as_millis()).unwrap_or(u32::MAX);
    setsockopt(tcp, sockopt::KeepAlive, &true)?;
    setsockopt(tcp, sockopt::TcpKeepIdle, &(secs / 3))?;
    setsockopt(tcp, sockopt::TcpKeepInterval, &(secs / 6).max(1))?;
    setsockopt(tcp, sockopt::TcpKeepCount, &3)?;
    setsockopt(tcp, sockopt::TcpUserTimeout, &ms)?;
    Ok(())
}

/// A node's end of the channel's TLS: a key and self-signed certificate
/// made when hive-c0re starts, kept in memory only. Its fingerprint (the
/// SHA-256 of the certificate) reaches the asking node through the store,
/// so no name, CA or file is involved.
pub struct Identity {
    server: Arc<rustls::ServerConfig>,
    fingerprint: String,
}

impl Identity {
    /// A fresh key and certificate.
    pub fn generate() -> Result<Self, String> {
        let made = rcgen::generate_simple_self_signed(vec!["hive-node".to_owned()])
            .map_err(|e| format!("could not make the node's TLS key: {e}"))?;
        let cert = made.cert.der().clone();
        let fingerprint = crate::hex::encode(&Sha256::digest(&cert));
        let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("could not set up TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key.into())
            .map_err(|e| format!("could not set up TLS: {e}"))?;
        Ok(Self {
            server: Arc::new(server),
            fingerprint,
        })
    }

    /// The SHA-256 of the certificate, as hex: what the asking node pins.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Takes the TLS handshake of an asking node on `io`.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted = tokio_rustls::TlsAcceptor::from(self.server.clone()).accept(io);
        tokio::time::timeout(CONNECT_TIMEOUT, accepted)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time"))?
    }
}

/// This process's [`Identity`], made at its first use.
pub fn identity() -> Result<&'static Identity, String> {
    static IDENTITY: OnceLock<Result<Identity, String>> = OnceLock::new();
    IDENTITY
        .get_or_init(Identity::generate)
        .as_ref()
        .map_err(Clone::clone)
}

/// The crypto the channel uses, whatever the process's default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 to the holder of the certificate whose SHA-256 is `fingerprint`, and nobody else.
pub fn client_config(fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("could not set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::CertCheck::pinned(
            fingerprint,
            provider,
        )))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads one line of at most `max` bytes (its newline not counted) within
/// the connect time limit: the ticket, and the answer to it.
pub async fn read_line<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> io::Result<String> {
    let read = async {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if stream.read(&mut b).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended mid-line",
                ));
            }
            if b[0] == b'\n' {
                break;
            }
            if line.len() == max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {max} bytes"),
                ));
            }
            line.push(b[0]);
        }
        String::from_utf8(line)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a line that is not UTF-8"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no line in time"))?
}

/// The home end's answer to the ticket it read: `ok`, or `no: ` and why.
pub async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    refused: Option<&str>,
) -> io::Result<()> {
    match refused {
        None => stream.write_all(TICKET_OK).await?,
        Some(why) => {
            let why: String = why
                .replace(['\n', '\r'], " ")
                .chars()
                .take(MAX_ANSWER - 8)
                .collect();
            stream.write_all(format!("no: {why}\n").as_bytes()).await?;
        }
    }
    stream.flush().await
}

/// A new ticket: 32 random bytes from the kernel, as hex.
pub fn new_ticket() -> io::Result<String> {
    crate::hex::random(32)
}

/// The SHA-256 of a ticket as hex: what the store holds.
pub fn ticket_hash(ticket: &str) -> String {
    crate::hex::encode(&Sha256::digest(ticket.as_bytes()))
}

/// Whether `ticket` hashes to `stored`, compared without stopping at the first difference.
pub fn ticket_matches(ticket: &str, stored: &str) -> bool {
    crate::hex::same_secret(ticket_hash(ticket).as_bytes(), stored.as_bytes())
}

/// A shell: on a PTY here, or on the agent's home node through the channel.
pub enum Shell {
    Local(Session),
    Remote(Remote),
}

impl Shell {
    /// Moves input and output until the shell ends, as [`Session::run`] does
    /// (whose contract both keep): the input closing ends the shell's whole
    /// session, wherever it runs.
    pub async fn run(
        self,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
        stop: CancellationToken,
    ) -> Option<i32> {
        match self {
            Shell::Local(s) => s.run(input, output, stop).await,
            Shell::Remote(r) => r.run(input, output, stop).await,
        }
    }
}

/// The asking node's end of an upgraded channel.
pub struct Remote {
    /// Boxed: a TLS stream is over a kilobyte, and a `Shell` is moved about.
    io: Box<tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>>>,
    /// The home node, for sentences.
    node: String,
    /// Resolves once the home node is gone.
    gone: Gone,
}

/// Where a node's address (its dashboard's `http://HOST:PORT/`) leads: the
/// host and port to connect to and the authority to name. The error is what
/// is wrong with it, for a sentence naming the address.
pub struct Target {
    host: String,
    port: u16,
    authority: hyper::http::uri::Authority,
}

impl Target {
    /// Checks `address` before any ticket goes anywhere. An unspecified IP
    /// (`0.0.0.0`, `::`) is refused: it is what a node listening on every
    /// address registers, and connecting to it reaches this host, not that
    /// node, so whatever listens on the port here would get the ticket.
    pub fn parse(address: &str) -> Result<Self, String> {
        let uri: hyper::Uri = address.parse().map_err(|_| "it is not a URL".to_owned())?;
        if uri.scheme_str() != Some("http") {
            return Err("the node-to-node shell speaks plain http to a node's dashboard listener, and this address is not http".into());
        }
        let authority = uri.authority().ok_or("it names no host")?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_unspecified())
        {
            return Err(format!(
                "the node's dashboard listens on every address ({host}), which names no host to reach (connecting to it reaches this host instead): start that node with --dashboard set to one of its own addresses that the other nodes reach"
            ));
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            host,
            port,
            authority,
        })
    }
}

/// Connects to the home node `node` at `target` and opens the shell
/// request `id` granted with `ticket`, over TLS to the holder of the
/// certificate `fingerprint` (the grant's answer); `gone` ends the relay
/// once that node is gone. The error is what went wrong, for a sentence
/// naming the address.
pub async fn connect(
    node: &str,
    target: &Target,
    grant: Grant<'_>,
    gone: Gone,
) -> Result<Remote, String> {
    let io = open(target, grant, UNANSWERED).await?;
    Ok(Remote {
        io: Box::new(io),
        node: node.to_owned(),
        gone,
    })
}

/// A shell request the home node granted: its id, the ticket that opens it
/// and the fingerprint of the certificate the home node answered with.
#[derive(Clone, Copy)]
pub struct Grant<'a> {
    pub id: i64,
    pub ticket: &'a str,
    pub fingerprint: &'a str,
}

/// The channel for a granted request, its peer watched with `unanswered`:
/// upgraded, TLS to the pinned certificate, the ticket taken.
async fn open(
    target: &Target,
    grant: Grant<'_>,
    unanswered: Duration,
) -> Result<tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>>, String> {
    let Grant {
        id,
        ticket,
        fingerprint,
    } = grant;
    let tls = client_config(fingerprint)?;
    let Target {
        host,
        port,
        authority,
    } = target;
    let port = *port;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = connect_checked(host, port).await?;
        let _ = tcp.set_nodelay(true);
        watch_peer(&tcp, unanswered)
            .map_err(|e| format!("could not set up the connection's keepalive ({e})"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP failed: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("the node shell connection ended: {e}");
            }
        });
        let request = hyper::Request::get(path(id))
            .header(header::HOST, authority.as_str())
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .header(KNOCK_HEADER, ticket_hash(ticket))
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("could not build the request: {e}"))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP failed: {e}"))?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let body = answer_start(resp.into_body()).await;
            let body = body.trim().chars().take(500).collect::<String>();
            return Err(format!("it answered HTTP {}: {body}", status.as_u16()));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| format!("the upgrade failed: {e}"))?;
        let name = ServerName::try_from("hive-node").expect("a valid name");
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, TokioIo::new(upgraded))
            .await
            .map_err(|e| format!("TLS failed, so the ticket was not sent: {e}"))?;
        stream
            .write_all(format!("{ticket}\n").as_bytes())
            .await
            .map_err(|e| format!("could not send the ticket ({e})"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("could not send the ticket ({e})"))?;
        let said = read_line(&mut stream, MAX_ANSWER)
            .await
            .map_err(|e| format!("no answer to the ticket ({e})"))?;
        if said.as_bytes() != TICKET_OK.strip_suffix(b"\n").unwrap_or(TICKET_OK) {
            let why = said.strip_prefix("no: ").unwrap_or(&said);
            return Err(format!(
                "it refused the ticket: {}",
                hive_sh4re::text::visible(why)
            ));
        }
        Ok(stream)
    })
    .await
    .map_err(|_| format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
}

/// Connects to `host:port`. An address on this host's loopback reaches
/// whatever listens there on this host, not the node it names: it is taken
/// only when what listens is hive-c0re's own user's (another hive-c0re on
/// this host, as tests and one-host trials run them), so the ticket, and
/// then the operator's keystrokes, go to no other user's listener (a
/// process-runtime agent's, a local user's).
async fn connect_checked(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("could not resolve {host} ({e})"))?;
    let me = nix::unistd::geteuid().as_raw();
    let mut why = None;
    for addr in addrs {
        let ip = addr.ip().to_canonical();
        if ip.is_loopback() {
            let at = std::net::SocketAddr::new(ip, port);
            match crate::procfs::tcp_listener_uid(at) {
                Ok(Some(uid)) if uid == me => {}
                Ok(Some(uid)) => {
                    why = Some(format!(
                        "its address is {at} on this host's loopback, where a program of uid {uid} listens, not a hive-c0re (uid {me}): start that node with --dashboard set to an address of its own that the other nodes reach"
                    ));
                    continue;
                }
                Ok(None) => {
                    why = Some(format!(
                        "could not connect (nothing listens at {at}, on this host's loopback)"
                    ));
                    continue;
                }
                Err(e) => {
                    why = Some(format!("could not tell who listens at {at} ({e})"));
                    continue;
                }
            }
        }
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => why = Some(format!("could not connect ({e})")),
        }
    }
    Err(why.unwrap_or_else(|| format!("{host} resolves to no address")))
}

/// The first few KiB of a refusal's body: whatever answers at a node's
/// address may send without end.
async fn answer_start(mut body: hyper::body::Incoming) -> String {
    const KEEP: usize = 4096;
    let mut kept = Vec::new();
    while kept.len() < KEEP {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    kept.extend_from_slice(&data[..data.len().min(KEEP - kept.len())]);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

impl Remote {
    /// Relays input to the home node and its frames back until the shell
    /// ends there, the input closes (the connection closes, which ends the
    /// shell there) or `stop` fires.
    async fn run(
        self,
        mut input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
        stop: CancellationToken,
    ) -> Option<i32> {
        let node = self.node;
        let (mut r, mut w) = tokio::io::split(self.io);
        // Ok when the input ended; the error is why the home node no longer takes it.
        let writer = async {
            while let Some(i) = input.recv().await {
                let bytes = match i {
                    Input::Data(d) => Frame::data(&d),
                    Input::Resize(WinSize { rows, cols }) => Frame::Resize { rows, cols }.encode(),
                };
                if let Err(e) = w.write_all(&bytes).await {
                    return Err(format!(
                        "node {node}, which ran the shell, stopped taking its input ({e}): the shell was cut off"
                    ));
                }
            }
            Ok(())
        };
        let reader = async {
            loop {
                let out = match read_frame(&mut r).await {
                    Ok(Some(Frame::Data(d))) => Output::Data(d),
                    Ok(Some(Frame::Exit(code))) => {
                        let _ = output.send(Output::Exit(code)).await;
                        return Some(code);
                    }
                    Ok(Some(Frame::Closed(why))) => {
                        let _ = output.send(Output::Closed(why)).await;
                        return None;
                    }
                    Ok(Some(Frame::Resize { .. })) | Ok(None) => {
                        let why =
                            format!("the connection to node {node}, which ran the shell, ended");
                        let _ = output.send(Output::Closed(why)).await;
                        return None;
                    }
                    Err(e) => {
                        let why = format!(
                            "the connection to node {node}, which ran the shell, broke ({e})"
                        );
                        let _ = output.send(Output::Closed(why)).await;
                        return None;
                    }
                };
                if output.send(out).await.is_err() {
                    return None;
                }
            }
        };
        // Returning drops the connection, which ends the shell's session on the home node.
        tokio::select! {
            code = reader => code,
            written = writer => {
                if let Err(why) = written {
                    let _ = output.send(Output::Closed(why)).await;
                }
                None
            }
            why = self.gone => {
                let _ = output.send(Output::Closed(why)).await;
                None
            }
            () = stop.cancelled() => {
                let _ = output.send(Output::Closed(STOPPING.to_owned())).await;
                None
            }
        }
    }
}

/// Serves `shell` to a client speaking [`hive_sh4re::shell`] frames on
/// `r`/`w` (host.sock's `shell`, the channel's home end): data both ways,
/// resize from the client, and one exit (or closed) frame. The client
/// closing, or breaking the framing, ends the shell.
pub async fn serve_frames<R, W>(
    shell: Shell,
    r: &mut R,
    w: &mut W,
    stop: CancellationToken,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let shell = shell.run(in_rx, out_tx, stop);
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
                    tracing::debug!("a shell client sent a daemon's frame ({other:?}): closing");
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
        let (_, written) = tokio::join!(shell, writer);
        written
    };
    tokio::pin!(both, reader);
    tokio::select! {
        written = &mut both => return written,
        () = &mut reader => {}
    }
    both.await
}

/// One frame; `Ok(None)` when the other end closed the connection.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A home node that upgrades the channel and then never reads again
    /// (hung, or its link cut while the kernel still answers): the relay
    /// drops it once its bytes stay unread, and says so, instead of waiting
    /// for ever with the operator's terminal frozen.
    /// A home node on `listener` that upgrades the first connection, takes
    /// whatever ticket comes over TLS to `identity` and answers ok.
    async fn upgraded_home(
        listener: tokio::net::TcpListener,
        identity: Identity,
    ) -> tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(
                s.read(&mut b).await.unwrap(),
                1,
                "the relay closed before its request"
            );
            head.push(b[0]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: hive-shell\r\n\r\n",
        )
        .await
        .unwrap();
        let mut tls = identity.accept(s).await.unwrap();
        read_line(&mut tls, 128).await.unwrap();
        answer(&mut tls, None).await.unwrap();
        tls
    }

    /// A grant of request 1 for the holder of `identity`'s certificate.
    fn grant(fingerprint: &str) -> Grant<'_> {
        Grant {
            id: 1,
            ticket: "ticket",
            fingerprint,
        }
    }

    /// A home node that upgrades the channel and then never reads again
    /// (hung, or its link cut while the kernel still answers): the relay
    /// drops it once its bytes stay unread, and says so, instead of waiting
    /// for ever with the operator's terminal frozen.
    #[tokio::test]
    async fn a_relay_drops_a_home_node_that_stops_reading() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = Identity::generate().unwrap();
        let fingerprint = identity.fingerprint().to_owned();
        let home = tokio::spawn(async move {
            let s = upgraded_home(listener, identity).await;
            std::future::pending::<()>().await;
            drop(s);
        });
        let target = Target::parse(&format!("http://{addr}/")).unwrap();
        let io = open(&target, grant(&fingerprint), Duration::from_secs(2))
            .await
            .unwrap();
        let remote = Remote {
            io: Box::new(io),
            node: "beta".into(),
            gone: Box::pin(std::future::pending()),
        };
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let typing = tokio::spawn(async move {
            while in_tx.send(Input::Data(vec![b'x'; 64 * 1024])).await.is_ok() {}
        });
        let ended = tokio::time::timeout(
            Duration::from_secs(90),
            remote.run(in_rx, out_tx, CancellationToken::new()),
        )
        .await;
        assert!(
            ended.is_ok(),
            "the relay still waits on a home node that stopped reading"
        );
        match out_rx.recv().await {
            // The kernel drops the connection: whichever half meets it first says so.
            Some(Output::Closed(why)) => assert!(
                why.starts_with("node beta, which ran the shell, stopped taking its input")
                    || why.starts_with("the connection to node beta, which ran the shell, broke"),
                "{why}"
            ),
            other => panic!("the relay ended without a sentence: {other:?}"),
        }
        typing.abort();
        home.abort();
    }

    /// The home node's heartbeats stopping (`gone`) ends a relay whose
    /// connection stays open and quiet, with the sentence `gone` gives.
    #[tokio::test]
    async fn a_relay_ends_when_its_home_node_is_gone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = Identity::generate().unwrap();
        let fingerprint = identity.fingerprint().to_owned();
        let home = tokio::spawn(async move {
            let mut s = upgraded_home(listener, identity).await;
            // Reads and drops whatever comes, and sends nothing: a shell at rest.
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let target = Target::parse(&format!("http://{addr}/")).unwrap();
        let gone: Gone = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "beta is gone".to_owned()
        });
        let remote = connect("beta", &target, grant(&fingerprint), gone)
            .await
            .unwrap();
        let (_in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            remote.run(in_rx, out_tx, CancellationToken::new()),
        )
        .await;
        assert_eq!(ended, Ok(None), "the relay outlived its home node");
        assert_eq!(
            out_rx.recv().await,
            Some(Output::Closed("beta is gone".into()))
        );
        home.abort();
    }

    #[test]
    fn a_ticket_matches_only_its_own_hash() {
        let t = new_ticket().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_ticket().unwrap());
        let h = ticket_hash(&t);
        assert!(ticket_matches(&t, &h));
        assert!(!ticket_matches(&h, &h), "the hash is no ticket");
        assert!(!ticket_matches(&t[..63], &h));
        assert!(!ticket_matches("", &h));
        assert!(!ticket_matches(&t, ""));
    }
}
