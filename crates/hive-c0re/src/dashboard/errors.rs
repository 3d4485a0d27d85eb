//! The dashboard's one error shape: a status code and `{"error": "<sentence>"}`.
//!
//! A hive refusal keeps its sentence; which status it gets depends on the
//! route (bad input → 400, refused state → 409), so each handler says how
//! to read a refusal. Anything else is the hive's fault: 500, logged, and
//! shown without internals beyond the error's own sentence.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// An error answer of the JSON API.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    /// An error with this status and sentence.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403: no or wrong token, or a cross-origin request.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such agent, approval, question or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// Reads a hive error: a refusal gets `refused_as`, a database out of
    /// reach 503 (try again later), anything else is a 500.
    pub fn from_hive(refused_as: StatusCode) -> impl FnOnce(Error) -> Self {
        move |e| match e {
            Error::Refused(msg) => Self::new(refused_as, msg),
            other if other.is_unreachable() => {
                tracing::warn!("dashboard request failed: {other}");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
            }
            other => Self::internal(other),
        }
    }

    /// 500: the hive failed; logged here, the sentence goes to the client.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("dashboard request failed: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the hive failed to do that: {e}"),
        )
    }
}

/// A read that fails is the hive's fault (500); a refusal there is a refused state (409).
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::from_hive(StatusCode::CONFLICT)(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Result alias of the API handlers.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Unknown routes under `/api` answer JSON too.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found(
        "there is no such dashboard route: see the dashboard's page for what it offers",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_database_out_of_reach_is_503_with_its_sentence_and_a_refusal_keeps_its_status() {
        let e = ApiError::from(Error::Store(StoreError::Unreachable(
            "connection refused".into(),
        )));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.message
                .starts_with("this node cannot reach the hive's database (connection refused)"),
            "{}",
            e.message
        );
        assert_eq!(
            ApiError::from(Error::refused("no")).status,
            StatusCode::CONFLICT
        );
        let other = ApiError::from(Error::Store(StoreError::Batch("x".into())));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
