//! Orphan cleanup at engine start: pods this engine labelled whose job no
//! live engine process runs any more (the process was killed mid-job). They
//! would otherwise run, and hold their node's resources, until someone
//! deletes them by hand. A pod whose engine never starts again is ended
//! by the cluster itself, at its `activeDeadlineSeconds` ([`super::declared`]).

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::error::KubeError;
use super::lifecycle;
use super::pod::{JOB_LABEL, engine_selector};
use super::retry;
use crate::model::{JobId, JobState, RunState};
use crate::store::Store;

/// The reason stored with a job whose pod was found orphaned.
pub const ORPHAN_REASON: &str = "the engine running this job stopped before it finished; \
     its pod was deleted when the engine started again";

/// A pod that was deleted, and its job when the label named one.
#[derive(Debug, PartialEq, Eq)]
pub struct Orphan {
    pub pod: String,
    pub job: Option<JobId>,
}

/// Deletes the pods labelled with `engine_id` whose job `is_live` rejects,
/// marks those jobs failed when they are not final yet, and returns the
/// pods deleted.
///
/// # Errors
///
/// Listing the pods failed. A pod that cannot be deleted, or a job that
/// cannot be updated, is logged and skipped so the others are still cleaned.
pub async fn clean_orphans(
    api: &Api<Pod>,
    engine_id: &str,
    store: &Store,
    is_live: impl Fn(&JobId) -> bool,
) -> Result<Vec<Orphan>, KubeError> {
    let selector = engine_selector(engine_id);
    let params = ListParams::default().labels(&selector);
    let pods = retry::with_backoff("list pods", || api.list(&params))
        .await
        .map_err(|source| KubeError::ListPods {
            selector: selector.clone(),
            namespace: api.namespace().unwrap_or_default().to_owned(),
            source: Box::new(source),
        })?;

    let mut deleted = Vec::new();
    for pod in pods {
        let Some(name) = pod.metadata.name.clone() else {
            continue;
        };
        let job = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(JOB_LABEL))
            .map(|id| JobId(id.clone()));
        if job.as_ref().is_some_and(&is_live) {
            tracing::debug!(pod = %name, "keeping the pod of a live job");
            continue;
        }

        match lifecycle::delete_pod(api, &name).await {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(pod = %name, error = %err, "failed to delete an orphaned pod");
                continue;
            }
        }
        tracing::info!(pod = %name, job_id = job.as_ref().map(JobId::as_str).unwrap_or(""), "deleted an orphaned pod");
        if let Some(job) = &job
            && let Err(err) = fail_job(store, job).await
        {
            tracing::warn!(job_id = %job, error = %err, "failed to mark the job of an orphaned pod as failed");
        }
        deleted.push(Orphan { pod: name, job });
    }
    Ok(deleted)
}

/// Marks a job that is not final yet as failed, with its open tasks and steps.
async fn fail_job(store: &Store, job: &JobId) -> Result<(), crate::store::StoreError> {
    let record = match store.find_job(job.as_str()).await {
        Ok(record) => record,
        // A pod of a job from another data directory: nothing to record.
        Err(_) => return Ok(()),
    };
    if record.state.is_final() {
        return Ok(());
    }
    for step in store.list_steps(job).await? {
        if !step.state.is_final() {
            store.finish_step(step.id, RunState::Failure, None).await?;
        }
    }
    for task in store.list_tasks(job).await? {
        let state = match task.state {
            RunState::Running => RunState::Failure,
            RunState::Pending => RunState::Skipped,
            _ => continue,
        };
        store.set_task_state(job, &task.name, state, None).await?;
    }
    store
        .set_job_state(job, JobState::Failure, Some(ORPHAN_REASON))
        .await
}
