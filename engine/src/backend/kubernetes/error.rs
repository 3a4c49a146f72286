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

    /// A step's process was killed with the pod's container (an OOM kill,
    /// an eviction); `exit_code` is the one its shell reported.
    #[error("pod `{pod}` failed: {reason}")]
    StepKilled {
        pod: String,
        reason: String,
        exit_code: i32,
    },

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

    #[error("the coordinator in pod `{pod}` cannot reach the engine: {reason}")]
    EngineUnreachable { pod: String, reason: String },

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

/// Returns the status message of a Kubernetes API error, once, with a
/// hint for the common failures, instead of kube's text, which repeats the
/// message and appends the whole status in Rust debug form. `None` for
/// any other error.
pub fn api_error_text(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let kube_error = error.downcast_ref::<kube::Error>().or_else(|| {
        error
            .downcast_ref::<Box<kube::Error>>()
            .map(|boxed| &**boxed)
    })?;
    let kube::Error::Api(status) = kube_error else {
        return None;
    };

    let message = if status.message.is_empty() {
        format!("the API server answered {} {}", status.code, status.reason)
    } else {
        status.message.clone()
    };
    let namespace_missing = status.code == 404
        && (status
            .details
            .as_ref()
            .is_some_and(|details| details.kind == "namespaces")
            || status.message.starts_with("namespaces "));
    let hint = match status.code {
        404 if namespace_missing => missing_namespace_hint(status),
        401 => " (the cluster rejected the credentials: refresh them in the kubeconfig, for \
                example by logging in to the cluster again)"
            .to_owned(),
        403 => " (the engine's Role in deploy/kubernetes/engine-rbac.yaml grants what Danube \
                needs; apply it, or bind it to the account the kubeconfig uses)"
            .to_owned(),
        _ => String::new(),
    };
    Some(format!("{message}{hint}"))
}

/// Says how to create the namespace that `status` reports missing: the
/// manifest for Danube's own, `kubectl create namespace` for another.
fn missing_namespace_hint(status: &kube::core::Status) -> String {
    let name = status
        .details
        .as_ref()
        .map(|details| details.name.clone())
        .filter(|name| !name.is_empty())
        .or_else(|| status.message.split('"').nth(1).map(str::to_owned))
        .unwrap_or_default();
    if name.is_empty() || name == super::target::DEFAULT_NAMESPACE {
        " (create it with `kubectl apply -f deploy/kubernetes/namespaces.yaml`, or pass \
         `--namespace` with an existing one)"
            .to_owned()
    } else {
        format!(
            " (create it with `kubectl create namespace {name}` and the Pod Security labels \
             of deploy/kubernetes/namespaces.yaml, or pass `--namespace` with an existing one)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.to_owned(),
            reason: "NotFound".to_owned(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn missing_namespace_prints_message_once() {
        let missing = KubeError::CreatePod {
            pod: "danube-job-1".into(),
            namespace: "nosuchns".into(),
            source: Box::new(api_error(404, "namespaces \"nosuchns\" not found")),
        };

        let text = crate::orchestrator::error_chain(&missing);

        assert_eq!(
            text,
            "failed to create pod `danube-job-1` in namespace `nosuchns`: namespaces \
             \"nosuchns\" not found (create it with `kubectl create namespace nosuchns` and the \
             Pod Security labels of deploy/kubernetes/namespaces.yaml, or pass `--namespace` \
             with an existing one)"
        );
    }

    #[test]
    fn unauthorised_and_forbidden_name_their_fix() {
        let unauthorised = api_error(401, "Unauthorized");
        let forbidden = api_error(403, "pods is forbidden: User \"dev\" cannot create");

        let unauthorised = api_error_text(&unauthorised).unwrap();
        let forbidden = api_error_text(&forbidden).unwrap();

        assert!(
            unauthorised.starts_with("Unauthorized (the cluster rejected"),
            "{unauthorised}"
        );
        assert!(
            forbidden.contains("deploy/kubernetes/engine-rbac.yaml"),
            "{forbidden}"
        );
        assert!(!forbidden.contains("Status {"), "{forbidden}");
    }

    #[test]
    fn other_errors_are_left_alone() {
        let io = std::io::Error::other("disk full");

        assert_eq!(api_error_text(&io), None);
    }
}
