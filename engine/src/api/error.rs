//! The one error shape of the API, `{"error": {"code": "...", "message": "..."}}`,
//! and the extractors that turn rejected requests into it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::orchestrator::{OrchestratorError, RepositoryError, error_chain};
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `invalid_body`, `unauthorized`,
    /// `forbidden`, `not_found`, `not_paused`, `method_not_allowed`, `conflict`,
    /// `unsupported_media_type`, `unprocessable`, `internal`,
    /// `target_unreachable` or `unavailable`.
    pub code: &'static str,
    /// What the client did wrong and how to fix it; never internal details.
    pub message: String,
}

/// A failed request: the status, a code from [`ErrorDetail::code`] and a
/// message for the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// Logs `err` with its source chain and returns a 500 that does not
    /// reveal it.
    pub fn internal(action: &'static str, err: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(action, error = %crate::orchestrator::error_chain(err), "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error while trying to {action}; the server log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            // For the API an id too short to look up names no job either.
            StoreError::JobNotFound(_) | StoreError::JobIdTooShort { .. } => {
                ApiError::not_found(err.to_string())
            }
            StoreError::AmbiguousJobId { .. } => ApiError::bad_request(err.to_string()),
            err => ApiError::internal("read the database", &err),
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(err: OrchestratorError) -> ApiError {
        match err {
            OrchestratorError::Project(_)
            | OrchestratorError::InvalidPipelineName(_)
            | OrchestratorError::InvalidBreakpoint(_) => ApiError::unprocessable(err.to_string()),
            OrchestratorError::Repository(
                RepositoryError::InvalidUrl { .. }
                | RepositoryError::LocalNotAllowed { .. }
                | RepositoryError::HostNotAllowed { .. }
                | RepositoryError::InvalidCommit { .. },
            ) => ApiError::bad_request(err.to_string()),
            OrchestratorError::Repository(
                RepositoryError::Clone { .. }
                | RepositoryError::UnknownCommit { .. }
                | RepositoryError::Checkout { .. }
                | RepositoryError::NoPipelineFile { .. },
            ) => ApiError::unprocessable(error_chain(&err)),
            err => ApiError::internal("start the job", &err),
        }
    }
}

/// `Json` whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `Content-Type: application/json`",
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message),
    }
}

/// `Query` whose rejections use the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// `Path` whose rejections use the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// The fallback for unknown paths.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint; GET /api/v1/openapi.json lists them")
}

/// The fallback for known paths called with another method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; GET /api/v1/openapi.json lists the methods",
    )
}
