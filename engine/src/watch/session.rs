//! A watch session: run a project's pipeline, and on every change batch
//! cancel the job in flight, wait for it to end, and start a new one.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::WatchError;
use super::batch::ChangeBatch;
use super::watcher::ProjectWatcher;
use crate::model::{JobId, TriggerType};
use crate::orchestrator::{
    Engine, JobHandle, JobOutcome, JobRequest, OrchestratorError, check_project,
};

/// The default debounce window. Editors save in bursts (a temporary file,
/// a rename, a backup, a swap-file update) that land within a few
/// milliseconds, and tools such as formatters on save rewrite the file again
/// within about 100 ms. 250 ms covers both, and stays below the half second
/// after which a rerun starts to feel slow.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);

/// Minimum debounce window accepted, because the debouncer's thread wakes
/// every quarter of it.
pub const MIN_DEBOUNCE: Duration = Duration::from_millis(10);

/// Maximum debounce window accepted.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(60);

/// The jobs a watch session runs and its debounce window.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The first job of the session; later jobs are the same with the
    /// `Watch` trigger and the changed file as their `trigger_ref`.
    pub job: JobRequest,
    /// Quiet time after the last change of a burst before a run starts.
    pub debounce: Duration,
}

/// One job of a session, handed to a [`RunFollower`].
pub struct WatchRun {
    pub handle: JobHandle,
    /// The change that started the job; `None` for the session's first job.
    pub change: Option<ChangeBatch>,
    /// Holds the change that made the session cancel this job, set before
    /// the job is cancelled, so that a follower can announce the restart
    /// before the cancelled job's result.
    pub interrupted_by: watch::Receiver<Option<ChangeBatch>>,
}

/// Follows each job of a session until it ends: the CLI shows it live, the
/// HTTP API only waits for it.
#[async_trait::async_trait]
pub trait RunFollower: Send {
    /// Waits for the job to end and returns its outcome. The session
    /// cancels the job itself when a change or a stop arrives.
    async fn follow(&mut self, run: WatchRun) -> JobOutcome;

    /// Reports that the job after a change could not be submitted, for
    /// example because the change deleted `danubefile.py`. The session
    /// waits for the next change.
    fn submit_failed(&mut self, change: &ChangeBatch, error: &OrchestratorError) {
        let _ = (change, error);
    }
}

/// A follower that only waits for each job.
pub struct WaitFollower;

#[async_trait::async_trait]
impl RunFollower for WaitFollower {
    async fn follow(&mut self, run: WatchRun) -> JobOutcome {
        run.handle.wait().await
    }
}

/// Handles to a running session, for callers other than the one that runs
/// it.
#[derive(Clone, Debug)]
pub struct SessionControls {
    stop: CancellationToken,
    current_job: watch::Receiver<Option<JobId>>,
}

impl SessionControls {
    /// Asks the session to stop: it cancels its job in flight, waits for
    /// it, and returns. Returns at once.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Returns the session's latest job, running or finished, or `None`
    /// until the first job is recorded.
    pub fn current_job(&self) -> Option<JobId> {
        self.current_job.borrow().clone()
    }

    /// Waits until the session recorded a job, or ended without one.
    pub async fn first_job(&mut self) -> Option<JobId> {
        let result = self.current_job.wait_for(Option::is_some).await;
        result.ok().and_then(|job| job.clone())
    }
}

/// A started watch: the project is watched from [`WatchSession::start`] on,
/// and [`WatchSession::run`] runs the jobs.
pub struct WatchSession {
    /// Names the session in logs and in the HTTP API.
    pub id: String,
    pub project: PathBuf,
    engine: Engine,
    request: WatchRequest,
    _watcher: ProjectWatcher,
    changes: mpsc::Receiver<ChangeBatch>,
    stop: CancellationToken,
    current_job: watch::Sender<Option<JobId>>,
}

impl WatchSession {
    /// Checks the project folder and starts watching it.
    ///
    /// # Errors
    ///
    /// [`WatchError::Debounce`] for a window outside [`MIN_DEBOUNCE`] to
    /// [`MAX_DEBOUNCE`], [`WatchError::Project`] for a path that is not a
    /// project folder, [`WatchError::Watch`] when the OS refuses the watch.
    pub fn start(engine: Engine, request: WatchRequest) -> Result<WatchSession, WatchError> {
        if !(MIN_DEBOUNCE..=MAX_DEBOUNCE).contains(&request.debounce) {
            return Err(WatchError::Debounce(request.debounce));
        }
        let project = check_project(&request.job.project)?;
        let data_dir = engine.data_dir().to_owned();
        let (watcher, changes) =
            ProjectWatcher::start(&project, Some(&data_dir), request.debounce)?;

        let id = uuid::Uuid::now_v7().to_string();
        tracing::info!(watch_id = %id, project = %project.display(), debounce = ?request.debounce, "watch session started");
        Ok(WatchSession {
            id,
            project,
            engine,
            request,
            _watcher: watcher,
            changes,
            stop: CancellationToken::new(),
            current_job: watch::channel(None).0,
        })
    }

    pub fn controls(&self) -> SessionControls {
        SessionControls {
            stop: self.stop.clone(),
            current_job: self.current_job.subscribe(),
        }
    }

    /// Runs the first job, then a new one after each change batch, until
    /// [`SessionControls::stop`]. Returns the outcome of the last job.
    ///
    /// A change while a job runs cancels it; the next job starts once it
    /// has ended, so that two jobs of one session never run at once. Changes
    /// that arrive meanwhile start one job, not one each.
    ///
    /// # Errors
    ///
    /// [`WatchError::Submit`] when the first job cannot be submitted. Later
    /// submit errors go to [`RunFollower::submit_failed`] and the session
    /// goes on.
    pub async fn run(
        mut self,
        follower: &mut dyn RunFollower,
    ) -> Result<Option<JobOutcome>, WatchError> {
        let mut change: Option<ChangeBatch> = None;
        let mut last_outcome = None;

        loop {
            match self.engine.submit(self.job_request(change.as_ref())).await {
                Ok(handle) => {
                    let (outcome, next) = self.follow(handle, change.take(), follower).await;
                    last_outcome = Some(outcome);
                    change = next;
                }
                Err(err) => match &change {
                    None => return Err(WatchError::Submit(err)),
                    Some(batch) => {
                        tracing::warn!(watch_id = %self.id, trigger = %batch.trigger.display(), error = %err, "failed to start the job after a change");
                        follower.submit_failed(batch, &err);
                        change = None;
                    }
                },
            }
            if self.stop.is_cancelled() {
                break;
            }

            let batch = match change.take() {
                Some(batch) => batch,
                None => {
                    tokio::select! {
                        batch = self.changes.recv() => match batch {
                            Some(batch) => batch,
                            None => {
                                tracing::error!(watch_id = %self.id, "the file watcher stopped; ending the watch session");
                                break;
                            }
                        },
                        () = self.stop.cancelled() => break,
                    }
                }
            };
            change = Some(self.absorb_queued(batch));
        }

        tracing::info!(watch_id = %self.id, "watch session stopped");
        Ok(last_outcome)
    }

    /// Follows one job until it ends. Returns its outcome and the change
    /// that cancelled it, if one did.
    async fn follow(
        &mut self,
        handle: JobHandle,
        change: Option<ChangeBatch>,
        follower: &mut dyn RunFollower,
    ) -> (JobOutcome, Option<ChangeBatch>) {
        let job_id = handle.id.clone();
        self.current_job.send_replace(Some(job_id.clone()));
        match &change {
            Some(batch) => {
                tracing::info!(watch_id = %self.id, %job_id, trigger = %batch.trigger.display(), paths = batch.paths, "watch job started after a change")
            }
            None => tracing::info!(watch_id = %self.id, %job_id, "watch job started"),
        }

        let (interrupt, interrupted_by) = watch::channel(None);
        let following = follower.follow(WatchRun {
            handle,
            change,
            interrupted_by,
        });
        tokio::pin!(following);
        let next = tokio::select! {
            outcome = &mut following => return (outcome, None),
            Some(batch) = self.changes.recv() => Some(batch),
            () = self.stop.cancelled() => None,
        };

        match &next {
            Some(batch) => {
                tracing::info!(watch_id = %self.id, %job_id, trigger = %batch.trigger.display(), "change while the job runs: cancelling it");
                interrupt.send_replace(Some(batch.clone()));
                let message = format!("cancelled: {} changed", batch.trigger.display());
                self.engine.cancel_with_message(&job_id, message);
            }
            None => {
                tracing::info!(watch_id = %self.id, %job_id, "watch stopping: cancelling the job");
                self.engine.cancel(&job_id);
            }
        }
        let outcome = following.await;
        (outcome, next)
    }

    /// Merges the batches that arrived while a job was being cancelled into
    /// `batch`.
    fn absorb_queued(&mut self, mut batch: ChangeBatch) -> ChangeBatch {
        while let Ok(later) = self.changes.try_recv() {
            batch.absorb(later);
        }
        batch
    }

    fn job_request(&self, change: Option<&ChangeBatch>) -> JobRequest {
        let mut request = self.request.job.clone();
        request.project = self.project.clone();
        if let Some(batch) = change {
            request.trigger = TriggerType::Watch;
            request.trigger_ref = Some(batch.trigger.to_string_lossy().into_owned());
        }
        request
    }
}
