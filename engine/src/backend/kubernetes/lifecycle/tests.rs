use serde_json::json;

use super::*;

/// Returns a pod with the given status, written as the API server returns it.
fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "danube-job-1"},
        "spec": {"containers": [{"name": "worker", "image": "python"}]},
        "status": status,
    }))
    .unwrap()
}

fn reason_of(state: PodState) -> String {
    match state {
        PodState::Failed { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn running_worker_after_tools_is_running() {
    let pod = pod(json!({
        "phase": "Running",
        "initContainerStatuses": [{"name": "tools", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "worker", "image": "python", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}],
    }));
    assert_eq!(classify(Some(&pod)), PodState::Running);
}

#[test]
fn container_creating_is_pending_with_detail() {
    let pod = pod(json!({
        "phase": "Pending",
        "containerStatuses": [{"name": "worker", "image": "python", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}],
    }));
    assert_eq!(
        classify(Some(&pod)),
        PodState::Pending {
            detail: "container `worker`: ContainerCreating".into()
        }
    );
}

#[test]
fn image_pull_errors_fail_with_the_image_and_reason() {
    for reason in ["ErrImagePull", "ImagePullBackOff"] {
        let pod = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "worker", "image": "nosuch:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "pull access denied"}}}],
        }));
        let failure = reason_of(classify(Some(&pod)));
        assert_eq!(
            failure,
            format!(
                "container `worker` cannot start: image `nosuch:1`: {reason}: pull access denied"
            )
        );
    }
}

#[test]
fn unschedulable_fails_with_the_scheduler_message() {
    let pod = pod(json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."}],
    }));
    assert_eq!(
        reason_of(classify(Some(&pod))),
        "the pod cannot be scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn oom_kill_fails_with_exit_code() {
    let pod = pod(json!({
        "phase": "Failed",
        "containerStatuses": [{"name": "worker", "image": "python", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
    }));
    assert_eq!(
        reason_of(classify(Some(&pod))),
        "container `worker` stopped: OOMKilled (exit code 137)"
    );
}

#[test]
fn eviction_and_lost_node_fail() {
    let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
        "message": "The node was low on resource: memory."}));
    assert_eq!(
        reason_of(classify(Some(&evicted))),
        "the pod was evicted (Evicted): The node was low on resource: memory."
    );

    let lost = pod(json!({"phase": "Unknown", "reason": "NodeLost"}));
    assert!(reason_of(classify(Some(&lost))).contains("NodeLost"));

    let disrupted = pod(
        json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget",
        "status": "True", "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"}]}),
    );
    assert!(reason_of(classify(Some(&disrupted))).contains("DeletionByTaintManager"));
}

#[test]
fn failed_tools_container_fails_the_pod() {
    let pod = pod(json!({
        "phase": "Failed",
        "initContainerStatuses": [{"name": "tools", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 125, "reason": "Error"}}}],
    }));
    assert_eq!(
        reason_of(classify(Some(&pod))),
        "container `tools` stopped: Error (exit code 125)"
    );
}

#[test]
fn deleted_or_deleting_pod_fails() {
    assert_eq!(reason_of(classify(None)), "the pod was deleted");
    let mut deleting = pod(json!({"phase": "Running"}));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert_eq!(
        reason_of(classify(Some(&deleting))),
        "the pod is being deleted"
    );
}

#[test]
fn pod_runs_once_its_coordinator_runs_too() {
    let status = |coordinator: serde_json::Value| {
        pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "worker", "image": "python", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {}}},
                {"name": "coordinator", "image": "danube-coordinator", "imageID": "", "ready": false,
                    "restartCount": 0, "state": coordinator},
            ],
        }))
    };

    let starting = status(json!({"waiting": {"reason": "ContainerCreating"}}));
    assert_eq!(
        classify(Some(&starting)),
        PodState::Pending {
            detail: "container `coordinator`: ContainerCreating".into()
        }
    );
    let running = status(json!({"running": {}}));
    assert_eq!(classify(Some(&running)), PodState::Running);
    let pulling = status(json!({"waiting": {"reason": "ImagePullBackOff"}}));
    assert_eq!(
        reason_of(classify(Some(&pulling))),
        "container `coordinator` cannot start: image `danube-coordinator`: ImagePullBackOff"
    );
}
