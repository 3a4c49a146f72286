//! The kubelet of the emulator's one node: runs each scheduled pod's
//! containers as processes (see [`super::runtime`]) and writes the pod
//! status a kubelet would.
//!
//! A pod's life, each step recorded in its status:
//!
//! 1. scheduling: `PodScheduled=False` with the scheduler's message until
//!    the node has room and takes pods, then `spec.nodeName` is set;
//! 2. volumes: one folder per `emptyDir` volume under the pod's folder;
//! 3. init containers one after the other; a non-zero exit fails the pod;
//! 4. the main containers all at once; the pod is `Running` once all have
//!    started and `Succeeded` or `Failed` once all have exited.
//!
//! Containers are never restarted, whatever `restartPolicy` is set to.
//!
//! An interrupt (deletion, eviction, node loss) stops that sequence
//! wherever it is; the pod's running containers are then stopped and
//! recorded by the interrupt's handler.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EphemeralContainer, Pod, PodSecurityContext, SecurityContext, VolumeMount,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Shared;
use super::logs::ContainerLog;
use super::pod_state::{self, Group, State};
use super::runtime::{self, Isolation, ProcessSpec};
use super::store::now;

/// Something that stops a pod's normal course.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Interrupt {
    None,
    /// Stop the containers (`SIGTERM`, then `SIGKILL` after `grace`) and
    /// remove the pod.
    Delete {
        grace: Duration,
    },
    /// Kill the containers and fail the pod with reason `Evicted`.
    Evict {
        message: String,
    },
    /// The node is gone: kill the containers without a word to the API.
    NodeLost,
    /// The pod ran past `activeDeadlineSeconds`: kill the containers and
    /// fail the pod with reason `DeadlineExceeded`.
    DeadlineExceeded,
}

/// A container process that was started, running or exited.
pub(crate) struct RunningContainer {
    /// The middle process (see [`super::runtime`]).
    pub pid: u32,
    /// The environment, working directory and user that execs inherit.
    pub spec: ProcessSpec,
    exit: watch::Receiver<Option<i32>>,
    /// Why the emulator killed it (`OOMKilled`), when it did.
    kill_reason: Mutex<Option<&'static str>>,
}

impl RunningContainer {
    /// Waits for the exit code (128 + the signal for a signal).
    pub async fn wait(&self) -> i32 {
        let mut exit = self.exit.clone();
        let code = exit.wait_for(Option::is_some).await.map(|code| *code);
        // The sender lives in the task that reaps the process; it sends
        // before it ends, so a closed channel means the task panicked.
        code.ok().flatten().unwrap_or(137)
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Kills the container with `SIGKILL`, recording `reason` as the cause.
    pub fn kill(&self, reason: Option<&'static str>) {
        if let Some(reason) = reason {
            *lock(&self.kill_reason) = Some(reason);
        }
        runtime::kill_container(self.pid);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kubelet's record of one pod.
pub(crate) struct PodRuntime {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `<emulator root>/pods/<uid>`, with `volumes/<name>` inside.
    pub dir: PathBuf,
    interrupt: watch::Sender<Interrupt>,
    containers: Mutex<HashMap<String, Arc<RunningContainer>>>,
    logs: Mutex<HashMap<String, Arc<ContainerLog>>>,
    /// Bumped to end this pod's exec connections without a status.
    pub exec_drops: watch::Sender<u64>,
    ephemeral_tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// When the kubelet took the pod, which `activeDeadlineSeconds` counts from.
    started: std::time::Instant,
    /// The timer of the pod's `activeDeadlineSeconds`, once set.
    deadline: Mutex<Option<tokio::task::AbortHandle>>,
}

impl PodRuntime {
    pub fn container(&self, name: &str) -> Option<Arc<RunningContainer>> {
        lock(&self.containers).get(name).cloned()
    }

    pub fn container_names(&self) -> Vec<String> {
        lock(&self.containers).keys().cloned().collect()
    }

    pub fn log(&self, name: &str) -> Option<Arc<ContainerLog>> {
        lock(&self.logs).get(name).cloned()
    }

    pub fn interrupt(&self, interrupt: Interrupt) {
        self.interrupt.send_replace(interrupt);
    }

    fn running(&self) -> Vec<(String, Arc<RunningContainer>)> {
        lock(&self.containers)
            .iter()
            .filter(|(_, c)| !c.has_exited())
            .map(|(name, c)| (name.clone(), c.clone()))
            .collect()
    }
}

/// Every pod the kubelet runs, by uid.
#[derive(Default)]
pub(crate) struct Kubelet {
    pods: Mutex<HashMap<String, Arc<PodRuntime>>>,
}

impl Kubelet {
    pub fn pod(&self, uid: &str) -> Option<Arc<PodRuntime>> {
        lock(&self.pods).get(uid).cloned()
    }

    pub fn all(&self) -> Vec<Arc<PodRuntime>> {
        lock(&self.pods).values().cloned().collect()
    }
}

/// Starts running a pod the API server has just stored.
pub(crate) fn start_pod(shared: &Arc<Shared>, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let runtime = Arc::new(PodRuntime {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        dir: shared.root.join("pods").join(&uid),
        uid: uid.clone(),
        interrupt: watch::channel(Interrupt::None).0,
        containers: Mutex::default(),
        logs: Mutex::default(),
        exec_drops: watch::channel(0).0,
        ephemeral_tasks: Mutex::default(),
        started: std::time::Instant::now(),
        deadline: Mutex::default(),
    });
    lock(&shared.kubelet.pods).insert(uid, runtime.clone());
    if let Some(seconds) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.active_deadline_seconds)
    {
        set_deadline(&runtime, seconds);
    }
    tokio::spawn(run_pod(shared.clone(), runtime));
}

/// (Re)arms the pod's `activeDeadlineSeconds` timer, counted from when the
/// kubelet took the pod, as a kubelet counts it from `status.startTime`.
pub(crate) fn set_deadline(pod: &Arc<PodRuntime>, seconds: i64) {
    let deadline = pod.started + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let runtime = pod.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        runtime.interrupt(Interrupt::DeadlineExceeded);
    });
    if let Some(previous) = lock(&pod.deadline).replace(timer.abort_handle()) {
        previous.abort();
    }
}

async fn run_pod(shared: Arc<Shared>, pod: Arc<PodRuntime>) {
    info!(namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, "pod started");
    let mut interrupts = pod.interrupt.subscribe();
    tokio::select! {
        () = lifecycle(&shared, &pod) => {}
        _ = interrupts.wait_for(|i| *i != Interrupt::None) => {}
    }

    loop {
        let interrupt = interrupts.borrow_and_update().clone();
        match interrupt {
            Interrupt::None => {}
            Interrupt::Delete { grace } => {
                if shared.node_lost() && !grace.is_zero() {
                    debug!(pod = %pod.name, "node lost: the pod stays terminating until force-deleted");
                } else {
                    stop_containers(&shared, &pod, grace).await;
                    remove(&shared, &pod);
                    return;
                }
            }
            Interrupt::Evict { message } => evict(&shared, &pod, message).await,
            Interrupt::DeadlineExceeded => exceed_deadline(&shared, &pod).await,
            Interrupt::NodeLost => {
                pod.exec_drops.send_modify(|n| *n += 1);
                for (_, container) in pod.running() {
                    container.kill(None);
                }
            }
        }
        if interrupts.changed().await.is_err() {
            return;
        }
    }
}

fn remove(shared: &Shared, pod: &PodRuntime) {
    for task in lock(&pod.ephemeral_tasks).drain(..) {
        task.abort();
    }
    if let Some(timer) = lock(&pod.deadline).take() {
        timer.abort();
    }
    shared.store.remove_pod(&pod.namespace, &pod.name, &pod.uid);
    lock(&shared.kubelet.pods).remove(&pod.uid);
    if let Err(error) = std::fs::remove_dir_all(&pod.dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(pod = %pod.name, dir = %pod.dir.display(), %error, "failed to remove the pod's folder");
    }
    info!(namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, "pod removed");
}

/// Stops the running containers: `SIGTERM`, then `SIGKILL` once `grace`
/// has passed, and records each as terminated.
async fn stop_containers(shared: &Shared, pod: &PodRuntime, grace: Duration) {
    let running = pod.running();
    for (_, container) in &running {
        runtime::signal(container.pid, libc::SIGTERM);
    }
    let all_exited = join_all(running.iter().map(|(_, c)| c.wait()));
    if tokio::time::timeout(grace, all_exited).await.is_err() {
        for (_, container) in &running {
            container.kill(None);
        }
    }
    record_stopped(shared, pod, &running, None).await;
}

async fn record_stopped(
    shared: &Shared,
    pod: &PodRuntime,
    stopped: &[(String, Arc<RunningContainer>)],
    reason: Option<&'static str>,
) {
    for (name, container) in stopped {
        let code = container.wait().await;
        let reason = reason.unwrap_or(if code == 0 { "Completed" } else { "Error" });
        shared
            .store
            .update_pod(&pod.namespace, &pod.name, |object| {
                let (group, image) = find_container(object, name);
                pod_state::set_container(
                    object,
                    group,
                    name,
                    &image,
                    State::Terminated {
                        exit_code: code,
                        reason,
                        message: None,
                        started_at: None,
                    },
                );
            });
    }
}

async fn evict(shared: &Shared, pod: &PodRuntime, message: String) {
    info!(pod = %pod.name, %message, "pod evicted");
    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            pod_state::fail(object, "Evicted", message.clone());
            pod_state::set_condition(
                object,
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(message.clone()),
            );
        });
    let running = pod.running();
    for (_, container) in &running {
        container.kill(None);
    }
    record_stopped(shared, pod, &running, Some("Error")).await;
}

/// Fails the pod as a kubelet does once `activeDeadlineSeconds` has passed.
async fn exceed_deadline(shared: &Shared, pod: &PodRuntime) {
    let message = "Pod was active on the node longer than the specified deadline".to_owned();
    info!(pod = %pod.name, "pod ran past its activeDeadlineSeconds");
    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            pod_state::fail(object, "DeadlineExceeded", message.clone());
        });
    let running = pod.running();
    for (_, container) in &running {
        container.kill(None);
    }
    record_stopped(shared, pod, &running, Some("Error")).await;
}

/// Returns the group and image of the container `name` in the pod's spec.
fn find_container(pod: &Pod, name: &str) -> (Group, String) {
    let spec = pod.spec.as_ref();
    let image = |c: Option<&Container>| c.and_then(|c| c.image.clone());
    if let Some(image) = image(spec.and_then(|s| s.containers.iter().find(|c| c.name == name))) {
        return (Group::Main, image);
    }
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|list| list.iter().find(|c| c.name == name));
    if let Some(image) = image(init) {
        return (Group::Init, image);
    }
    let ephemeral = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .and_then(|list| list.iter().find(|c| c.name == name))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    (Group::Ephemeral, ephemeral)
}

/// What the kubelet needs of a container, ephemeral or not.
#[derive(Debug, Clone)]
pub(crate) struct ContainerDef {
    pub group: Group,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub working_dir: Option<String>,
    pub mounts: Vec<VolumeMount>,
    pub security: Option<SecurityContext>,
}

impl ContainerDef {
    pub fn of(group: Group, c: &Container) -> ContainerDef {
        ContainerDef {
            group,
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone(),
            mounts: c.volume_mounts.clone().unwrap_or_default(),
            security: c.security_context.clone(),
        }
    }

    pub fn of_ephemeral(c: &EphemeralContainer) -> ContainerDef {
        ContainerDef {
            group: Group::Ephemeral,
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone(),
            mounts: c.volume_mounts.clone().unwrap_or_default(),
            security: c.security_context.clone(),
        }
    }
}

async fn lifecycle(shared: &Arc<Shared>, pod: &Arc<PodRuntime>) {
    let Some(object) = shared.store.pod(&pod.namespace, &pod.name) else {
        return;
    };
    let spec = object.spec.clone().unwrap_or_default();
    let init: Vec<ContainerDef> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ContainerDef::of(Group::Init, c))
        .collect();
    let main: Vec<ContainerDef> = spec
        .containers
        .iter()
        .map(|c| ContainerDef::of(Group::Main, c))
        .collect();

    super::node::schedule(shared, pod).await;
    let waiting_reason = if init.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            for def in init.iter().chain(&main) {
                let reason = if def.group == Group::Init {
                    "PodInitializing"
                } else {
                    waiting_reason
                };
                pod_state::set_container(
                    object,
                    def.group,
                    &def.name,
                    &def.image,
                    State::Waiting {
                        reason,
                        message: None,
                    },
                );
            }
            pod_state::set_condition(object, "Initialized", init.is_empty(), None, None);
        });

    if let Err(message) = create_volumes(pod, &object) {
        warn!(pod = %pod.name, %message, "pod volumes cannot be set up");
        shared
            .store
            .update_pod(&pod.namespace, &pod.name, |object| {
                for def in init.iter().chain(&main) {
                    pod_state::set_container(
                        object,
                        def.group,
                        &def.name,
                        &def.image,
                        State::Waiting {
                            reason: "CreateContainerConfigError",
                            message: Some(message.clone()),
                        },
                    );
                }
            });
        return futures::future::pending().await;
    }
    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            let status = object.status.get_or_insert_default();
            status.host_ip = Some("127.0.0.1".to_owned());
            status.pod_ip = Some("127.0.0.1".to_owned());
            status.start_time = Some(now());
            pod_state::set_condition(object, "PodReadyToStartContainers", true, None, None);
        });

    for def in &init {
        let code = run_container(shared, pod, def).await;
        if code != 0 {
            info!(pod = %pod.name, container = %def.name, code, "init container failed");
            shared
                .store
                .update_pod(&pod.namespace, &pod.name, |object| {
                    object.status.get_or_insert_default().phase = Some("Failed".to_owned());
                    pod_state::set_condition(
                        object,
                        "Initialized",
                        false,
                        Some("ContainersNotInitialized"),
                        Some(format!("containers with incomplete status: [{}]", def.name)),
                    );
                });
            return;
        }
    }
    if !init.is_empty() {
        shared
            .store
            .update_pod(&pod.namespace, &pod.name, |object| {
                pod_state::set_condition(object, "Initialized", true, None, None);
            });
    }
    join_all(main.iter().map(|def| run_container(shared, pod, def))).await;
}

fn create_volumes(pod: &PodRuntime, object: &Pod) -> Result<(), String> {
    let volumes = object
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in volumes {
        if volume.empty_dir.is_none() {
            return Err(format!(
                "volume \"{}\" is not an emptyDir: the emulator supports only emptyDir volumes",
                volume.name
            ));
        }
        let dir = pod.dir.join("volumes").join(&volume.name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                // emptyDir folders are world-writable, as the kubelet makes them.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            })
            .map_err(|error| format!("failed to create {}: {error}", dir.display()))?;
    }
    Ok(())
}

/// Starts an ephemeral container the API has just added to a pod.
pub(crate) fn start_ephemeral(shared: &Arc<Shared>, pod: &Arc<PodRuntime>, def: ContainerDef) {
    let (shared, runtime) = (shared.clone(), pod.clone());
    let task = tokio::spawn(async move {
        run_container(&shared, &runtime, &def).await;
    });
    lock(&pod.ephemeral_tasks).push(task.abort_handle());
}

fn set_state(shared: &Shared, pod: &PodRuntime, def: &ContainerDef, state: State) {
    shared
        .store
        .update_pod(&pod.namespace, &pod.name, |object| {
            pod_state::set_container(object, def.group, &def.name, &def.image, state);
        });
}

/// Pulls, starts and waits for one container. Returns its exit code; a
/// container that cannot start waits forever with its reason, as the
/// kubelet retries it forever.
async fn run_container(shared: &Arc<Shared>, pod: &Arc<PodRuntime>, def: &ContainerDef) -> i32 {
    if shared.options.failing_images.contains(&def.image) {
        return pull_failure(shared, pod, def).await;
    }
    let Some(object) = shared.store.pod(&pod.namespace, &pod.name) else {
        return futures::future::pending().await;
    };
    let spec = match process_spec(shared, &object, def) {
        Ok(spec) => spec,
        Err(message) => {
            warn!(pod = %pod.name, container = %def.name, %message, "container config error");
            let state = State::Waiting {
                reason: "CreateContainerConfigError",
                message: Some(message),
            };
            set_state(shared, pod, def, state);
            return futures::future::pending().await;
        }
    };
    let isolation = isolation(shared, pod, def);
    if let Some(dir) = &spec.working_dir {
        create_working_dir(dir, &isolation);
    }

    let mut process = match runtime::start_container(&spec, &isolation) {
        Ok(process) => process,
        Err(error) => {
            let message = start_error_message(&spec, &error);
            warn!(pod = %pod.name, container = %def.name, %message, "container failed to start");
            let state = State::Terminated {
                exit_code: 128,
                reason: "StartError",
                message: Some(message),
                started_at: None,
            };
            set_state(shared, pod, def, state);
            return 128;
        }
    };

    let log = ContainerLog::new();
    lock(&pod.logs).insert(def.name.clone(), log.clone());
    let stdout = process.child.stdout.take().expect("stdout is piped");
    let stderr = process.child.stderr.take().expect("stderr is piped");
    tokio::spawn(log.clone().pump(stdout));
    tokio::spawn(log.clone().pump(stderr));
    let pid = process.pid().unwrap_or_default();
    let (exit_sender, exit) = watch::channel(None);
    tokio::spawn(async move {
        let code = match process.child.wait().await {
            Ok(status) => status.code().unwrap_or(137),
            Err(_) => 137,
        };
        exit_sender.send_replace(Some(code));
    });
    let container = Arc::new(RunningContainer {
        pid,
        spec,
        exit,
        kill_reason: Mutex::new(None),
    });
    lock(&pod.containers).insert(def.name.clone(), container.clone());
    let started_at = now();
    set_state(
        shared,
        pod,
        def,
        State::Running {
            started_at: started_at.clone(),
        },
    );
    info!(pod = %pod.name, container = %def.name, pid, "container started");

    let code = container.wait().await;
    // Every process of the container is gone, so its pipes close.
    let mut changes = log.subscribe();
    let _ = changes.wait_for(|_| log.read_from(usize::MAX).1).await;
    let killed_for = *lock(&container.kill_reason);
    let reason = killed_for.unwrap_or(if code == 0 { "Completed" } else { "Error" });
    info!(pod = %pod.name, container = %def.name, code, reason, "container exited");
    let state = State::Terminated {
        exit_code: code,
        reason,
        message: None,
        started_at: Some(started_at),
    };
    set_state(shared, pod, def, state);
    code
}

async fn pull_failure(shared: &Shared, pod: &PodRuntime, def: &ContainerDef) -> i32 {
    let message = format!(
        "failed to pull and unpack image \"{}\": failed to resolve reference \"{}\": \
         pull access denied, repository does not exist or may require authorization",
        def.image, def.image
    );
    info!(pod = %pod.name, container = %def.name, image = %def.image, "image pull failed");
    let state = State::Waiting {
        reason: "ErrImagePull",
        message: Some(message),
    };
    set_state(shared, pod, def, state);
    tokio::time::sleep(shared.options.image_pull_backoff).await;
    let state = State::Waiting {
        reason: "ImagePullBackOff",
        message: Some(format!("Back-off pulling image \"{}\"", def.image)),
    };
    set_state(shared, pod, def, state);
    futures::future::pending().await
}

fn start_error_message(spec: &ProcessSpec, error: &std::io::Error) -> String {
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    let cause = match error.kind() {
        std::io::ErrorKind::NotFound => {
            format!("exec: \"{program}\": executable file not found in $PATH")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("exec: \"{program}\": permission denied")
        }
        _ => format!("{error}"),
    };
    format!(
        "failed to create containerd task: failed to create shim task: OCI runtime create \
         failed: runc create failed: unable to start container process: {cause}: unknown"
    )
}

/// Builds argv, environment, working directory and user for a container.
///
/// # Errors
///
/// A message for `CreateContainerConfigError`.
fn process_spec(shared: &Shared, pod: &Pod, def: &ContainerDef) -> Result<ProcessSpec, String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".to_owned(),
            shared.options.path.to_string_lossy().into_owned(),
        ),
        ("HOSTNAME".to_owned(), pod_name.clone()),
    ];
    for var in &def.env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(source)) => field_value(pod, source).ok_or_else(|| {
                format!(
                    "env \"{}\" of container \"{}\": the emulator resolves only fieldRef \
                     metadata.name, metadata.namespace, metadata.uid, spec.nodeName and \
                     status.podIP",
                    var.name, def.name
                )
            })?,
            (Some(value), None) => expand(value, &env),
            (None, None) => String::new(),
        };
        env.retain(|(name, _)| name != &var.name);
        env.push((var.name.clone(), value));
    }

    let argv: Vec<String> = def
        .command
        .iter()
        .chain(&def.args)
        .map(|arg| expand(arg, &env))
        .collect();
    if def.command.is_empty() {
        return Err(format!(
            "container \"{}\" has no command: emulated images have no entrypoint",
            def.name
        ));
    }

    let user = run_as(
        pod.spec.as_ref().and_then(|s| s.security_context.as_ref()),
        def,
    );
    let non_root = def
        .security
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.run_as_non_root)
        })
        .unwrap_or(false);
    if non_root && user.is_none_or(|(uid, _)| uid == 0) {
        return Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_name}_{}({})\", \
             container: {})",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
            def.name
        ));
    }

    Ok(ProcessSpec {
        argv,
        env,
        working_dir: Some(def.working_dir.clone().unwrap_or_else(|| "/".to_owned())),
        user,
        stdin: false,
    })
}

fn run_as(pod: Option<&PodSecurityContext>, def: &ContainerDef) -> Option<(u32, u32)> {
    let container = def.security.as_ref();
    let uid = container
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|s| s.run_as_user))?;
    let gid = container
        .and_then(|s| s.run_as_group)
        .or_else(|| pod.and_then(|s| s.run_as_group))
        .unwrap_or(0);
    Some((u32::try_from(uid).ok()?, u32::try_from(gid).ok()?))
}

fn field_value(pod: &Pod, source: &k8s_openapi::api::core::v1::EnvVarSource) -> Option<String> {
    let path = &source.field_ref.as_ref()?.field_path;
    match path.as_str() {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "status.podIP" => Some("127.0.0.1".to_owned()),
        _ => None,
    }
}

/// Expands `$(NAME)` references to variables defined earlier, as the
/// kubelet does in `command`, `args` and `env`; `$$` escapes a `$` and an
/// unknown reference stays as written.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find('$') {
        out.push_str(&rest[..index]);
        let after = &rest[index + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(name, _)| name == &inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn isolation(shared: &Shared, pod: &PodRuntime, def: &ContainerDef) -> Isolation {
    Isolation {
        mounts: def
            .mounts
            .iter()
            .map(|mount| {
                let mut source = pod.dir.join("volumes").join(&mount.name);
                if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    source = source.join(sub);
                    let _ = std::fs::create_dir_all(&source);
                }
                (source, mount.mount_path.clone())
            })
            .collect(),
        shell_mask: shared
            .options
            .images_without_shell
            .contains(&def.image)
            .then(|| shared.shell_mask.clone()),
    }
}

/// Creates the working directory where the container will see it: inside
/// the volume mounted over it, or on the host.
fn create_working_dir(dir: &str, isolation: &Isolation) {
    let covering = isolation
        .mounts
        .iter()
        .filter(|(_, target)| Path::new(dir).starts_with(target))
        .max_by_key(|(_, target)| target.len());
    let host = match covering {
        Some((source, target)) => source.join(
            Path::new(dir)
                .strip_prefix(target)
                .expect("the mount covers the folder"),
        ),
        None => PathBuf::from(dir),
    };
    if let Err(error) = std::fs::create_dir_all(&host) {
        debug!(dir = %host.display(), %error, "failed to create the working directory");
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expand_replaces_known_references_only() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }
}
