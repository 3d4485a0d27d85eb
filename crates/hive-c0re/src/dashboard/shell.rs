//! `GET /api/agents/{name}/shell`: the agent page's shell, a WebSocket
//! attached to a PTY in the agent's container (see `crate::shell`).
//!
//! Opening one is as good as root in the container, so the handshake must
//! carry the dashboard's login (the cookie a page's WebSocket sends, or the
//! `X-Hive-Token` header): the guard refuses it otherwise (401), and this
//! handler checks again, since a GET that upgrades is not a read. An
//! `Origin`, when sent, must be the dashboard's own (403). Both before the
//! upgrade.
//!
//! Messages, after the upgrade:
//! - page → hive-c0re: binary = bytes typed; text = `{"type":"resize","rows":R,"cols":C}`.
//! - hive-c0re → page: binary = the PTY's output; text = `{"type":"exit","code":N}`
//!   when the shell exited, or `{"type":"error","message":"..."}` when it could
//!   not open (agent not running) or hive-c0re is stopping; then a close.
//!
//! `?rows=R&cols=C` give the first size. The socket closing (the page went
//! away) ends the shell's whole session. An agent of another node gets the
//! same page: its node runs the shell, this one relays it (`crate::node_shell`).

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hive_sh4re::AgentName;
use hive_sh4re::dashboard::{ShellControl, ShellNotice, ShellQuery};
use hive_sh4re::shell::DEFAULT_TERM;
use tokio::sync::mpsc;

use super::Ctx;
use super::auth::{Auth, check_origin};
use super::errors::ApiError;
use super::extract::{Q, parse_name, require_agent};
use crate::error::Error;
use crate::shell::{Input, Output, WinSize};

/// Largest message a page may send (typing and pastes).
const MAX_MESSAGE: usize = 1024 * 1024;
/// What the page is told when a logout closes its shell.
const LOGGED_OUT: &str = "the operator logged every browser out of the dashboard (hive-c0re logout): this shell was closed";

/// `GET /api/agents/{name}/shell`: checks the token and the origin, then upgrades.
pub(crate) async fn open(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
    Q(opening): Q<ShellQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = check(&ctx.auth, &headers, uri.query()) {
        return e.into_response();
    }
    let name = match parse_name(&raw) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = require_agent(&ctx, &name).await {
        return e.into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::bad(format!(
                "this route is a WebSocket ({}): open it from the agent's page",
                e.body_text()
            ))
            .into_response();
        }
    };
    let size = WinSize::new(opening.rows, opening.cols);
    upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(ctx, name, size, socket))
}

/// Refused unless the request is logged in (with its page key: a
/// WebSocket sends it as `key=` in `query`) and, if it says where it comes
/// from, comes from here.
fn check(auth: &Auth, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    if let Err(why) = auth.check(headers, query, true) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, why.sentence()));
    }
    check_origin(headers).map_err(|_| {
        ApiError::forbidden(
            "refused a shell for another origin: open the shell from the dashboard's own page",
        )
    })
}

/// Runs one shell for one socket.
async fn serve(ctx: Ctx, name: AgentName, size: WinSize, mut socket: WebSocket) {
    let session = match ctx.hive.open_shell(&name, size, Some(DEFAULT_TERM)).await {
        Ok(s) => s,
        Err(e) => {
            let message = match e {
                Error::Refused(m) => m,
                other => {
                    tracing::error!(agent = %name, "could not open a shell: {other}");
                    format!("could not open a shell in {name}'s container: {other}")
                }
            };
            let _ = socket.send(notice(ShellNotice::Error { message })).await;
            let _ = socket.send(close()).await;
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let shell = session.run(in_rx, out_tx, ctx.hive.shutdown_token().clone());
    // A logout ends the shell as the page going away does (its input
    // closes), and the page is told why.
    let mut logouts = ctx.auth.logins().logouts();
    let logged_out = logouts.clone();
    let writer = async {
        while let Some(out) = out_rx.recv().await {
            let msg = match out {
                Output::Data(d) => Message::Binary(d.into()),
                Output::Exit(code) => notice(ShellNotice::Exit { code }),
                Output::Closed(why) => notice(ShellNotice::Error { message: why }),
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
        if logged_out.has_changed().unwrap_or(false) {
            let message = format!("{LOGGED_OUT}; {}", super::auth::how_to_log_in());
            let _ = sink.send(notice(ShellNotice::Error { message })).await;
        }
        let _ = sink.send(close()).await;
    };
    let reader = async move {
        loop {
            let msg = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg)) => msg,
                    _ => return,
                },
                Ok(()) = logouts.changed() => return,
            };
            let input = match msg {
                Message::Binary(b) => Input::Data(b.to_vec()),
                Message::Text(t) => match serde_json::from_str::<ShellControl>(t.as_str()) {
                    Ok(ShellControl::Resize { rows, cols }) => {
                        Input::Resize(WinSize::new(Some(rows), Some(cols)))
                    }
                    Err(e) => {
                        tracing::debug!("ignoring a shell control message: {e}");
                        continue;
                    }
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
    };
    // The page going away ends the reader, which ends the shell, which ends the writer.
    let both = async {
        tokio::join!(shell, writer);
    };
    tokio::pin!(both, reader);
    tokio::select! {
        () = &mut both => return,
        () = &mut reader => {}
    }
    both.await;
}

/// A notice to the page, as a text frame.
fn notice(n: ShellNotice) -> Message {
    let json = serde_json::to_string(&n).expect("a shell notice always serializes");
    Message::Text(Utf8Bytes::from(json))
}

fn close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from(""),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::auth::tests::{auth, headers, login};

    #[test]
    fn a_shell_needs_the_login_and_the_own_origin() {
        let auth = auth(7878, "t0k");
        let (login, key) = login(&auth);
        let key_query = format!("rows=24&key={key}");
        let keyed = Some(key_query.as_str());
        let host = ("host", "127.0.0.1:7878");
        let own = ("origin", "http://127.0.0.1:7878");
        let ok = |h: &[(&'static str, &str)]| check(&auth, &headers(h), keyed).is_ok();
        assert!(ok(&[host, own, ("cookie", &login)]), "cookie");
        assert!(
            check(&auth, &headers(&[host, own, ("cookie", &login)]), None).is_err(),
            "the cookie without its page key"
        );
        assert!(ok(&[host, ("x-hive-token", "t0k")]), "header, no Origin");
        assert!(!ok(&[host, own]), "no login");
        assert!(
            !ok(&[host, own, ("cookie", &login[..login.len() - 1])]),
            "a prefix of the login"
        );
        assert!(
            !ok(&[host, own, ("cookie", "hive_login_7878=")]),
            "an empty login"
        );
        assert!(
            !ok(&[host, own, ("cookie", "hive_login_7878=t0k")]),
            "the token as a login"
        );
        let e = check(&auth, &headers(&[host, own]), keyed).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.message.contains("hive-c0re urls"), "{}", e.message);
        let e = check(
            &auth,
            &headers(&[
                host,
                ("origin", "http://evil.example"),
                ("x-hive-token", "t0k"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("another origin"), "{}", e.message);
    }
}
