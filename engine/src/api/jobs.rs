//! Starting, listing, showing, cancelling and rerunning jobs.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::artifacts::{Artifact, artifact_body};
use super::debug::DebugPause;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::model::{JobId, JobState, RunState};
use crate::orchestrator::{
    Breakpoints, JobBackend, JobRequest, KnownRefs, PIPELINE_FILE, RepositorySource, check_project,
};
use crate::store::{JobFilter, JobRecord, StepRecord, TaskRecord};

/// Jobs per page when the request gives no `limit`.
const DEFAULT_PAGE: u32 = 50;
/// The largest `limit` accepted.
const MAX_PAGE: u32 = 500;

/// A job without its tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// Empty until the script declared its pipeline.
    pub pipeline: String,
    /// The project folder the job ran from, or the URL of the repository
    /// it cloned.
    pub project: String,
    /// `pending`, `scheduling`, `running`, `success`, `failure`, `timeout`
    /// or `cancelled`.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Why the job failed, timed out or was cancelled.
    pub reason: Option<String>,
    pub trigger_type: String,
    /// The trigger's detail: for `watch`, the changed file relative to the
    /// project; for `local` and `manual`, the branch.
    pub trigger_ref: String,
    pub repo: String,
    pub branch: String,
    pub commit_sha: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// From start to finish; absent until both are known.
    pub duration_ms: Option<i64>,
    /// The target the job ran on: `local` or `kube:CONTEXT`; `null` for
    /// jobs recorded before targets were.
    pub target: Option<String>,
}

/// A job with its tasks (each with its steps), the DAG edges and artifacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    /// In declaration order.
    pub tasks: Vec<Task>,
    /// One edge per `needs` entry: `from` must finish before `to` starts.
    pub edges: Vec<Edge>,
    pub artifacts: Vec<Artifact>,
    /// Where the job is paused for debugging; absent while it is not.
    pub pause: Option<DebugPause>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Task {
    pub name: String,
    pub needs: Vec<String>,
    pub image: Option<String>,
    /// `pending`, `running`, `success`, `failure`, `skipped`, `timeout` or
    /// `cancelled`.
    #[schema(value_type = String)]
    pub state: RunState,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Without the time its steps spent paused in the debugger.
    pub duration_ms: Option<i64>,
    /// Time its steps spent paused in the debugger.
    pub paused_ms: i64,
    /// In the order they started.
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    pub id: i64,
    pub task: String,
    pub name: String,
    pub command: String,
    pub image: Option<String>,
    #[schema(value_type = String)]
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// How long the step ran: from start to finish without `paused_ms`;
    /// absent until it finished.
    pub duration_ms: Option<i64>,
    /// Time the step spent paused in the debugger before it ran or before
    /// a retry; 0 when it never paused.
    pub paused_ms: i64,
    /// Runs of the step: 1, plus one per retry from a debug pause.
    pub attempt: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Absolute path of a folder on the server's machine that contains
    /// `danubefile.py`. Pass either this or `repository` with `commit`.
    pub project: Option<String>,
    /// A Git repository to clone as the project: an `https://` (in builds
    /// with the `git-https` feature), `http://` or `git://` URL without a
    /// password. `file://` URLs and absolute
    /// paths are accepted only inside the folders the server allows
    /// (`danube serve --allow-repository-path`).
    pub repository: Option<String>,
    /// The commit of `repository` to run: a full or abbreviated SHA, a
    /// branch or a tag. The job's `branch` is set when it names a branch.
    pub commit: Option<String>,
    /// The pipeline to run when the file defines several.
    pub pipeline: Option<String>,
    /// Steps to pause before: `task/step`, a step name, or a task name (its
    /// first step). A `task/step` whose task the pipeline lacks fails the
    /// job when the pipeline loads, and a name that matches no step fails a
    /// job that would otherwise succeed.
    #[serde(default)]
    pub break_before: Vec<String>,
    /// Pause after a failing step, before its task is marked failed.
    #[serde(default)]
    pub break_on_failure: bool,
    /// Where the job runs: `local`, `kube` (the kubeconfig's current
    /// context) or `kube:CONTEXT`. Only servers that let each job choose
    /// accept it, as the desktop app does; absent, the server's own target.
    pub target: Option<String>,
}

/// The source of a job: a folder on the server, or a repository at a commit.
#[derive(Debug)]
enum JobSource {
    Folder(PathBuf),
    Repository(RepositorySource),
}

/// Reads the source of a [`CreateJob`]: exactly one of `project` and
/// `repository`, the latter with `commit`.
fn job_source(state: &AppState, body: &CreateJob) -> Result<JobSource, ApiError> {
    match (&body.project, &body.repository, &body.commit) {
        (Some(project), None, None) => {
            let project = absolute_project(project)?;
            check_project(&project).map_err(|err| ApiError::unprocessable(err.to_string()))?;
            Ok(JobSource::Folder(project))
        }
        (None, Some(url), Some(commit)) => {
            let source = RepositorySource {
                url: url.clone(),
                commit: commit.clone(),
                known_refs: None,
            };
            state
                .repository_policy
                .check(&source)
                .map_err(|err| ApiError::bad_request(err.to_string()))?;
            Ok(JobSource::Repository(source))
        }
        (None, Some(_), None) => Err(ApiError::bad_request(
            "`commit` is missing: pass the commit SHA, branch or tag of `repository` to run",
        )),
        (Some(_), Some(_), _) => Err(ApiError::bad_request(
            "pass either `project` (a folder on the server) or `repository` with `commit`, not both",
        )),
        (Some(_), None, Some(_)) | (None, None, Some(_)) => Err(ApiError::bad_request(
            "`commit` goes with `repository`; a `project` folder runs as it is on disk",
        )),
        (None, None, None) => Err(ApiError::bad_request(format!(
            "the job has no source: pass `project` (the absolute path of a folder that contains \
             {PIPELINE_FILE}) or `repository` with `commit`"
        ))),
    }
}

/// The optional body of a rerun: breakpoints for the new job, as in
/// [`CreateJob`].
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunJob {
    #[serde(default)]
    pub break_before: Vec<String>,
    #[serde(default)]
    pub break_on_failure: bool,
    /// As in [`CreateJob`]; absent, the target the job ran on.
    pub target: Option<String>,
}

pub(super) fn breakpoints(before: Vec<String>, on_failure: bool) -> Breakpoints {
    Breakpoints { before, on_failure }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs of this pipeline.
    pub pipeline: Option<String>,
    /// Only jobs of this project folder (absolute path, as the job shows it).
    pub project: Option<String>,
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Jobs per page, 1 to 500; default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Start a job
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    request_body = CreateJob,
    responses(
        (status = 201, description = "The job was recorded and started; a repository was cloned first", body = Job),
        (status = 400, description = "Neither or both of `project` and `repository`, `repository` without `commit`, a project path that is not absolute, or a repository URL or commit the server does not accept", body = ErrorBody),
        (status = 422, description = "The project path is missing, is not a folder, or has no danubefile.py; the repository cannot be cloned, lacks the commit, or has no danubefile.py at it; or a breakpoint or the target is malformed", body = ErrorBody),
        (status = 502, description = "The target's cluster cannot be reached", body = ErrorBody),
        (status = 503, description = "The server is stopping", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    let source = job_source(&state, &body)?;
    let pipeline = body.pipeline.filter(|name| !name.is_empty());
    let breakpoints = breakpoints(body.break_before, body.break_on_failure);
    let backend = super::targets::job_backend(&state, body.target.as_deref()).await?;
    submit(&state, source, pipeline, breakpoints, backend).await
}

/// Reads the `project` of a request, which must be an absolute path.
pub(super) fn absolute_project(raw: &str) -> Result<PathBuf, ApiError> {
    let project = PathBuf::from(raw);
    if !project.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "project `{raw}` is not an absolute path; pass the absolute path of the folder that contains {PIPELINE_FILE}"
        )));
    }
    Ok(project)
}

/// Builds the error for a request that would start a `what` while the
/// server stops.
pub(super) fn stopping(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the server is stopping; start the {what} again once it runs"),
    )
}

async fn submit(
    state: &AppState,
    source: JobSource,
    pipeline: Option<String>,
    breakpoints: Breakpoints,
    backend: Option<JobBackend>,
) -> Result<Response, ApiError> {
    if state.stopping.is_cancelled() {
        return Err(stopping("job"));
    }
    let (project, repository) = match source {
        JobSource::Folder(project) => (project, None),
        JobSource::Repository(repository) => (PathBuf::new(), Some(repository)),
    };
    let handle = state
        .engine
        .submit(JobRequest {
            project,
            repository,
            pipeline,
            in_place: false,
            max_parallel: state.max_parallel,
            trigger: crate::model::TriggerType::Manual,
            breakpoints,
            trigger_ref: None,
            backend,
        })
        .await?;
    let id = handle.id.clone();
    state.track(handle);

    let record = state.store.find_job(id.as_str()).await?;
    let location = format!("/api/v1/jobs/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job_body(record)),
    )
        .into_response())
}

/// List jobs
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    params(ListQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, description = "An invalid state, limit or cursor", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; pass 1 to {MAX_PAGE}"
        )));
    }
    let job_state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<JobState>().map_err(|_| {
            let names: Vec<&str> = JobState::ALL.iter().map(|state| state.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown state `{text}`; pass one of {}",
                names.join(", ")
            ))
        })?),
    };
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = JobFilter {
        pipeline: query.pipeline,
        project_dir: query.project,
        state: job_state,
        after,
    };

    // One extra row tells whether another page follows.
    let mut records = state.store.list_jobs_page(&filter, limit + 1).await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            records
                .last()
                .map(|last| encode_cursor(last.created_at, &last.id))
        })
        .flatten();
    Ok(Json(JobPage {
        jobs: records.into_iter().map(job_body).collect(),
        next_cursor,
    }))
}

/// Show a job with its tasks, steps, DAG edges and artifacts
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    params(("id" = String, Path, description = "Job id or a unique prefix of at least 4 characters")),
    responses(
        (status = 200, body = JobDetail),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobDetail>, ApiError> {
    let record = state.store.find_job(&id).await?;
    let tasks = state.store.list_tasks(&record.id).await?;
    let steps = state.store.list_steps(&record.id).await?;
    let artifacts = state.store.list_artifacts(&record.id).await?;

    let edges = tasks
        .iter()
        .flat_map(|task| {
            task.needs.iter().map(|need| Edge {
                from: need.clone(),
                to: task.name.clone(),
            })
        })
        .collect();
    let tasks = tasks
        .into_iter()
        .map(|task| task_body(task, &steps))
        .collect();
    let artifacts = artifacts.into_iter().map(artifact_body).collect();
    let pause = state
        .engine
        .debugger(&record.id)
        .and_then(|debugger| debugger.pause())
        .map(DebugPause::from);
    Ok(Json(JobDetail {
        job: job_body(record),
        tasks,
        edges,
        artifacts,
        pause,
    }))
}

/// Cancel a running job
///
/// Returns at once; the job reaches `cancelled` when its steps have stopped.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses(
        (status = 202, description = "Cancellation requested", body = Job),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job is already final, or another process runs it", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let record = state.store.find_job(&id).await?;
    if record.state.is_final() {
        return Err(ApiError::conflict(format!(
            "job `{}` already ended ({}); there is nothing to cancel",
            record.id, record.state
        )));
    }
    if !state.engine.cancel(&record.id) {
        return Err(ApiError::conflict(format!(
            "job `{}` is run by another danube process; stop it there",
            record.id
        )));
    }
    tracing::info!(job_id = %record.id, "job cancellation requested over the API");
    Ok((StatusCode::ACCEPTED, Json(job_body(record))).into_response())
}

/// Run a job's project and pipeline again, as a new job
///
/// The body is optional; it may set breakpoints for the new job, and a
/// `target` other than the one the job ran on.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/rerun",
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    request_body(content = Option<RerunJob>),
    responses(
        (status = 201, description = "The new job", body = Job),
        (status = 404, body = ErrorBody),
        (status = 422, description = "The project folder or its danubefile.py is gone, or the job's target cannot be chosen on this server", body = ErrorBody),
        (status = 502, description = "The target's cluster cannot be reached", body = ErrorBody),
        (status = 503, description = "The server is stopping", body = ErrorBody),
    )
)]
pub async fn rerun(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: RerunJob = if body.iter().all(u8::is_ascii_whitespace) {
        RerunJob::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("invalid rerun body: {err}; send `{{}}` or `{{\"break_before\": [\"task/step\"], \"break_on_failure\": true}}`"),
            )
        })?
    };
    let record = state.store.find_job(&id).await?;
    let pipeline = Some(record.pipeline).filter(|name| !name.is_empty());
    let backend = match body.target {
        Some(target) => super::targets::job_backend(&state, Some(&target)).await?,
        None => rerun_backend(&state, &record.id, record.target.as_deref()).await?,
    };
    // A job from a repository records its URL as the project, and reruns
    // the commit it ran.
    let project = PathBuf::from(&record.project_dir);
    let source = if project.is_absolute() || record.commit_sha.is_empty() {
        JobSource::Folder(project)
    } else {
        // The branch is recorded as such; a tag only as the trigger's ref.
        let tag = if record.branch.is_empty() {
            record.trigger_ref.clone()
        } else {
            String::new()
        };
        let repository = RepositorySource {
            url: record.project_dir.clone(),
            commit: record.commit_sha.clone(),
            known_refs: Some(KnownRefs {
                branch: record.branch.clone(),
                tag,
            }),
        };
        state
            .repository_policy
            .check(&repository)
            .map_err(|err| ApiError::bad_request(err.to_string()))?;
        JobSource::Repository(repository)
    };
    submit(
        &state,
        source,
        pipeline,
        breakpoints(body.break_before, body.break_on_failure),
        backend,
    )
    .await
}

/// Returns the backend of the target a job ran on, so that its rerun runs
/// there too.
///
/// # Errors
///
/// As [`super::targets::job_backend`]; a job whose own target this server
/// cannot choose (its database was shared with the desktop app, say) gets a
/// 422.
async fn rerun_backend(
    state: &AppState,
    id: &JobId,
    target: Option<&str>,
) -> Result<Option<JobBackend>, ApiError> {
    let Some(target) = target else {
        return Ok(None);
    };
    if state.engine.runs_on(target) {
        return Ok(None);
    }
    if state.targets.get().is_none() {
        return Err(ApiError::unprocessable(format!(
            "job `{id}` ran on `{target}`, and this server runs every job on the target it was started with; start a new job for its project instead"
        )));
    }

    super::targets::job_backend(state, Some(target)).await
}

pub(super) fn job_body(record: JobRecord) -> Job {
    Job {
        duration_ms: duration(record.started_at, record.finished_at),
        id: record.id.0,
        pipeline: record.pipeline,
        project: record.project_dir,
        state: record.state,
        reason: record.reason,
        trigger_type: record.trigger_type.as_str().to_owned(),
        trigger_ref: record.trigger_ref,
        repo: record.repo,
        branch: record.branch,
        commit_sha: record.commit_sha,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        target: record.target,
    }
}

fn task_body(task: TaskRecord, records: &[StepRecord]) -> Task {
    let steps = records
        .iter()
        .filter(|step| step.task == task.name)
        .map(|step| Step {
            id: step.id,
            task: step.task.clone(),
            name: step.name.clone(),
            command: step.command.clone(),
            image: step.image.clone(),
            state: step.state,
            exit_code: step.exit_code,
            started_at: step.started_at,
            finished_at: step.finished_at,
            duration_ms: step.duration_ms(),
            paused_ms: step.paused_ms,
            attempt: step.attempt,
        })
        .collect();
    Task {
        duration_ms: task.duration_ms(),
        paused_ms: task.paused_ms,
        name: task.name,
        needs: task.needs,
        image: task.image,
        state: task.state,
        error: task.error,
        started_at: task.started_at,
        finished_at: task.finished_at,
        steps,
    }
}

fn duration(started: Option<i64>, finished: Option<i64>) -> Option<i64> {
    Some(finished? - started?)
}

/// A cursor is `<created_at>.<id>` in unpadded URL-safe base64; clients
/// treat it as opaque.
fn encode_cursor(created_at: i64, id: &JobId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, JobId), ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid cursor `{cursor}`; pass the `next_cursor` of a previous page unchanged"
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (created_at, id) = text.split_once('.').ok_or_else(invalid)?;
    let created_at = created_at.parse().map_err(|_| invalid())?;
    Ok((created_at, JobId(id.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let id = JobId::new();

        let (created_at, decoded) = decode_cursor(&encode_cursor(1_700_000_000_123, &id)).unwrap();

        assert_eq!(created_at, 1_700_000_000_123);
        assert_eq!(decoded, id);
    }

    #[test]
    fn cursor_that_was_not_issued_is_rejected() {
        let err = decode_cursor("not a cursor").err().unwrap();

        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("next_cursor"), "{}", err.message);
    }
}
