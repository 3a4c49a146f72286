//! Managing secrets over HTTP, as `danube secret set|list|rm` does: values
//! go in and never come out. They are encrypted through the engine's
//! [`SecretVault`](crate::secrets::SecretVault), under the same key and in
//! the same table as the CLI's.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::secrets::{Scope, SecretsError};

/// A stored secret, without its value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub key: String,
    /// `global` or `pipeline:<name>`.
    pub scope: String,
    /// The pipeline a pipeline secret belongs to; absent for a global one.
    pub pipeline: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    /// Ordered by scope, then key.
    pub secrets: Vec<Secret>,
}

/// The value is write-only: no response ever contains it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value, as UTF-8 text; at most 1 MiB.
    pub value: String,
    /// The pipeline the secret belongs to; absent or empty for a global
    /// secret, readable by every pipeline.
    pub pipeline: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// The pipeline of a pipeline secret; absent for a global one.
    pub pipeline: Option<String>,
}

fn scope_of(pipeline: Option<String>) -> Scope {
    match pipeline.filter(|name| !name.is_empty()) {
        Some(name) => Scope::Pipeline(name),
        None => Scope::Global,
    }
}

fn secret_body(key: String, scope: String, updated_at: i64) -> Secret {
    let pipeline = match Scope::from_db(&scope) {
        Some(Scope::Pipeline(name)) => Some(name),
        _ => None,
    };
    Secret {
        key,
        scope,
        pipeline,
        updated_at,
    }
}

impl From<SecretsError> for ApiError {
    fn from(err: SecretsError) -> ApiError {
        match err {
            SecretsError::InvalidKey { .. }
            | SecretsError::InvalidPipelineName(_)
            | SecretsError::ValueTooLarge { .. } => ApiError::unprocessable(err.to_string()),
            SecretsError::KeyMissing { .. } => ApiError::conflict(err.to_string()),
            err => ApiError::internal("manage secrets", &err),
        }
    }
}

/// List secrets
#[utoipa::path(
    get,
    path = "/api/v1/secrets",
    responses((status = 200, description = "Every secret's key and scope, never a value", body = SecretList))
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<SecretList>, ApiError> {
    let secrets = state
        .engine
        .vault()
        .list()
        .await?
        .into_iter()
        .map(|info| secret_body(info.key, info.scope, info.updated_at))
        .collect();
    Ok(Json(SecretList { secrets }))
}

/// Store a secret
#[utoipa::path(
    put,
    path = "/api/v1/secrets/{key}",
    params(("key" = String, Path, description = "Letters, digits and `_`, not starting with a digit")),
    request_body = PutSecret,
    responses(
        (status = 200, description = "Stored; replaces the value of the same key and scope", body = Secret),
        (status = 409, description = "The encryption key is missing while secrets are stored", body = ErrorBody),
        (status = 422, description = "Invalid key, empty value or value over 1 MiB", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<PutSecret>,
) -> Result<Json<Secret>, ApiError> {
    let value = Zeroizing::new(body.value.into_bytes());
    if value.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "the value for secret `{key}` is empty; send the value in `value`"
        )));
    }
    let scope = scope_of(body.pipeline);

    state.engine.vault().set(&scope, &key, &value).await?;

    tracing::info!(key, scope = %scope.as_db(), "secret stored through the API");
    let stored = state
        .engine
        .vault()
        .list()
        .await?
        .into_iter()
        .find(|info| info.key == key && info.scope == scope.as_db());
    let updated_at = stored.map_or_else(crate::model::now_millis, |info| info.updated_at);
    Ok(Json(secret_body(key, scope.as_db(), updated_at)))
}

/// Delete a secret
#[utoipa::path(
    delete,
    path = "/api/v1/secrets/{key}",
    params(
        ("key" = String, Path, description = "The secret's key"),
        ScopeQuery,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret in that scope", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<ScopeQuery>,
) -> Result<Response, ApiError> {
    let scope = scope_of(query.pipeline);
    if !state.engine.vault().remove(&scope, &key).await? {
        return Err(ApiError::not_found(format!(
            "no secret `{key}` in scope {}; GET /api/v1/secrets lists the stored ones",
            scope.as_db()
        )));
    }
    tracing::info!(key, scope = %scope.as_db(), "secret removed through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}
