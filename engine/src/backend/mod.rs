//! Where steps run. The orchestrator talks to a [`Backend`]: `local` runs
//! steps as child processes on this machine, `kubernetes` in a pod per job.

pub mod kubernetes;
pub mod local;
pub mod targets;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{JobId, Stream};

/// A failed backend operation. Messages name the step or path involved and
/// never contain environment values, which may be secrets.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("project folder `{path}` is not a directory that can be read")]
    OpenProject {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to read the Git index of the repository at `{path}`")]
    ReadGitIndex {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },

    #[error("failed to list the files of project folder `{path}`")]
    ListProjectFiles {
        path: PathBuf,
        #[source]
        source: ignore::Error,
    },

    #[error("failed to create workspace directory `{path}`")]
    CreateWorkspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to copy `{from}` to `{to}` in the job workspace")]
    CopyIntoWorkspace {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The blocking task that copies or removes a workspace did not finish
    /// (the runtime shut down under it).
    #[error("workspace task for `{path}` did not finish")]
    WorkspaceTask {
        path: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },

    #[error("failed to remove workspace `{path}`")]
    RemoveWorkspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "refusing to remove `{path}`: it is not inside the workspaces directory `{root}` \
         (only copied workspaces are removed)"
    )]
    RemoveOutsideRoot { path: PathBuf, root: PathBuf },

    #[error(
        "working directory `{workdir}` of step `{step}` does not exist or is not a directory \
         (create it in an earlier step, or fix the step's workdir)"
    )]
    MissingWorkdir { step: String, workdir: PathBuf },

    #[error(
        "environment variable name `{name}` of step `{step}` is invalid: \
         it must be non-empty and contain no `=`, `*` or NUL"
    )]
    InvalidEnvName { step: String, name: String },

    #[error("failed to start step `{step}` (`{command_word}` via `{program}`) in `{workdir}`")]
    SpawnStep {
        step: String,
        /// The first word of the command that is not a `NAME=value`
        /// assignment, which could hold a secret.
        command_word: String,
        program: String,
        workdir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to wait for the process of step `{step}`")]
    WaitStep {
        step: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "step `{step}` needs image `{image}`, but neither podman nor docker was found on PATH \
         (install podman or docker, or remove `image=` from the step)"
    )]
    NoContainerRuntime { step: String, image: String },

    #[error(
        "configured container runtime `{runtime}` was not found or is not executable \
         (set DANUBE_CONTAINER_RUNTIME to the name or path of podman or docker, or unset it)"
    )]
    ContainerRuntimeNotFound { runtime: String },

    #[error(
        "--in-place does not work on the kubernetes backend: steps run in the pod's own \
         workspace (drop --in-place, or use --target local)"
    )]
    InPlaceUnsupported,

    #[error(transparent)]
    Kubernetes(Box<kubernetes::KubeError>),

    #[error("workspace path `{path}` is invalid: {reason}")]
    InvalidWorkspacePath { path: String, reason: &'static str },

    #[error("workspace path `{path}` does not exist (list its folder to see what it contains)")]
    WorkspacePathNotFound { path: String },

    #[error("failed to read `{path}` in the job workspace")]
    ReadWorkspace {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the {backend} backend cannot {operation} yet")]
    Unsupported {
        backend: &'static str,
        operation: &'static str,
    },
}

impl From<kubernetes::KubeError> for BackendError {
    fn from(error: kubernetes::KubeError) -> BackendError {
        BackendError::Kubernetes(Box::new(error))
    }
}

impl BackendError {
    /// Returns whether the error is about what the pipeline declared (an
    /// egress entry the engine rejects), which the pipeline's author must
    /// fix, rather than a failure of the backend.
    pub fn rejects_plan(&self) -> bool {
        matches!(self, BackendError::Kubernetes(error) if matches!(**error, kubernetes::KubeError::Egress(_)))
    }

    /// Returns the exit code of a step that ended with this error, when
    /// its process reported one before the error (an OOM kill's 137).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            BackendError::Kubernetes(error) => match **error {
                kubernetes::KubeError::StepKilled { exit_code, .. } => Some(exit_code),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The end of an interactive debug shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellEnd {
    /// The shell exited, with its exit code when one was reported.
    Exited(Option<i32>),
    /// The connection to the shell broke, for the reason in the text.
    Lost(String),
}

/// The directory a job's steps run in.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub path: PathBuf,
    /// The project folder itself (`--in-place`); never removed.
    pub in_place: bool,
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub job_id: JobId,
    pub step_id: i64,
    pub task: String,
    pub step: String,
    /// Run as `/bin/sh -c command`.
    pub command: String,
    pub workdir: PathBuf,
    /// Added to the inherited environment (the user's on the local backend).
    pub env: BTreeMap<String, String>,
    /// Run inside a container of this image instead of on the host.
    pub image: Option<String>,
    pub timeout: Option<Duration>,
    /// Called once, right after the step's process (or its container
    /// client) has been spawned; the orchestrator measures dispatch latency
    /// with it.
    pub on_spawn: Option<SpawnHook>,
}

/// A callback a backend runs once the step's process exists.
#[derive(Clone)]
pub struct SpawnHook(Arc<dyn Fn() + Send + Sync>);

impl SpawnHook {
    pub fn new(hook: impl Fn() + Send + Sync + 'static) -> SpawnHook {
        SpawnHook(Arc::new(hook))
    }

    /// Runs the hook of `spec`, if it has one.
    pub fn notify(spec: &StepSpec) {
        if let Some(hook) = &spec.on_spawn {
            (hook.0)();
        }
    }
}

impl fmt::Debug for SpawnHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpawnHook")
    }
}

/// A piece of a step's output. `Stream::Engine` chunks are notes from the
/// backend itself (for example that background processes were killed).
#[derive(Clone, Debug)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Bytes,
}

/// The inputs a backend needs to run a job's coordinator in the job's own
/// environment ([`Backend::run_coordinator`]).
pub struct CoordinatorLaunch {
    pub job_id: JobId,
    /// The job's workspace, as [`Backend::prepare_workspace`] returned it.
    pub workspace: Workspace,
    /// The project folder the workspace was copied from; the SDK names it
    /// in load errors instead of the workspace's copies.
    pub project: PathBuf,
    /// The pipeline the job was asked to run, if one was named.
    pub pipeline: Option<String>,
    /// The `ctx` values as `DANUBE_*` variables, with paths of the
    /// workspace as [`Workspace::path`] names them.
    pub env: BTreeMap<String, String>,
    /// The address the engine's gRPC server is bound to.
    pub engine_addr: std::net::SocketAddr,
    /// The job token, sent as the first line of the coordinator's stdin.
    pub token: zeroize::Zeroizing<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The shell exited with this code (128 + N when signal N ended it).
    Exited(i32),
    /// The step ran past its timeout; its process tree was killed.
    TimedOut,
    /// The cancellation token fired; its process tree was killed.
    Cancelled,
}

/// What [`Backend::browse_workspace`] found at a path of the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkspaceEntry {
    /// A folder and its entries, sorted by name.
    Directory {
        /// Relative to the workspace root; empty for the root itself.
        path: String,
        entries: Vec<DirectoryEntry>,
    },
    File {
        path: String,
        /// The file's whole size, which may exceed `content`.
        size_bytes: u64,
        /// The first bytes of the file, at most the limit the caller gave.
        content: Vec<u8>,
        /// `content` holds only the start of the file.
        truncated: bool,
    },
}

/// One entry of a listed folder. Symbolic links are listed, not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other` (sockets, devices, fifos).
    pub kind: &'static str,
    /// For files; 0 for the other kinds.
    pub size_bytes: u64,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Makes the job's workspace: a copy of `project` (tracked and untracked
    /// but not ignored files, without `.git`) under the data directory, or
    /// `project` itself when `in_place`. `pipeline` is the pipeline the job
    /// was asked to run, when one was named; backends use it in labels.
    async fn prepare_workspace(
        &self,
        job: &JobId,
        project: &Path,
        in_place: bool,
        pipeline: Option<&str>,
    ) -> Result<Workspace, BackendError>;

    /// Runs one step to its end, sending output to `output` as it arrives
    /// (stdout and stderr read concurrently). Returns when the shell has
    /// exited and the step's whole process group is gone.
    async fn run_step(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError>;

    /// Returns the target that jobs run by this backend record, as
    /// `--target` names it: `local` by default, `kube:CONTEXT` on Kubernetes.
    fn target(&self) -> String {
        "local".to_owned()
    }

    /// Returns `spec`'s working directory as the step's process gets it:
    /// the path itself for local processes, the pod's path on Kubernetes.
    fn step_workdir(&self, spec: &StepSpec) -> PathBuf {
        spec.workdir.clone()
    }

    /// Returns true when this backend runs each job's coordinator itself,
    /// through [`Backend::run_coordinator`], instead of the engine starting
    /// it as a local process. The default is false.
    fn runs_coordinator(&self) -> bool {
        false
    }

    /// Runs the job's coordinator to its end, sending its output to
    /// `output`. `cancel` stops it and its whole process group. Only
    /// called when [`Backend::runs_coordinator`] returns true; the default
    /// fails.
    async fn run_coordinator(
        &self,
        launch: CoordinatorLaunch,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let _ = (launch, output, cancel);
        Err(BackendError::Unsupported {
            backend: "this",
            operation: "run the coordinator",
        })
    }

    /// Kills what a finished job left running outside its steps' process
    /// groups (daemons started with `setsid`, for example) and returns how
    /// many processes it killed.
    fn kill_leftovers(&self, job: &JobId) -> usize;

    /// Removes a copied workspace; does nothing for an in-place one.
    async fn remove_workspace(&self, workspace: &Workspace) -> Result<(), BackendError>;

    /// Runs an ad-hoc command of a user debugging a paused step. `spec` is
    /// the paused step's own spec (workspace, workdir, env, image) with the
    /// user's command and timeout, so the command sees what the step sees.
    /// Its output goes to `output` only; the caller keeps it out of the
    /// step's log. The default runs it as a step.
    async fn run_debug_command(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        self.run_step(spec, output, cancel).await
    }

    /// Tells the backend the plan's pipeline and the job's wall-time bound
    /// (the pipeline's `max_duration` or the default), before the first
    /// step runs. The default does nothing.
    async fn plan_declared(
        &self,
        job: &JobId,
        pipeline: &str,
        max_duration: std::time::Duration,
    ) -> Result<(), BackendError> {
        let _ = (job, pipeline, max_duration);
        Ok(())
    }

    /// Restricts the job's network egress to `allowlist` (the pipeline's
    /// `egress_allowlist`, entries already validated) plus the backend's
    /// own entries, before its first step runs. Returns notes for the
    /// job's log. The default enforces nothing and returns a note saying
    /// so when the pipeline requested a restriction.
    async fn apply_egress(
        &self,
        job: &JobId,
        allowlist: &[String],
    ) -> Result<Vec<String>, BackendError> {
        let _ = job;
        if allowlist.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![
            "danube: egress_allowlist is enforced on kube targets only; on this backend \
             steps reach the network as the engine's host does"
                .to_owned(),
        ])
    }

    /// Returns a command that opens an interactive shell in a paused step's
    /// environment, for a terminal attached to it (`danube run` while
    /// paused).
    fn debug_shell(&self, spec: &StepSpec) -> Result<std::process::Command, BackendError> {
        let _ = spec;
        Err(BackendError::Unsupported {
            backend: "this",
            operation: "open a debug shell",
        })
    }

    /// Runs an interactive shell in a paused step's environment on this
    /// process's terminal and returns when it exits. The default runs the
    /// command of [`Backend::debug_shell`] with the terminal attached.
    /// Dropping the future ends the shell.
    async fn interactive_shell(&self, spec: StepSpec) -> Result<ShellEnd, BackendError> {
        let command = self.debug_shell(&spec)?;
        let program = command.get_program().to_string_lossy().into_owned();
        let spawn_error = |source| BackendError::SpawnStep {
            step: spec.step.clone(),
            command_word: "shell".into(),
            program: program.clone(),
            workdir: spec.workdir.clone(),
            source,
        };
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let status = child
            .wait()
            .await
            .map_err(|source| BackendError::WaitStep {
                step: spec.step.clone(),
                source,
            })?;
        Ok(ShellEnd::Exited(status.code()))
    }

    /// Lists the folder or reads the start of the file (at most `max_bytes`)
    /// at `relative`, a path below the job's workspace root. Absolute paths,
    /// `..` and symbolic links that lead out of the workspace are rejected.
    async fn browse_workspace(
        &self,
        workspace: &Workspace,
        relative: &str,
        max_bytes: u64,
    ) -> Result<WorkspaceEntry, BackendError> {
        let _ = (workspace, relative, max_bytes);
        Err(BackendError::Unsupported {
            backend: "this",
            operation: "browse the workspace",
        })
    }
}
