//! Watch sessions over HTTP: start one on a project folder, list them, stop
//! one. Each session reruns the project's pipeline when one of its files
//! changes; the jobs it starts appear in `/api/v1/jobs` and
//! `/api/v1/events` like any other.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::{AppState, jobs};
use crate::model::TriggerType;
use crate::orchestrator::JobRequest;
use crate::watch::{DEFAULT_DEBOUNCE, WatchError, WatchInfo, WatchRequest};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWatch {
    /// Absolute path of a folder on the server's machine that contains
    /// `danubefile.py`.
    pub project: String,
    /// The pipeline to run when the file defines several.
    pub pipeline: Option<String>,
    /// Where the session's jobs run, as in `POST /api/v1/jobs`.
    pub target: Option<String>,
    /// Steps that every job of the session pauses before, as in
    /// `POST /api/v1/jobs`.
    #[serde(default)]
    pub break_before: Vec<String>,
    /// Pause every job of the session after its first failing step, as in
    /// `POST /api/v1/jobs`.
    #[serde(default)]
    pub break_on_failure: bool,
}

/// A watch session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Watch {
    pub id: String,
    /// The project folder, canonical.
    pub project: String,
    pub pipeline: Option<String>,
    /// Id of the session's latest job, running or finished. Its first job
    /// has the `manual` trigger; later ones have `watch`, with the changed
    /// file in `trigger_ref`.
    pub current_job: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WatchList {
    /// Oldest first.
    pub watches: Vec<Watch>,
}

/// Start a watch session
///
/// Runs the project's pipeline at once, then again after every change to
/// a file of the project (changes closer together than 250 ms count as
/// one). A change while a job runs cancels that job first. Changes under
/// `.git`, to paths that `.gitignore` excludes, and to editors' swap,
/// backup and temporary files are ignored.
#[utoipa::path(
    post,
    path = "/api/v1/watches",
    request_body = CreateWatch,
    responses(
        (status = 201, description = "The session was started and its first job recorded", body = Watch),
        (status = 400, description = "The project path is not absolute", body = ErrorBody),
        (status = 422, description = "The project path is missing, is not a folder, or has no danubefile.py, or the pipeline name, a breakpoint or the target is invalid", body = ErrorBody),
        (status = 502, description = "The target's cluster cannot be reached", body = ErrorBody),
        (status = 503, description = "The server is stopping", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateWatch>,
) -> Result<Response, ApiError> {
    let project = jobs::absolute_project(&body.project)?;
    if state.stopping.is_cancelled() {
        return Err(jobs::stopping("watch"));
    }
    let backend = super::targets::job_backend(&state, body.target.as_deref()).await?;

    let request = WatchRequest {
        job: JobRequest {
            project,
            repository: None,
            pipeline: body.pipeline.filter(|name| !name.is_empty()),
            in_place: false,
            max_parallel: state.max_parallel,
            trigger: TriggerType::Manual,
            trigger_ref: None,
            breakpoints: jobs::breakpoints(body.break_before, body.break_on_failure),
            backend,
        },
        debounce: DEFAULT_DEBOUNCE,
    };
    let info = state
        .watches
        .start(state.engine.clone(), request)
        .await
        .map_err(watch_error)?;
    tracing::info!(watch_id = %info.id, project = %info.project.display(), "watch session started over the API");

    let location = format!("/api/v1/watches/{}", info.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(watch_body(info)),
    )
        .into_response())
}

/// List the running watch sessions
#[utoipa::path(
    get,
    path = "/api/v1/watches",
    responses((status = 200, body = WatchList))
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Json<WatchList> {
    let watches = state.watches.list().into_iter().map(watch_body).collect();
    Json(WatchList { watches })
}

/// Stop a watch session
///
/// Cancels the session's job in flight and returns once that job has
/// ended. The session's finished jobs stay.
#[utoipa::path(
    delete,
    path = "/api/v1/watches/{id}",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session was stopped", body = Watch),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Watch>, ApiError> {
    let info = state.watches.stop(&id).await.ok_or_else(|| {
        ApiError::not_found(format!(
            "no watch session `{id}`; `GET /api/v1/watches` lists the running ones"
        ))
    })?;
    tracing::info!(watch_id = %id, "watch session stopped over the API");
    Ok(Json(watch_body(info)))
}

fn watch_body(info: WatchInfo) -> Watch {
    Watch {
        id: info.id,
        project: info.project.display().to_string(),
        pipeline: info.pipeline,
        current_job: info.current_job.map(|id| id.0),
    }
}

fn watch_error(err: WatchError) -> ApiError {
    match err {
        WatchError::Project(_) => ApiError::unprocessable(err.to_string()),
        WatchError::Submit(err) => err.into(),
        WatchError::Stopped => jobs::stopping("watch"),
        err @ (WatchError::Debounce(_) | WatchError::Watch { .. }) => {
            ApiError::internal("watch the project", &err)
        }
    }
}
