//! The web dashboard: the operator's window onto the hive.
//!
//! As thin as host.sock: every read and action is a `Hive` method and every
//! row a `hive_sh4re::host` type, so both surfaces show and do the same.
//! `pages` serves the pages and `assets` the front end built from `web/`
//! (embedded at compile time); `api` and `actions` are the JSON API, `stats`
//! its telemetry; `sse` is the one live stream; `auth` decides who may do
//! anything at all (a login with the token `token` keeps), and `conns` who
//! may hold a connection before that and for how long. One route is
//! outside that login: `node_shell`, the channel another node opens with a
//! one-time ticket from the store to relay the shell of an agent of this node.

mod actions;
mod api;
mod assets;
mod auth;
mod conns;
mod errors;
mod extract;
mod node_shell;
mod pages;
mod shell;
mod sse;
mod stats;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use auth::{Auth, TOKEN_ENV, TOKEN_HEADER};

use crate::hive::Hive;
use crate::login::{Logins, kept};
use crate::paths::Paths;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub hive: Arc<Hive>,
    pub auth: Arc<Auth>,
    pub hub: Arc<sse::Hub>,
    /// The built front end.
    pub assets: assets::Assets,
}

/// A dashboard whose address is bound but not served yet.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    auth: Auth,
}

impl Bound {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's root URL, `http://ADDR/`, as `Settings::dashboard_home` holds it.
    pub fn home(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// What mints the links that log a browser in (only host.sock hands them out).
    pub fn logins(&self) -> Arc<Logins> {
        self.auth.logins().clone()
    }
}

/// Binds `addr` (failing early if it is taken) and settles the token:
/// `HIVE_DASHBOARD_TOKEN`, or the one kept in the state dir (see `token`).
/// Nothing prints it: the operator gets the login link from `hive-c0re urls`,
/// which leads to `public_url` when there is one and the dashboard is not
/// bound to loopback.
pub async fn bind(addr: &str, paths: &Paths, public_url: Option<&str>) -> anyhow::Result<Bound> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not serve the dashboard on {addr}: pick another --dashboard ADDR, or --no-dashboard"))?;
    let addr = listener
        .local_addr()
        .context("could not read the dashboard's bound address")?;
    let token = kept::settle(paths, std::env::var(TOKEN_ENV).ok().as_deref())?;
    let login_key = kept::settle_login_key(paths)?;
    // The operator follows the link where they reach the dashboard: behind
    // a proxy, at its public URL. A dashboard bound to loopback answers no
    // other host name, so its link stays the local one.
    let public = public_url.filter(|_| !addr.ip().is_loopback());
    let home = public.map_or_else(|| format!("http://{addr}/"), |u| format!("{u}/"));
    let logins = Logins::new(home, addr.port(), token, &login_key);
    let auth = Auth::new(addr.ip().is_loopback(), addr.port(), Arc::new(logins));
    Ok(Bound {
        listener,
        addr,
        auth,
    })
}

/// Serves a bound dashboard until the hive shuts down.
pub fn serve(hive: &Arc<Hive>, bound: Bound) -> tokio::task::JoinHandle<()> {
    let hub = sse::Hub::new();
    let h = hub.clone();
    hive.spawn_essential("dashboard stream", move |hive| sse::run(hive, h.clone()));
    let h = hub.clone();
    hive.spawn_essential("dashboard alarms", move |hive| sse::alarms(hive, h.clone()));
    let ctx = Ctx {
        hive: hive.clone(),
        auth: Arc::new(bound.auth),
        hub,
        assets: assets::Assets::embedded(),
    };
    let app = router(ctx);
    // Both outlive a run of the accept loop: the port stays bound, and the
    // connections still open keep their places.
    let listener = Arc::new(bound.listener);
    let conns = conns::Conns::new(conns::PER_PEER, conns::in_all());
    hive.spawn_essential("dashboard accept loop", move |hive| {
        let tasks = hive.clone();
        conns::serve(
            listener.clone(),
            conns.clone(),
            app.clone(),
            hive.shutdown_token().clone(),
            move |conn| {
                tasks.spawn_task("dashboard connection", conn);
            },
        )
    })
}

/// Every route; see the handlers for what each answers.
pub(crate) fn router(ctx: Ctx) -> Router {
    // Another node's ticket, not the operator's login, opens this one.
    let nodes = Router::new()
        .route("/node/shell/{request}", get(node_shell::open))
        .with_state(ctx.clone());
    Router::new()
        .route("/", get(pages::hive_page))
        .route("/agents/{name}", get(pages::agent_page))
        .route("/assets/{file}", get(pages::asset))
        .route("/api/agents", get(api::agents))
        .route("/api/backoff", get(api::backoff))
        .route("/api/needs_you", get(api::needs_you))
        .route("/api/feed", get(api::feed))
        .route("/api/agents/{name}", get(api::agent))
        .route("/api/agents/{name}/events", get(api::events))
        .route(
            "/api/agents/{name}/messages",
            get(api::agent_messages).post(actions::send),
        )
        .route(
            "/api/agents/{name}/model",
            get(api::model).post(actions::set_model),
        )
        .route("/api/agents/{name}/shell", get(shell::open))
        .route("/api/agents/{name}/schedules", post(actions::schedule_add))
        .route("/api/agents/{name}/budget", post(actions::set_budget))
        .route("/api/agents/{name}/{action}", post(actions::lifecycle))
        .route("/api/operator/messages", get(api::operator_messages))
        .route("/api/approvals", get(api::approvals))
        .route("/api/approvals/{id}/diff", get(api::approval_diff))
        .route("/api/approvals/{id}/approve", post(actions::approve))
        .route("/api/approvals/{id}/deny", post(actions::deny))
        .route("/api/schedules", get(api::schedules))
        .route("/api/secrets", get(api::secrets))
        .route("/api/schedules/{id}/delete", post(actions::schedule_rm))
        .route("/api/questions", get(api::questions))
        .route("/api/questions/{id}/answer", post(actions::answer))
        .route("/api/questions/{id}/cancel", post(actions::cancel_question))
        .route("/api/notifications", get(api::notifications))
        .route("/api/notifications/read", post(actions::read_notifications))
        .route("/api/webhooks", get(api::webhooks))
        .route("/api/stats", get(stats::stats))
        .route("/api/space", get(api::space))
        .route("/api/database", get(api::database))
        .route("/api/stream", get(sse::stream))
        .route("/api/ping", post(actions::ping))
        .fallback(pages::fallback)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            auth::guard,
        ))
        .with_state(ctx)
        .merge(nodes)
}
