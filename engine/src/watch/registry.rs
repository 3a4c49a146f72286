//! The watch sessions that the HTTP API started, by id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use super::WatchError;
use super::session::{SessionControls, WaitFollower, WatchRequest, WatchSession};
use crate::model::JobId;
use crate::orchestrator::Engine;

/// A running watch session as the API shows it.
#[derive(Clone, Debug)]
pub struct WatchInfo {
    pub id: String,
    /// The canonical project folder.
    pub project: PathBuf,
    pub pipeline: Option<String>,
    /// The session's latest job, running or finished.
    pub current_job: Option<JobId>,
}

struct Entry {
    project: PathBuf,
    pipeline: Option<String>,
    controls: SessionControls,
    /// Ends with an error only when the first job could not be submitted.
    task: JoinHandle<Result<(), WatchError>>,
}

impl Entry {
    fn info(&self, id: &str) -> WatchInfo {
        WatchInfo {
            id: id.to_owned(),
            project: self.project.clone(),
            pipeline: self.pipeline.clone(),
            current_job: self.controls.current_job(),
        }
    }
}

/// Watch sessions running in the background, each following its jobs with
/// [`WaitFollower`]. Ids sort by start time.
#[derive(Default)]
pub struct Watches {
    sessions: Mutex<BTreeMap<String, Entry>>,
}

impl Watches {
    /// Starts a session and returns once its first job is recorded.
    ///
    /// # Errors
    ///
    /// The errors of [`WatchSession::start`], and [`WatchError::Submit`]
    /// when the first job cannot be submitted; the session is then gone.
    pub async fn start(
        &self,
        engine: Engine,
        request: WatchRequest,
    ) -> Result<WatchInfo, WatchError> {
        let pipeline = request.job.pipeline.clone();
        let session = WatchSession::start(engine, request)?;
        let id = session.id.clone();
        let project = session.project.clone();
        let mut controls = session.controls();

        let task = tokio::spawn(async move { session.run(&mut WaitFollower).await.map(|_| ()) });
        let entry = Entry {
            project,
            pipeline,
            controls: controls.clone(),
            task,
        };
        let mut info = entry.info(&id);
        self.lock().insert(id.clone(), entry);

        info.current_job = controls.first_job().await;
        if info.current_job.is_none() {
            // The session ended before recording a job, so its first submit
            // failed and its task returns the error. A concurrent stop may
            // have removed the entry already.
            let entry = self.lock().remove(&id);
            return Err(match entry {
                Some(entry) => first_job_error(entry.task).await,
                None => WatchError::Stopped,
            });
        }
        Ok(info)
    }

    /// Lists the running sessions, oldest first.
    pub fn list(&self) -> Vec<WatchInfo> {
        self.lock()
            .iter()
            .map(|(id, entry)| entry.info(id))
            .collect()
    }

    /// Stops a session: cancels its job in flight and waits until that job
    /// and the session have ended. Returns `None` for an unknown id.
    pub async fn stop(&self, id: &str) -> Option<WatchInfo> {
        let entry = self.lock().remove(id)?;
        let info = entry.info(id);
        entry.controls.stop();
        match entry.task.await {
            Ok(_) => {}
            Err(err) => {
                tracing::error!(watch_id = %id, error = %err, "watch session task panicked")
            }
        }
        Some(info)
    }

    /// Stops every session, as [`Watches::stop`] does.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Returns the error that ended a session before its first job.
async fn first_job_error(task: JoinHandle<Result<(), WatchError>>) -> WatchError {
    match task.await {
        Ok(Err(err)) => err,
        Ok(Ok(())) => WatchError::Stopped,
        Err(err) => {
            tracing::error!(error = %err, "watch session task panicked");
            WatchError::Stopped
        }
    }
}
