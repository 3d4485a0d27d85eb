//! Route-level tests: the router over a real `Hive` (in-memory store, process runtime).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hive_sh4re::agent::ExitClass;
use hive_sh4re::config::AgentConfig;
use hive_sh4re::event::EventKind;
use hive_sh4re::{AgentName, Mailbox};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::assets::Assets;
use super::{Auth, Ctx, router, sse};
use crate::hive::Hive;

const HOST: &str = "127.0.0.1:7878";

struct Fixture {
    _dir: tempfile::TempDir,
    hive: Arc<Hive>,
    ctx: Ctx,
}

/// A front end as `npm run build` makes it, small.
const BUILT: &[(&str, &[u8])] = &[
    ("agent.html", b"<!doctype html><title>agent</title>"),
    ("hive.html", b"<!doctype html><title>hive</title>"),
    ("hive.js", b"export {}"),
];

fn fixture(auth: Auth, assets: Assets) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let hive = Hive::for_tests(dir.path(), Some(format!("http://{HOST}/")));
    let ctx = Ctx {
        hive: hive.clone(),
        auth: Arc::new(auth),
        hub: sse::Hub::new(),
        assets,
    };
    Fixture {
        _dir: dir,
        hive,
        ctx,
    }
}

/// A loopback dashboard on port 7878 with the token "t0k" and a front end.
fn loopback() -> Fixture {
    fixture(super::auth::tests::auth(7878, "t0k"), Assets::of(BUILT))
}

/// The cookie and page key of a browser logged in to [`loopback`]'s dashboard.
fn logged_in() -> (String, String) {
    static ONE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    ONE.get_or_init(|| super::auth::tests::login(&super::auth::tests::auth(7878, "t0k")))
        .clone()
}

/// An agent row, without starting it (the supervisor is not under test).
async fn add_agent(hive: &Hive, name: &str) {
    let toml = AgentConfig::default().to_toml();
    hive.add_stopped(&AgentName::parse(name).unwrap(), &toml)
        .await
        .unwrap();
}

/// Alice's inbox.
fn alice() -> Mailbox {
    Mailbox::Agent(AgentName::parse("alice").unwrap())
}

/// A GET by a logged-in client.
fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, HOST)
        .header(header::COOKIE, logged_in().0)
        .header("x-hive-key", logged_in().1)
        .body(Body::empty())
        .unwrap()
}

/// A GET by a client that did not log in.
fn anon_get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap()
}

fn post(uri: &str, token: Option<&str>, json: &str) -> Request<Body> {
    let mut r = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header("x-hive-token", t);
    }
    r.body(Body::from(json.to_owned())).unwrap()
}

async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, String) {
    let resp = router(f.ctx.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_owned()
}

#[tokio::test]
async fn posts_need_the_token() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let (s, b) = call(
        &f,
        post("/api/agents/alice/messages", None, r#"{"body":"hi"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(error_of(&b).contains("hive-c0re urls"), "{b}");
    let (s, _) = call(
        &f,
        post(
            "/api/agents/alice/messages",
            Some("wrong"),
            r#"{"body":"hi"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/messages",
            Some("t0k"),
            r#"{"body":"hi"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(f.hive.inbox_depth(&alice()).await.unwrap(), 1);
    let cookie = Request::post("/api/agents/alice/messages")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, logged_in().0)
        .header("x-hive-key", logged_in().1)
        .body(Body::from(r#"{"body":"by cookie"}"#))
        .unwrap();
    assert_eq!(call(&f, cookie).await.0, StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_posts_are_refused() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let mut req = post(
        "/api/agents/alice/messages",
        Some("t0k"),
        r#"{"body":"hi"}"#,
    );
    req.headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    let (s, b) = call(&f, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(error_of(&b).contains("cross-origin"), "{b}");
    assert_eq!(f.hive.inbox_depth(&alice()).await.unwrap(), 0);
    let mut same = post(
        "/api/agents/alice/messages",
        Some("t0k"),
        r#"{"body":"hi"}"#,
    );
    same.headers_mut()
        .insert(header::ORIGIN, format!("http://{HOST}").parse().unwrap());
    assert_eq!(call(&f, same).await.0, StatusCode::OK);
}

#[tokio::test]
async fn loopback_answers_only_loopback_hosts() {
    let f = loopback();
    let req = Request::get("/api/agents")
        .header(header::HOST, "rebound.evil.example:7878")
        .body(Body::empty())
        .unwrap();
    let (s, b) = call(&f, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        error_of(&b).contains("answers only requests for localhost"),
        "{b}"
    );
    let ok = Request::get("/api/agents")
        .header(header::HOST, "localhost:7878")
        .header("x-hive-token", "t0k")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&f, ok).await.0, StatusCode::OK);
}

#[tokio::test]
async fn names_in_urls_are_validated() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    for (uri, needle) in [
        (
            "/api/agents/Alice/events",
            "must start with a lowercase letter",
        ),
        (
            "/api/agents/..%2Fetc/events",
            "must start with a lowercase letter",
        ),
        ("/api/agents/a%2Fb", "only a-z, 0-9 and '-' are allowed"),
        ("/api/agents/operator/model", "reserved"),
        ("/api/stream?agent=x%00y", "only a-z"),
    ] {
        let (s, b) = call(&f, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {b}");
        assert!(error_of(&b).contains(needle), "{uri}: {b}");
    }
    let (s, b) = call(&f, post("/api/agents/Bad!/start", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = call(&f, get("/api/agents/ghost/events")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("no agent \"ghost\""), "{b}");
    let (s, _) = call(&f, post("/api/agents/ghost/kill", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = call(&f, get("/agents/..%2Fx")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("must start with a lowercase letter"), "{b}");
    assert_eq!(
        call(&f, get("/agents/ghost")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_is_400_and_refused_state_409() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/messages",
            Some("t0k"),
            r#"{"body":"   "}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("empty"), "{b}");
    let (s, b) = call(&f, post("/api/agents/alice/messages", Some("t0k"), "{nope")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    error_of(&b);
    let (s, b) = call(&f, post("/api/agents/alice/fly", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("no agent action \"fly\""), "{b}");
    let (s, b) = call(&f, get("/api/agents/alice/events?since=x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    error_of(&b);

    // Compacting a stopped agent is a refused state.
    let (s, b) = call(&f, post("/api/agents/alice/compact", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(error_of(&b).contains("not running"), "{b}");

    // An approval is decided once.
    let bob = AgentName::parse("bob").unwrap();
    let id = f.hive.request_spawn(&bob, None, None, None).await.unwrap();
    let (s, b) = call(
        &f,
        post(&format!("/api/approvals/{id}/deny"), Some("t0k"), ""),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        &f,
        post(
            &format!("/api/approvals/{id}/deny"),
            Some("t0k"),
            r#"{"note":"again"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(error_of(&b).contains("decided already"), "{b}");
    assert_eq!(
        call(&f, post("/api/approvals/999/approve", Some("t0k"), ""))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, b) = call(&f, post("/api/approvals/x/approve", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("not an id"), "{b}");
}

#[tokio::test]
async fn schedules_are_added_listed_and_removed() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let body = r#"{"when":"1h","text":"check in"}"#;
    let (s, _) = call(&f, post("/api/agents/alice/schedules", None, body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "adding needs the token");
    let (s, b) = call(&f, post("/api/agents/alice/schedules", Some("t0k"), body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = serde_json::from_str::<serde_json::Value>(&b).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (s, b) = call(&f, get("/api/schedules")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let list: Vec<hive_sh4re::host::Schedule> = serde_json::from_str(&b).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id, list[0].agent.as_str(), list[0].when.as_str()),
        (id, "alice", "1h")
    );
    assert_eq!(
        (list[0].text.as_str(), list[0].created_by.as_str()),
        ("check in", "operator")
    );
    assert_eq!(
        f.hive
            .status_row(&"alice".parse().unwrap())
            .await
            .unwrap()
            .pending_reminders,
        1
    );

    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/schedules",
            Some("t0k"),
            r#"{"when":"soon","text":"x"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("is not a schedule time"), "{b}");
    assert!(error_of(&b).contains("every:15m"), "{b}");

    let del = format!("/api/schedules/{id}/delete");
    let (s, _) = call(&f, post(&del, None, "")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "removing needs the token");
    let (s, b) = call(&f, post(&del, Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = call(&f, get("/api/schedules")).await;
    assert_eq!(b, "[]");
    let (s, b) = call(&f, post(&del, Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("there is no schedule"), "{b}");
}

#[tokio::test]
async fn compact_notes_of_a_stopped_agent_is_refused() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let (s, _) = call(&f, post("/api/agents/alice/compact-notes", None, "")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = call(&f, post("/api/agents/alice/compact-notes", Some("t0k"), "")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(
        error_of(&b).contains("alice is not running: start it with hive-c0re start alice"),
        "{b}"
    );
}

#[tokio::test]
async fn model_override_and_operator_notes() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/model",
            Some("t0k"),
            r#"{"model":"sonnet"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["model"]["override_model"], "sonnet");
    let (s, _) = call(
        &f,
        post(
            "/api/agents/alice/model",
            Some("t0k"),
            r#"{"model":"default"}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = call(&f, get("/api/agents/alice/model")).await;
    assert!(!b.contains("override_model"), "{b}");
    let (_, b) = call(&f, get("/api/agents/alice/events")).await;
    let events: Vec<hive_sh4re::host::Event> = serde_json::from_str(&b).unwrap();
    let commands: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "operator")
        .map(|e| e.payload["command"].clone())
        .collect();
    assert_eq!(commands, ["/model sonnet", "/model default"]);
}

#[tokio::test]
async fn reading_the_operator_inbox_does_not_acknowledge_it() {
    let f = loopback();
    f.hive
        .send(&Mailbox::System, &Mailbox::Operator, "hello operator")
        .await
        .unwrap();
    let (s, b) = call(&f, get("/api/operator/messages")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.contains("hello operator"), "{b}");
    assert_eq!(f.hive.inbox_depth(&Mailbox::Operator).await.unwrap(), 1);
}

#[tokio::test]
async fn every_request_needs_a_login_and_the_link_sets_a_cookie() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    // Nothing without a login: no page, no asset, no data, no stream, no shell; never the token.
    for uri in [
        "/",
        "/agents/alice",
        "/assets/hive.js",
        "/api/agents",
        "/api/stream",
        "/api/agents/alice/shell",
        "/nowhere",
    ] {
        let (s, b) = call(&f, anon_get(uri)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {b}");
        assert!(!b.contains("t0k"), "{uri} shows the token: {b}");
        assert!(b.contains("hive-c0re urls"), "{uri}: {b}");
        assert!(b.contains("not logged in"), "{uri}: {b}");
    }
    // A login from before the token changed is told so.
    let stale = Request::get("/")
        .header(header::HOST, HOST)
        .header(
            header::COOKIE,
            super::auth::tests::login_cookie(&super::auth::tests::auth(7878, "old")),
        )
        .body(Body::empty())
        .unwrap();
    let (s, b) = call(&f, stale).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains("token changed since it logged in"), "{b}");
    assert!(
        !b.contains("loopback"),
        "the reason is the login, not the bind: {b}"
    );

    // A login link: the cookie, and a landing page that keeps the page key
    // and goes on to the page without the code in its address.
    let link = f.ctx.auth.logins().link().unwrap();
    let query = &link[link.find('?').unwrap()..];
    let resp = router(f.ctx.clone())
        .oneshot(anon_get(&format!("/agents/alice{query}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The cookie of before one-time links held the token: it is cleared.
    assert!(
        resp.headers().get_all(header::SET_COOKIE).iter().any(|v| v
            .to_str()
            .unwrap()
            .starts_with("hive_token_7878=; Path=/; Max-Age=0")),
        "{:?}",
        resp.headers()
    );
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let landing = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        landing.contains(r#"<meta name="hive-next" content="/agents/alice">"#)
            && landing.contains(r#"<script type="module" src="/assets/login.js">"#)
            && !landing.contains("t0k"),
        "{landing}"
    );
    assert!(
        cookie.starts_with("hive_login_7878=")
            && !cookie.contains("t0k")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // Good once: the same link again (from the browser's history) is no login.
    let (s, b) = call(&f, anon_get(&format!("/{query}"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains("login link was used before"), "{b}");
    let (s, _) = call(&f, anon_get("/?login=t0k")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the token is no login code");
    assert_eq!(call(&f, get("/api/agents")).await.0, StatusCode::OK);

    // Not loopback: any Host is fine, the token is what counts.
    let logins =
        crate::login::Logins::new("http://hive.example/".into(), 7878, "sesame".into(), "k");
    let f = fixture(
        Auth::new(false, 7878, std::sync::Arc::new(logins)),
        Assets::of(BUILT),
    );
    let elsewhere = |token: Option<&str>| {
        let mut r = Request::get("/api/agents").header(header::HOST, "hive.example");
        if let Some(t) = token {
            r = r.header("x-hive-token", t);
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(call(&f, elsewhere(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&f, elsewhere(Some("sesame"))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_answer_forbids_framing_and_inline_script() {
    let f = loopback();
    for req in [
        get("/"),
        anon_get("/"),
        get("/api/agents"),
        get("/assets/hive.js"),
    ] {
        let uri = req.uri().to_string();
        let resp = router(f.ctx.clone()).oneshot(req).await.unwrap();
        let h = resp.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
        let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src"));
        assert_eq!(
            scripts.map(str::trim),
            Some("script-src 'self'"),
            "{uri}: {csp}"
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{uri}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
    }
}

#[tokio::test]
async fn pages_come_from_the_build_or_say_how_to_build() {
    let f = fixture(super::auth::tests::auth(7878, "t0k"), Assets::of(&[]));
    let (s, b) = call(&f, get("/")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("npm ci &amp;&amp; npm run build"), "{b}");
    assert!(b.contains("cargo install --path crates/hive-c0re"), "{b}");
    let (s, b) = call(&f, get("/assets/hive.js")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("npm run build"), "{b}");

    let f = loopback();
    add_agent(&f.hive, "alice").await;
    assert_eq!(
        call(&f, get("/")).await,
        (StatusCode::OK, "<!doctype html><title>hive</title>".into())
    );
    assert_eq!(
        call(&f, get("/agents/alice")).await,
        (StatusCode::OK, "<!doctype html><title>agent</title>".into())
    );
    let (s, b) = call(&f, get("/assets/hive.js")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "export {}"));
    for missing in [
        "/assets/..%2Fhive.db",
        "/assets/.hidden.js",
        "/assets/hive.html",
        "/assets/nope.js",
    ] {
        assert_eq!(
            call(&f, get(missing)).await.0,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
}

#[tokio::test]
async fn stream_says_hello_and_counts_viewers() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let resp = router(f.ctx.clone())
        .oneshot(get("/api/stream?agent=alice"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(
        text.contains("event: hello") && text.contains(r#""agent":"alice""#),
        "{text}"
    );
    assert_eq!(f.ctx.hub.viewers(), 1);
    drop(body);
    assert_eq!(f.ctx.hub.viewers(), 0);
}

#[tokio::test]
async fn stream_carries_new_events_to_the_agents_page() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    tokio::spawn(sse::run(f.hive.clone(), f.ctx.hub.clone()));
    tokio::task::yield_now().await;
    let resp = router(f.ctx.clone())
        .oneshot(get("/api/stream?agent=alice"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    let alice = hive_sh4re::AgentName::parse("alice").unwrap();
    f.hive
        .add_events(
            &alice,
            &[(EventKind::Stream, r#"{"type":"result"}"#.into())],
        )
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    assert!(
        text.starts_with("event: events\n") && text.contains(r#""kind":"stream""#),
        "{text}"
    );
    f.hive.shutdown_token().cancel();
}

/// A finished turn's figures, as a harness reports them.
fn turn(duration_ms: u64, tools: &[(&str, u64)], class: ExitClass) -> hive_sh4re::agent::TurnStats {
    hive_sh4re::agent::TurnStats {
        duration_ms,
        exit_code: Some(0),
        exit_class: class,
        tool_calls: tools.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        messages_received: 1,
        sent_by_class: [("operator".to_owned(), 1)].into(),
        received_by_class: [("operator".to_owned(), 1)].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn stats_serve_the_summary_per_agent_and_hive_wide() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    add_agent(&f.hive, "bob").await;
    let alice = hive_sh4re::AgentName::parse("alice").unwrap();
    for (ms, class) in [
        (100, ExitClass::Ok),
        (300, ExitClass::Ok),
        (200, ExitClass::Failure),
    ] {
        f.hive
            .record_turn(&alice, &turn(ms, &[("send", 1), ("Bash", 2)], class))
            .await
            .unwrap();
        // Turns are told apart by their timestamp (ms).
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (s, b) = call(&f, get("/api/stats?agent=alice&since=15m")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["window_seconds"], 900.0);
    let a = &v["agents"][0];
    assert_eq!(v["agents"].as_array().unwrap().len(), 1);
    assert_eq!(a["agent"], "alice");
    assert_eq!(a["turns"], 3);
    assert_eq!(a["tool_usage"]["send"], 3);
    assert_eq!(a["tool_usage"]["Bash"], 6);
    assert_eq!(a["tool_calls_per_turn"], 3.0);
    assert_eq!(a["exit_classes"]["ok"], 2);
    assert_eq!(a["exit_classes"]["failure"], 1);
    assert_eq!(a["sent_per_turn"]["operator"], 1.0);
    assert_eq!(a["duration_p50_ms"], 200.0);
    assert_eq!(a["duration_p95_ms"], 300.0);
    assert_eq!(a["turns_series"].as_array().unwrap().len(), 3);

    let (s, b) = call(&f, get("/api/stats")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["window_seconds"], 3600.0, "1 h by default");
    let names: Vec<_> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(v["agents"][1]["turns"], 0);
}

#[tokio::test]
async fn stats_refuse_bad_queries_with_a_sentence() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let (s, b) = call(&f, get("/api/stats?agent=nobody")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("no agent \"nobody\""), "{b}");
    let (s, b) = call(&f, get("/api/stats?agent=..%2Fetc")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = call(&f, get("/api/stats?agent=alice&since=soon")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("15m"), "{b}");
    let (s, b) = call(&f, get("/api/stats?since=99999999999")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("in the future"), "{b}");
}

#[tokio::test]
async fn the_database_alarm_is_served_and_streamed_to_every_page_while_it_is_on() {
    let f = loopback();
    tokio::spawn(sse::run(f.hive.clone(), f.ctx.hub.clone()));
    tokio::spawn(sse::alarms(f.hive.clone(), f.ctx.hub.clone()));
    tokio::task::yield_now().await;
    let (s, b) = call(&f, get("/api/database")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"alarm":null}"#));
    let resp = router(f.ctx.clone())
        .oneshot(get("/api/stream"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    let mut next_frame = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned()
    };

    let down = crate::store::StoreError::Unreachable("connection refused".into()).to_string();
    f.hive.set_database_alarm(Some(&down));
    let (s, b) = call(&f, get("/api/database")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let message = v["alarm"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("this node cannot reach the hive's database (connection refused)"),
        "{b}"
    );
    let since = v["alarm"]["since"].as_str().unwrap().to_owned();
    let text = next_frame().await;
    assert!(
        text.starts_with("event: database\n") && text.contains(message),
        "{text}"
    );
    // Failing again keeps the first failure's time, and tells no one.
    f.hive.set_database_alarm(Some(&down));
    let (_, b) = call(&f, get("/api/database")).await;
    assert!(b.contains(&since), "{b}");

    f.hive.set_database_alarm(None);
    let (_, b) = call(&f, get("/api/database")).await;
    assert_eq!(b, r#"{"alarm":null}"#);
    let text = next_frame().await;
    assert_eq!(text, "event: database\ndata: {\"alarm\":null}\n\n");
    f.hive.shutdown_token().cancel();
}

#[tokio::test]
async fn the_free_space_alarm_is_served_while_it_is_on() {
    let f = loopback();
    let (s, b) = call(&f, get("/api/space")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, r#"{"alarm":null}"#);
    f.hive.space().raise_for_test();
    let (s, b) = call(&f, get("/api/space")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["alarm"]["message"], "the disk is nearly full: test");
    // Sends from the dashboard meet the same refusal.
    add_agent(&f.hive, "alice").await;
    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/messages",
            Some("t0k"),
            r#"{"body":"hi"}"#,
        ),
    )
    .await;
    assert_ne!(s, StatusCode::OK, "{b}");
    assert!(error_of(&b).contains("the disk is nearly full"), "{b}");
}

#[tokio::test]
async fn secrets_show_by_name_and_scope_only() {
    use hive_sh4re::secret::{SecretName, SecretValue};
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let name = SecretName::parse("GH_TOKEN").unwrap();
    let value = SecretValue::parse("ghp-dashboard-never-shows".into()).unwrap();
    f.hive.secret_set(&name, None, &value).await.unwrap();
    let alice = "alice".parse().unwrap();
    f.hive
        .secret_set(&name, Some(&alice), &value)
        .await
        .unwrap();
    assert_eq!(
        call(&f, anon_get("/api/secrets")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, b) = call(&f, get("/api/secrets")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!b.contains("ghp-dashboard"), "{b}");
    let list: Vec<hive_sh4re::host::SecretRow> = serde_json::from_str(&b).unwrap();
    let scopes: Vec<_> = list
        .iter()
        .map(|r| (r.name.as_str(), r.agent.as_deref()))
        .collect();
    assert_eq!(scopes, [("GH_TOKEN", None), ("GH_TOKEN", Some("alice"))]);
}

#[tokio::test]
async fn a_send_key_reaches_the_hive_and_an_over_long_one_is_refused() {
    let f = loopback();
    add_agent(&f.hive, "alice").await;
    let long = "k".repeat(hive_sh4re::limits::MAX_SEND_KEY_BYTES + 1);
    let (s, b) = call(
        &f,
        post(
            "/api/agents/alice/messages",
            Some("t0k"),
            &format!(r#"{{"body":"hi","key":"{long}"}}"#),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(error_of(&b).contains("the send's key is over"), "{b}");
    assert_eq!(f.hive.inbox_depth(&alice()).await.unwrap(), 0);
    let ok = post(
        "/api/agents/alice/messages",
        Some("t0k"),
        r#"{"body":"hi","key":"k1"}"#,
    );
    assert_eq!(call(&f, ok).await.0, StatusCode::OK);
    assert_eq!(f.hive.inbox_depth(&alice()).await.unwrap(), 1);
}
