//! SQLite storage of jobs, tasks, steps, artifacts and secrets.
//!
//! One database file per data directory, opened in WAL mode with foreign keys
//! on and a busy timeout; the migrations in `engine/migrations/` are embedded
//! in the binary and applied when the store opens.

use std::path::Path;

use crate::model::{JobId, JobState, RunState, TriggerType, UnixMillis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Implementer: one variant per failed operation (open, migrate, insert
    // job, ...), each carrying the sqlx error as its source. Plus:
    // JobNotFound(String), AmbiguousJobId { prefix, matches: Vec<String> }.
}

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

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: sqlx::SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        todo!("{path:?}")
    }

    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StoreError> {
        todo!("{job:?} {:?}", self.pool)
    }

    pub async fn set_job_pipeline(&self, id: &JobId, pipeline: &str) -> Result<(), StoreError> {
        todo!("{id} {pipeline}")
    }

    /// Moves a job to `state`. Sets `started_at` on entering `Running` and
    /// `finished_at` on entering a final state; `reason` replaces the stored one
    /// when given.
    pub async fn set_job_state(
        &self,
        id: &JobId,
        state: JobState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        todo!("{id} {state} {reason:?}")
    }

    /// Records every task of a plan in one transaction, in the given order.
    pub async fn insert_tasks(&self, job: &JobId, tasks: &[NewTask]) -> Result<(), StoreError> {
        todo!("{job} {tasks:?}")
    }

    /// Moves a task to `state`; sets `started_at` on `Running`, `finished_at` on
    /// final states.
    pub async fn set_task_state(
        &self,
        job: &JobId,
        task: &str,
        state: RunState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        todo!("{job} {task} {state} {error:?}")
    }

    /// Records a running step and returns its id.
    pub async fn insert_step(&self, step: &NewStep) -> Result<i64, StoreError> {
        todo!("{step:?}")
    }

    pub async fn finish_step(
        &self,
        step_id: i64,
        state: RunState,
        exit_code: Option<i32>,
    ) -> Result<(), StoreError> {
        todo!("{step_id} {state} {exit_code:?}")
    }

    /// The most recent jobs first.
    pub async fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        todo!("{limit}")
    }

    /// Finds a job by full id or by a unique prefix of it.
    pub async fn find_job(&self, id_or_prefix: &str) -> Result<JobRecord, StoreError> {
        todo!("{id_or_prefix}")
    }

    /// Tasks of a job in declaration order.
    pub async fn list_tasks(&self, job: &JobId) -> Result<Vec<TaskRecord>, StoreError> {
        todo!("{job}")
    }

    /// Steps of a job in the order they started.
    pub async fn list_steps(&self, job: &JobId) -> Result<Vec<StepRecord>, StoreError> {
        todo!("{job}")
    }

    pub async fn insert_artifact(&self, artifact: &ArtifactRecord) -> Result<(), StoreError> {
        todo!("{artifact:?}")
    }

    pub async fn list_artifacts(&self, job: &JobId) -> Result<Vec<ArtifactRecord>, StoreError> {
        todo!("{job}")
    }

    /// Inserts or replaces the secret with the same scope and key.
    pub async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        todo!("{:?}", secret.key)
    }

    pub async fn get_secret(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        todo!("{scope} {key}")
    }

    /// Every secret, ordered by scope then key.
    pub async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        todo!()
    }

    /// Deletes a secret; returns whether one existed.
    pub async fn delete_secret(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        todo!("{scope} {key}")
    }

    /// Appends to the audit log (`action` such as `secret.read`, `subject` such
    /// as the secret key, `actor` such as `job:<id>`).
    pub async fn record_audit_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        todo!("{actor} {action} {subject}")
    }
}
