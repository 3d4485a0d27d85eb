//! Request inputs, validated once: agent names through `AgentName::parse`
//! (the one validator), ids, query strings and JSON bodies. Every rejection
//! is an [`ApiError`] with a sentence, never axum's plain-text default.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hive_sh4re::AgentName;
use serde::de::DeserializeOwned;

use super::Ctx;
use super::errors::ApiError;

/// The `{name}` of the path: a valid name of an agent this hive manages (else 400 or 404).
pub(crate) struct Agent(pub AgentName);

/// The `{id}` of the path (an approval, question or schedule id).
pub(crate) struct Id(pub i64);

/// A query string (`?since=..`); malformed is a 400.
pub(crate) struct Q<T>(pub T);

/// A JSON body; malformed is a 400.
pub(crate) struct Body<T>(pub T);

async fn path_param(parts: &mut Parts, key: &str) -> Result<String, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::bad(e.body_text()))?;
    params
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::bad(format!("the path has no {key}")))
}

/// Validates a name from a URL; the sentence says what a name may be.
pub(crate) fn parse_name(raw: &str) -> Result<AgentName, ApiError> {
    AgentName::parse(raw).map_err(|e| ApiError::bad(e.to_string()))
}

/// 404 unless the hive manages `name`.
pub(crate) async fn require_agent(ctx: &Ctx, name: &AgentName) -> Result<(), ApiError> {
    match ctx.hive.has_agent(name).await? {
        true => Ok(()),
        false => Err(ApiError::not_found(format!(
            "there is no agent {:?} in this hive: see the hive page for who is here",
            name.as_str()
        ))),
    }
}

impl FromRequestParts<Ctx> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        let name = parse_name(&path_param(parts, "name").await?)?;
        require_agent(ctx, &name).await?;
        Ok(Self(name))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, "id").await?;
        raw.parse::<i64>().map(Self).map_err(|_| {
            ApiError::bad(format!(
                "{raw:?} is not an id: ids are whole numbers such as 12"
            ))
        })
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{}: send a JSON object", e.body_text()),
            )),
        }
    }
}
