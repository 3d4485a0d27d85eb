//! HTTP routes: the Messages API as claude calls it, plus `/_sim/*` controls.
//!
//! The controls show every prompt the server was sent and change what it
//! answers, so they are not for the clients it serves (an agent could read
//! another's prompts): each control request must carry the control token
//! ([`TOKEN_HEADER`]), which only whoever reads the token file has.

use crate::conversation::Conversation;
use crate::engine::{self, Block, Reply};
use crate::ids::IdGen;
use crate::record::{Recorder, RequestRecord};
use crate::script::Script;
use crate::{sse, wire};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest request body accepted; claude resends the whole conversation each call.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The header that carries the control token of a `/_sim/*` request.
pub const TOKEN_HEADER: &str = "x-sim-token";

/// Shared state of the server.
#[derive(Debug)]
pub struct AppState {
    script: RwLock<Arc<Script>>,
    /// The request log.
    pub recorder: Recorder,
    ids: IdGen,
    /// What a `/_sim/*` request must carry; `None`: the controls are off.
    control_token: Option<String>,
    /// How `/v1/messages` fails now, if it does (`POST /_sim/fault`).
    fault: RwLock<Option<Fault>>,
    /// `/v1/messages` requests seen, failed and left hanging, since start.
    seen: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    /// Bumped whenever the fault changes: a hanging request goes on once healed.
    fault_changed: tokio::sync::watch::Sender<u64>,
}

/// How the Messages API fails, as a test asks: an HTTP error, or no answer at all.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Fault {
    /// Answer with this HTTP status and an Anthropic error body.
    #[serde(default)]
    pub status: Option<u16>,
    /// Answer nothing while the fault holds (the connection stays open); a
    /// request left hanging is answered as usual once the fault is healed.
    #[serde(default)]
    pub hang: bool,
}

impl Fault {
    /// The response of a request the fault fails, or None when it hangs it.
    fn response(&self) -> Option<Response> {
        let status = self.status?;
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Some(api_error(
            code,
            kind,
            &format!("hive-model-sim answers {status} as told"),
        ))
    }
}

impl AppState {
    /// State serving `script`, logging to `recorder`, with controls for holders of `control_token`.
    pub fn new(script: Script, recorder: Recorder, control_token: Option<String>) -> Arc<AppState> {
        Arc::new(AppState {
            script: RwLock::new(Arc::new(script)),
            recorder,
            ids: IdGen::new(),
            control_token,
            fault: RwLock::new(None),
            seen: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            fault_changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// The script in force.
    pub fn script(&self) -> Arc<Script> {
        // The lock only guards an Arc swap, so a poisoned lock still holds a valid script.
        self.script
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the script for all following requests.
    pub fn set_script(&self, script: Script) {
        *self.script.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(script);
    }
}

/// All routes; unknown paths answer 200 `{}` so a probe never makes claude fail.
pub fn router(state: Arc<AppState>) -> Router {
    let controls = Router::new()
        .route("/_sim/requests", get(requests))
        .route("/_sim/reset", post(reset))
        .route("/_sim/script", post(replace_script).get(current_script))
        .route("/_sim/fault", post(set_fault).get(fault_counts))
        .route("/_sim/{*rest}", any(|| async { StatusCode::NOT_FOUND }))
        .route_layer(middleware::from_fn_with_state(state.clone(), control_guard));
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(|| async { axum::Json(wire::models()) }))
        .route("/v1/models/{id}", get(model))
        .merge(controls)
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Lets a control request through only with the control token.
async fn control_guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let why = match (&state.control_token, given) {
        (None, _) => "the controls are off: start hive-model-sim with --control-token-file FILE",
        (Some(t), Some(g)) if constant_time_eq(t.as_bytes(), g.as_bytes()) => {
            return next.run(request).await;
        }
        (Some(_), _) => {
            "a control request needs the token from --control-token-file in the x-sim-token header"
        }
    };
    (StatusCode::FORBIDDEN, axum::Json(json!({ "error": why }))).into_response()
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(wire::error(kind, message))).into_response()
}

/// The body as JSON, or the 400 response that says why not.
fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("the request body is not JSON: {e}"),
        ))
    })
}

async fn messages(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.seen.fetch_add(1, Ordering::Relaxed);
    // Before the fault is read, so a heal right after is not missed.
    let mut changed = state.fault_changed.subscribe();
    let fault = state
        .fault
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(f) = fault {
        match f.response() {
            Some(r) => {
                state.failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(status = ?f.status, "POST {}: failed as told", uri.path());
                return r;
            }
            None if f.hang => {
                state.hung.fetch_add(1, Ordering::Relaxed);
                tracing::info!("POST {}: left hanging as told", uri.path());
                let hangs = || {
                    let f = state.fault.read().unwrap_or_else(|p| p.into_inner());
                    f.as_ref().is_some_and(|f| f.hang)
                };
                while hangs() {
                    if changed.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
                tracing::info!("POST {}: the hang is healed, answering", uri.path());
            }
            None => {}
        }
    }
    let request = match parse_json(&body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let conv = match Conversation::parse(&request) {
        Ok(c) => c,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
        }
    };
    let script = state.script();
    let reply = engine::answer(&script, &conv, &state.ids);
    let message_id = state.ids.message();
    let input_tokens = script
        .input_tokens
        .unwrap_or_else(|| wire::estimate_tokens(conv.input_chars));
    let output_tokens = script
        .output_tokens
        .unwrap_or_else(|| wire::output_tokens(&reply));
    tracing::info!(
        model = %conv.model, step = conv.step.as_str(), why = reply.why.as_str(),
        rules = ?reply.rules, stop = wire::stop_reason(&reply), "POST {}", uri.path()
    );
    let mut rec = record(
        uri.path(),
        &conv,
        &reply,
        request.get("messages").cloned().unwrap_or(Value::Null),
    );
    rec.credential = credential(&headers);
    state.recorder.push(rec);

    if conv.stream {
        let frames = sse::frames(
            &reply,
            &message_id,
            &conv.model,
            (input_tokens, output_tokens),
        );
        let stream = futures::stream::iter(frames).then(|frame| async move {
            if frame.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(frame.delay_ms)).await;
            }
            Ok::<_, Infallible>(Bytes::from(frame.text))
        });
        let headers = [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ];
        (headers, Body::from_stream(stream)).into_response()
    } else {
        let total: u64 = reply.delay_ms
            + reply
                .blocks
                .iter()
                .map(|b| match b {
                    Block::Text { delay_ms, .. } | Block::ToolUse { delay_ms, .. } => *delay_ms,
                })
                .sum::<u64>();
        if total > 0 {
            tokio::time::sleep(Duration::from_millis(total)).await;
        }
        let content = reply.blocks.iter().map(wire::block).collect();
        let usage = wire::usage(input_tokens, output_tokens);
        axum::Json(wire::message(
            &message_id,
            &conv.model,
            content,
            Some(wire::stop_reason(&reply)),
            usage,
        ))
        .into_response()
    }
}

/// The credential the client sent: `x-api-key` (an API key) or the bearer
/// token of `authorization` (an OAuth token).
fn credential(headers: &HeaderMap) -> Option<String> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    get("x-api-key").map(str::to_owned).or_else(|| {
        get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned)
    })
}

fn record(path: &str, conv: &Conversation, reply: &Reply, messages: Value) -> RequestRecord {
    RequestRecord {
        seq: 0,
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        path: path.to_string(),
        model: conv.model.clone(),
        stream: conv.stream,
        system_len: conv.system_len,
        tools: conv.tools.clone(),
        step: conv.step.as_str(),
        user_text: conv.user_text.clone(),
        sender: conv.inbox.last().map(|m| m.from.clone()),
        rules: reply.rules.clone(),
        why: reply.why.as_str(),
        stop_reason: wire::stop_reason(reply),
        reply: reply.blocks.iter().map(wire::block).collect(),
        messages,
        credential: None,
    }
}

async fn count_tokens(body: Bytes) -> Response {
    match parse_json(&body) {
        Ok(request) => {
            let chars = request.get("system").map_or(0, |s| s.to_string().len())
                + request.get("messages").map_or(0, |m| m.to_string().len())
                + request.get("tools").map_or(0, |t| t.to_string().len());
            axum::Json(json!({"input_tokens": wire::estimate_tokens(chars)})).into_response()
        }
        Err(response) => *response,
    }
}

async fn model(Path(id): Path<String>) -> Response {
    let name = wire::MODELS
        .iter()
        .find(|(m, _)| *m == id)
        .map_or(id.as_str(), |(_, n)| n);
    axum::Json(wire::model_info(&id, name)).into_response()
}

async fn requests(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.recorder.all()).into_response()
}

async fn reset(State(state): State<Arc<AppState>>) -> Response {
    state.recorder.clear();
    axum::Json(json!({"ok": true})).into_response()
}

async fn replace_script(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "the script must be UTF-8 text"})),
            )
                .into_response();
        }
    };
    match Script::parse(text) {
        Ok(script) => {
            let rules = script.rules.len();
            state.set_script(script);
            tracing::info!(rules, "script replaced");
            axum::Json(json!({"ok": true, "rules": rules})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": format!("bad script: {e}")})),
        )
            .into_response(),
    }
}

/// `POST /_sim/fault`: `{"status": 529}` fails every following `/v1/messages`
/// request with that status, `{"hang": true}` never answers them, `{}` heals.
async fn set_fault(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!("a fault is {{\"status\": 529}}, {{\"hang\": true}} or {{}}: {e}")})),
            )
                .into_response();
        }
    };
    if fault.status.is_some_and(|s| !(400..=599).contains(&s)) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "a fault's status is an HTTP error, 400 to 599"})),
        )
            .into_response();
    }
    let fault = (fault.status.is_some() || fault.hang).then_some(fault);
    tracing::info!(?fault, "fault set");
    *state.fault.write().unwrap_or_else(|p| p.into_inner()) = fault;
    state.fault_changed.send_modify(|n| *n += 1);
    fault_counts(State(state)).await
}

/// `GET /_sim/fault`: the fault in force and the `/v1/messages` requests counted since start.
async fn fault_counts(State(state): State<Arc<AppState>>) -> Response {
    let fault = state
        .fault
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(json!({
        "fault": fault,
        "seen": state.seen.load(Ordering::Relaxed),
        "failed": state.failed.load(Ordering::Relaxed),
        "hung": state.hung.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn current_script(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/toml")],
        state.script().source.clone(),
    )
        .into_response()
}

async fn fallback(method: Method, uri: Uri) -> Response {
    tracing::info!(%method, %uri, "unscripted endpoint, answering 200 {{}}");
    axum::Json(json!({})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    const TOKEN: &str = "t0ken";

    fn app(script: &str) -> (Router, Arc<AppState>) {
        let state = AppState::new(
            Script::parse(script).expect("valid"),
            Recorder::new(None).expect("recorder"),
            Some(TOKEN.to_owned()),
        );
        (router(state.clone()), state)
    }

    async fn call(app: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        call_with(app, method, path, body, Some(TOKEN)).await
    }

    async fn call_with(
        app: &Router,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            request = request.header(TOKEN_HEADER, t);
        }
        let request = request.body(Body::from(body.to_string())).expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const HELLO: &str = "[[rule]]\nuser_text = \"hello\"\n[[rule.reply]]\ntext = \"world\"\n";

    fn hello_request(stream: bool) -> String {
        json!({"model": "claude-haiku-5-5", "stream": stream, "max_tokens": 10,
               "tools": [{"name": "Bash"}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
        .to_string()
    }

    #[tokio::test]
    async fn streaming_answer_is_sse() {
        let (app, state) = app(HELLO);
        let (status, body) =
            call(&app, "POST", "/v1/messages?beta=true", &hello_request(true)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("event: message_start\n"), "{body}");
        assert!(
            body.contains("\"text_delta\",\"text\":\"world\"")
                || body.contains("\"text\":\"world\""),
            "{body}"
        );
        assert!(
            body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{body}"
        );
        let log = state.recorder.all();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].model, "claude-haiku-5-5");
        assert_eq!(log[0].tools, vec!["Bash"]);
        assert_eq!(log[0].path, "/v1/messages");
    }

    #[tokio::test]
    async fn non_streaming_answer_is_a_message() {
        let (app, _) = app(HELLO);
        let (status, body) = call(&app, "POST", "/v1/messages", &hello_request(false)).await;
        assert_eq!(status, StatusCode::OK);
        let message: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(message["type"], "message");
        assert_eq!(message["content"][0]["text"], "world");
        assert_eq!(message["stop_reason"], "end_turn");
        assert!(message["usage"]["input_tokens"].as_u64().is_some());
    }

    #[tokio::test]
    async fn bad_requests_get_api_errors() {
        let (app, _) = app(HELLO);
        let (status, body) = call(&app, "POST", "/v1/messages", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_request_error"));
        let (status, _) = call(&app, "POST", "/v1/messages", "{\"messages\": []}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn side_endpoints_answer() {
        let (app, _) = app(HELLO);
        let (status, body) = call(
            &app,
            "POST",
            "/v1/messages/count_tokens?beta=true",
            &hello_request(false),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("input_tokens"));
        let (status, body) = call(&app, "GET", "/v1/models", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"has_more\":false"));
        let (_, body) = call(&app, "GET", "/v1/models/claude-x", "").await;
        assert!(body.contains("\"id\":\"claude-x\""));
        let (status, _) = call(&app, "HEAD", "/api/hello", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&app, "POST", "/api/whatever", "{}").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
    }

    #[tokio::test]
    async fn controls_need_the_token() {
        let (app, _) = app(HELLO);
        call(&app, "POST", "/v1/messages", &hello_request(false)).await;
        for token in [None, Some("wrong"), Some("t0ke")] {
            for (method, path) in [
                ("GET", "/_sim/requests"),
                ("GET", "/_sim/script"),
                ("POST", "/_sim/reset"),
                ("POST", "/_sim/script"),
                ("GET", "/_sim/anything"),
            ] {
                let (status, body) = call_with(&app, method, path, "", token).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {token:?}");
                assert!(!body.contains("hello"), "{body}");
            }
        }
        let (status, body) = call(&app, "GET", "/_sim/requests", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("hello"), "{body}");
        let off = AppState::new(
            Script::parse(HELLO).expect("valid"),
            Recorder::new(None).expect("recorder"),
            None,
        );
        let (status, body) = call(&router(off), "GET", "/_sim/requests", "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("--control-token-file"), "{body}");
    }

    #[tokio::test]
    async fn a_fault_fails_requests_until_healed() {
        let (app, state) = app(HELLO);
        let (status, body) = call(&app, "POST", "/_sim/fault", "{\"status\": 529}").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for _ in 0..2 {
            let (status, body) = call(&app, "POST", "/v1/messages", &hello_request(true)).await;
            assert_eq!(status.as_u16(), 529);
            assert!(body.contains("overloaded_error"), "{body}");
        }
        let (_, body) = call(&app, "POST", "/_sim/fault", "{\"status\": 401}").await;
        assert!(body.contains("\"status\":401"), "{body}");
        let (status, body) = call(&app, "POST", "/v1/messages", &hello_request(false)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("authentication_error"), "{body}");
        let (status, _) = call(&app, "POST", "/_sim/fault", "{\"status\": 200}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = call_with(&app, "POST", "/_sim/fault", "{}", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a fault needs the token");
        call(&app, "POST", "/_sim/fault", "{}").await;
        let (status, _) = call(&app, "POST", "/v1/messages", &hello_request(false)).await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = call(&app, "GET", "/_sim/fault", "").await;
        let counts: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&counts["fault"], &counts["seen"], &counts["failed"]),
            (&Value::Null, &json!(4), &json!(3))
        );
        assert_eq!(
            state.recorder.all().len(),
            1,
            "failed requests are not recorded"
        );
        // A hanging fault never answers.
        call(&app, "POST", "/_sim/fault", "{\"hang\": true}").await;
        let hung = tokio::time::timeout(
            Duration::from_millis(200),
            call(&app, "POST", "/v1/messages", &hello_request(true)),
        )
        .await;
        assert!(hung.is_err(), "answered a hanging request");
        assert_eq!(state.hung.load(Ordering::Relaxed), 1);
        // One left hanging is answered once the fault is healed.
        let pending = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "POST", "/v1/messages", &hello_request(false)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!pending.is_finished(), "answered while the hang holds");
        call(&app, "POST", "/_sim/fault", "{}").await;
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("answered once healed")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn sim_controls_replace_script_and_reset_log() {
        let (app, _) = app(HELLO);
        let (status, body) = call(
            &app,
            "POST",
            "/_sim/script",
            "[[rule]]\nuser_text = \"x\"\n",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("rule 1: field `reply`"), "{body}");

        let script = "[[rule]]\nuser_text = \"hello\"\n[[rule.reply]]\ntext = \"mars\"\n";
        let (status, _) = call(&app, "POST", "/_sim/script", script).await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = call(&app, "GET", "/_sim/script", "").await;
        assert_eq!(body, script);
        let (_, body) = call(&app, "POST", "/v1/messages", &hello_request(false)).await;
        assert!(body.contains("mars"), "{body}");

        let (_, body) = call(&app, "GET", "/_sim/requests", "").await;
        let log: Vec<Value> = serde_json::from_str(&body).expect("json array");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["why"], "rule");
        call(&app, "POST", "/_sim/reset", "").await;
        let (_, body) = call(&app, "GET", "/_sim/requests", "").await;
        assert_eq!(body, "[]");
    }
}
