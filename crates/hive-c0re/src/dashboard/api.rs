//! The JSON API's reads: the same `Hive` methods and `hive_sh4re::host` rows
//! as host.sock. Reading the operator's inbox here never acknowledges it
//! (`recent_messages`, not `recv`): the dashboard only looks.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hive_sh4re::Mailbox;
use hive_sh4re::dashboard::{EventsQuery, FeedQuery, LimitQuery, NotificationsQuery};
use hive_sh4re::host::{
    AgentStatusRow, Approval, Event, Feed, Message, ModelInfo, NeedsYou, Question, Schedule,
    SecretRow,
};
use hive_sh4re::notification::{NotificationList, WebhookStatus};

use super::Ctx;
use super::errors::{ApiError, ApiResult};
use super::extract::{Agent, Id, Q};

/// Events a history page holds unless the query says otherwise.
pub const DEFAULT_EVENTS: u32 = 200;
/// Most events one history request returns.
pub const MAX_EVENTS: u32 = 2000;
/// Most messages one inbox request returns.
pub const MAX_MESSAGES: u32 = 500;

/// `GET /api/space`: the free-space alarm, or null while space is fine.
pub(crate) async fn space(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alarm": ctx.hive.space().alarm() }))
}

/// `GET /api/database`: the database alarm, or null while this node reaches its database.
pub(crate) async fn database(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alarm": ctx.hive.database_alarm() }))
}

/// `GET /api/agents`: every agent's status row.
pub(crate) async fn agents(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<AgentStatusRow>>> {
    Ok(Json(
        ctx.hive
            .status_rows()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// `GET /api/needs_you`: everything that waits on the operator, most urgent first.
pub(crate) async fn needs_you(State(ctx): State<Ctx>) -> ApiResult<Json<NeedsYou>> {
    Ok(Json(
        ctx.hive
            .needs_you()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// Feed items a page holds unless the query says otherwise.
pub const DEFAULT_FEED: u32 = 50;

/// `GET /api/feed?before=CURSOR&limit=N`: the hive-wide activity, newest first.
pub(crate) async fn feed(State(ctx): State<Ctx>, Q(q): Q<FeedQuery>) -> ApiResult<Json<Feed>> {
    let limit = q.limit.unwrap_or(DEFAULT_FEED).clamp(1, MAX_MESSAGES);
    Ok(Json(
        ctx.hive
            .feed(q.before.as_deref(), limit)
            .await
            .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?,
    ))
}

/// `GET /api/backoff`: the hive-wide model API backoff, `null` when none holds turns.
pub(crate) async fn backoff(State(ctx): State<Ctx>) -> Json<Option<hive_sh4re::host::ApiBackoff>> {
    Json(ctx.hive.api_backoff_status())
}

/// `GET /api/agents/{name}`: one agent's status row.
pub(crate) async fn agent(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
) -> ApiResult<Json<AgentStatusRow>> {
    Ok(Json(
        ctx.hive
            .status_row(&name)
            .await
            .map_err(ApiError::from_hive(StatusCode::NOT_FOUND))?,
    ))
}

/// `GET /api/agents/{name}/model`: configured, override and active model.
pub(crate) async fn model(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
) -> ApiResult<Json<ModelInfo>> {
    Ok(Json(
        ctx.hive
            .model_info(&name)
            .await
            .map_err(ApiError::from_hive(StatusCode::NOT_FOUND))?,
    ))
}

/// `GET /api/agents/{name}/events?since=ID | before=ID &limit=N`: history, oldest first.
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Q(q): Q<EventsQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    if q.since.is_some() && q.before.is_some() {
        return Err(ApiError::bad(
            "give since or before, not both: since pages forward, before pages back",
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS).clamp(1, MAX_EVENTS);
    Ok(Json(
        ctx.hive
            .events(&name, q.since, q.before, limit)
            .await
            .map_err(ApiError::from_hive(StatusCode::BAD_REQUEST))?,
    ))
}

async fn recent(
    ctx: &Ctx,
    mailbox: &Mailbox,
    limit: Option<u32>,
    default: u32,
) -> ApiResult<Json<Vec<Message>>> {
    let limit = limit.unwrap_or(default).clamp(1, MAX_MESSAGES);
    Ok(Json(ctx.hive.recent_messages(mailbox, limit).await?))
}

/// `GET /api/agents/{name}/messages?limit=N`: the newest messages to or from the agent, oldest first.
pub(crate) async fn agent_messages(
    State(ctx): State<Ctx>,
    Agent(name): Agent,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    recent(&ctx, &Mailbox::Agent(name), q.limit, super::sse::INBOX_LEN).await
}

/// `GET /api/operator/messages?limit=N`: the operator's inbox and sent messages, without acknowledging any.
pub(crate) async fn operator_messages(
    State(ctx): State<Ctx>,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    recent(
        &ctx,
        &Mailbox::Operator,
        q.limit,
        super::sse::OPERATOR_INBOX_LEN,
    )
    .await
}

/// `GET /api/approvals`: every approval, oldest first.
pub(crate) async fn approvals(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<Approval>>> {
    Ok(Json(
        ctx.hive
            .approvals()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// 404 unless approval `id` exists.
pub(crate) async fn require_approval(ctx: &Ctx, id: i64) -> ApiResult<Approval> {
    ctx.hive.approval(id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "there is no approval #{id}: it may have been vacuumed"
        ))
    })
}

/// `GET /api/approvals/{id}/diff`: what approving would change (a spawn's whole config).
pub(crate) async fn approval_diff(
    State(ctx): State<Ctx>,
    Id(id): Id,
) -> ApiResult<Json<serde_json::Value>> {
    require_approval(&ctx, id).await?;
    let diff = ctx
        .hive
        .approval_diff(id)
        .await
        .map_err(ApiError::from_hive(StatusCode::CONFLICT))?;
    let diff_id = crate::hive::approvals::diff_id(&diff);
    Ok(Json(
        serde_json::json!({ "id": id, "diff": diff, "diff_id": diff_id }),
    ))
}

/// `GET /api/questions`: the newest operator questions (pending and recent).
pub(crate) async fn questions(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<Question>>> {
    Ok(Json(
        ctx.hive
            .questions()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// `GET /api/secrets`: every secret's name, scope and time set; never a value.
pub(crate) async fn secrets(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<SecretRow>>> {
    Ok(Json(
        ctx.hive
            .secret_list()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// `GET /api/schedules`: every scheduled prompt, soonest first (its text as shown).
pub(crate) async fn schedules(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<Schedule>>> {
    Ok(Json(
        ctx.hive
            .schedule_list_shown()
            .await
            .map_err(ApiError::from_hive(StatusCode::CONFLICT))?,
    ))
}

/// `GET /api/notifications?unread=true&limit=N`: the newest notifications and the unread count.
pub(crate) async fn notifications(
    State(ctx): State<Ctx>,
    Q(q): Q<NotificationsQuery>,
) -> ApiResult<Json<NotificationList>> {
    Ok(Json(
        ctx.hive
            .notifications(q.unread.unwrap_or(false), q.limit)
            .await?,
    ))
}

/// `GET /api/webhooks`: each webhook's queue and last results.
pub(crate) async fn webhooks(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<WebhookStatus>>> {
    Ok(Json(ctx.hive.webhook_statuses().await?))
}
