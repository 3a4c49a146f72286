//! The local backend: steps are `/bin/sh -c` child processes, each in its own
//! process group, in a per-job copy of the project folder.
//!
//! A host step's environment is the engine's own environment plus the step's
//! `env` (the step wins). An `image=` step runs in a container instead; see
//! [`container`] for what its environment contains.

mod browse;
pub mod container;
pub mod output;
pub mod process;
pub(crate) mod step;
pub mod workspace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use container::ContainerConfig;
pub use output::OutputReader;
pub use process::{GroupChild, ProcessGroup, Termination, kill_process_group, spawn_in_new_group};

use super::{
    Backend, BackendError, OutputChunk, SpawnHook, StepOutcome, StepSpec, Workspace, WorkspaceEntry,
};
use crate::model::JobId;

/// The shell that runs every step's command.
const SHELL: &str = "/bin/sh";

/// Longest command word quoted in an error message.
const COMMAND_WORD_MAX_CHARS: usize = 64;

/// Runs steps on this machine.
pub struct LocalBackend {
    /// `<data_dir>/workspaces`.
    workspaces_root: PathBuf,
    containers: ContainerConfig,
    /// Workspaces made by [`Backend::prepare_workspace`], by job, so that an
    /// `image=` step knows which folder to mount.
    workspaces: Mutex<HashMap<JobId, PathBuf>>,
}

impl LocalBackend {
    /// A backend that copies workspaces under `workspaces_root` and finds its
    /// container runtime as [`ContainerConfig::from_env`] does.
    pub fn new(workspaces_root: PathBuf) -> LocalBackend {
        LocalBackend {
            workspaces_root,
            containers: ContainerConfig::from_env(),
            workspaces: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces how the container runtime for `image=` steps is found and
    /// called.
    pub fn with_container_config(mut self, containers: ContainerConfig) -> LocalBackend {
        self.containers = containers;
        self
    }

    pub fn workspaces_root(&self) -> &Path {
        &self.workspaces_root
    }

    fn registered_workspace(&self, job: &JobId) -> Option<PathBuf> {
        let workspaces = self
            .workspaces
            .lock()
            .expect("the workspace map is never poisoned: no code panics while holding it");
        workspaces.get(job).cloned()
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn kill_leftovers(&self, job: &JobId) -> usize {
        // Every process of a job carries its id in the environment.
        process::kill_processes_with_env("DANUBE_JOB_ID", job.as_str())
    }

    async fn prepare_workspace(
        &self,
        job: &JobId,
        project: &Path,
        in_place: bool,
        _pipeline: Option<&str>,
    ) -> Result<Workspace, BackendError> {
        let workspace =
            workspace::prepare_workspace(&self.workspaces_root, job, project, in_place).await?;
        self.workspaces
            .lock()
            .expect("the workspace map is never poisoned: no code panics while holding it")
            .insert(job.clone(), workspace.path.clone());
        Ok(workspace)
    }

    async fn run_step(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let span =
            tracing::debug_span!("local_step", job_id = %spec.job_id, step_id = spec.step_id);
        async {
            check_env_names(&spec)?;
            if !spec.workdir.is_dir() {
                return Err(BackendError::MissingWorkdir {
                    step: spec.step.clone(),
                    workdir: spec.workdir.clone(),
                });
            }

            match spec.image.as_deref() {
                Some(image) => {
                    let workspace = self.registered_workspace(&spec.job_id);
                    container::run_container_step(
                        &self.containers,
                        &spec,
                        image,
                        workspace.as_deref(),
                        output,
                        cancel,
                    )
                    .await
                }
                None => run_host_step(&spec, output, cancel).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn remove_workspace(&self, workspace: &Workspace) -> Result<(), BackendError> {
        self.workspaces
            .lock()
            .expect("the workspace map is never poisoned: no code panics while holding it")
            .retain(|_, path| *path != workspace.path);
        workspace::remove_workspace(&self.workspaces_root, workspace).await
    }

    fn debug_shell(&self, spec: &StepSpec) -> Result<std::process::Command, BackendError> {
        if let Some(image) = spec.image.as_deref() {
            let workspace = self.registered_workspace(&spec.job_id);
            return container::shell_command(&self.containers, spec, image, workspace.as_deref());
        }

        // The user's login shell, as a terminal would start it.
        let shell = std::env::var_os("SHELL")
            .filter(|shell| !shell.is_empty())
            .unwrap_or_else(|| SHELL.into());
        let mut command = std::process::Command::new(shell);
        command.current_dir(&spec.workdir).envs(&spec.env);
        Ok(command)
    }

    async fn browse_workspace(
        &self,
        workspace: &Workspace,
        relative: &str,
        max_bytes: u64,
    ) -> Result<WorkspaceEntry, BackendError> {
        browse_copy(workspace, relative, max_bytes).await
    }
}

/// Browses a workspace folder on this machine, as
/// [`Backend::browse_workspace`] describes. The kubernetes backend browses
/// its local copy with it.
pub(crate) async fn browse_copy(
    workspace: &Workspace,
    relative: &str,
    max_bytes: u64,
) -> Result<WorkspaceEntry, BackendError> {
    let root = workspace.path.clone();
    let relative = relative.to_owned();
    tokio::task::spawn_blocking(move || browse::browse(&root, &relative, max_bytes))
        .await
        .map_err(|source| BackendError::WorkspaceTask {
            path: workspace.path.clone(),
            source,
        })?
}

async fn run_host_step(
    spec: &StepSpec,
    output: mpsc::Sender<OutputChunk>,
    cancel: CancellationToken,
) -> Result<StepOutcome, BackendError> {
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.workdir)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_in_new_group(&mut command).map_err(|source| BackendError::SpawnStep {
        step: spec.step.clone(),
        command_word: first_command_word(&spec.command),
        program: SHELL.to_owned(),
        workdir: spec.workdir.clone(),
        source,
    })?;
    SpawnHook::notify(spec);

    let labels = step::StepLabels {
        step: &spec.step,
        killed: "its process group",
    };
    step::run_to_end(child, labels, spec.timeout, output, cancel).await
}

/// Rejects names that the OS or a container runtime would misread: `=`
/// splits name from value, NUL ends the string, and `*` makes `podman run -e`
/// pass every matching variable of the engine's environment.
pub(crate) fn check_env_names(spec: &StepSpec) -> Result<(), BackendError> {
    let invalid = spec
        .env
        .keys()
        .find(|name| name.is_empty() || name.contains(['=', '\0', '*']));
    match invalid {
        Some(name) => Err(BackendError::InvalidEnvName {
            step: spec.step.clone(),
            name: name.clone(),
        }),
        None => Ok(()),
    }
}

/// The program a command starts, for error messages: its first word that is
/// not a `NAME=value` assignment, since such a value could be a secret.
fn first_command_word(command: &str) -> String {
    let word = command
        .split_whitespace()
        .find(|word| !word.contains('='))
        .unwrap_or("");
    word.chars().take(COMMAND_WORD_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests;
