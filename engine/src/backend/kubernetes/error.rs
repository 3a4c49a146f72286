//! Failures of the kubernetes backend, one variant per operation. Messages
//! name the pod, container or step and never contain a step's command or
//! environment, which may hold secrets.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("failed to create a Kubernetes client for {cluster}")]
    Client {
        cluster: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("failed to create pod `{pod}` in namespace `{namespace}`")]
    CreatePod {
        pod: String,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("pod `{pod}` failed: {reason}")]
    PodFailed { pod: String, reason: String },

    #[error(
        "pod `{pod}` did not start within {limit_seconds}s (last state: {detail}); \
         check `kubectl describe pod {pod}`"
    )]
    PodStartTimedOut {
        pod: String,
        limit_seconds: u64,
        detail: String,
    },

    #[error("failed to send the project folder `{project}` into pod `{pod}`: {reason}")]
    UploadProject {
        project: PathBuf,
        pod: String,
        reason: String,
    },

    #[error(
        "failed to copy the files step `{step}` changed in pod `{pod}` back to the local copy: {reason}"
    )]
    DownloadChanges {
        step: String,
        pod: String,
        reason: String,
    },

    #[error("failed to start step `{step}` in container `{container}` of pod `{pod}`")]
    StartStep {
        step: String,
        pod: String,
        container: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error(
        "lost the connection to step `{step}` in pod `{pod}` and could not reattach: {reason}; \
         its result is unknown, so the step is marked failed"
    )]
    StepLost {
        step: String,
        pod: String,
        reason: String,
    },

    #[error(
        "lost the connection to the coordinator in pod `{pod}` and could not reattach: {reason}"
    )]
    CoordinatorLost { pod: String, reason: String },

    #[error("step `{step}` in pod `{pod}` could not be run: {reason}")]
    StepStatus {
        step: String,
        pod: String,
        reason: String,
    },

    #[error("failed to add a container for image `{image}` to pod `{pod}`")]
    AddImageContainer {
        image: String,
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("the container for image `{image}` in pod `{pod}` cannot run steps: {reason}")]
    ImageContainerFailed {
        image: String,
        pod: String,
        reason: String,
    },

    #[error(
        "failed to label pod `{pod}` with its pipeline and set its deadline (the engine's Role \
         needs `patch` on `pods`; see deploy/kubernetes/engine-rbac.yaml)"
    )]
    PatchPod {
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("failed to delete pod `{pod}`")]
    DeletePod {
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("failed to list the pods labelled `{selector}` in namespace `{namespace}`")]
    ListPods {
        selector: String,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("no pod is known for job `{job}` (the workspace was not prepared)")]
    UnknownJob { job: String },

    #[error(transparent)]
    Egress(#[from] super::network::NetworkError),

    #[error("failed to ask the API server whether it serves `{group_version}`")]
    Discover {
        group_version: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error(
        "failed to create egress policy `{policy}` in namespace `{namespace}` (the engine's \
         Role needs `create` on `{resource}`; see deploy/kubernetes/engine-rbac.yaml)"
    )]
    CreatePolicy {
        policy: String,
        namespace: String,
        resource: &'static str,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("failed to delete egress policy `{policy}`")]
    DeletePolicy {
        policy: String,
        #[source]
        source: Box<kube::Error>,
    },
}
