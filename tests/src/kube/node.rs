//! The emulator's one node and the scheduler that binds pods to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeSpec, NodeStatus, Pod, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::info;

use super::Shared;
use super::kubelet::PodRuntime;
use super::pod_state;
use super::store::now;

/// The node's name in `spec.nodeName` and `/api/v1/nodes`.
pub const NODE_NAME: &str = "emulator-node";

/// What the test changed about the node.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeFlags {
    /// Cordoned: new pods stay unschedulable.
    pub cordoned: bool,
    /// The node stopped reporting: `Ready=Unknown`.
    pub lost: bool,
}

/// Builds the node object for the current flags.
pub(crate) fn node_object(shared: &Shared, flags: NodeFlags) -> Node {
    let options = &shared.options;
    let capacity = BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", options.node_cpu_millis)),
        ),
        (
            "memory".to_owned(),
            Quantity(options.node_memory_bytes.to_string()),
        ),
        (
            "pods".to_owned(),
            Quantity(options.node_max_pods.to_string()),
        ),
    ]);
    let (status, reason, message) = if flags.lost {
        (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    } else {
        ("True", "KubeletReady", "kubelet is posting ready status")
    };
    let mut taints = Vec::new();
    if flags.cordoned {
        taints.push(taint("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    if flags.lost {
        taints.push(taint("node.kubernetes.io/unreachable", "NoExecute"));
    }
    Node {
        metadata: ObjectMeta {
            name: Some(NODE_NAME.to_owned()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), NODE_NAME.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            unschedulable: flags.cordoned.then_some(true),
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
                last_heartbeat_time: Some(now()),
                last_transition_time: Some(now()),
            }]),
            ..Default::default()
        }),
    }
}

fn taint(key: &str, effect: &str) -> k8s_openapi::api::core::v1::Taint {
    k8s_openapi::api::core::v1::Taint {
        key: key.to_owned(),
        effect: effect.to_owned(),
        time_added: Some(now()),
        value: None,
    }
}

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Parses a quantity (`500m`, `1.5`, `512Mi`, `1G`, `1e3`) scaled by
/// `scale` (1000 for CPU millicores, 1 for bytes).
pub(crate) fn parse_quantity(text: &str, scale: f64) -> Option<u64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value * factor * scale).ceil() as u64)
}

fn requests(resources: Option<&ResourceRequirements>) -> Resources {
    let get = |name: &str, scale: f64| {
        let resources = resources?;
        // Without requests, the API server defaults them to the limits.
        let quantity = resources
            .requests
            .as_ref()
            .and_then(|r| r.get(name))
            .or_else(|| resources.limits.as_ref().and_then(|l| l.get(name)))?;
        parse_quantity(&quantity.0, scale)
    };
    Resources {
        cpu_millis: get("cpu", 1000.0).unwrap_or(0),
        memory_bytes: get("memory", 1.0).unwrap_or(0),
    }
}

/// Computes what a pod requests from the scheduler: the larger of the biggest init
/// container and the sum of the main containers, per resource.
pub(crate) fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let mut main = Resources::default();
    for container in &spec.containers {
        let r = requests(container.resources.as_ref());
        main.cpu_millis += r.cpu_millis;
        main.memory_bytes += r.memory_bytes;
    }
    for container in spec.init_containers.iter().flatten() {
        let r = requests(container.resources.as_ref());
        main.cpu_millis = main.cpu_millis.max(r.cpu_millis);
        main.memory_bytes = main.memory_bytes.max(r.memory_bytes);
    }
    main
}

/// Returns why the pod does not fit on the node, in the scheduler's words, or
/// `None` when it fits.
fn unschedulable_reason(shared: &Shared, pod: &Pod) -> Option<String> {
    let flags = shared.node_flags();
    if flags.lost {
        return Some(
            "0/1 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/unreachable: }. preemption: 0/1 nodes are available: \
             1 Preemption is not helpful for scheduling."
                .to_owned(),
        );
    }
    if flags.cordoned {
        return Some(
            "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are \
             available: 1 Preemption is not helpful for scheduling."
                .to_owned(),
        );
    }

    let (pods, _) = shared.store.pods(None);
    let bound: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.uid != pod.metadata.uid)
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
        .filter(|p| !pod_state::is_terminal(p))
        .collect();
    let mut used = Resources::default();
    for other in &bound {
        let r = pod_requests(other);
        used.cpu_millis += r.cpu_millis;
        used.memory_bytes += r.memory_bytes;
    }
    let wanted = pod_requests(pod);
    let options = &shared.options;
    let mut insufficient = Vec::new();
    if used.cpu_millis + wanted.cpu_millis > options.node_cpu_millis {
        insufficient.push("1 Insufficient cpu");
    }
    if used.memory_bytes + wanted.memory_bytes > options.node_memory_bytes {
        insufficient.push("1 Insufficient memory");
    }
    if bound.len() as u64 >= options.node_max_pods {
        insufficient.push("1 Too many pods");
    }
    if insufficient.is_empty() {
        return None;
    }
    Some(format!(
        "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption \
         victims found for incoming pod.",
        insufficient.join(", ")
    ))
}

/// Waits until the pod fits on the node, reporting `Unschedulable` while
/// it does not, then binds it. A pod is reconsidered whenever the node or
/// another pod changes, as the scheduler's queue does.
pub(crate) async fn schedule(shared: &Arc<Shared>, pod: &PodRuntime) {
    loop {
        let changed = shared.store.changed.notified();
        let Some(object) = shared.store.pod(&pod.namespace, &pod.name) else {
            return futures::future::pending().await;
        };
        match unschedulable_reason(shared, &object) {
            None => break,
            Some(message) => {
                info!(pod = %pod.name, %message, "pod unschedulable");
                shared
                    .store
                    .update_pod(&pod.namespace, &pod.name, |object| {
                        pod_state::set_condition(
                            object,
                            "PodScheduled",
                            false,
                            Some("Unschedulable"),
                            Some(message.clone()),
                        );
                    });
            }
        }
        changed.await;
    }

    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            object.spec.get_or_insert_default().node_name = Some(NODE_NAME.to_owned());
            object.status.get_or_insert_default().phase = Some("Pending".to_owned());
            pod_state::set_condition(object, "PodScheduled", true, None, None);
        });
    info!(pod = %pod.name, node = NODE_NAME, "pod scheduled");
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn quantities_in_every_notation() {
        assert_eq!(parse_quantity("500m", 1000.0), Some(500));
        assert_eq!(parse_quantity("1.5", 1000.0), Some(1500));
        assert_eq!(parse_quantity("2", 1000.0), Some(2000));
        assert_eq!(parse_quantity("512Mi", 1.0), Some(512 * 1024 * 1024));
        assert_eq!(parse_quantity("1G", 1.0), Some(1_000_000_000));
        assert_eq!(parse_quantity("1e3", 1.0), Some(1000));
        assert_eq!(parse_quantity("lots", 1.0), None);
    }
}
