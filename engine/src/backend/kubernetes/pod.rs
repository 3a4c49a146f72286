//! The job pod: what the engine asks the cluster to run for one job.
//!
//! ```text
//! init   tools     tools image: `danube-supervisor install /danube/bin`
//! main   worker    the worker image, idling on `/danube/bin/danube-supervisor idle`
//! main   coordinator  with `coordinator = pod` only: the coordinator image, idling
//!                  the same way until the engine starts the SDK in it by exec
//! (ephemeral) image-N   one per other image a task or step names, idling the same way
//! volumes  workspace (emptyDir at /workspace), tools (emptyDir at /danube, read-only in workers),
//!          state (emptyDir at /danube-state: the supervisor's step records),
//!          home (emptyDir at /home/danube, the steps' writable `HOME`)
//! ```
//!
//! `/workspace` holds only the user's files: a step that empties it
//! (`rm -rf .danube`, `git clean -fdx`) cannot lose the supervisor's records.
//!
//! Steps are execs of `danube-supervisor run` in one of those containers.
//! The spec contains no secret and no environment variable except `HOME`.
//! Each step's command and environment travel over its exec's stdin. Every container
//! runs as a non-root user with seccomp `RuntimeDefault`, all capabilities
//! dropped and no privilege escalation, and the pod gets no service-account
//! token, which is what Pod Security `restricted` demands.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EphemeralContainer, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::JobId;

/// Label that marks every object Danube manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "danube";
/// Label with the id of the engine that created the pod.
pub const ENGINE_LABEL: &str = "danube.dev/engine";
/// Label with the job id.
pub const JOB_LABEL: &str = "danube.dev/job";
/// Label with the pipeline name, shortened to a valid label value.
pub const PIPELINE_LABEL: &str = "danube.dev/pipeline";
/// Annotation with the exact pipeline name, which a label may not hold.
pub const PIPELINE_ANNOTATION: &str = "danube.dev/pipeline";

/// Name of the main worker container.
pub const WORKER_CONTAINER: &str = "worker";
/// Name of the init container that installs the supervisor.
pub const TOOLS_CONTAINER: &str = "tools";
/// Name of the container that runs the pipeline script, when the pod has one.
pub const COORDINATOR_CONTAINER: &str = "coordinator";

/// Mount point of the workspace volume in every container.
pub const WORKSPACE_PATH: &str = "/workspace";
/// Mount point of the tools volume.
pub const TOOLS_PATH: &str = "/danube";
/// The supervisor as the workers run it.
pub const SUPERVISOR_PATH: &str = "/danube/bin/danube-supervisor";
/// Mount point of the volume where the supervisor records each step; the
/// supervisor's default `--state-dir` lies under it.
pub const STATE_PATH: &str = "/danube-state";
/// Mount point of the writable home of every container that runs steps,
/// and the `HOME` they get.
pub const HOME_PATH: &str = "/home/danube";

const WORKSPACE_VOLUME: &str = "workspace";
const TOOLS_VOLUME: &str = "tools";
const STATE_VOLUME: &str = "state";
const HOME_VOLUME: &str = "home";

/// The worker image when the pipeline names none: Python, since pipelines
/// are Python projects, on Debian, with a shell.
pub const DEFAULT_WORKER_IMAGE: &str = "docker.io/library/python:3.12-slim-bookworm";
/// Danube's coordinator image, built from `deploy/coordinator/`; it carries
/// the static supervisor.
pub const DEFAULT_TOOLS_IMAGE: &str = concat!("danube-coordinator:", env!("CARGO_PKG_VERSION"));

/// User and group id the containers run as. 65532 is the conventional
/// "nonroot" id of distroless images; any id other than 0 passes `restricted`.
pub const RUN_AS_ID: i64 = 65532;

/// Seconds the kubelet waits after SIGTERM before killing a deleted job
/// pod's containers. Short, because steps were stopped already.
const TERMINATION_GRACE_SECONDS: i64 = 5;

/// CPU and memory of one container, as Kubernetes quantities (`500m`, `1Gi`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Resources {
    /// Returns the worker's defaults: half a core and 512 MiB reserved, up to two
    /// cores and 2 GiB, enough for the usual build and test step.
    pub fn worker_default() -> Resources {
        Resources {
            cpu_request: "500m".into(),
            memory_request: "512Mi".into(),
            cpu_limit: "2".into(),
            memory_limit: "2Gi".into(),
        }
    }

    /// Returns the coordinator's defaults: the pipeline script mostly waits
    /// for the engine, so a tenth of a core and 256 MiB reserved, up to one
    /// core and 1 GiB.
    pub fn coordinator_default() -> Resources {
        Resources {
            cpu_request: "100m".into(),
            memory_request: "256Mi".into(),
            cpu_limit: "1".into(),
            memory_limit: "1Gi".into(),
        }
    }

    /// Returns small resources, since the tools init container only copies
    /// one file.
    fn tools() -> Resources {
        Resources {
            cpu_request: "50m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "64Mi".into(),
        }
    }

    fn requirements(&self) -> ResourceRequirements {
        let quantities = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
            ])
        };
        ResourceRequirements {
            requests: Some(quantities(&self.cpu_request, &self.memory_request)),
            limits: Some(quantities(&self.cpu_limit, &self.memory_limit)),
            ..ResourceRequirements::default()
        }
    }
}

/// Settings shared by every job pod of one engine.
#[derive(Clone, Debug)]
pub struct PodSettings {
    pub namespace: String,
    /// Identifies this engine in the pods' labels, for orphan cleanup.
    pub engine_id: String,
    pub worker_image: String,
    pub tools_image: String,
    /// The tools container's command; the supervisor resolved on its PATH.
    pub tools_command: Vec<String>,
    pub worker_resources: Resources,
    /// Size limit of the workspace `emptyDir`, such as `10Gi`.
    pub workspace_size_limit: Option<String>,
    /// The pod's `coordinator` container; `None` when the coordinator runs
    /// beside the engine.
    pub coordinator: Option<CoordinatorContainer>,
}

/// The container that runs the pipeline script in the job pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorContainer {
    /// An image with Python and the SDK, by default [`DEFAULT_TOOLS_IMAGE`].
    pub image: String,
    pub resources: Resources,
}

impl PodSettings {
    /// Returns settings with the default images, resources and a 10 GiB workspace.
    pub fn new(namespace: String, engine_id: String) -> PodSettings {
        PodSettings {
            namespace,
            engine_id,
            worker_image: DEFAULT_WORKER_IMAGE.into(),
            tools_image: DEFAULT_TOOLS_IMAGE.into(),
            tools_command: vec![
                "danube-supervisor".into(),
                "install".into(),
                format!("{TOOLS_PATH}/bin"),
            ],
            worker_resources: Resources::worker_default(),
            workspace_size_limit: Some("10Gi".into()),
            coordinator: None,
        }
    }
}

/// What one job contributes to its pod.
#[derive(Clone, Debug)]
pub struct JobPod<'a> {
    pub job_id: &'a JobId,
    /// The pipeline name, when known.
    pub pipeline: Option<&'a str>,
}

/// Returns the name of a job's pod.
pub fn pod_name(job_id: &JobId) -> String {
    format!("danube-job-{job_id}")
}

/// Returns the label selector of every pod of one engine.
pub fn engine_selector(engine_id: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{ENGINE_LABEL}={engine_id}")
}

/// Builds the pod of one job.
pub fn build_pod(settings: &PodSettings, job: &JobPod<'_>) -> Pod {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "danube-job".to_owned()),
        (ENGINE_LABEL.to_owned(), label_value(&settings.engine_id)),
        (JOB_LABEL.to_owned(), label_value(job.job_id.as_str())),
    ]);
    let mut annotations = BTreeMap::new();
    if let Some(pipeline) = job.pipeline.filter(|name| !name.is_empty()) {
        labels.insert(PIPELINE_LABEL.to_owned(), label_value(pipeline));
        annotations.insert(PIPELINE_ANNOTATION.to_owned(), pipeline.to_owned());
    }

    let tools = Container {
        name: TOOLS_CONTAINER.into(),
        image: Some(settings.tools_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(settings.tools_command.clone()),
        resources: Some(Resources::tools().requirements()),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![mount(TOOLS_VOLUME, TOOLS_PATH, false)]),
        ..Container::default()
    };
    let worker = Container {
        name: WORKER_CONTAINER.into(),
        image: Some(settings.worker_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(idle_command()),
        working_dir: Some(WORKSPACE_PATH.into()),
        resources: Some(settings.worker_resources.requirements()),
        security_context: Some(container_security()),
        volume_mounts: Some(worker_mounts()),
        env: Some(worker_env()),
        ..Container::default()
    };

    let mut containers = vec![worker];
    if let Some(coordinator) = &settings.coordinator {
        // The same idle supervisor, mounts and restrictions as the worker,
        // so the script reads the same workspace as the steps and nothing
        // more.
        containers.push(Container {
            name: COORDINATOR_CONTAINER.into(),
            image: Some(coordinator.image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(idle_command()),
            working_dir: Some(WORKSPACE_PATH.into()),
            resources: Some(coordinator.resources.requirements()),
            security_context: Some(container_security()),
            volume_mounts: Some(worker_mounts()),
            env: Some(worker_env()),
            ..Container::default()
        });
    }

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(job.job_id)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations).filter(|annotations| !annotations.is_empty()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            init_containers: Some(vec![tools]),
            containers,
            volumes: Some(vec![
                empty_dir(
                    WORKSPACE_VOLUME,
                    settings.workspace_size_limit.clone().map(Quantity),
                ),
                empty_dir(TOOLS_VOLUME, None),
                empty_dir(STATE_VOLUME, None),
                empty_dir(HOME_VOLUME, None),
            ]),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(pod_security()),
            active_deadline_seconds: Some(
                i64::try_from(super::declared::INITIAL_DEADLINE.as_secs())
                    .expect("a deadline of days fits in i64"),
            ),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Returns an ephemeral container that idles in `image` with the job's volumes, for
/// tasks and steps that name another image. Ephemeral containers take no
/// resources of their own; they share what the pod was scheduled with.
pub fn build_image_container(name: &str, image: &str) -> EphemeralContainer {
    EphemeralContainer {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(idle_command()),
        working_dir: Some(WORKSPACE_PATH.into()),
        security_context: Some(container_security()),
        volume_mounts: Some(worker_mounts()),
        env: Some(worker_env()),
        ..EphemeralContainer::default()
    }
}

fn idle_command() -> Vec<String> {
    vec![SUPERVISOR_PATH.into(), "idle".into()]
}

fn worker_mounts() -> Vec<VolumeMount> {
    vec![
        mount(WORKSPACE_VOLUME, WORKSPACE_PATH, false),
        mount(TOOLS_VOLUME, TOOLS_PATH, true),
        mount(STATE_VOLUME, STATE_PATH, false),
        mount(HOME_VOLUME, HOME_PATH, false),
    ]
}

/// Returns the environment of containers that run steps: only `HOME`, which
/// is no secret. Everything else travels over each exec's stdin.
fn worker_env() -> Vec<EnvVar> {
    vec![EnvVar {
        name: "HOME".into(),
        value: Some(HOME_PATH.into()),
        value_from: None,
    }]
}

fn empty_dir(name: &str, size_limit: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit,
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(read_only).filter(|read_only| *read_only),
        ..VolumeMount::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        // Makes the emptyDir volumes writable by that group.
        fs_group: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Turns any text into a valid label value: at most 63 characters of
/// `[A-Za-z0-9._-]`, starting and ending with a letter or digit. Other
/// characters become `_`; an empty result becomes `unnamed`.
pub fn label_value(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-') {
                character
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let trimmed = replaced.trim_matches(|character: char| !character.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unnamed".into()
    } else {
        trimmed.to_owned()
    }
}

/// Returns the pod as YAML, as `--dry-run` prints it.
///
/// # Errors
///
/// Only if serialisation fails, which a pod built here does not.
pub fn to_yaml(pod: &Pod) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(pod)
}

#[cfg(test)]
mod tests;
