//! Debugging a paused step over HTTP: the pause, ad-hoc commands in the
//! step's environment, the workspace's files, and continue, retry or abort.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use danube_ui::checks::{DEFAULT_COMMAND_TIMEOUT_SECONDS, command_timeout};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::backend::{BackendError, WorkspaceEntry};
use crate::orchestrator::debug::{CommandOutput, DebugError, Decision, Pause, PauseReason};
use crate::orchestrator::{Debugger, error_chain};

/// A step paused for debugging.
#[derive(Debug, Serialize, ToSchema)]
pub struct DebugPause {
    pub step_id: i64,
    pub task: String,
    pub step: String,
    /// `before` (a breakpoint named the step, which has not run) or
    /// `failure` (the step failed or timed out).
    pub reason: &'static str,
    /// For `before`: the breakpoint that named the step.
    pub breakpoint: Option<String>,
    /// For `failure`: `failure` or `timeout`.
    pub step_state: Option<String>,
    /// For `failure`: the exit code, absent when the step could not start.
    pub exit_code: Option<i32>,
    /// The step's working directory on the server's machine.
    pub workdir: String,
    pub image: Option<String>,
    /// The run number of the step: 1, plus one per retry.
    pub attempt: i64,
    pub paused_at: i64,
}

impl From<Pause> for DebugPause {
    fn from(pause: Pause) -> DebugPause {
        let (breakpoint, step_state, exit_code) = match &pause.reason {
            PauseReason::Before { breakpoint } => (Some(breakpoint.clone()), None, None),
            PauseReason::Failure { state, exit_code } => {
                (None, Some(state.as_str().to_owned()), *exit_code)
            }
        };
        DebugPause {
            step_id: pause.step_id,
            reason: pause.reason.as_str(),
            task: pause.task,
            step: pause.step,
            breakpoint,
            step_state,
            exit_code,
            workdir: pause.workdir.display().to_string(),
            image: pause.image,
            attempt: pause.attempt,
            paused_at: pause.paused_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Run as `/bin/sh -c command` in the paused step's workdir, with its
    /// env and image.
    pub command: String,
    /// Seconds before the command is killed, 1 to 3600; default 60.
    pub timeout_seconds: Option<u64>,
}

/// The output and exit of an ad-hoc command, with the job's secrets masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    pub command: String,
    pub stdout: String,
    /// The command's stderr, then the engine's notes (a timeout, killed
    /// background processes).
    pub stderr: String,
    /// Absent when the command timed out or was stopped.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// More than 1 MiB of a stream was printed; the rest was dropped.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// A path from the workspace root; empty or absent for the root.
    pub path: Option<String>,
}

/// A folder's entries or the start of a file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkspaceFiles {
    Directory {
        /// From the workspace root; empty for the root.
        path: String,
        /// Sorted by name.
        entries: Vec<FileEntry>,
    },
    File {
        path: String,
        size_bytes: u64,
        /// The first MiB of the file as text (invalid UTF-8 replaced), with
        /// the job's secrets masked.
        content: String,
        truncated: bool,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: &'static str,
    pub size_bytes: u64,
}

/// The decision that ended a pause.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resumed {
    /// `continue`, `retry` or `abort`.
    pub decision: &'static str,
    pub pause: DebugPause,
}

/// Show where a job is paused
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/debug",
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses(
        (status = 200, body = DebugPause),
        (status = 404, description = "No such job, or the job is not paused (code `not_paused`)", body = ErrorBody),
        (status = 409, description = "The job ended, or another process runs it", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DebugPause>, ApiError> {
    let debugger = debugger(&state, &id).await?;
    match debugger.pause() {
        Some(pause) => Ok(Json(pause.into())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_paused",
            not_paused(&debugger).to_string(),
        )),
    }
}

/// Run a command in the paused step's environment
///
/// Waits for the command to end. Its output is returned, not stored in the
/// step's log; the job's log notes the command and its exit code.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/debug/exec",
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    request_body = ExecRequest,
    responses(
        (status = 200, body = ExecResult),
        (status = 400, description = "An empty command or a timeout out of range", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job is not paused, ended, or another process runs it", body = ErrorBody),
        (status = 422, description = "The command could not start in the step's environment", body = ErrorBody),
    )
)]
pub async fn exec(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    let seconds = command_timeout(
        body.timeout_seconds
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECONDS),
    )
    .map_err(|message| ApiError::bad_request(format!("timeout_seconds: {message}")))?;
    let debugger = debugger(&state, &id).await?;
    let output = debugger
        .run_command(&body.command, Duration::from_secs(seconds))
        .await
        .map_err(debug_error)?;
    Ok(Json(exec_result(output)))
}

/// List a folder or read a file of the paused job's workspace
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/debug/files",
    params(("id" = String, Path, description = "Job id or a unique prefix"), FilesQuery),
    responses(
        (status = 200, body = WorkspaceFiles),
        (status = 400, description = "The path is absolute, contains `..`, or leads out of the workspace through a symbolic link", body = ErrorBody),
        (status = 404, description = "No such job or path", body = ErrorBody),
        (status = 409, description = "The job is not paused, ended, or another process runs it", body = ErrorBody),
    )
)]
pub async fn files(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<FilesQuery>,
) -> Result<Json<WorkspaceFiles>, ApiError> {
    let debugger = debugger(&state, &id).await?;
    let entry = debugger
        .browse(query.path.as_deref().unwrap_or(""))
        .await
        .map_err(debug_error)?;
    Ok(Json(files_body(entry)))
}

/// The decision that ends a pause, named by the last segment of the route.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResumeAction {
    Continue,
    Retry,
    Abort,
}

impl From<ResumeAction> for Decision {
    fn from(action: ResumeAction) -> Decision {
        match action {
            ResumeAction::Continue => Decision::Continue,
            ResumeAction::Retry => Decision::Retry,
            ResumeAction::Abort => Decision::Abort,
        }
    }
}

/// End a pause: continue, retry the step, or abort the job
///
/// `continue` runs the step when the job paused before it, or lets its
/// failure stand. `retry` runs a failed step again as a new attempt; before
/// a step, which has not run, it is rejected with 409 `nothing_to_retry`.
/// `abort` ends the job `cancelled` and stops every process of it.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/debug/{action}",
    params(
        ("id" = String, Path, description = "Job id or a unique prefix"),
        ("action" = ResumeAction, Path, description = "`continue`, `retry` or `abort`"),
    ),
    responses(
        (status = 200, body = Resumed),
        (status = 400, description = "The action is not `continue`, `retry` or `abort`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job is not paused, ended, or another process runs it; or `retry` while paused before a step (code `nothing_to_retry`)", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    ApiPath((id, action)): ApiPath<(String, ResumeAction)>,
) -> Result<Json<Resumed>, ApiError> {
    let decision = Decision::from(action);
    let debugger = debugger(&state, &id).await?;
    let pause = debugger.resume(decision).map_err(debug_error)?;
    Ok(Json(Resumed {
        decision: decision.as_str(),
        pause: pause.into(),
    }))
}

/// Finds the debugger of a job this server runs.
async fn debugger(state: &AppState, id: &str) -> Result<Debugger, ApiError> {
    let record = state.store.find_job(id).await?;
    if record.state.is_final() {
        return Err(ApiError::conflict(format!(
            "job `{}` already ended ({}); only a running job can be debugged",
            record.id, record.state
        )));
    }
    state.engine.debugger(&record.id).ok_or_else(|| {
        ApiError::conflict(format!(
            "job `{}` is run by another danube process; debug it there",
            record.id
        ))
    })
}

fn not_paused(debugger: &Debugger) -> DebugError {
    DebugError::NotPaused {
        job: debugger.job_id().clone(),
    }
}

fn debug_error(err: DebugError) -> ApiError {
    match &err {
        DebugError::NotPaused { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_paused", err.to_string())
        }
        DebugError::NothingToRetry { .. } => {
            ApiError::new(StatusCode::CONFLICT, "nothing_to_retry", err.to_string())
        }
        DebugError::EmptyCommand => ApiError::bad_request(err.to_string()),
        DebugError::RunCommand { .. } => {
            tracing::info!(error = %error_chain(&err), "debug command could not start");
            ApiError::unprocessable(error_chain(&err))
        }
        DebugError::Browse(source) => match **source {
            BackendError::InvalidWorkspacePath { .. } => ApiError::bad_request(err.to_string()),
            BackendError::WorkspacePathNotFound { .. } => ApiError::not_found(err.to_string()),
            _ => ApiError::internal("read the workspace", source.as_ref()),
        },
    }
}

fn exec_result(output: CommandOutput) -> ExecResult {
    ExecResult {
        command: output.command,
        stdout: output.stdout,
        stderr: output.stderr,
        exit_code: output.exit_code,
        timed_out: output.timed_out,
        truncated: output.truncated,
    }
}

fn files_body(entry: WorkspaceEntry) -> WorkspaceFiles {
    match entry {
        WorkspaceEntry::Directory { path, entries } => WorkspaceFiles::Directory {
            path,
            entries: entries
                .into_iter()
                .map(|entry| FileEntry {
                    name: entry.name,
                    kind: entry.kind,
                    size_bytes: entry.size_bytes,
                })
                .collect(),
        },
        WorkspaceEntry::File {
            path,
            size_bytes,
            content,
            truncated,
        } => WorkspaceFiles::File {
            path,
            size_bytes,
            content: String::from_utf8_lossy(&content).into_owned(),
            truncated,
        },
    }
}
