//! Rows as SQLite returns them, and their conversion into the public records.
//!
//! States and trigger types are stored as text, so a row written by another
//! version of Danube (or by hand) can contain a value that no variant has.
//! Reading such a row returns [`StoreError::InvalidRow`] instead of panicking.

use std::str::FromStr;

use super::{
    ArtifactRecord, AuditEvent, JobRecord, SecretRecord, StepRecord, StoreError, TaskRecord,
};
use crate::model::{JobId, UnixMillis};

/// Columns of `jobs` in the order [`JobRow`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, pipeline, project_dir, state, reason, trigger_type, \
     trigger_ref, repo, branch, commit_sha, created_at, started_at, finished_at, target";

pub(super) const TASK_COLUMNS: &str =
    "job_id, name, needs, image, state, error, position, started_at, finished_at, paused_ms";

pub(super) const STEP_COLUMNS: &str = "id, job_id, task, name, command, image, state, exit_code, started_at, finished_at, attempt, paused_ms";

pub(super) const ARTIFACT_COLUMNS: &str =
    "job_id, name, kind, size_bytes, sha256, source_path, task, created_at";

pub(super) const SECRET_COLUMNS: &str = "id, scope, key, blob, created_at, updated_at";

pub(super) const AUDIT_COLUMNS: &str = "id, at, actor, action, subject";

fn parse_column<T>(
    table: &'static str,
    row: &str,
    column: &'static str,
    text: &str,
) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse()
        .map_err(|error: T::Err| StoreError::InvalidRow {
            table,
            row: row.to_owned(),
            column,
            source: Box::new(error),
        })
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    pipeline: String,
    project_dir: String,
    state: String,
    reason: Option<String>,
    trigger_type: String,
    trigger_ref: String,
    repo: String,
    branch: String,
    commit_sha: String,
    created_at: UnixMillis,
    started_at: Option<UnixMillis>,
    finished_at: Option<UnixMillis>,
    target: Option<String>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let state = parse_column("jobs", &row.id, "state", &row.state)?;
        let trigger_type = parse_column("jobs", &row.id, "trigger_type", &row.trigger_type)?;
        Ok(JobRecord {
            id: JobId(row.id),
            pipeline: row.pipeline,
            project_dir: row.project_dir,
            state,
            reason: row.reason,
            trigger_type,
            trigger_ref: row.trigger_ref,
            repo: row.repo,
            branch: row.branch,
            commit_sha: row.commit_sha,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            target: row.target,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    job_id: String,
    name: String,
    needs: String,
    image: Option<String>,
    state: String,
    error: Option<String>,
    position: i64,
    started_at: Option<UnixMillis>,
    finished_at: Option<UnixMillis>,
    paused_ms: i64,
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, Self::Error> {
        let row_name = || format!("{}/{}", row.job_id, row.name);
        let state = parse_column("tasks", &row_name(), "state", &row.state)?;
        let needs = serde_json::from_str(&row.needs).map_err(|error| StoreError::InvalidRow {
            table: "tasks",
            row: row_name(),
            column: "needs",
            source: Box::new(error),
        })?;
        Ok(TaskRecord {
            job_id: JobId(row.job_id),
            name: row.name,
            needs,
            image: row.image,
            state,
            error: row.error,
            position: row.position,
            started_at: row.started_at,
            finished_at: row.finished_at,
            paused_ms: row.paused_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    id: i64,
    job_id: String,
    task: String,
    name: String,
    command: String,
    image: Option<String>,
    state: String,
    exit_code: Option<i32>,
    started_at: UnixMillis,
    finished_at: Option<UnixMillis>,
    attempt: i64,
    paused_ms: i64,
}

impl TryFrom<StepRow> for StepRecord {
    type Error = StoreError;

    fn try_from(row: StepRow) -> Result<Self, Self::Error> {
        let state = parse_column("steps", &row.id.to_string(), "state", &row.state)?;
        Ok(StepRecord {
            id: row.id,
            job_id: JobId(row.job_id),
            task: row.task,
            name: row.name,
            command: row.command,
            image: row.image,
            state,
            exit_code: row.exit_code,
            started_at: row.started_at,
            finished_at: row.finished_at,
            attempt: row.attempt,
            paused_ms: row.paused_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ArtifactRow {
    job_id: String,
    name: String,
    kind: String,
    size_bytes: i64,
    sha256: String,
    source_path: String,
    task: String,
    created_at: UnixMillis,
}

impl From<ArtifactRow> for ArtifactRecord {
    fn from(row: ArtifactRow) -> Self {
        ArtifactRecord {
            job_id: JobId(row.job_id),
            name: row.name,
            kind: row.kind,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            source_path: row.source_path,
            task: row.task,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SecretRow {
    id: String,
    scope: String,
    key: String,
    blob: Vec<u8>,
    created_at: UnixMillis,
    updated_at: UnixMillis,
}

impl From<SecretRow> for SecretRecord {
    fn from(row: SecretRow) -> Self {
        SecretRecord {
            id: row.id,
            scope: row.scope,
            key: row.key,
            blob: row.blob,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    at: UnixMillis,
    actor: String,
    action: String,
    subject: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        AuditEvent {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            subject: row.subject,
        }
    }
}
