//! The job pod's lifecycle, followed by a watch (never by polling) and
//! reduced to what the engine acts on: still starting, running, or failed
//! for a reason that ends the job.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::watch_object;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::pod::{TOOLS_CONTAINER, WORKER_CONTAINER};
use super::retry;

/// Where a job pod is, as far as the engine cares.
///
/// `Pending` is the first state. It moves to `Running` once the tools init
/// container has finished and the worker (and the coordinator container,
/// when the pod has one) runs, or to `Failed`. `Running`
/// may still move to `Failed` (an OOM kill, an eviction, a lost node).
/// `Failed` is final: the job ends with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; `detail` says why, such as `ContainerCreating`.
    Pending {
        detail: String,
    },
    Running,
    /// Will never run steps again; `reason` names the Kubernetes reason and
    /// message.
    Failed {
        reason: String,
    },
}

/// Waiting reasons after which a container will not start without someone
/// changing the pod or the cluster.
const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Returns true when the pod's node stopped responding: no kubelet will
/// confirm its deletion, so it stays `Terminating` until deleted with a
/// grace period of 0.
pub fn on_lost_node(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|status| status.reason.as_deref()) == Some("NodeLost")
        || status.and_then(|status| status.phase.as_deref()) == Some("Unknown")
}

/// Deletes a job pod; one already gone is not an error. A pod on a lost
/// node is deleted again at once with a grace period of 0, since it would
/// otherwise stay `Terminating`.
///
/// # Errors
///
/// The API refused a deletion, or stayed unreachable through the retries.
pub async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    let ignore_missing = |result: Result<_, kube::Error>| match result {
        Ok(deleted) => Ok(Some(deleted)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error),
    };
    let params = DeleteParams::default();
    let deleted =
        ignore_missing(retry::with_backoff("delete pod", || api.delete(name, &params)).await)?;
    let Some(pod) = deleted.and_then(|deleted| deleted.left()) else {
        return Ok(());
    };
    if !on_lost_node(&pod) {
        return Ok(());
    }

    tracing::info!(pod = %name, "the pod's node is lost: deleting the pod with a grace period of 0");
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    ignore_missing(retry::with_backoff("force-delete pod", || api.delete(name, &force)).await)?;
    Ok(())
}

/// Reduces a pod (or its absence, after a deletion) to a [`PodState`].
pub fn classify(pod: Option<&Pod>) -> PodState {
    let Some(pod) = pod else {
        return failed("the pod was deleted");
    };
    let Some(status) = pod.status.as_ref() else {
        if pod.metadata.deletion_timestamp.is_some() {
            return failed("the pod is being deleted");
        }
        return pending("the pod has no status yet");
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let pod_reason = status.reason.as_deref().unwrap_or_default();
    let pod_message = status.message.as_deref().unwrap_or_default();

    if pod_reason == "DeadlineExceeded" {
        return failed(&with_message(
            "the pod ran past its activeDeadlineSeconds, the job's max_duration plus a margin \
             (DeadlineExceeded)",
            pod_message,
        ));
    }
    if pod_reason == "Evicted" {
        return failed(&with_message("the pod was evicted (Evicted)", pod_message));
    }
    if pod_reason == "NodeLost" || phase == "Unknown" {
        return failed(&with_message(
            "the pod's node stopped responding (NodeLost)",
            pod_message,
        ));
    }
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "DisruptionTarget" && condition.status == "True" {
            let reason = condition.reason.as_deref().unwrap_or("DisruptionTarget");
            return failed(&with_message(
                &format!("the pod is being removed by the cluster ({reason})"),
                condition.message.as_deref().unwrap_or_default(),
            ));
        }
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            return failed(&with_message(
                "the pod cannot be scheduled (Unschedulable)",
                condition.message.as_deref().unwrap_or_default(),
            ));
        }
    }

    // Checked after the reasons above, which say why the cluster deletes it.
    if pod.metadata.deletion_timestamp.is_some() {
        return failed("the pod is being deleted");
    }

    let init = status.init_container_statuses.iter().flatten();
    let main = status.container_statuses.iter().flatten();
    for container in init.chain(main) {
        if let Some(reason) = container_failure(container) {
            return failed(&reason);
        }
    }
    if matches!(phase, "Failed" | "Succeeded") {
        return failed(&with_message(
            &format!("the pod stopped (phase {phase})"),
            pod_message,
        ));
    }

    // Every main container, the coordinator's too when the pod has one,
    // must run before the engine sends files or steps.
    let is_running = |container: &ContainerStatus| {
        container
            .state
            .as_ref()
            .is_some_and(|state| state.running.is_some())
    };
    let mut main = status.container_statuses.iter().flatten();
    let worker_running = main
        .clone()
        .any(|container| container.name == WORKER_CONTAINER && is_running(container));
    if phase == "Running" && worker_running && main.all(is_running) {
        return PodState::Running;
    }
    pending(&waiting_detail(pod).unwrap_or_else(|| format!("phase {phase}")))
}

/// Returns the reason a container will not run (again), if it will not.
pub fn container_failure(container: &ContainerStatus) -> Option<String> {
    let state = container.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if FATAL_WAITING_REASONS.contains(&reason) {
            return Some(with_message(
                &format!(
                    "container `{}` cannot start: image `{}`: {reason}",
                    container.name, container.image
                ),
                waiting.message.as_deref().unwrap_or_default(),
            ));
        }
    }
    if let Some(terminated) = &state.terminated {
        // The tools container ends by design once it installed the supervisor.
        if container.name == TOOLS_CONTAINER && terminated.exit_code == 0 {
            return None;
        }
        let reason = terminated.reason.as_deref().unwrap_or("Terminated");
        return Some(with_message(
            &format!(
                "container `{}` stopped: {reason} (exit code {})",
                container.name, terminated.exit_code
            ),
            terminated.message.as_deref().unwrap_or_default(),
        ));
    }
    None
}

/// Returns the exit code of container `name` of the observed pod, when it
/// has terminated: a step killed with its container (an OOM kill) then
/// has the code its container reported.
pub fn terminated_exit_code(observed: &Observed, name: &str) -> Option<i32> {
    let status = observed.pod.as_ref()?.status.as_ref()?;
    let containers = status.container_statuses.iter().flatten();
    let ephemeral = status.ephemeral_container_statuses.iter().flatten();
    containers
        .chain(ephemeral)
        .find(|container| container.name == name)
        .and_then(|container| Some(container.state.as_ref()?.terminated.as_ref()?.exit_code))
}

/// Returns the first waiting reason of any container, for progress messages.
fn waiting_detail(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let containers = status.init_container_statuses.iter().flatten();
    containers
        .chain(status.container_statuses.iter().flatten())
        .find_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "container `{}`: {}",
                container.name,
                waiting.reason.as_deref().unwrap_or("waiting")
            ))
        })
}

fn with_message(text: &str, message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        text.to_owned()
    } else {
        format!("{text}: {message}")
    }
}

fn pending(detail: &str) -> PodState {
    PodState::Pending {
        detail: detail.to_owned(),
    }
}

fn failed(reason: &str) -> PodState {
    PodState::Failed {
        reason: reason.to_owned(),
    }
}

/// What the watch last saw: the pod itself and its reduced state.
#[derive(Clone, Debug)]
pub struct Observed {
    pub pod: Option<Arc<Pod>>,
    pub state: PodState,
}

/// A running watch of one pod. Dropping it stops the watch.
pub struct PodWatch {
    receiver: watch::Receiver<Observed>,
    task: JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Starts watching pod `name`. Transient watch errors are retried with
    /// kube's default backoff; a `410 Gone` restarts the watch from a fresh
    /// list, as kube's watcher does.
    pub fn start(api: Api<Pod>, name: &str) -> PodWatch {
        let (sender, receiver) = watch::channel(Observed {
            pod: None,
            state: pending("waiting for the first watch event"),
        });
        let pod_name = name.to_owned();
        let stream = watch_object(api, name).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let pod = match event {
                    Ok(pod) => pod.map(Arc::new),
                    Err(err) => {
                        tracing::debug!(pod = %pod_name, error = %err, "pod watch failed; retrying");
                        continue;
                    }
                };
                let state = classify(pod.as_deref());
                tracing::debug!(pod = %pod_name, ?state, "pod changed");
                let last = matches!(state, PodState::Failed { .. });
                if sender.send(Observed { pod, state }).is_err() || last {
                    return;
                }
            }
        });
        PodWatch { receiver, task }
    }

    /// Returns a receiver of every state the watch reports from now on.
    pub fn subscribe(&self) -> watch::Receiver<Observed> {
        self.receiver.clone()
    }

    /// Returns the state last seen.
    pub fn current(&self) -> Observed {
        self.receiver.borrow().clone()
    }
}

/// Waits until `check` returns `Some` for what the watch reports, and
/// returns that. Returns `Err` with the reason once the pod failed.
pub async fn wait_for<T>(
    receiver: &mut watch::Receiver<Observed>,
    mut check: impl FnMut(&Observed) -> Option<T>,
) -> Result<T, String> {
    loop {
        {
            let observed = receiver.borrow_and_update();
            if let Some(value) = check(&observed) {
                return Ok(value);
            }
            if let PodState::Failed { reason } = &observed.state {
                return Err(reason.clone());
            }
        }
        if receiver.changed().await.is_err() {
            // The watch task ended without a failure: it was stopped.
            return Err("the pod watch stopped".into());
        }
    }
}

/// Waits until the pod failed and returns the reason; pending forever
/// while it has not.
pub async fn failure(mut receiver: watch::Receiver<Observed>) -> String {
    match wait_for(&mut receiver, |_| None::<()>).await {
        Ok(()) => unreachable!("the check never succeeds"),
        Err(reason) => reason,
    }
}

#[cfg(test)]
mod tests;
