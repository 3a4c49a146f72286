//! Runs jobs: prepares the workspace, starts the coordinator, schedules the
//! declared tasks, runs their steps through the backend, and records every
//! state change.
//!
//! The orchestrator depends on the backend trait, the store and the log
//! module, not on how they are implemented.

mod coordinator;
pub mod debug;
pub mod events;
mod job;
pub mod ownership;
pub mod pipelines;
pub mod plan;
mod project;
pub mod repository;
mod source;
mod step;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::artifacts::ArtifactStore;
use crate::backend::Backend;
use crate::config::DataDir;
use crate::logs::{JobLogs, LogChunk};
use crate::model::{JobId, JobState, TriggerType, now_millis};
use crate::python::PythonEnv;
use crate::rpc::{self, TokenRegistry};
use crate::secrets::{SecretVault, SecretsError};
use crate::store::{NewJob, Store, StoreError};

pub use debug::{Breakpoints, Debugger};
pub use events::{EngineEvent, JobEvent};
pub use job::JobRuntime;
pub use job::error_chain;
pub use project::{ProjectError, check_project};
pub use repository::{KnownRefs, RepositoryError, RepositoryPolicy, RepositorySource};
pub use step::dispatch_latency;
pub(crate) use step::start as start_step;

/// The file a project folder must contain.
pub const PIPELINE_FILE: &str = "danubefile.py";

/// Number of events a subscriber of [`Engine::subscribe`] may fall behind
/// before it gets `RecvError::Lagged`.
pub const ENGINE_EVENTS_CAPACITY: usize = 4096;

/// A job's wall-time bound when its pipeline sets none.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(60 * 60);

/// The longest `max_duration` a pipeline may declare: seven days. Job pods
/// are created with a deadline past it, before their pipeline declares its
/// own, and a pod's deadline can only be lowered.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("failed to open the database")]
    OpenStore(#[source] StoreError),

    #[error("failed to load the encryption key")]
    LoadKey(#[source] Box<SecretsError>),

    #[error("failed to start the engine's gRPC server on {bind}")]
    StartRpc {
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Project(#[from] ProjectError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),

    #[error(
        "pipeline name `{0}` is invalid: use 1 to 100 characters without control characters, not starting with `-`"
    )]
    InvalidPipelineName(String),

    #[error("{0}")]
    InvalidBreakpoint(String),

    #[error("failed to record the job")]
    RecordJob(#[source] StoreError),

    #[error("failed to lock `{path}` for this job")]
    LockJob {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to create the log directory `{path}`")]
    CreateLogs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A request to run a project's pipeline.
#[derive(Clone, Debug)]
pub struct JobRequest {
    /// The project folder; ignored when `repository` is set.
    pub project: PathBuf,
    /// A repository to clone at a commit as the project, for server jobs.
    /// The caller checks it against its [`RepositoryPolicy`] first.
    pub repository: Option<RepositorySource>,
    /// Pipeline to run when the file defines several.
    pub pipeline: Option<String>,
    /// Run in the project folder itself instead of a copy.
    pub in_place: bool,
    /// Upper bound on tasks running at once; at least 1.
    pub max_parallel: usize,
    /// How the job was started: `Local` from the CLI, `Manual` from the API,
    /// `Watch` from a watch session.
    pub trigger: TriggerType,
    /// Where the job pauses for debugging; empty for none.
    pub breakpoints: Breakpoints,
    /// The trigger's detail, stored as the job's `trigger_ref`: for `Watch`,
    /// the changed file relative to the project. `None` stores the branch.
    pub trigger_ref: Option<String>,
    /// Where this job runs instead of the engine's own backend; `None` for
    /// the engine's backend.
    pub backend: Option<JobBackend>,
}

/// A backend chosen for one job, with the target it was made for.
///
/// One engine serves every target this way: the desktop app runs some jobs
/// as local processes and others on a cluster context while the jobs list,
/// the debugger and the event stream stay those of one engine. The backend
/// is fixed when the job is submitted and used for all of its steps, its
/// debug commands and its clean-up.
#[derive(Clone)]
pub struct JobBackend {
    /// The target as the user chose it, such as `kube:kind-dev`.
    pub target: String,
    pub backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for JobBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JobBackend")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The target a job runs on, for the log: `engine` for the engine's own
/// backend.
fn request_target(request: &JobRequest) -> &str {
    request
        .backend
        .as_ref()
        .map_or("engine", |chosen| chosen.target.as_str())
}

/// Shared by every job of one engine.
pub(crate) struct EngineContext {
    pub data: DataDir,
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub artifacts: ArtifactStore,
    pub vault: SecretVault,
    pub python: PythonEnv,
    pub rpc_addr: SocketAddr,
    pub tokens: Arc<TokenRegistry>,
    /// Every job's events, tagged with the job id.
    pub events: broadcast::Sender<EngineEvent>,
    /// Jobs this engine runs now; a job leaves when its final state is
    /// recorded.
    pub active: StdMutex<HashMap<JobId, Arc<JobRuntime>>>,
}

/// The engine: one per process, shared by every job it runs.
#[derive(Clone)]
pub struct Engine {
    context: Arc<EngineContext>,
}

/// The parts an engine is built from.
pub struct EngineParts {
    pub data: DataDir,
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub python: PythonEnv,
    pub max_artifact_bytes: u64,
}

impl Engine {
    /// Loads the encryption key and starts the gRPC server on an ephemeral
    /// loopback port.
    pub async fn start(parts: EngineParts) -> Result<Engine, OrchestratorError> {
        Engine::start_with_rpc(parts, rpc::LOOPBACK_EPHEMERAL).await
    }

    /// Loads the encryption key and starts the gRPC server on `rpc_bind`,
    /// for coordinators that reach the engine from elsewhere, such as job
    /// pods.
    pub async fn start_with_rpc(
        parts: EngineParts,
        rpc_bind: SocketAddr,
    ) -> Result<Engine, OrchestratorError> {
        let vault = SecretVault::open(parts.store.clone(), &parts.data.encryption_key_path())
            .await
            .map_err(|err| OrchestratorError::LoadKey(Box::new(err)))?;
        let artifacts = ArtifactStore::new(parts.data.artifacts_dir(), parts.max_artifact_bytes);

        let tokens = Arc::new(TokenRegistry::default());
        let rpc_addr = rpc::serve(tokens.clone(), rpc_bind)
            .await
            .map_err(|source| OrchestratorError::StartRpc {
                bind: rpc_bind,
                source,
            })?;
        tracing::info!(%rpc_addr, "engine gRPC server listening");

        let context = EngineContext {
            data: parts.data,
            store: parts.store,
            backend: parts.backend,
            artifacts,
            vault,
            python: parts.python,
            rpc_addr,
            tokens,
            events: broadcast::channel(ENGINE_EVENTS_CAPACITY).0,
            active: StdMutex::new(HashMap::new()),
        };
        Ok(Engine {
            context: Arc::new(context),
        })
    }

    /// Returns whether `target` names the engine's own backend, which jobs
    /// that choose no target run on. `kube` names a backend of the current
    /// context, which the engine resolved when it started.
    pub fn runs_on(&self, target: &str) -> bool {
        let own = self.context.backend.target();
        own == target || (target == "kube" && own.starts_with("kube:"))
    }

    /// The secrets this engine's jobs read; the API manages them through it.
    pub fn vault(&self) -> &SecretVault {
        &self.context.vault
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    /// The root of the data directory: database, logs, workspaces and keys.
    pub fn data_dir(&self) -> &Path {
        self.context.data.root()
    }

    /// Every state change of every job this engine runs, from now on. A
    /// receiver that falls more than [`ENGINE_EVENTS_CAPACITY`] events
    /// behind gets `RecvError::Lagged` and should reread the store.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.context.events.subscribe()
    }

    /// Ids of the jobs this engine runs now.
    pub fn active_jobs(&self) -> Vec<JobId> {
        self.active().keys().cloned().collect()
    }

    /// Asks a job this engine runs to stop, as [`JobHandle::cancel`] does.
    /// Returns `false` when this engine does not run the job (it is final,
    /// unknown, or run by another process).
    pub fn cancel(&self, id: &JobId) -> bool {
        let runtime = self.active().get(id).cloned();
        match runtime {
            Some(runtime) => {
                runtime.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels a job as [`Engine::cancel`] does, and records `message` as
    /// the reason of the cancelled job.
    pub fn cancel_with_message(&self, id: &JobId, message: String) -> bool {
        let runtime = self.active().get(id).cloned();
        match runtime {
            Some(runtime) => {
                runtime.cancel_with_message(message);
                true
            }
            None => false,
        }
    }

    /// Controls the debugging of a job this engine runs; `None` when this
    /// engine does not run the job.
    pub fn debugger(&self, id: &JobId) -> Option<Debugger> {
        self.active().get(id).cloned().map(Debugger::new)
    }

    /// Live log chunks of a job this engine runs, from now on; `None` when
    /// this engine does not run the job.
    pub fn subscribe_logs(&self, id: &JobId) -> Option<broadcast::Receiver<LogChunk>> {
        self.active()
            .get(id)
            .map(|runtime| runtime.logs().subscribe())
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<JobRuntime>>> {
        self.context
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a job and starts it in the background.
    ///
    /// # Errors
    ///
    /// Fails before anything is recorded when the project folder or its
    /// pipeline file is missing, or the repository cannot be cloned at its
    /// commit. A clone happens here, before this returns.
    pub async fn submit(&self, request: JobRequest) -> Result<JobHandle, OrchestratorError> {
        if let Some(name) = &request.pipeline
            && !valid_pipeline_name(name)
        {
            let shown: String = name.chars().take(100).collect();
            return Err(OrchestratorError::InvalidPipelineName(shown));
        }
        request
            .breakpoints
            .validate()
            .map_err(OrchestratorError::InvalidBreakpoint)?;
        let id = JobId::new();
        let mut checkout = Checkout(None);
        let (project, source, project_dir) = match &request.repository {
            None => {
                let project = check_project(&request.project)?;
                let source = source::describe(&project);
                let shown = project.display().to_string();
                (project, source, shown)
            }
            Some(repository) => {
                let path = self.context.data.checkouts_dir().join(id.as_str());
                checkout.0 = Some(path.clone());
                let source = clone_repository(&id, repository, &path).await?;
                // A repository named by its path is recorded as a `file://`
                // URL, so that a rerun clones it again instead of running
                // the folder's working copy as a project.
                let recorded = if repository.url.starts_with('/') {
                    format!("file://{}", repository.url)
                } else {
                    repository.url.clone()
                };
                (path, source, recorded)
            }
        };

        let logs = JobLogs::create(self.context.data.job_logs_dir(&id)).map_err(|source| {
            OrchestratorError::CreateLogs {
                path: self.context.data.job_logs_dir(&id),
                source,
            }
        })?;
        // Taken before the job is recorded, so that another process never
        // sees this job without its owner's lock.
        let lock = ownership::acquire(logs.dir()).map_err(|source| OrchestratorError::LockJob {
            path: logs.dir().to_owned(),
            source,
        })?;
        let new_job = NewJob {
            id: id.clone(),
            pipeline: request.pipeline.clone().unwrap_or_default(),
            project_dir,
            trigger_type: request.trigger,
            trigger_ref: request.trigger_ref.clone().unwrap_or_else(|| {
                if source.branch.is_empty() {
                    source.tag.clone()
                } else {
                    source.branch.clone()
                }
            }),
            repo: source.repo.clone(),
            branch: source.branch.clone(),
            commit_sha: source.commit_sha.clone(),
            created_at: now_millis(),
            target: Some(match &request.backend {
                Some(chosen) => chosen.target.clone(),
                None => self.context.backend.target(),
            }),
        };
        self.context
            .store
            .insert_job(&new_job)
            .await
            .map_err(OrchestratorError::RecordJob)?;

        // From here the job removes its checkout when it ends.
        checkout.0 = None;
        let runtime = JobRuntime::new(self.context.clone(), new_job, request, project, logs, lock);
        // Subscribe before the job starts so that no event is missed.
        let events = runtime.subscribe_events();
        let log_chunks = runtime.logs().subscribe();
        let target = request_target(&runtime.request);
        tracing::info!(job_id = %id, project = %runtime.project().display(), target, "job submitted");
        self.active().insert(id.clone(), runtime.clone());
        let _ = self.context.events.send(EngineEvent {
            job_id: id.clone(),
            event: JobEvent::JobState {
                state: JobState::Pending,
                reason: None,
            },
        });
        let span = tracing::info_span!("job", job_id = %id);
        let engine = self.clone();
        let job_runtime = runtime.clone();
        let task = tokio::spawn(
            async move {
                // Removes the job from the registry even if its runner panics.
                let _registered = Registered {
                    engine,
                    id: job_runtime.id().clone(),
                };
                job::run(job_runtime).await
            }
            .instrument(span),
        );

        Ok(JobHandle {
            id,
            runtime,
            events,
            log_chunks,
            task,
        })
    }
}

/// Clones `repository` into `path` off the async runtime, logging with the
/// job id.
async fn clone_repository(
    id: &JobId,
    repository: &RepositorySource,
    path: &Path,
) -> Result<source::SourceInfo, RepositoryError> {
    tracing::info!(job_id = %id, repository = %repository::shown_url(&repository.url), commit = %repository.commit, "cloning the repository");
    let (cloned, into) = (repository.clone(), path.to_owned());
    let result = tokio::task::spawn_blocking(move || repository::clone_at(&cloned, &into))
        .await
        .map_err(|source| RepositoryError::Task {
            url: repository.url.clone(),
            source,
        })
        .and_then(|result| result);
    match &result {
        Ok(source) => {
            tracing::info!(job_id = %id, commit_sha = %source.commit_sha, branch = %source.branch, "repository cloned");
        }
        Err(err) => {
            tracing::info!(job_id = %id, error = %error_chain(err), "the repository could not be cloned");
        }
    }
    result
}

/// A job's checkout, removed when dropped unless the job took it over.
struct Checkout(Option<PathBuf>);

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(err) = std::fs::remove_dir_all(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %err, "failed to remove a checkout");
        }
    }
}

/// Keeps a job in [`EngineContext::active`] while it lives.
struct Registered {
    engine: Engine,
    id: JobId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.engine.active().remove(&self.id);
    }
}

fn valid_pipeline_name(name: &str) -> bool {
    danube_ui::checks::pipeline_name(name).is_ok()
}

/// The end state of a job, as its runner returns it.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub state: JobState,
    pub reason: Option<String>,
    /// The script could not be loaded, so nothing ran.
    pub load_error: bool,
}

/// A submitted job: its id, live events and logs, and its result.
pub struct JobHandle {
    pub id: JobId,
    runtime: Arc<JobRuntime>,
    pub events: broadcast::Receiver<JobEvent>,
    pub log_chunks: broadcast::Receiver<LogChunk>,
    task: JoinHandle<JobOutcome>,
}

impl JobHandle {
    /// Asks the job to stop: running steps are killed, pending tasks never
    /// start, and the job ends `cancelled`. Returns at once; await
    /// [`JobHandle::wait`] for the end.
    pub fn cancel(&self) {
        self.runtime.cancel();
    }

    pub fn logs_dir(&self) -> &Path {
        self.runtime.logs().dir()
    }

    /// Controls the debugging of this job: its pause, ad-hoc commands and
    /// the decision to continue, retry or abort.
    pub fn debugger(&self) -> Debugger {
        Debugger::new(self.runtime.clone())
    }

    /// Waits for the job to reach a final state.
    pub async fn wait(self) -> JobOutcome {
        // Nothing reads the receivers any more. Kept, they would fall behind
        // and pin the last `LIVE_CHANNEL_CAPACITY` log chunks in memory for
        // the rest of the job.
        let JobHandle {
            id,
            events,
            log_chunks,
            task,
            ..
        } = self;
        drop((events, log_chunks));
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(job_id = %id, error = %err, "job runner panicked");
                JobOutcome {
                    state: JobState::Failure,
                    reason: Some(format!("internal error: the job runner panicked: {err}")),
                    load_error: false,
                }
            }
        }
    }
}
