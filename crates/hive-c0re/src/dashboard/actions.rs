//! The JSON API's actions (POST): each one `Hive` method, as host.sock calls it,
//! so both surfaces do and record the same (steering an agent notes an
//! `operator` event in its history, whichever surface asked).
//!
//! A refusal of an action on a known agent or a pending approval is a refused
//! state (409); a refusal of what the operator typed (a message, a model, an
//! answer) is bad input (400).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hive_sh4re::Mailbox;
use hive_sh4re::dashboard::{
    AnswerBody, ApproveBody, BudgetBody, DenyBody, ModelBody, ReadBody, ScheduleBody, SendBody,
};
use hive_sh4re::host::{Question, QuestionStatus};
use serde_json::{Value, json};

use super::Ctx;
use super::api::require_approval;
use super::errors::{ApiError, ApiResult};
use super::extract::{Agent, Body, Id};

/// How long a graceful stop may hold the request before it is answered 202 and finishes on its own.
const STOP_WAIT: Duration = Duration::from_secs(2);

type Done = ApiResult<(StatusCode, Json<Value>)>;

fn done(message: impl Into<String>) -> Done {
    Ok((
        StatusCode::OK,
        Json(json!({ "ok": true, "message": message.into() })),
    ))
}

/// `POST /api/agents/{name}/{action}`: start, stop (graceful), kill, restart, destroy, pause, resume, cancel, compact, compact-notes.
pub(crate) async fn lifecycle(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Path((_, action)): Path<(String, String)>,
) -> Done {
    let hive = &ctx.hive;
    let refused = || ApiError::from_hive(StatusCode::CONFLICT);
    match action.as_str() {
        "start" => {
            hive.start(&name).await.map_err(refused())?;
            done(format!("{name} is starting"))
        }
        "stop" => {
            let (h, n) = (hive.clone(), name.clone());
            let task = hive.spawn_task("dashboard stop", async move { h.stop(&n, true).await });
            match tokio::time::timeout(STOP_WAIT, task).await {
                Ok(Ok(r)) => {
                    r.map_err(refused())?;
                    done(format!("{name} stopped"))
                }
                Ok(Err(e)) => Err(ApiError::internal(e)),
                Err(_) => Ok((
                    StatusCode::ACCEPTED,
                    Json(
                        json!({ "ok": true, "message": format!("{name} stops when its current turn ends") }),
                    ),
                )),
            }
        }
        "kill" => {
            hive.stop(&name, false).await.map_err(refused())?;
            done(format!("{name} was killed"))
        }
        "restart" => {
            hive.restart(&name).await.map_err(refused())?;
            done(format!("{name} is restarting"))
        }
        "destroy" => {
            hive.destroy(&name, false).await.map_err(refused())?;
            done(format!("{name} was destroyed (its state stays on disk)"))
        }
        "pause" | "resume" => {
            hive.set_paused(&name, action == "pause")
                .await
                .map_err(refused())?;
            done(format!(
                "{name} is {}",
                if action == "pause" {
                    "paused"
                } else {
                    "resumed"
                }
            ))
        }
        "cancel" => {
            hive.cancel(&name).await.map_err(refused())?;
            done(format!("asked {name} to cancel its turn"))
        }
        "compact" => {
            hive.compact(&name).await.map_err(refused())?;
            done(format!("asked {name} to compact its session"))
        }
        "compact-notes" => {
            hive.compact_notes(&name).await.map_err(refused())?;
            done(format!("asked {name} to compact its notes"))
        }
        other => Err(ApiError::not_found(format!(
            "there is no agent action {other:?}: use start, stop, kill, restart, destroy, pause, resume, cancel, compact or compact-notes"
        ))),
    }
}

/// `POST /api/agents/{name}/messages` {body, key?}: a message from the operator.
pub(crate) async fn send(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Body(b): Body<SendBody>,
) -> Done {
    let id = ctx
        .hive
        .send_keyed(
            &Mailbox::Operator,
            &Mailbox::Agent(name.clone()),
            &b.body,
            b.key.as_deref(),
        )
        .await
        .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?;
    Ok((
        StatusCode::OK,
        Json(
            json!({ "ok": true, "message_id": id, "message": format!("message #{id} queued for {name}") }),
        ),
    ))
}

/// `POST /api/agents/{name}/model` {model}: override the model from the next turn on (as host.sock `set_model`).
pub(crate) async fn set_model(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Body(b): Body<ModelBody>,
) -> ApiResult<Json<Value>> {
    let info = ctx
        .hive
        .set_model(&name, b.model.as_deref())
        .await
        .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?;
    Ok(Json(json!({ "ok": true, "model": info })))
}

/// `POST /api/agents/{name}/budget` {usd?, tokens?, reset}: the agent's budget for today.
pub(crate) async fn set_budget(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Body(b): Body<BudgetBody>,
) -> ApiResult<Json<Value>> {
    let row = ctx
        .hive
        .budget_set(&hive_sh4re::host::verb::BudgetSet {
            agent: Some(name),
            usd: b.usd,
            tokens: b.tokens,
            reset: b.reset,
        })
        .await
        .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?;
    Ok(Json(json!({ "ok": true, "budget": row })))
}

/// A body that may also be empty (the type's default), else a JSON object like `example`.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    example: &str,
) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the body is not a JSON object like {example}: {e}")))
}

/// `POST /api/approvals/{id}/approve` {seen?}: approve and carry it out now
/// (refused when `seen` is no longer the diff's `diff_id`).
pub(crate) async fn approve(State(ctx): State<Ctx>, Id(id): Id, body: Bytes) -> Done {
    let a = require_approval(&ctx, id).await?;
    // `seen`: the `diff_id` of the diff the page showed.
    let b: ApproveBody = optional_body(&body, r#"{"seen": "<diff_id>"}"#)?;
    ctx.hive
        .approve_seen(id, b.seen.as_deref())
        .await
        .map_err(ApiError::from_hive(StatusCode::CONFLICT))?;
    done(format!(
        "approval #{id} ({} {}) approved and carried out",
        a.kind, a.agent
    ))
}

/// `POST /api/approvals/{id}/deny` {note?}: deny it.
pub(crate) async fn deny(State(ctx): State<Ctx>, Id(id): Id, body: Bytes) -> Done {
    let a = require_approval(&ctx, id).await?;
    // An empty body is a denial without a reason.
    let b: DenyBody = optional_body(&body, r#"{"note": "why"}"#)?;
    let note = b.note.filter(|n| !n.trim().is_empty());
    ctx.hive
        .deny(id, note.as_deref())
        .await
        .map_err(ApiError::from_hive(StatusCode::CONFLICT))?;
    done(format!("approval #{id} ({} {}) denied", a.kind, a.agent))
}

async fn require_question(ctx: &Ctx, id: i64) -> ApiResult<Question> {
    ctx.hive
        .question(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no question #{id}")))
}

/// A refusal of a question that is no longer pending is a conflict, else the input was bad.
async fn question_refusal(ctx: &Ctx, id: i64, e: crate::error::Error) -> ApiError {
    {
        let pending = matches!(ctx.hive.question(id).await, Ok(Some(q)) if q.status == QuestionStatus::Pending);
        ApiError::from_hive(if pending {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::CONFLICT
        })(e)
    }
}

/// `POST /api/questions/{id}/answer` {answer}.
pub(crate) async fn answer(State(ctx): State<Ctx>, Id(id): Id, Body(b): Body<AnswerBody>) -> Done {
    require_question(&ctx, id).await?;
    if let Err(e) = ctx.hive.answer(id, &b.answer).await {
        return Err(question_refusal(&ctx, id, e).await);
    }
    done(format!("question #{id} answered"))
}

/// `POST /api/questions/{id}/cancel`.
pub(crate) async fn cancel_question(State(ctx): State<Ctx>, Id(id): Id) -> Done {
    require_question(&ctx, id).await?;
    if let Err(e) = ctx.hive.cancel_question(id).await {
        return Err(question_refusal(&ctx, id, e).await);
    }
    done(format!("question #{id} cancelled"))
}

/// `POST /api/agents/{name}/schedules` {when, text}: schedule a prompt from the operator.
pub(crate) async fn schedule_add(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Body(b): Body<ScheduleBody>,
) -> ApiResult<Json<Value>> {
    let id = ctx
        .hive
        .schedule_add(&name, &b.when, &b.text, "operator")
        .await
        .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?;
    Ok(Json(
        json!({ "ok": true, "id": id, "message": format!("schedule #{id} added for {name}") }),
    ))
}

/// `POST /api/schedules/{id}/delete`.
pub(crate) async fn schedule_rm(State(ctx): State<Ctx>, Id(id): Id) -> Done {
    ctx.hive
        .schedule_rm(id)
        .await
        .map_err(ApiError::from_hive(StatusCode::NOT_FOUND))?;
    done(format!("schedule #{id} removed"))
}

/// `POST /api/notifications/read` {id} or {all: true}: mark read; answers the unread count left.
pub(crate) async fn read_notifications(
    State(ctx): State<Ctx>,
    Body(b): Body<ReadBody>,
) -> ApiResult<Json<Value>> {
    let id = match (b.id, b.all) {
        (Some(id), false) => Some(id),
        (None, true) => None,
        _ => {
            return Err(ApiError::bad(
                "say which notification to mark read: {\"id\": N} or {\"all\": true}",
            ));
        }
    };
    let unread = ctx
        .hive
        .mark_notifications_read(id)
        .await
        .map_err(ApiError::from_hive(StatusCode::NOT_FOUND))?;
    Ok(Json(json!({ "ok": true, "unread": unread })))
}

/// `POST /api/ping`: 200 when the page's token is still this dashboard's (it changes when hive-c0re restarts).
pub(crate) async fn ping() -> Json<Value> {
    Json(json!({ "ok": true }))
}
