//! Pod status as a kubelet writes it: container states, conditions, and the
//! phase derived from them.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::store::now;

/// Which list of a pod's containers a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Init,
    Main,
    Ephemeral,
}

impl Group {
    fn statuses(self, status: &mut PodStatus) -> &mut Vec<ContainerStatus> {
        let list = match self {
            Group::Init => &mut status.init_container_statuses,
            Group::Main => &mut status.container_statuses,
            Group::Ephemeral => &mut status.ephemeral_container_statuses,
        };
        list.get_or_insert_default()
    }
}

/// A container's state as the emulator changes it.
#[derive(Debug, Clone)]
pub(crate) enum State {
    Waiting {
        reason: &'static str,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated {
        exit_code: i32,
        reason: &'static str,
        message: Option<String>,
        started_at: Option<Time>,
    },
}

/// Returns the status entry of container `name`, created waiting when missing.
fn entry<'a>(pod: &'a mut Pod, group: Group, name: &str, image: &str) -> &'a mut ContainerStatus {
    let status = pod.status.get_or_insert_default();
    let list = group.statuses(status);
    if let Some(index) = list.iter().position(|c| c.name == name) {
        return &mut list[index];
    }
    list.push(ContainerStatus {
        name: name.to_owned(),
        image: image.to_owned(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        ..Default::default()
    });
    list.last_mut().expect("an entry was just pushed")
}

/// Sets the state of one container and derives the pod's phase and
/// conditions again.
pub(crate) fn set_container(pod: &mut Pod, group: Group, name: &str, image: &str, state: State) {
    let status = entry(pod, group, name, image);
    match state {
        State::Waiting { reason, message } => {
            status.state = Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.to_owned()),
                    message,
                }),
                ..Default::default()
            });
            status.started = Some(false);
            status.ready = false;
        }
        State::Running { started_at } => {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at),
                }),
                ..Default::default()
            });
            status.started = Some(true);
            status.ready = group == Group::Main;
            status.container_id = Some(format!("emulator://{name}"));
            status.image_id = format!("emulator://{image}");
        }
        State::Terminated {
            exit_code,
            reason,
            message,
            started_at,
        } => {
            status.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some(reason.to_owned()),
                    message,
                    started_at,
                    finished_at: Some(now()),
                    container_id: status.container_id.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            status.started = Some(false);
            status.ready = false;
        }
    }
    derive_phase(pod);
}

/// Sets a pod condition; `lastTransitionTime` moves only when the status
/// does.
pub(crate) fn set_condition(
    pod: &mut Pod,
    kind: &str,
    value: bool,
    reason: Option<&str>,
    message: Option<String>,
) {
    let conditions = pod
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    let value = if value { "True" } else { "False" };
    let index = match conditions.iter().position(|c| c.type_ == kind) {
        Some(index) => index,
        None => {
            conditions.push(PodCondition {
                type_: kind.to_owned(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let condition = &mut conditions[index];
    if condition.status != value {
        condition.last_transition_time = Some(now());
    }
    condition.status = value.to_owned();
    condition.reason = reason.map(str::to_owned);
    condition.message = message;
}

/// Checks whether the pod has reached `Succeeded` or `Failed`.
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn terminated_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Derives phase and readiness from the container statuses, for pods whose
/// containers are not restarted. A pod in a terminal phase, or one the
/// emulator marked `Failed` itself (an init container failed, an eviction),
/// keeps its phase.
pub(crate) fn derive_phase(pod: &mut Pod) {
    if is_terminal(pod) || pod.spec.is_none() {
        return;
    }
    let expected = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let all_started = statuses.len() == expected
        && statuses.iter().all(|s| {
            s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        });
    let all_ready = statuses.len() == expected && statuses.iter().all(|s| s.ready);
    let codes: Vec<Option<i32>> = statuses.iter().map(terminated_code).collect();
    let all_terminated = statuses.len() == expected && codes.iter().all(Option::is_some);

    let phase = if all_terminated {
        if codes.iter().all(|code| *code == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if all_started {
        "Running"
    } else {
        "Pending"
    };
    pod.status.get_or_insert_default().phase = Some(phase.to_owned());

    if all_terminated {
        set_condition(pod, "Ready", false, Some("PodCompleted"), None);
        set_condition(pod, "ContainersReady", false, Some("PodCompleted"), None);
    } else if all_ready {
        set_condition(pod, "Ready", true, None, None);
        set_condition(pod, "ContainersReady", true, None, None);
    } else {
        let waiting: Vec<String> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.clone())
            .collect();
        let message = format!("containers with unready status: [{}]", waiting.join(" "));
        set_condition(
            pod,
            "Ready",
            false,
            Some("ContainersNotReady"),
            Some(message.clone()),
        );
        set_condition(
            pod,
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(message),
        );
    }
}

/// Marks the pod failed with a pod-level reason and message, as the kubelet
/// does for evictions.
pub(crate) fn fail(pod: &mut Pod, reason: &str, message: String) {
    let status = pod.status.get_or_insert_default();
    status.phase = Some("Failed".to_owned());
    status.reason = Some(reason.to_owned());
    status.message = Some(message);
    set_condition(pod, "Ready", false, Some("PodFailed"), None);
    set_condition(pod, "ContainersReady", false, Some("PodFailed"), None);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|name| Container {
                        name: (*name).to_owned(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(exit_code: i32) -> State {
        State::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" },
            message: None,
            started_at: None,
        }
    }

    fn condition(pod: &Pod, kind: &str) -> String {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn phase_follows_containers() {
        let mut pod = pod(&["a", "b"]);
        let running = || State::Running { started_at: now() };
        set_container(&mut pod, Group::Main, "a", "img", running());
        assert_eq!(phase(&pod), "Pending", "one of two containers started");
        set_container(&mut pod, Group::Main, "b", "img", running());
        assert_eq!(phase(&pod), "Running");
        assert_eq!(condition(&pod, "Ready"), "True");
        set_container(&mut pod, Group::Main, "a", "img", terminated(0));
        assert_eq!(phase(&pod), "Running", "b still runs");
        assert_eq!(condition(&pod, "Ready"), "False");
        set_container(&mut pod, Group::Main, "b", "img", terminated(3));
        assert_eq!(phase(&pod), "Failed");
    }

    #[test]
    fn all_zero_exits_succeed_and_stay_terminal() {
        let mut pod = pod(&["a"]);
        set_container(&mut pod, Group::Main, "a", "img", terminated(0));
        assert_eq!(phase(&pod), "Succeeded");
        set_container(&mut pod, Group::Main, "a", "img", terminated(1));
        assert_eq!(phase(&pod), "Succeeded", "a terminal phase never changes");
    }
}
