//! The served pages: a small server-rendered shell per page (layout, the
//! token for the page's own requests) plus the ES modules and CSS built from
//! `web/` by `npm ci && npm run build`, read from disk at request time.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use super::Ctx;
use super::errors::ApiError;
use super::extract::parse_name;

/// Environment variable naming the built front end's directory.
pub const WEB_DIR_ENV: &str = "HIVE_WEB_DIR";
/// Where packages install the built front end.
pub const SYSTEM_WEB_DIR: &str = "/usr/share/hyperhive/web";
/// A file every build has; a directory without it is not a build.
const MARKER: &str = "hive.js";

/// The first of `candidates` that holds a build (checked per request, so a
/// build made while hive-c0re runs is picked up on reload).
pub fn web_dir(candidates: &[PathBuf]) -> Option<&PathBuf> {
    candidates.iter().find(|d| d.join(MARKER).is_file())
}

/// Where the built front end may be: `HIVE_WEB_DIR`, else `web/dist` of the source
/// tree the binary was built in (`<repo>/target/<profile>/hive-c0re`), else the system copy.
pub fn web_dir_candidates() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os(WEB_DIR_ENV) {
        return vec![PathBuf::from(d)];
    }
    let mut v = vec![];
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(bin_dir.join("../../web/dist"));
    }
    v.push(PathBuf::from(SYSTEM_WEB_DIR));
    v
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page around a body; `module` is the page's script in the build.
fn shell(ctx: &Ctx, title: &str, module: &str, body_attrs: &str, body: &str) -> Response {
    if web_dir(&ctx.web_dirs).is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(not_built_page(&ctx.web_dirs)),
        )
            .into_response();
    }
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="hive-token" content="{token}">
<title>{title} · hyperhive</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css">
<script type="module" src="/assets/{module}"></script>
</head>
<body {body_attrs}>
{body}
<div id="toasts" class="toasts" aria-live="polite"></div>
</body>
</html>
"#,
        token = escape(ctx.auth.token()),
        title = escape(title),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

fn header_bar(crumbs: &str) -> String {
    format!(
        r#"<header class="top"><a class="brand" href="/">⬡ hyperhive</a><nav class="crumbs">{crumbs}</nav><span class="spacer"></span><span id="conn" class="conn">connecting…</span></header>
<div id="banner" class="banner" hidden></div>"#
    )
}

/// `GET /`: the hive page.
pub(crate) async fn hive_page(State(ctx): State<Ctx>) -> Response {
    let body = format!(
        r#"{header}
<main class="hive">
  <section class="panel agents-panel">
    <h2>Agents <span id="agent-count" class="count"></span></h2>
    <div class="table-scroll"><table id="agents" class="agents">
      <thead><tr><th>agent</th><th>state</th><th>last turn</th><th class="num-col" title="turns per minute over the last hour">turns/min</th><th class="num-col" title="95th percentile of turn duration over the last hour">p95 turn</th><th>model</th><th class="inbox-col">inbox</th><th class="actions-col">actions</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="no-agents" class="empty" hidden>No agents yet. Create one with <code>hive-c0re spawn NAME</code>.</p>
  </section>
  <div class="columns">
    <div class="column">
      <section class="panel">
        <h2>Approvals <span id="approval-count" class="count"></span></h2>
        <div id="approvals"><p class="empty">Nothing to approve.</p></div>
      </section>
      <section class="panel">
        <h2>Operator questions <span id="question-count" class="count"></span></h2>
        <div id="questions"><p class="empty">No open questions.</p></div>
      </section>
    </div>
    <div class="column">
      <section class="panel">
        <h2>Message an agent</h2>
        <form id="send-form" class="send-form">
          <label>to <select id="send-to" name="to" required></select></label>
          <textarea id="send-body" name="body" rows="3" placeholder="Write to the agent as the operator…" required></textarea>
          <button type="submit" class="primary">Send</button>
        </form>
      </section>
      <section class="panel">
        <h2>Operator inbox</h2>
        <ol id="inbox" class="messages"><li class="empty">No messages yet.</li></ol>
      </section>
    </div>
  </div>
</main>"#,
        header = header_bar(r#"<span>hive</span>"#)
    );
    shell(&ctx, "hive", "hive.js", r#"data-page="hive""#, &body)
}

/// The agent page's telemetry panel; `web/src/telemetry.js` fills it from `/api/stats`.
const TELEMETRY_PANEL: &str = r#"<section id="telemetry" class="panel telemetry">
    <div class="tele-head">
      <h2>Telemetry</h2>
      <span id="stats-stuck"></span>
      <span class="spacer"></span>
      <label class="dim">window <select id="stats-window">
        <option value="15m">15 min</option><option value="1h" selected>1 hour</option>
        <option value="6h">6 hours</option><option value="24h">24 hours</option><option value="7d">7 days</option>
      </select></label>
    </div>
    <div id="stats-figures" class="figures"></div>
    <div class="charts">
      <figure class="chart"><figcaption>turn duration</figcaption><div id="chart-duration" class="chart-box"></div></figure>
      <figure class="chart"><figcaption>tool calls per turn</figcaption><div id="chart-tools" class="chart-box"></div></figure>
      <figure class="chart"><figcaption>inbox depth at turn end</figcaption><div id="chart-inbox" class="chart-box"></div></figure>
      <figure class="chart"><figcaption>notes size</figcaption><div id="chart-notes" class="chart-box"></div></figure>
    </div>
    <div class="breakdowns">
      <div><h3>exits</h3><div id="stats-exits"></div></div>
      <div><h3>tool usage</h3><div id="stats-tools"></div></div>
      <div><h3>sent per turn, by recipient</h3><div id="stats-sent"></div></div>
      <div><h3>received per turn, by sender</h3><div id="stats-received"></div></div>
    </div>
  </section>"#;

/// `GET /agents/{name}`: one agent's page.
pub(crate) async fn agent_page(State(ctx): State<Ctx>, UrlPath(raw): UrlPath<String>) -> Response {
    let name = match parse_name(&raw) {
        Ok(n) => n,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.message),
    };
    match ctx.hive.store.agent(name.as_str()) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                &format!("There is no agent {name:?} in this hive."),
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ApiError::internal(e).message,
            );
        }
    }
    let n = escape(name.as_str());
    let body = format!(
        r#"{header}
<main class="agent">
  <div class="agent-head">
    <h1>{n}</h1>
    <span id="badge" class="badge">…</span>
    <span id="flags" class="flags"></span>
    <span class="spacer"></span>
    <button id="btn-cancel" type="button" hidden>■ Cancel turn</button>
    <button id="btn-compact" type="button" hidden>📦 Compact</button>
    <button id="btn-pause" type="button">⏸ Pause</button>
    <button type="button" data-action="start">Start</button>
    <button type="button" data-action="stop">Stop</button>
    <button type="button" data-action="restart">Restart</button>
    <button type="button" data-action="kill" class="danger">Kill</button>
  </div>
  <div class="agent-grid">
    <section class="term-wrap">
      <div id="term" class="term" tabindex="0">
        <div class="term-top"><button id="load-earlier" type="button" class="link">↑ load earlier</button></div>
        <div id="rows" class="rows"></div>
      </div>
      <button id="new-chip" class="chip" type="button" hidden>↓ 0 new</button>
      <form id="term-form" class="term-input">
        <span class="prompt">›</span>
        <input id="term-input" autocomplete="off" spellcheck="false" placeholder="message {n} as the operator, or /help">
      </form>
      <section id="shell-panel" class="panel shell-panel"></section>
    </section>
    <aside class="side">
      <section class="panel">
        <h2>Model</h2>
        <div id="model" class="model"></div>
        <form id="model-form" class="model-form">
          <input id="model-input" list="model-names" placeholder="e.g. sonnet" autocomplete="off">
          <datalist id="model-names"><option value="haiku"><option value="sonnet"><option value="opus"></datalist>
          <button type="submit">Set</button>
          <button type="button" id="model-clear">Use config</button>
        </form>
      </section>
      <section class="panel">
        <h2>Last turn</h2>
        <dl id="last-turn" class="facts"><dt>—</dt><dd>no turn yet</dd></dl>
      </section>
      <section class="panel">
        <h2>Scheduled prompts</h2>
        <ol id="schedules" class="messages schedules"><li class="empty">Nothing scheduled.</li></ol>
        <form id="schedule-form" class="model-form schedule-form">
          <input id="schedule-when" class="when" placeholder="30m, every:1h, cron:…" title="30s or 2h (once, from now), an RFC 3339 time, every:15m, or cron:EXPR (sec min hour day month weekday)" autocomplete="off" required>
          <input id="schedule-text" placeholder="what to tell {n}" autocomplete="off" required>
          <button type="submit">Add</button>
        </form>
      </section>
      <section class="panel">
        <h2>Inbox</h2>
        <ol id="inbox" class="messages"><li class="empty">No messages yet.</li></ol>
      </section>
    </aside>
  </div>
  {telemetry}
</main>"#,
        header = header_bar(&format!(
            r#"<a href="/">hive</a><span class="sep">/</span><span>{n}</span>"#
        )),
        telemetry = TELEMETRY_PANEL,
    );
    shell(
        &ctx,
        name.as_str(),
        "agent.js",
        &format!(r#"data-page="agent" data-agent="{n}""#),
        &body,
    )
}

/// `GET /assets/{file}`: a file of the build (flat names only, so no path escapes the directory).
pub(crate) async fn asset(State(ctx): State<Ctx>, UrlPath(file): UrlPath<String>) -> Response {
    let ok_name = !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let kind = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("woff2") => "font/woff2",
        _ => "",
    };
    let Some(dir) = web_dir(&ctx.web_dirs) else {
        return ApiError::not_found(
            "the dashboard's front end is not built: run npm ci && npm run build in web/",
        )
        .into_response();
    };
    if !ok_name || kind.is_empty() {
        return ApiError::not_found(format!("there is no asset {file:?}")).into_response();
    }
    match tokio::fs::read(dir.join(&file)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => ApiError::not_found(format!("there is no asset {file:?}")).into_response(),
    }
}

/// Anything unrouted: JSON under `/api/`, a page elsewhere.
pub(crate) async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return super::errors::not_found().await.into_response();
    }
    error_page(
        StatusCode::NOT_FOUND,
        &format!("There is no page {:?} here.", uri.path()),
    )
}

fn plain_page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · hyperhive</title>
<style>body{{background:#0f1117;color:#d8dee9;font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:4em auto;padding:0 1em}}
code{{background:#1b1f2a;padding:.1em .4em;border-radius:4px}}a{{color:#88c0d0}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"#
    )
}

fn error_page(status: StatusCode, sentence: &str) -> Response {
    let body = format!(
        r#"<p>{}</p><p><a href="/">Back to the hive</a></p>"#,
        escape(sentence)
    );
    (status, Html(plain_page(&status.to_string(), &body))).into_response()
}

/// What `/` answers when `web/dist` is missing.
pub fn not_built_page(candidates: &[PathBuf]) -> String {
    let looked: Vec<String> = candidates
        .iter()
        .map(|p| format!("<li><code>{}</code></li>", escape(&p.display().to_string())))
        .collect();
    plain_page(
        "The dashboard is not built",
        &format!(
            "<p>hive-c0re is running, but the dashboard's front end has not been built.</p>\
             <p>Build it once: <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then reload this page \
             (or point <code>{WEB_DIR_ENV}</code> at a built <code>dist</code> directory).</p>\
             <p>Looked in:</p><ul>{}</ul>",
            looked.join("")
        ),
    )
}

/// What a page answers without the token when reading needs it.
pub fn token_needed_page() -> String {
    plain_page(
        "This dashboard needs its token",
        "<p>This dashboard is not on loopback (or has <code>HIVE_DASHBOARD_TOKEN</code> set), so it needs its token.</p>\
         <p>Open <code>/?token=TOKEN</code> once; the browser keeps it in a cookie. The token is \
         <code>HIVE_DASHBOARD_TOKEN</code>, or the one <code>hive-c0re serve</code> printed at start.</p>",
    )
}
