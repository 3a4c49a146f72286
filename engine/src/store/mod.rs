//! SQLite storage of jobs, tasks, steps, artifacts and secrets.
//!
//! One database file per data directory, opened in WAL mode with foreign keys
//! on and a busy timeout. The migrations in `engine/migrations/` are embedded
//! in the binary and applied when the store opens.
//!
//! Several `Store` handles, in one process or in several, may use the same
//! file at once: readers never wait in WAL mode, and a writer waits up to
//! [`BUSY_TIMEOUT`] for another writer to finish. Transactions that write
//! start with `BEGIN IMMEDIATE`, so they take the write lock before they read
//! and cannot fail with `SQLITE_BUSY` halfway through.
//!
//! States are stored as their text (`JobState::as_str`), ids as text and
//! timestamps as milliseconds since the Unix epoch.

mod error;
mod projects;
mod rows;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use self::error::StoreError;
use self::error::{is_busy, is_foreign_key_violation, is_not_a_database, is_unique_violation};
pub use self::projects::RecentProject;
use self::rows::{
    ARTIFACT_COLUMNS, AUDIT_COLUMNS, ArtifactRow, AuditRow, JOB_COLUMNS, JobRow, SECRET_COLUMNS,
    STEP_COLUMNS, SecretRow, StepRow, TASK_COLUMNS, TaskRow,
};
use crate::model::{JobId, JobState, RunState, TriggerType, UnixMillis, now_millis};

/// How long a write waits for another connection's write to finish before it
/// fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Minimum length of an id prefix that [`Store::find_job`] accepts.
pub const MIN_JOB_PREFIX: usize = 4;

/// Maximum number of candidate ids listed for an ambiguous prefix.
const MAX_PREFIX_CANDIDATES: usize = 10;

/// Connections per handle. SQLite has one writer at a time, so more
/// connections only help readers.
const MAX_CONNECTIONS: u32 = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A job as recorded when it is created.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    /// The pipeline name requested with `--pipeline`, or empty until the
    /// coordinator declares which pipeline it runs.
    pub pipeline: String,
    /// Absolute path of the project folder.
    pub project_dir: String,
    pub trigger_type: TriggerType,
    pub trigger_ref: String,
    pub repo: String,
    pub branch: String,
    pub commit_sha: String,
    pub created_at: UnixMillis,
    /// The target chosen for this job alone (`kube:CONTEXT`); `None` for the
    /// engine's own.
    pub target: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub pipeline: String,
    pub project_dir: String,
    pub state: JobState,
    /// Why the job ended as it did, when it did not succeed.
    pub reason: Option<String>,
    pub trigger_type: TriggerType,
    pub trigger_ref: String,
    pub repo: String,
    pub branch: String,
    pub commit_sha: String,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    /// As in [`NewJob::target`].
    pub target: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewTask {
    pub name: String,
    pub needs: Vec<String>,
    pub image: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskRecord {
    pub job_id: JobId,
    pub name: String,
    pub needs: Vec<String>,
    pub image: Option<String>,
    pub state: RunState,
    pub error: Option<String>,
    /// Declaration order, used to list tasks stably.
    pub position: i64,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    /// Time its steps spent paused in the debugger, after a failure too.
    pub paused_ms: i64,
}

impl TaskRecord {
    /// Returns how long the task ran, without the time its steps spent
    /// paused; `None` until it has finished.
    pub fn duration_ms(&self) -> Option<i64> {
        let ran = self.finished_at? - self.started_at?;
        Some((ran - self.paused_ms).max(0))
    }
}

#[derive(Clone, Debug)]
pub struct NewStep {
    pub job_id: JobId,
    pub task: String,
    pub name: String,
    /// The command with secrets already scrubbed.
    pub command: String,
    pub image: Option<String>,
    pub started_at: UnixMillis,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StepRecord {
    pub id: i64,
    pub job_id: JobId,
    pub task: String,
    pub name: String,
    pub command: String,
    pub image: Option<String>,
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// Runs of this step: 1, plus one for each retry from a debug pause.
    pub attempt: i64,
    /// Milliseconds the step spent paused in the debugger between
    /// `started_at` and `finished_at`, which its duration leaves out.
    pub paused_ms: i64,
}

impl StepRecord {
    /// Returns how long the step ran, without the time it spent paused;
    /// `None` until it finished.
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at
            .map(|finished| (finished - self.started_at - self.paused_ms).max(0))
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ArtifactRecord {
    pub job_id: JobId,
    pub name: String,
    /// `file` or `directory` (stored as a tar.gz).
    pub kind: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub source_path: String,
    pub task: String,
    pub created_at: UnixMillis,
}

/// An entry of the audit log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditEvent {
    /// Increases with every event, so it orders events recorded in the same
    /// millisecond.
    pub id: i64,
    pub at: UnixMillis,
    pub actor: String,
    pub action: String,
    pub subject: String,
}

/// An encrypted secret as stored: `blob` is `nonce | ciphertext | tag`.
#[derive(Clone, Debug)]
pub struct SecretRecord {
    /// Random id bound into the ciphertext as associated data.
    pub id: String,
    /// `global` or `pipeline:<name>`.
    pub scope: String,
    pub key: String,
    pub blob: Vec<u8>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// Which jobs [`Store::list_jobs_page`] returns: every set field must match.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub pipeline: Option<String>,
    pub project_dir: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs that sort after this `(created_at, id)` in newest-first
    /// order, that is the page after the one that ended there.
    pub after: Option<(UnixMillis, JobId)>,
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: sqlx::SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotADatabase`] when the file exists but is not a SQLite
    /// database, [`StoreError::DatabaseTooNew`] when a newer Danube migrated
    /// it, [`StoreError::OpenDatabase`] or [`StoreError::Migrate`] otherwise.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let pool = connect(path, options).await?;

        let store = Store { pool };
        store.migrate(path).await?;
        tracing::debug!(path = %path.display(), "database open");
        Ok(store)
    }

    async fn migrate(&self, path: &Path) -> Result<(), StoreError> {
        let classify = |source| match source {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::DatabaseTooNew {
                path: path.to_path_buf(),
                version,
            },
            sqlx::migrate::MigrateError::Execute(error) if is_not_a_database(&error) => {
                StoreError::NotADatabase {
                    path: path.to_path_buf(),
                    source: error,
                }
            }
            source => StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            },
        };

        // sqlx takes no lock around migrations on SQLite, so two processes
        // opening a database at once could both apply the same migration.
        // A lock file beside the database makes them take turns; the second
        // then finds every migration applied.
        let lock_path = path.with_extension("db.migrate-lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let file = std::fs::File::create(&lock_path)?;
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, errno)| std::io::Error::from(errno))
        })
        .await
        .expect("the lock task does not panic");
        if let Err(err) = &lock {
            // Without the lock the retry below still covers most races.
            tracing::debug!(error = %err, "failed to lock the database for migrations");
        }

        let result = match self.run_migrations().await {
            Ok(()) => Ok(()),
            Err(first) => {
                let first = classify(first);
                if matches!(
                    first,
                    StoreError::DatabaseTooNew { .. } | StoreError::NotADatabase { .. }
                ) {
                    return Err(first);
                }
                tracing::debug!(error = %first, "migration failed, retrying once in case another process applied it");
                self.run_migrations().await.map_err(classify)
            }
        };
        drop(lock);
        result
    }

    /// Applies the pending migrations on one connection with foreign keys
    /// off. A migration that rebuilds a table (the only way SQLite changes
    /// a CHECK constraint) drops the old table, and with foreign keys on
    /// that drop would delete every row that references it through
    /// `ON DELETE CASCADE`. The pragma must be set outside a transaction,
    /// and sqlx runs each migration inside one, so it is set here.
    async fn run_migrations(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *connection)
            .await?;
        let migrated = MIGRATOR.run(&mut *connection).await;
        let restored = sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *connection)
            .await;
        if restored.is_err() {
            // Never hand a connection without foreign keys back to the pool.
            connection.close_on_drop();
        }
        migrated?;
        restored?;
        Ok(())
    }

    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (id, pipeline, project_dir, state, trigger_type, trigger_ref, \
             repo, branch, commit_sha, created_at, target) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(job.id.as_str())
        .bind(&job.pipeline)
        .bind(&job.project_dir)
        .bind(JobState::Pending.as_str())
        .bind(job.trigger_type.as_str())
        .bind(&job.trigger_ref)
        .bind(&job.repo)
        .bind(&job.branch)
        .bind(&job.commit_sha)
        .bind(job.created_at)
        .bind(&job.target)
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::InsertJob {
            id: job.id.to_string(),
            source,
        })?;
        Ok(())
    }

    pub async fn set_job_pipeline(&self, id: &JobId, pipeline: &str) -> Result<(), StoreError> {
        let result = sqlx::query("UPDATE jobs SET pipeline = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(pipeline)
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::UpdateJob {
                id: id.to_string(),
                source,
            })?;
        if result.rows_affected() == 0 {
            return Err(StoreError::JobNotFound(id.to_string()));
        }
        Ok(())
    }

    /// Moves a job to `state`. Sets `started_at` on entering `Scheduling` or
    /// `Running`, whichever comes first, and `finished_at` on entering a final
    /// state; `reason` replaces the stored one when given.
    ///
    /// A job in a final state keeps it: moving it again changes nothing and
    /// is not an error, so a cancel that races with the job's own end leaves
    /// whichever state was written first.
    ///
    /// # Errors
    ///
    /// [`StoreError::JobNotFound`] when no job has this id.
    pub async fn set_job_state(
        &self,
        id: &JobId,
        state: JobState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let update_job = |source| StoreError::UpdateJob {
            id: id.to_string(),
            source,
        };
        let starts = matches!(state, JobState::Scheduling | JobState::Running);
        let result = sqlx::query(
            "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason), \
             started_at = CASE WHEN ?4 THEN COALESCE(started_at, ?6) ELSE started_at END, \
             finished_at = CASE WHEN ?5 THEN ?6 ELSE finished_at END \
             WHERE id = ?1 AND state NOT IN ('success', 'failure', 'timeout', 'cancelled')",
        )
        .bind(id.as_str())
        .bind(state.as_str())
        .bind(reason)
        .bind(starts)
        .bind(state.is_final())
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(update_job)?;
        if result.rows_affected() > 0 {
            return Ok(());
        }

        let stored: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(update_job)?;
        match stored {
            None => Err(StoreError::JobNotFound(id.to_string())),
            Some(stored) => {
                tracing::debug!(job_id = %id, stored, requested = %state, "job already final, state kept");
                Ok(())
            }
        }
    }

    /// Records every task of a plan in one transaction, in the given order.
    ///
    /// Tasks start `pending`; `position` is the index in `tasks`.
    ///
    /// # Errors
    ///
    /// [`StoreError::JobNotFound`] when the job does not exist, and
    /// [`StoreError::InsertTasks`] when a task name repeats one already
    /// recorded for the job. Nothing is recorded then.
    pub async fn insert_tasks(&self, job: &JobId, tasks: &[NewTask]) -> Result<(), StoreError> {
        let insert_tasks = |source: sqlx::Error| {
            if is_foreign_key_violation(&source) {
                StoreError::JobNotFound(job.to_string())
            } else {
                StoreError::InsertTasks {
                    job: job.to_string(),
                    source,
                }
            }
        };

        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(insert_tasks)?;
        for (position, task) in tasks.iter().enumerate() {
            let needs =
                serde_json::to_string(&task.needs).expect("a list of strings always serializes");
            let position = i64::try_from(position).expect("a plan has fewer than 2^63 tasks");
            sqlx::query(
                "INSERT INTO tasks (job_id, name, needs, image, state, position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(job.as_str())
            .bind(&task.name)
            .bind(needs)
            .bind(&task.image)
            .bind(RunState::Pending.as_str())
            .bind(position)
            .execute(&mut *transaction)
            .await
            .map_err(insert_tasks)?;
        }
        transaction.commit().await.map_err(insert_tasks)
    }

    /// Moves a task to `state`; sets `started_at` on `Running`, `finished_at` on
    /// final states. `error` replaces the stored one when given.
    ///
    /// As with [`Store::set_job_state`], a task in a final state keeps it.
    ///
    /// # Errors
    ///
    /// [`StoreError::TaskNotFound`] when the job has no such task.
    pub async fn set_task_state(
        &self,
        job: &JobId,
        task: &str,
        state: RunState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let update_task = |source| StoreError::UpdateTask {
            job: job.to_string(),
            task: task.to_owned(),
            source,
        };
        let result = sqlx::query(
            "UPDATE tasks SET state = ?3, error = COALESCE(?4, error), \
             started_at = CASE WHEN ?5 THEN COALESCE(started_at, ?7) ELSE started_at END, \
             finished_at = CASE WHEN ?6 THEN ?7 ELSE finished_at END \
             WHERE job_id = ?1 AND name = ?2 AND state IN ('pending', 'running')",
        )
        .bind(job.as_str())
        .bind(task)
        .bind(state.as_str())
        .bind(error)
        .bind(state == RunState::Running)
        .bind(state.is_final())
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(update_task)?;
        if result.rows_affected() > 0 {
            return Ok(());
        }

        let stored: Option<String> =
            sqlx::query_scalar("SELECT state FROM tasks WHERE job_id = ?1 AND name = ?2")
                .bind(job.as_str())
                .bind(task)
                .fetch_optional(&self.pool)
                .await
                .map_err(update_task)?;
        match stored {
            None => Err(StoreError::TaskNotFound {
                job: job.to_string(),
                task: task.to_owned(),
            }),
            Some(stored) => {
                tracing::debug!(job_id = %job, task, stored, requested = %state, "task already final, state kept");
                Ok(())
            }
        }
    }

    /// Records a running step and returns its id.
    ///
    /// One `INSERT`, no transaction: this runs once per `step.run`. The task
    /// name is not checked against the job's tasks.
    ///
    /// # Errors
    ///
    /// [`StoreError::JobNotFound`] when the job does not exist.
    pub async fn insert_step(&self, step: &NewStep) -> Result<i64, StoreError> {
        let result = sqlx::query(
            "INSERT INTO steps (job_id, task, name, command, image, state, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(step.job_id.as_str())
        .bind(&step.task)
        .bind(&step.name)
        .bind(&step.command)
        .bind(&step.image)
        .bind(RunState::Running.as_str())
        .bind(step.started_at)
        .execute(&self.pool)
        .await
        .map_err(|source| {
            if is_foreign_key_violation(&source) {
                StoreError::JobNotFound(step.job_id.to_string())
            } else {
                StoreError::InsertStep {
                    job: step.job_id.to_string(),
                    step: step.name.clone(),
                    source,
                }
            }
        })?;
        Ok(result.last_insert_rowid())
    }

    /// Records how a step ended and sets its `finished_at` to now.
    ///
    /// One `UPDATE`, like [`Store::insert_step`]. `state` is expected to be
    /// final; it is stored as given, even over an earlier final state.
    ///
    /// # Errors
    ///
    /// [`StoreError::StepNotFound`] when no step has this id.
    pub async fn finish_step(
        &self,
        step_id: i64,
        state: RunState,
        exit_code: Option<i32>,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE steps SET state = ?2, exit_code = ?3, finished_at = ?4 WHERE id = ?1",
        )
        .bind(step_id)
        .bind(state.as_str())
        .bind(exit_code)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::FinishStep { step_id, source })?;
        if result.rows_affected() == 0 {
            return Err(StoreError::StepNotFound(step_id));
        }
        Ok(())
    }

    /// Records `paused_ms` as the time step `step_id` spent paused in the
    /// debugger so far.
    ///
    /// # Errors
    ///
    /// [`StoreError::StepNotFound`] when no step has this id.
    /// Adds `paused_ms` to the time task `task` of job `job_id` spent
    /// paused in the debugger.
    ///
    /// # Errors
    ///
    /// The database update failed.
    pub async fn add_task_pause(
        &self,
        job_id: &JobId,
        task: &str,
        paused_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET paused_ms = paused_ms + ?3 WHERE job_id = ?1 AND name = ?2")
            .bind(job_id.as_str())
            .bind(task)
            .bind(paused_ms.max(0))
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::PauseTask {
                task: task.to_owned(),
                source,
            })?;
        Ok(())
    }

    pub async fn set_step_pause(&self, step_id: i64, paused_ms: i64) -> Result<(), StoreError> {
        let result = sqlx::query("UPDATE steps SET paused_ms = ?2 WHERE id = ?1")
            .bind(step_id)
            .bind(paused_ms.max(0))
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::PauseStep { step_id, source })?;
        if result.rows_affected() == 0 {
            return Err(StoreError::StepNotFound(step_id));
        }
        Ok(())
    }

    /// Records that a finished step runs again (a retry from a debug pause):
    /// its attempt goes up by one, its state back to `running`, and its exit
    /// code and `finished_at` are cleared. Returns the new attempt.
    ///
    /// # Errors
    ///
    /// [`StoreError::StepNotFound`] when no step has this id.
    pub async fn restart_step(&self, step_id: i64) -> Result<i64, StoreError> {
        let attempt: Option<i64> = sqlx::query_scalar(
            "UPDATE steps SET attempt = attempt + 1, state = ?2, exit_code = NULL, \
             finished_at = NULL WHERE id = ?1 RETURNING attempt",
        )
        .bind(step_id)
        .bind(RunState::Running.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StoreError::RestartStep { step_id, source })?;
        attempt.ok_or(StoreError::StepNotFound(step_id))
    }

    /// Lists jobs, most recent first (by `created_at`, then id).
    pub async fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        self.list_jobs_page(&JobFilter::default(), limit).await
    }

    /// Lists up to `limit` jobs that match `filter`, newest first (by
    /// `created_at`, then id). Pages are keyed on `(created_at, id)`, so jobs
    /// inserted while a client pages never shift later pages.
    pub async fn list_jobs_page(
        &self,
        filter: &JobFilter,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError> {
        // Only the filters that are set go into the query, and the cursor is
        // a row-value comparison, so SQLite seeks in the (created_at, id)
        // index instead of scanning every newer job.
        let mut query =
            sqlx::QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
        if let Some(pipeline) = &filter.pipeline {
            query.push(" AND pipeline = ").push_bind(pipeline.as_str());
        }
        if let Some(project_dir) = &filter.project_dir {
            query
                .push(" AND project_dir = ")
                .push_bind(project_dir.as_str());
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some((at, id)) = &filter.after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(*at)
                .push(", ")
                .push_bind(id.as_str())
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit);
        let rows: Vec<JobRow> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StoreError::ListJobs { source })?;
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Number of jobs in each state that has any.
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|source| StoreError::CountJobs { source })?;
        // A state no variant has (written by a newer Danube) is left out
        // rather than failing the count.
        Ok(rows
            .into_iter()
            .filter_map(|(state, count)| Some((state.parse().ok()?, count)))
            .collect())
    }

    /// Runs `SELECT 1`, to check that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::Ping { source })?;
        Ok(())
    }

    /// Jobs not in a final state, oldest first: running ones, and ones
    /// left behind by an engine that stopped without finishing them.
    pub async fn list_unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE state IN ('pending', 'scheduling', 'running') \
             ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListJobs { source })?;
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Finds a job by full id or by a unique prefix of it.
    ///
    /// Surrounding whitespace is ignored and letters are matched lowercase,
    /// as job ids are written.
    ///
    /// # Errors
    ///
    /// [`StoreError::JobIdTooShort`] for fewer than [`MIN_JOB_PREFIX`]
    /// characters, [`StoreError::JobNotFound`] when nothing matches, and
    /// [`StoreError::AmbiguousJobId`] with up to ten matching ids when the
    /// prefix fits several jobs.
    pub async fn find_job(&self, id_or_prefix: &str) -> Result<JobRecord, StoreError> {
        let prefix = id_or_prefix.trim().to_ascii_lowercase();
        if prefix.chars().count() < MIN_JOB_PREFIX {
            return Err(StoreError::JobIdTooShort { prefix });
        }

        // Every id that starts with `prefix` sorts between `prefix` and
        // `prefix` followed by the largest code point, because ids are ASCII.
        // So the primary key index serves this as a range scan.
        let upper = format!("{prefix}\u{10FFFF}");
        let limit = i64::try_from(MAX_PREFIX_CANDIDATES + 1)
            .expect("MAX_PREFIX_CANDIDATES + 1 fits in i64");
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3"
        ))
        .bind(&prefix)
        .bind(&upper)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::FindJob {
            id_or_prefix: id_or_prefix.to_owned(),
            source,
        })?;

        let mut jobs = rows
            .into_iter()
            .map(JobRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // A full id is also a prefix of itself, and of no other id of the same
        // length, so an exact match wins over longer ids that extend it.
        if let Some(exact) = jobs.iter().position(|job| job.id.as_str() == prefix) {
            return Ok(jobs.swap_remove(exact));
        }
        match jobs.len() {
            0 => Err(StoreError::JobNotFound(id_or_prefix.trim().to_owned())),
            1 => Ok(jobs.remove(0)),
            _ => Err(StoreError::AmbiguousJobId {
                prefix,
                matches: jobs
                    .into_iter()
                    .take(MAX_PREFIX_CANDIDATES)
                    .map(|job| job.id.0)
                    .collect(),
            }),
        }
    }

    /// Tasks of a job in declaration order.
    pub async fn list_tasks(&self, job: &JobId) -> Result<Vec<TaskRecord>, StoreError> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ?1 ORDER BY position"
        ))
        .bind(job.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListTasks {
            job: job.to_string(),
            source,
        })?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    /// Steps of a job in the order they started (by `started_at`, then id).
    pub async fn list_steps(&self, job: &JobId) -> Result<Vec<StepRecord>, StoreError> {
        let rows: Vec<StepRow> = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1 ORDER BY started_at, id"
        ))
        .bind(job.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListSteps {
            job: job.to_string(),
            source,
        })?;
        rows.into_iter().map(StepRecord::try_from).collect()
    }

    /// Records an uploaded artifact.
    ///
    /// # Errors
    ///
    /// [`StoreError::ArtifactExists`] when the job already has an artifact
    /// of that name, [`StoreError::JobNotFound`] when the job does not exist.
    pub async fn insert_artifact(&self, artifact: &ArtifactRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO artifacts (job_id, name, kind, size_bytes, sha256, source_path, task, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(artifact.job_id.as_str())
        .bind(&artifact.name)
        .bind(&artifact.kind)
        .bind(artifact.size_bytes)
        .bind(&artifact.sha256)
        .bind(&artifact.source_path)
        .bind(&artifact.task)
        .bind(artifact.created_at)
        .execute(&self.pool)
        .await
        .map_err(|source| {
            // The primary key is (job_id, name), so a unique violation is a
            // repeated name.
            if is_unique_violation(&source) {
                StoreError::ArtifactExists {
                    job: artifact.job_id.to_string(),
                    name: artifact.name.clone(),
                }
            } else if is_foreign_key_violation(&source) {
                StoreError::JobNotFound(artifact.job_id.to_string())
            } else {
                StoreError::InsertArtifact {
                    job: artifact.job_id.to_string(),
                    name: artifact.name.clone(),
                    source,
                }
            }
        })?;
        Ok(())
    }

    /// Artifacts of a job in the order they were recorded.
    pub async fn list_artifacts(&self, job: &JobId) -> Result<Vec<ArtifactRecord>, StoreError> {
        let rows: Vec<ArtifactRow> = sqlx::query_as(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE job_id = ?1 ORDER BY created_at, name"
        ))
        .bind(job.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListArtifacts {
            job: job.to_string(),
            source,
        })?;
        Ok(rows.into_iter().map(ArtifactRecord::from).collect())
    }

    /// Inserts or replaces the secret with the same scope and key.
    ///
    /// A replaced row takes the new `id`, `blob` and `updated_at` together
    /// (the blob is bound to its id) and keeps its `created_at`.
    pub async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (id, scope, key, blob, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (scope, key) DO UPDATE SET \
             id = excluded.id, blob = excluded.blob, updated_at = excluded.updated_at",
        )
        .bind(&secret.id)
        .bind(&secret.scope)
        .bind(&secret.key)
        .bind(&secret.blob)
        .bind(secret.created_at)
        .bind(secret.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::PutSecret {
            scope: secret.scope.clone(),
            key: secret.key.clone(),
            source,
        })?;
        Ok(())
    }

    pub async fn get_secret(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let row: Option<SecretRow> = sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE scope = ?1 AND key = ?2"
        ))
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StoreError::GetSecret {
            scope: scope.to_owned(),
            key: key.to_owned(),
            source,
        })?;
        Ok(row.map(SecretRecord::from))
    }

    /// Lists every secret, ordered by scope then key.
    pub async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        let rows: Vec<SecretRow> = sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY scope, key"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListSecrets { source })?;
        Ok(rows.into_iter().map(SecretRecord::from).collect())
    }

    /// Deletes a secret; returns whether one existed.
    pub async fn delete_secret(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM secrets WHERE scope = ?1 AND key = ?2")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::DeleteSecret {
                scope: scope.to_owned(),
                key: key.to_owned(),
                source,
            })?;
        Ok(result.rows_affected() > 0)
    }

    /// Appends to the audit log (`action` such as `secret.read`, `subject` such
    /// as the secret key, `actor` such as `job:<id>`), stamped with the
    /// current time.
    pub async fn record_audit_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, subject) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(now_millis())
        .bind(actor)
        .bind(action)
        .bind(subject)
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::RecordAuditEvent {
            action: action.to_owned(),
            subject: subject.to_owned(),
            source,
        })?;
        Ok(())
    }

    /// Lists audit events, most recent first.
    pub async fn list_audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY id DESC LIMIT ?1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListAuditEvents { source })?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    /// Reads an engine-wide setting such as the draining flag.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StoreError::GetSetting {
                key: key.to_owned(),
                source,
            })
    }

    /// Inserts or replaces an engine-wide setting.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::PutSetting {
            key: key.to_owned(),
            source,
        })?;
        Ok(())
    }
}

/// Connects a pool to the database at `path`.
///
/// Connecting runs the pragmas in `options`, so a file that is not a database
/// fails here rather than at the first query. The first connection to a new
/// file switches it to WAL, which needs an exclusive lock. When two processes
/// do that at once, SQLite returns `SQLITE_BUSY` immediately because waiting
/// could deadlock, so that case is retried until [`BUSY_TIMEOUT`] has passed.
async fn connect(
    path: &Path,
    options: SqliteConnectOptions,
) -> Result<sqlx::SqlitePool, StoreError> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        let result = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await;
        let source = match result {
            Ok(pool) => return Ok(pool),
            Err(source) => source,
        };

        if is_busy(&source) && tokio::time::Instant::now() + delay < deadline {
            tracing::debug!(path = %path.display(), error = %source, "database busy while opening, retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
            continue;
        }
        return Err(if is_not_a_database(&source) {
            StoreError::NotADatabase {
                path: path.to_path_buf(),
                source,
            }
        } else {
            StoreError::OpenDatabase {
                path: path.to_path_buf(),
                source,
            }
        });
    }
}
