//! `Status` errors as the API server returns them: an HTTP code, a
//! machine-readable `reason`, a message for people and `details` naming the
//! object.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One field that failed validation, as `details.causes[]` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`,
    /// `FieldValueNotSupported` or `FieldValueForbidden`.
    pub reason: &'static str,
    /// The JSON path of the field, `spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

/// An error response with a `metav1.Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// `(name, kind)` of the object the error is about, when there is one.
    pub details: Option<(String, String)>,
    pub causes: Vec<Cause>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
            causes: Vec::new(),
        }
    }

    /// `404 NotFound` for `kind` (plural, as in `pods "x" not found`).
    pub fn not_found(kind: &str, name: &str) -> ApiError {
        ApiError {
            details: Some((name.to_owned(), kind.to_owned())),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{kind} \"{name}\" not found"),
            )
        }
    }

    /// `404 NotFound` for a path no route serves.
    pub fn no_route() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        )
    }

    /// `409 AlreadyExists`.
    pub fn already_exists(kind: &str, name: &str) -> ApiError {
        ApiError {
            details: Some((name.to_owned(), kind.to_owned())),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{kind} \"{name}\" already exists"),
            )
        }
    }

    /// `409 Conflict`, for a write that loses against another one.
    pub fn conflict(kind: &str, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some((name.to_owned(), kind.to_owned())),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {kind} \"{name}\": {why}"),
            )
        }
    }

    /// `410 Expired`, for a resource version older than the history kept.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// `422 Invalid` with one cause per failed field.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let list = causes
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.message))
            .collect::<Vec<_>>()
            .join(", ");
        let shown = if causes.len() > 1 {
            format!("[{list}]")
        } else {
            list
        };
        ApiError {
            details: Some((name.to_owned(), kind.to_lowercase())),
            causes,
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {shown}"),
            )
        }
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// `401 Unauthorized`, for a missing or wrong bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".to_owned(),
        )
    }

    /// `403 Forbidden` with the message RBAC gives.
    pub fn forbidden(message: String) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// `405 MethodNotAllowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_owned(),
        )
    }

    /// `415 UnsupportedMediaType`, for a patch type the emulator does not apply.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// `500 InternalError`, for a failure inside the emulator.
    pub fn internal(message: String) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// Returns the `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if self.details.is_some() || !self.causes.is_empty() {
            let mut details = json!({});
            if let Some((name, kind)) = &self.details {
                details["name"] = json!(name);
                details["kind"] = json!(kind);
            }
            if !self.causes.is_empty() {
                details["causes"] = self
                    .causes
                    .iter()
                    .map(|cause| {
                        json!({
                            "reason": cause.reason,
                            "message": cause.message,
                            "field": cause.field,
                        })
                    })
                    .collect();
            }
            status["details"] = details;
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.to_status())).into_response()
    }
}
