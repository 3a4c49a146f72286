//! The kubernetes backend: one pod per job on a cluster that a kubeconfig
//! context (or the engine's own service account) reaches.
//!
//! The coordinator runs in one of two places ([`coordinator::Placement`]).
//! With `engine`, the default with a kubeconfig context, it is a local
//! process beside the engine and the pod holds only workers, so a laptop
//! never needs to be reachable from the cluster. With `pod`, the default
//! with the in-cluster configuration, the pod gets a `coordinator`
//! container and the engine starts the SDK in it by exec
//! ([`coordinator`]), so users' Python never runs in the engine's own
//! container. The job's lifecycle:
//!
//! 1. `prepare_workspace` copies the project folder into a local workspace,
//!    creates the pod, waits by watch until its containers run, and streams
//!    the files into the pod's `/workspace` ([`upload`]). A pod that cannot
//!    start ends the job with the Kubernetes reason.
//! 2. Once the pipeline declares its plan, `apply_egress` creates the job's
//!    egress policy, owned by the pod ([`egress`]).
//! 3. Each step is an exec of the supervisor in the worker, or in an
//!    ephemeral container for another image ([`exec`], [`images`]). With
//!    the coordinator beside the engine, what a step changed is copied back
//!    to the local copy, which the script reads ([`download`]).
//! 4. `remove_workspace` deletes the egress policy and the pod, whatever
//!    the outcome, and the local copy.
//!
//! Paths under the local workspace map to `/workspace` in the pod, so
//! `DANUBE_WORKSPACE` and a step's workdir name the pod's paths.
//!
//! All API calls go through one client whose request rate is bounded by
//! [`REQUESTS_PER_SECOND`].

pub mod coordinator;
pub mod declared;
pub mod download;
pub mod egress;
pub mod error;
pub mod exec;
pub mod images;
pub mod lifecycle;
pub mod network;
pub mod orphans;
pub mod pod;
pub mod retry;
pub mod shell;
pub mod strict;
pub mod target;
pub mod upload;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zeroize::Zeroizing;

pub use error::KubeError;
pub use pod::{JobPod, PodSettings, Resources};
pub use target::{Cluster, ClusterOptions, Target, TargetError};

use self::egress::{AppliedPolicy, EgressPolicies};
use self::exec::{ExecTarget, StepRun};
use self::images::ImageContainers;
use self::lifecycle::{PodState, PodWatch};
use self::network::{EgressSettings, PodOwner, PolicyFor};
use super::local::workspace;
use super::{
    Backend, BackendError, CoordinatorLaunch, OutputChunk, ShellEnd, SpawnHook, StepOutcome,
    StepSpec, Workspace, WorkspaceEntry,
};
use crate::model::JobId;

/// Maximum Kubernetes API requests per second from one engine, watches and
/// execs included. client-go defaults to 5 with bursts of 10; a job needs
/// about a dozen requests to start and a few per step, so 20 lets several
/// jobs start at once without flooding a shared API server.
pub const REQUESTS_PER_SECOND: u64 = 20;

/// How long a pod may take to run its worker, image pulls included.
pub const POD_START_LIMIT: Duration = Duration::from_secs(10 * 60);

/// File in the data directory that holds the engine id of its pods' labels.
pub const ENGINE_ID_FILE: &str = "engine-id";

/// The shell's exit code for a command it could not find.
const COMMAND_NOT_FOUND: i32 = 127;

/// Reads the engine id from `path`, creating a random one on first use.
/// Engines sharing a data directory share the id, which is safe because
/// orphan cleanup asks each job's lock whether a live process runs it.
///
/// # Errors
///
/// The file could not be read or created, or holds no valid label value.
pub fn load_engine_id(path: &Path) -> std::io::Result<String> {
    let valid = |id: &str| pod::label_value(id) == id && id.len() <= 63;
    match std::fs::read_to_string(path) {
        Ok(text) if valid(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(text) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "`{}` holds `{}`, which is not a valid label value (delete the file to get a new id)",
                    path.display(),
                    text.trim()
                ),
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }

    let id = format!("e{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, format!("{id}\n"))?;
    // hard_link fails if another process created the file meanwhile; its id wins.
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(id),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_engine_id(path),
        Err(err) => Err(err),
    }
}

/// Settings of the backend besides the cluster.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    pub pod: PodSettings,
    /// Local copies of the project, sent into the pod and read by a
    /// coordinator beside the engine: `<data_dir>/workspaces`.
    pub workspaces_root: PathBuf,
    pub pod_start_limit: Duration,
    /// Upper bound on the file data one step's changes copy back from the
    /// pod to the local copy ([`download`]).
    pub max_download_bytes: u64,
    /// The engine's part of every job's egress allowlist.
    pub egress: EgressSettings,
    /// Set when the coordinator runs in the job pod; `pod.coordinator` then
    /// describes its container.
    pub coordinator: Option<coordinator::PodCoordinator>,
}

/// Runs each job in a pod.
pub struct KubernetesBackend {
    api: Api<Pod>,
    egress: EgressPolicies,
    settings: KubeSettings,
    jobs: Mutex<HashMap<JobId, Arc<JobPodHandle>>>,
    /// `kube:CONTEXT`, or `kube` in the cluster.
    target: String,
}

/// A job's pod as the backend follows it.
struct JobPodHandle {
    name: String,
    /// The pod's uid, which its egress policy's owner reference names.
    uid: String,
    /// The job's egress policy, once the plan is declared.
    policy: Mutex<Option<AppliedPolicy>>,
    watch: PodWatch,
    local_workspace: PathBuf,
    images: ImageContainers,
    /// Commands run in the pod so far. The supervisor runs each id once, so
    /// a retried step and each debug command get an id of their own.
    executions: std::sync::atomic::AtomicU64,
    /// When the pod was created, which its deadline counts from.
    created: std::time::Instant,
}

impl JobPodHandle {
    /// Returns a new supervisor id, `<prefix>-<n>`.
    fn next_execution_id(&self, prefix: &str) -> String {
        let number = self
            .executions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("{prefix}-{number}")
    }
}

impl KubernetesBackend {
    /// Connects to `cluster`. No request is sent yet.
    ///
    /// # Errors
    ///
    /// The client could not be built from the configuration (for example an
    /// invalid certificate).
    pub fn connect(
        cluster: Cluster,
        settings: KubeSettings,
    ) -> Result<KubernetesBackend, KubeError> {
        let url = cluster.config.cluster_url.to_string();
        let target = match &cluster.context {
            Some(context) => format!("kube:{context}"),
            None => "kube".to_owned(),
        };
        let client = kube::client::ClientBuilder::try_from(cluster.config)
            .map_err(|source| KubeError::Client {
                cluster: url,
                source: Box::new(source),
            })?
            .with_layer(&tower::limit::RateLimitLayer::new(
                REQUESTS_PER_SECOND,
                Duration::from_secs(1),
            ))
            .build();
        let api = Api::namespaced(client.clone(), &settings.pod.namespace);
        Ok(KubernetesBackend {
            api,
            egress: EgressPolicies::new(client, settings.pod.namespace.clone()),
            settings,
            jobs: Mutex::new(HashMap::new()),
            target,
        })
    }

    pub fn api(&self) -> &Api<Pod> {
        &self.api
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    fn handle(&self, job: &JobId) -> Option<Arc<JobPodHandle>> {
        self.jobs
            .lock()
            .expect("the job map is never poisoned: no code panics while holding it")
            .get(job)
            .cloned()
    }

    /// Creates the pod, waits for its worker and fills its workspace.
    async fn start_pod(
        &self,
        job: &JobId,
        pipeline: Option<&str>,
        local_workspace: &Path,
    ) -> Result<Arc<JobPodHandle>, KubeError> {
        let pod = pod::build_pod(
            &self.settings.pod,
            &JobPod {
                job_id: job,
                pipeline,
            },
        );
        let name = pod::pod_name(job);
        let params = PostParams::default();
        let created = retry::with_backoff("create pod", || self.api.create(&params, &pod))
            .await
            .map_err(|source| KubeError::CreatePod {
                pod: name.clone(),
                namespace: self.settings.pod.namespace.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(job_id = %job, pod = %name, namespace = %self.settings.pod.namespace, "pod created");

        let handle = Arc::new(JobPodHandle {
            name: name.clone(),
            uid: created.metadata.uid.unwrap_or_default(),
            policy: Mutex::new(None),
            watch: PodWatch::start(self.api.clone(), &name),
            local_workspace: local_workspace.to_owned(),
            images: ImageContainers::default(),
            executions: std::sync::atomic::AtomicU64::new(0),
            created: std::time::Instant::now(),
        });
        // Registered before waiting, so remove_workspace deletes the pod
        // even when it never starts.
        self.jobs
            .lock()
            .expect("the job map is never poisoned: no code panics while holding it")
            .insert(job.clone(), handle.clone());

        self.wait_until_running(&handle).await?;
        let target = ExecTarget {
            api: self.api.clone(),
            pod: name.clone(),
            container: pod::WORKER_CONTAINER.into(),
        };
        let files = upload::upload_project(&target, local_workspace)
            .await
            .map_err(|reason| KubeError::UploadProject {
                project: local_workspace.to_owned(),
                pod: name.clone(),
                reason,
            })?;
        tracing::info!(job_id = %job, pod = %name, files, "project sent into the pod");
        Ok(handle)
    }

    async fn wait_until_running(&self, handle: &JobPodHandle) -> Result<(), KubeError> {
        let mut receiver = handle.watch.subscribe();
        let running = lifecycle::wait_for(&mut receiver, |observed| {
            (observed.state == PodState::Running).then_some(())
        });
        match tokio::time::timeout(self.settings.pod_start_limit, running).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(KubeError::PodFailed {
                pod: handle.name.clone(),
                reason,
            }),
            Err(_) => {
                let detail = match handle.watch.current().state {
                    PodState::Pending { detail } => detail,
                    other => format!("{other:?}"),
                };
                Err(KubeError::PodStartTimedOut {
                    pod: handle.name.clone(),
                    limit_seconds: self.settings.pod_start_limit.as_secs(),
                    detail,
                })
            }
        }
    }

    /// Deletes a job's egress policy, if it has one. A failure is logged
    /// only: the pod owns the policy, so the cluster removes it with the pod.
    async fn delete_policy(&self, job: &JobId, handle: &JobPodHandle) {
        let Some(policy) = lock(&handle.policy).take() else {
            return;
        };
        match self.egress.delete(&policy).await {
            Ok(()) => {
                tracing::info!(job_id = %job, policy = %policy.name, "egress policy deleted");
            }
            Err(error) => {
                tracing::warn!(job_id = %job, policy = %policy.name, error = %error, "failed to delete the egress policy; the cluster removes it with the pod");
            }
        }
    }

    /// Deletes a job's pod; one that is already gone is not an error.
    async fn delete_pod(&self, name: &str) -> Result<(), KubeError> {
        lifecycle::delete_pod(&self.api, name)
            .await
            .map_err(|source| KubeError::DeletePod {
                pod: name.to_owned(),
                source: Box::new(source),
            })
    }

    /// Copies what the step of `spec` changed in the pod to the local copy,
    /// noting in its output the files too large to copy.
    async fn download_changes(
        &self,
        handle: &JobPodHandle,
        spec: &StepSpec,
        id: &str,
        output: &mpsc::Sender<OutputChunk>,
    ) -> Result<(), KubeError> {
        let target = ExecTarget {
            api: self.api.clone(),
            pod: handle.name.clone(),
            container: pod::WORKER_CONTAINER.into(),
        };
        let downloaded = download::download_changes(
            &target,
            id,
            &handle.local_workspace,
            self.settings.max_download_bytes,
        )
        .await
        .map_err(|reason| KubeError::DownloadChanges {
            step: spec.step.clone(),
            pod: handle.name.clone(),
            reason,
        })?;
        tracing::debug!(
            job_id = %spec.job_id,
            step_id = spec.step_id,
            unpacked = downloaded.unpacked,
            removed = downloaded.removed,
            "step's changes copied to the local copy"
        );

        for note in downloaded.notes {
            let chunk = OutputChunk {
                stream: crate::model::Stream::Engine,
                data: bytes::Bytes::from(format!(
                    "danube: {note}; it stays in the pod, so the pipeline script cannot read or upload it\n"
                )),
            };
            output.send(chunk).await.ok();
        }
        Ok(())
    }

    /// Returns the container that runs `spec`: the worker, or the image's own.
    async fn container_for(
        &self,
        handle: &JobPodHandle,
        spec: &StepSpec,
    ) -> Result<String, KubeError> {
        match spec
            .image
            .as_deref()
            .filter(|image| *image != self.settings.pod.worker_image)
        {
            None => Ok(pod::WORKER_CONTAINER.into()),
            Some(image) => {
                let state = handle.watch.subscribe();
                handle
                    .images
                    .container_for(&self.api, &handle.name, image, &state)
                    .await
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    async fn prepare_workspace(
        &self,
        job: &JobId,
        project: &Path,
        in_place: bool,
        pipeline: Option<&str>,
    ) -> Result<Workspace, BackendError> {
        if in_place {
            return Err(BackendError::InPlaceUnsupported);
        }
        let local =
            workspace::prepare_workspace(&self.settings.workspaces_root, job, project, false)
                .await?;

        let span = tracing::info_span!("kube_pod", job_id = %job);
        match self
            .start_pod(job, pipeline, &local.path)
            .instrument(span)
            .await
        {
            Ok(_) => Ok(local),
            Err(err) => {
                // The orchestrator never saw this workspace, so it will not
                // call remove_workspace for it.
                if let Err(cleanup) = self.remove_workspace(&local).await {
                    tracing::warn!(job_id = %job, error = %cleanup, "failed to clean up after a pod that did not start");
                }
                Err(err.into())
            }
        }
    }

    async fn run_step(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let prefix = spec.step_id.to_string();
        self.run_in_pod(spec, &prefix, output, cancel).await
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn step_workdir(&self, spec: &StepSpec) -> PathBuf {
        match self.handle(&spec.job_id) {
            Some(handle) => PathBuf::from(pod_path(&spec.workdir, &handle.local_workspace)),
            None => spec.workdir.clone(),
        }
    }

    fn runs_coordinator(&self) -> bool {
        self.settings.coordinator.is_some()
    }

    /// Runs the coordinator in the pod's `coordinator` container, followed
    /// across dropped exec connections as a step is ([`exec`]).
    async fn run_coordinator(
        &self,
        launch: CoordinatorLaunch,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let Some(settings) = &self.settings.coordinator else {
            return Err(BackendError::Unsupported {
                backend: "kubernetes",
                operation: "run the coordinator with `coordinator = engine`",
            });
        };
        let span = tracing::info_span!("kube_coordinator", job_id = %launch.job_id);
        async {
            let handle =
                self.handle(&launch.job_id)
                    .ok_or_else(|| KubeError::UnknownJob {
                        job: launch.job_id.to_string(),
                    })?;
            let address = coordinator::dial_address(settings, launch.engine_addr).map_err(
                |reason| KubeError::EngineUnreachable {
                    pod: handle.name.clone(),
                    reason,
                },
            )?;
            let id = handle.next_execution_id("coordinator");
            let run = StepRun {
                target: ExecTarget {
                    api: self.api.clone(),
                    pod: handle.name.clone(),
                    container: pod::COORDINATOR_CONTAINER.into(),
                },
                step: "coordinator".into(),
                request: coordinator::request(&launch, settings, &address, &id),
                id,
                timeout: None,
                pod_state: handle.watch.subscribe(),
                on_started: Box::new(|| {}),
            };
            tracing::info!(job_id = %launch.job_id, pod = %handle.name, engine = %address, "starting the coordinator in the pod");
            let notes = output.clone();
            let outcome = exec::run_step(run, output, cancel)
                .await
                .map_err(|err| match err {
                    KubeError::StepLost { pod, reason, .. } => {
                        KubeError::CoordinatorLost { pod, reason }
                    }
                    other => other,
                })?;
            tracing::info!(job_id = %launch.job_id, ?outcome, "the coordinator in the pod ended");
            if outcome == StepOutcome::Exited(COMMAND_NOT_FOUND) {
                let note = format!(
                    "danube: the coordinator image has no `{}` (exit code {COMMAND_NOT_FOUND}); \
                     use an image built from deploy/coordinator/ (--coordinator-image), or pass \
                     --coordinator-python with the path of a Python that has the SDK's packages",
                    settings.python
                );
                exec::send_note(&notes, &note).await;
            }
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    fn kill_leftovers(&self, _job: &JobId) -> usize {
        // Whatever a step left running dies with the pod.
        0
    }

    async fn remove_workspace(&self, workspace: &Workspace) -> Result<(), BackendError> {
        let job = {
            let mut jobs = self
                .jobs
                .lock()
                .expect("the job map is never poisoned: no code panics while holding it");
            let job = jobs
                .iter()
                .find(|(_, handle)| handle.local_workspace == workspace.path)
                .map(|(job, _)| job.clone());
            job.and_then(|job| jobs.remove(&job).map(|handle| (job, handle)))
        };
        if let Some((job, handle)) = job {
            self.delete_policy(&job, &handle).await;
            self.delete_pod(&handle.name).await?;
            tracing::info!(job_id = %job, pod = %handle.name, "pod deleted");
        }
        workspace::remove_workspace(&self.settings.workspaces_root, workspace).await
    }

    /// Runs the command in the paused step's container, with its workdir and
    /// environment sent over the exec's stdin as for a step, and copies its
    /// changes back to the local copy.
    async fn run_debug_command(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let prefix = format!("debug{}", spec.step_id);
        self.run_in_pod(spec, &prefix, output, cancel).await
    }

    /// Labels the pod with the declared pipeline and bounds its life by the
    /// job's `max_duration` ([`declared`]).
    async fn plan_declared(
        &self,
        job: &JobId,
        pipeline: &str,
        max_duration: Duration,
    ) -> Result<(), BackendError> {
        let handle = self.handle(job).ok_or_else(|| KubeError::UnknownJob {
            job: job.to_string(),
        })?;
        let update = declared::Declared {
            pipeline,
            max_duration,
            pod_age: handle.created.elapsed(),
        };
        declared::apply(&self.api, &handle.name, &update)
            .await
            .map_err(|source| KubeError::PatchPod {
                pod: handle.name.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(job_id = %job, pod = %handle.name, pipeline, max_duration_seconds = max_duration.as_secs(), "pod labelled with its pipeline and deadline");
        Ok(())
    }

    /// Creates the job's egress policy from the engine's entries and
    /// `allowlist`, before any step runs. Without Cilium, the returned note
    /// names the host-name entries that cannot be enforced.
    async fn apply_egress(
        &self,
        job: &JobId,
        allowlist: &[String],
    ) -> Result<Vec<String>, BackendError> {
        let entries = self
            .settings
            .egress
            .job_allowlist(allowlist)
            .map_err(KubeError::from)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let handle = self.handle(job).ok_or_else(|| KubeError::UnknownJob {
            job: job.to_string(),
        })?;
        if lock(&handle.policy).is_some() {
            return Ok(Vec::new());
        }

        let target = PolicyFor {
            namespace: &self.settings.pod.namespace,
            job_id: job,
            owner: Some(PodOwner {
                name: &handle.name,
                uid: &handle.uid,
            }),
        };
        let applied = self.egress.apply(&target, &entries).await?;
        *lock(&handle.policy) = Some(applied.policy);
        if applied.dropped.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "danube: the cluster has no Cilium, so the job's egress policy is a plain \
             NetworkPolicy, which cannot name hosts; these egress_allowlist entries were \
             dropped from it, so their hosts stay unreachable: {}",
            applied.dropped.join(", ")
        )])
    }

    /// Opens a terminal in the paused step's container through an exec
    /// with a TTY, its environment sent over the exec's stdin ([`shell`]).
    async fn interactive_shell(&self, spec: StepSpec) -> Result<ShellEnd, BackendError> {
        let prepared = self
            .prepare_exec(&spec, &format!("shell{}", spec.step_id))
            .await?;
        // NOTE: what the shell changes is not copied back to the local copy,
        // since the supervisor keeps no change marker for a shell.
        Ok(shell::run_shell(&prepared.target, &spec.step, prepared.request).await?)
    }

    /// Browses the local copy, which contains what the pod's workspace
    /// contained after the last step or debug command, except files past
    /// [`KubeSettings::max_download_bytes`].
    ///
    /// NOTE: with the coordinator in the pod nothing is copied back, so the
    /// local copy shows the project as it was sent into the pod.
    async fn browse_workspace(
        &self,
        workspace: &Workspace,
        relative: &str,
        max_bytes: u64,
    ) -> Result<WorkspaceEntry, BackendError> {
        super::local::browse_copy(workspace, relative, max_bytes).await
    }
}

/// The pod, container, id and request of one exec of the supervisor, for a
/// step or a shell.
struct PreparedExec {
    handle: Arc<JobPodHandle>,
    target: ExecTarget,
    /// The supervisor id of this execution.
    id: String,
    request: Zeroizing<Vec<u8>>,
}

impl KubernetesBackend {
    /// Finds the job's pod and the container for `spec` (adding an image's
    /// container on first use), and builds the supervisor's request under a
    /// new id starting with `prefix`.
    async fn prepare_exec(
        &self,
        spec: &StepSpec,
        prefix: &str,
    ) -> Result<PreparedExec, BackendError> {
        super::local::check_env_names(spec)?;
        let handle = self
            .handle(&spec.job_id)
            .ok_or_else(|| KubeError::UnknownJob {
                job: spec.job_id.to_string(),
            })?;
        let container = self.container_for(&handle, spec).await?;

        let id = handle.next_execution_id(prefix);
        let request = step_request(spec, &id, &handle.local_workspace);
        let target = ExecTarget {
            api: self.api.clone(),
            pod: handle.name.clone(),
            container,
        };
        Ok(PreparedExec {
            handle,
            target,
            id,
            request,
        })
    }

    /// Runs `spec` through the supervisor under a new id starting with
    /// `prefix`, then copies what it changed back to the local copy.
    async fn run_in_pod(
        &self,
        spec: StepSpec,
        prefix: &str,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let span = tracing::debug_span!("kube_step", job_id = %spec.job_id, step_id = spec.step_id);
        async {
            let PreparedExec {
                handle,
                target,
                id,
                request,
            } = self.prepare_exec(&spec, prefix).await?;
            let hook_spec = spec.clone();
            let run = StepRun {
                target,
                step: spec.step.clone(),
                id: id.clone(),
                request,
                timeout: spec.timeout,
                pod_state: handle.watch.subscribe(),
                on_started: Box::new(move || SpawnHook::notify(&hook_spec)),
            };
            let outcome = exec::run_step(run, output.clone(), cancel).await?;

            // A cancelled job is over, so its copy is not read any more. A
            // coordinator in the pod reads the pod's files itself.
            if outcome != StepOutcome::Cancelled && self.settings.coordinator.is_none() {
                self.download_changes(&handle, &spec, &id, &output).await?;
            }
            Ok(outcome)
        }
        .instrument(span)
        .await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data, valid even after a panic.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Returns `path`, a path in the job's local copy, as the pod's path under
/// [`pod::WORKSPACE_PATH`]; a path outside the copy stays as it is.
fn pod_path(path: &Path, local_workspace: &Path) -> String {
    match path.strip_prefix(local_workspace) {
        Ok(relative) if relative.as_os_str().is_empty() => pod::WORKSPACE_PATH.to_owned(),
        Ok(relative) => format!("{}/{}", pod::WORKSPACE_PATH, relative.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Builds the supervisor's request for `spec` under supervisor id `id`,
/// with local workspace paths mapped to the pod's `/workspace`.
fn step_request(spec: &StepSpec, id: &str, local_workspace: &Path) -> Zeroizing<Vec<u8>> {
    let to_pod = |path: &Path| pod_path(path, local_workspace);
    let mut env: BTreeMap<&str, String> = spec
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    if let Some(workspace) = env.get_mut("DANUBE_WORKSPACE") {
        *workspace = to_pod(Path::new(workspace.as_str()));
    }

    let request = serde_json::json!({
        "id": id,
        "command": spec.command,
        "workdir": to_pod(&spec.workdir),
        "env": env,
    });
    let mut line = Zeroizing::new(
        serde_json::to_vec(&request).expect("a JSON object of strings always serialises"),
    );
    line.push(b'\n');
    // NOTE: `env` and `request` hold copies of the values, secrets included,
    // and are freed without being wiped; only the line sent is zeroised.
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_id_is_created_once_and_kept() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join(ENGINE_ID_FILE);

        let first = load_engine_id(&path).unwrap();
        let second = load_engine_id(&path).unwrap();

        assert_eq!(first, second);
        assert_eq!(pod::label_value(&first), first);
        std::fs::write(&path, "not valid!\n").unwrap();
        let error = load_engine_id(&path).unwrap_err().to_string();
        assert!(error.contains("not a valid label value"), "{error}");
    }

    #[test]
    fn step_request_maps_workspace_paths_into_the_pod() {
        let local = PathBuf::from("/data/workspaces/job-1");
        let spec = StepSpec {
            job_id: JobId::new(),
            step_id: 42,
            task: "build".into(),
            step: "compile".into(),
            command: "make -C src".into(),
            workdir: local.join("sub/dir"),
            env: BTreeMap::from([
                ("DANUBE_WORKSPACE".to_owned(), local.display().to_string()),
                ("TOKEN".to_owned(), "s3cret".to_owned()),
            ]),
            image: None,
            timeout: None,
            on_spawn: None,
        };

        let line = step_request(&spec, "42-0", &local);

        assert_eq!(line.last(), Some(&b'\n'));
        let request: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(request["id"], "42-0");
        assert_eq!(request["command"], "make -C src");
        assert_eq!(request["workdir"], "/workspace/sub/dir");
        assert_eq!(request["env"]["DANUBE_WORKSPACE"], "/workspace");
        assert_eq!(request["env"]["TOKEN"], "s3cret");
    }
}
