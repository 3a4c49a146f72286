use std::path::PathBuf;

/// Fix appended to open errors: choosing another data directory.
const CHOOSE_ANOTHER: &str = "choose another data directory with --data-dir or DANUBE_DATA_DIR";

/// A failed store operation. Each variant names the operation and the value
/// it was about; the SQLite error, when there is one, is in `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open database `{path}`; check that it is readable and writable or {CHOOSE_ANOTHER}", path = .path.display())]
    OpenDatabase { path: PathBuf, source: sqlx::Error },

    #[error(
        "`{path}` is not a SQLite database or is corrupted; move it aside or {CHOOSE_ANOTHER}",
        path = .path.display()
    )]
    NotADatabase { path: PathBuf, source: sqlx::Error },

    #[error("failed to apply migrations to database `{path}`", path = .path.display())]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "database `{path}` was migrated by a newer Danube (migration {version} is unknown to this \
         version); upgrade danube or {CHOOSE_ANOTHER}",
        path = .path.display()
    )]
    DatabaseTooNew { path: PathBuf, version: i64 },

    #[error("failed to record job `{id}`")]
    InsertJob { id: String, source: sqlx::Error },

    #[error("failed to update job `{id}`")]
    UpdateJob { id: String, source: sqlx::Error },

    #[error("no job has the id or id prefix `{0}`")]
    JobNotFound(String),

    #[error(
        "job id prefix `{prefix}` matches several jobs ({}); give more characters of the id",
        .matches.join(", ")
    )]
    AmbiguousJobId {
        prefix: String,
        matches: Vec<String>,
    },

    #[error(
        "job id prefix `{prefix}` is too short; give at least {min} characters of the id",
        min = super::MIN_JOB_PREFIX
    )]
    JobIdTooShort { prefix: String },

    #[error("failed to look up job `{id_or_prefix}`")]
    FindJob {
        id_or_prefix: String,
        source: sqlx::Error,
    },

    #[error("failed to list jobs")]
    ListJobs { source: sqlx::Error },

    #[error("failed to count jobs by state")]
    CountJobs { source: sqlx::Error },

    #[error("the database did not answer `SELECT 1`")]
    Ping { source: sqlx::Error },

    #[error("failed to record the tasks of job `{job}`")]
    InsertTasks { job: String, source: sqlx::Error },

    #[error("failed to update task `{task}` of job `{job}`")]
    UpdateTask {
        job: String,
        task: String,
        source: sqlx::Error,
    },

    #[error("job `{job}` has no task `{task}`")]
    TaskNotFound { job: String, task: String },

    #[error("failed to list the tasks of job `{job}`")]
    ListTasks { job: String, source: sqlx::Error },

    #[error("failed to record step `{step}` of job `{job}`")]
    InsertStep {
        job: String,
        step: String,
        source: sqlx::Error,
    },

    #[error("failed to record the end of step {step_id}")]
    FinishStep { step_id: i64, source: sqlx::Error },

    #[error("failed to record a retry of step {step_id}")]
    RestartStep { step_id: i64, source: sqlx::Error },

    #[error("failed to record the time step {step_id} spent paused")]
    PauseStep { step_id: i64, source: sqlx::Error },

    #[error("failed to record the time task `{task}` spent paused")]
    PauseTask { task: String, source: sqlx::Error },

    #[error("no step has id {0}")]
    StepNotFound(i64),

    #[error("failed to list the steps of job `{job}`")]
    ListSteps { job: String, source: sqlx::Error },

    #[error("failed to record artifact `{name}` of job `{job}`")]
    InsertArtifact {
        job: String,
        name: String,
        source: sqlx::Error,
    },

    #[error("job `{job}` already has an artifact named `{name}`; upload it under another name")]
    ArtifactExists { job: String, name: String },

    #[error("failed to list the artifacts of job `{job}`")]
    ListArtifacts { job: String, source: sqlx::Error },

    #[error("failed to store secret `{key}` in scope `{scope}`")]
    PutSecret {
        scope: String,
        key: String,
        source: sqlx::Error,
    },

    #[error("failed to read secret `{key}` in scope `{scope}`")]
    GetSecret {
        scope: String,
        key: String,
        source: sqlx::Error,
    },

    #[error("failed to list secrets")]
    ListSecrets { source: sqlx::Error },

    #[error("failed to delete secret `{key}` in scope `{scope}`")]
    DeleteSecret {
        scope: String,
        key: String,
        source: sqlx::Error,
    },

    #[error("failed to record audit event `{action}` on `{subject}`")]
    RecordAuditEvent {
        action: String,
        subject: String,
        source: sqlx::Error,
    },

    #[error("failed to list audit events")]
    ListAuditEvents { source: sqlx::Error },

    #[error("failed to read setting `{key}`")]
    GetSetting { key: String, source: sqlx::Error },

    #[error("failed to store setting `{key}`")]
    PutSetting { key: String, source: sqlx::Error },

    #[error("failed to record recent project `{path}`")]
    PutRecentProject { path: String, source: sqlx::Error },

    #[error("failed to list recent projects")]
    ListRecentProjects { source: sqlx::Error },

    #[error("failed to remove recent project `{path}`")]
    RemoveRecentProject { path: String, source: sqlx::Error },

    #[error(
        "row `{row}` of table `{table}` has an invalid `{column}`; the database was changed \
         outside this version of Danube"
    )]
    InvalidRow {
        table: &'static str,
        row: String,
        column: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Extracts the primary SQLite result code of `error`, without the extended bits.
fn primary_code(error: &sqlx::Error) -> Option<i64> {
    let code = error.as_database_error()?.code()?.parse::<i64>().ok()?;
    Some(code & 0xff)
}

/// Returns whether `error` is `SQLITE_BUSY` or one of its extended codes.
pub(super) fn is_busy(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    primary_code(error) == Some(SQLITE_BUSY)
}

/// Returns whether `error` is SQLite reporting that the file is not a database or is damaged
/// (`SQLITE_NOTADB`, `SQLITE_CORRUPT` and its extended codes).
pub(super) fn is_not_a_database(error: &sqlx::Error) -> bool {
    const SQLITE_CORRUPT: i64 = 11;
    const SQLITE_NOTADB: i64 = 26;

    matches!(primary_code(error), Some(SQLITE_CORRUPT | SQLITE_NOTADB))
}

pub(super) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_foreign_key_violation())
}

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}
