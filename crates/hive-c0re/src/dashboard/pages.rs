//! The served pages. The hive and agent pages, their ES modules and CSS all
//! come from `web/` (embedded, see `assets`); what is left here are the few
//! plain pages that must work without the front end or without a login: an
//! error, "log in", "not built".

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use super::Ctx;
use super::assets::content_type;
use super::errors::ApiError;
use super::extract::{parse_name, require_agent};

/// A page of the build (`hive.html`, `agent.html`), or the page that says how to build it.
fn page(ctx: &Ctx, file: &str) -> Response {
    match ctx.assets.get(file) {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(not_built_page())).into_response(),
    }
}

/// `GET /`: the hive page.
pub(crate) async fn hive_page(State(ctx): State<Ctx>) -> Response {
    page(&ctx, "hive.html")
}

/// `GET /agents/{name}`: one agent's page (its script reads the name from the address).
pub(crate) async fn agent_page(State(ctx): State<Ctx>, UrlPath(raw): UrlPath<String>) -> Response {
    let found = match parse_name(&raw) {
        Ok(n) => require_agent(&ctx, &n).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(()) => page(&ctx, "agent.html"),
        Err(e) => error_page(e.status, &capitalized(&e.message)),
    }
}

/// `GET /assets/{file}`: a script, stylesheet or font of the build.
pub(crate) async fn asset(State(ctx): State<Ctx>, UrlPath(file): UrlPath<String>) -> Response {
    if !ctx.assets.is_built() {
        return ApiError::not_found(
            "the dashboard's front end is not built: run cd web && npm ci && npm run build, then build hive-c0re again",
        )
        .into_response();
    }
    // Pages are served at their own addresses, not as assets.
    let kind = content_type(&file).filter(|k| !k.starts_with("text/html"));
    match (kind, ctx.assets.get(&file)) {
        (Some(kind), Some(bytes)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        _ => ApiError::not_found(format!("there is no asset {file:?}")).into_response(),
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `a `b` c` as `a <code>b</code> c`.
fn code_spans(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

/// A page without the front end: a title and a body (trusted HTML).
fn plain_page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · hyperhive</title>
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

/// What `/` answers when the binary was compiled without a front-end build.
pub fn not_built_page() -> String {
    plain_page(
        "The dashboard is not built",
        "<p>hive-c0re is running, but it was compiled before the dashboard's front end was built, \
         so it has no pages to serve.</p>\
         <p>Build the front end, then hive-c0re again, and restart it: \
         <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then \
         <code>cargo build --release</code> (or <code>cargo install --path crates/hive-c0re</code>).</p>",
    )
}

/// What a request without a valid login gets instead of a page: `why` (the
/// refusal's sentence, which says how to log in).
/// What a good login link answers: the landing page, whose script
/// (`login.js`, from the build) keeps `page_key` in this origin's storage
/// and goes on to `next`, the page the link named.
pub fn landing_page(page_key: &str, next: &str) -> String {
    plain_page(
        "Logging in",
        &format!(
            r#"<meta name="hive-page-key" content="{}"><meta name="hive-next" content="{}"><script type="module" src="/assets/login.js"></script><p>Logging in…</p><noscript><p>The dashboard needs JavaScript.</p></noscript>"#,
            escape(page_key),
            escape(next)
        ),
    )
}

pub fn login_page(why: &str) -> String {
    plain_page(
        "Log in to this hive's dashboard",
        &format!(
            "<p>{}.</p><p>The login is kept in this browser (a cookie that pages cannot read) \
             for 30 days, also across restarts of hive-c0re.</p>",
            code_spans(&escape(&capitalized(why)))
        ),
    )
}
