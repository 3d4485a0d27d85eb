//! `GET /node/shell/{request}`: the home end of the node-to-node shell
//! channel (`crate::node_shell`), on the dashboard's listener but outside
//! its login: another node presents the one-time ticket of a shell request
//! this node granted, in `X-Hive-Node-Ticket`, with `Upgrade: hive-shell`.
//! No login cookie or operator token opens it, nor is one needed.
//!
//! Refused before any upgrade: no upgrade asked (400), no ticket (401), a
//! ticket that opens nothing (403, `Hive::node_shell` says which checks).
//! Then `101 Switching Protocols` and the frames of `hive_sh4re::shell`;
//! the connection closing ends the shell's whole session.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::Ctx;
use super::errors::ApiError;
use crate::error::Error;
use crate::node_shell::{PROTOCOL, Shell, TICKET_HEADER, serve_frames};

/// Checks the ticket, opens the shell, then upgrades the connection to carry it.
pub(crate) async fn open(
    State(ctx): State<Ctx>,
    Path(raw): Path<String>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !upgrade {
        return ApiError::bad(format!(
            "this route is the node-to-node shell channel (Upgrade: {PROTOCOL}); it serves hive-c0re nodes, not browsers"
        ))
        .into_response();
    }
    let Some(ticket) = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no shell without a ticket: only a node this node granted a shell request can open one",
        )
        .into_response();
    };
    let Ok(id) = raw.parse::<i64>() else {
        return ApiError::new(StatusCode::FORBIDDEN, "no shell: that is no request id")
            .into_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad("this connection cannot be upgraded").into_response();
    };
    let (session, asker_gone) = match ctx.hive.node_shell(id, &ticket).await {
        Ok(s) => {
            super::conns::prove(&req);
            s
        }
        Err(Error::Refused(m)) => return ApiError::forbidden(m).into_response(),
        Err(e) => {
            tracing::error!(request = id, "could not open a shell for another node: {e}");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not open the shell: {e}"),
            )
            .into_response();
        }
    };
    let stop = ctx.hive.shutdown_token().clone();
    ctx.hive.spawn_task(async move {
        // A failed upgrade drops the session, whose guard ends the shell.
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(request = id, "a node shell's upgrade failed: {e}");
                return;
            }
        };
        let (mut r, mut w) = tokio::io::split(io);
        // An asker that froze or was cut off may never close the connection
        // (its kernel still answers, or nothing comes back to time out on):
        // its heartbeats ending ends the shell, which the drop closes.
        tokio::select! {
            served = serve_frames(Shell::Local(session), &mut r, &mut w, stop) => {
                if let Err(e) = served {
                    tracing::debug!(request = id, "a node shell's connection ended: {e}");
                }
            }
            why = asker_gone => tracing::warn!(request = id, "{why}"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}
