//! Ownership of jobs by engine processes.
//!
//! Several `danube` processes may share one data directory, and one of them
//! may be killed mid-job. Each job's log directory holds `engine.lock`, locked
//! with `flock` by the process running the job for as long as it runs. The
//! kernel drops the lock when that process dies, however it dies, so a job
//! that is not final and whose lock is free was abandoned.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::backend::local::process::kill_processes_with_env;
use crate::config::DataDir;
use crate::model::{JobState, RunState};
use crate::store::{Store, StoreError};

const LOCK_FILE: &str = "engine.lock";

/// The reason stored with an abandoned job.
pub const ABANDONED_REASON: &str =
    "the engine running this job stopped before it finished (the process was killed or crashed)";

/// Held while this process runs the job; dropping it releases the job.
pub struct JobLock {
    _lock: Flock<File>,
}

/// Locks `job_logs_dir/engine.lock` for this process.
pub fn acquire(job_logs_dir: &Path) -> io::Result<JobLock> {
    let file = File::create(job_logs_dir.join(LOCK_FILE))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| io::Error::from(errno))?;
    Ok(JobLock { _lock: lock })
}

/// Returns whether a live process holds the job's lock.
pub fn is_owned(job_logs_dir: &Path) -> bool {
    let Ok(file) = File::open(job_logs_dir.join(LOCK_FILE)) else {
        return false;
    };
    // Taking the lock succeeds only when no process holds it; it is released
    // again when `_probe` drops at the end of this function.
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_probe) => false,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
        Err(_) => false,
    }
}

/// Marks jobs that no live process runs as failed, kills what is left of
/// their coordinator and steps, closes their tasks and steps, and removes
/// their workspaces. Returns how many were recovered.
pub async fn recover_abandoned_jobs(data: &DataDir, store: &Store) -> Result<usize, StoreError> {
    let mut recovered = 0;
    for job in store.list_unfinished_jobs().await? {
        if is_owned(&data.job_logs_dir(&job.id)) {
            continue;
        }
        let killed = kill_processes_with_env("DANUBE_JOB_ID", job.id.as_str());
        tracing::info!(job_id = %job.id, killed, "marking an abandoned job as failed");

        for step in store.list_steps(&job.id).await? {
            if !step.state.is_final() {
                store.finish_step(step.id, RunState::Failure, None).await?;
            }
        }
        for task in store.list_tasks(&job.id).await? {
            let state = match task.state {
                RunState::Running => RunState::Failure,
                RunState::Pending => RunState::Skipped,
                _ => continue,
            };
            store
                .set_task_state(&job.id, &task.name, state, None)
                .await?;
        }
        store
            .set_job_state(&job.id, JobState::Failure, Some(ABANDONED_REASON))
            .await?;

        let workspace = data.workspaces_dir().join(job.id.as_str());
        if workspace.exists()
            && let Err(err) = std::fs::remove_dir_all(&workspace)
        {
            tracing::warn!(job_id = %job.id, error = %err, "failed to remove an abandoned workspace");
        }
        recovered += 1;
    }
    Ok(recovered)
}
