//! `image=` steps on the local backend: the step runs as `/bin/sh -c` in a
//! fresh container of podman or docker, with the job workspace mounted at
//! `/workspace`.
//!
//! The runtime's client (`podman run`) is spawned like a host step, as the
//! leader of its own process group, and its output is read the same way. On
//! timeout and cancel the client's group is killed and the container is
//! removed with `<runtime> kill` and `<runtime> rm -f`, because killing the
//! client does not stop a container that runs under the runtime's monitor.
//!
//! The container's environment is the step's `env` only: the orchestrator
//! puts `CI=true` and the `DANUBE_*` job variables there. The engine's own
//! environment (which can hold server settings and tokens) is not passed.
//! Variables are passed by name (`-e KEY`) with their values in the client's
//! own environment, so that no value, secrets included, appears in the
//! client's argv, which other users of the machine can read with `ps`. The
//! command itself is in argv.
//!
//! The runtime is `DANUBE_CONTAINER_RUNTIME` (a name on PATH or a path) when
//! set, otherwise `podman` and then `docker` from PATH.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process::spawn_in_new_group;
use super::step::{StepLabels, run_to_end};
use crate::backend::{BackendError, OutputChunk, SpawnHook, StepOutcome, StepSpec};
use crate::model::Stream;

/// Mount point of the job workspace inside the container.
pub const CONTAINER_WORKSPACE: &str = "/workspace";

/// Environment variable that picks the container runtime.
pub const RUNTIME_VARIABLE: &str = "DANUBE_CONTAINER_RUNTIME";

/// Runtimes searched on PATH, in order, when none is configured.
const DEFAULT_RUNTIMES: [&str; 2] = ["podman", "docker"];

/// Upper bound for each `kill` and `rm` call that removes a container after
/// a timeout or cancel.
const REMOVE_LIMIT: Duration = Duration::from_secs(30);

/// Settings for finding and calling the container runtime of `image=` steps.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    /// Name on the search path or path of the runtime program; `None`
    /// searches `podman`, then `docker`.
    pub runtime: Option<OsString>,
    /// Directories searched for a runtime name, in `PATH` syntax; `None`
    /// reads `PATH` when a step starts.
    pub search_path: Option<OsString>,
    /// Environment for the runtime client only, never passed into the
    /// container, for example `CONTAINERS_CONF` or `DOCKER_HOST`.
    pub client_env: BTreeMap<String, String>,
}

impl ContainerConfig {
    /// Reads the runtime from `DANUBE_CONTAINER_RUNTIME`; an empty value
    /// counts as unset.
    pub fn from_env() -> ContainerConfig {
        ContainerConfig {
            runtime: std::env::var_os(RUNTIME_VARIABLE).filter(|runtime| !runtime.is_empty()),
            ..ContainerConfig::default()
        }
    }

    /// Finds the runtime program: the configured one, or the first of
    /// `podman` and `docker` on the search path. Returns `Ok(None)` when none
    /// is configured and neither is found.
    ///
    /// # Errors
    ///
    /// Fails when a configured runtime is not an executable file.
    pub fn find_runtime(&self) -> Result<Option<PathBuf>, BackendError> {
        let search_path = self
            .search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        if let Some(runtime) = &self.runtime {
            return find_program(runtime, &search_path)
                .map(Some)
                .ok_or_else(|| BackendError::ContainerRuntimeNotFound {
                    runtime: runtime.to_string_lossy().into_owned(),
                });
        }
        Ok(DEFAULT_RUNTIMES
            .iter()
            .find_map(|name| find_program(OsStr::new(name), &search_path)))
    }
}

/// Runs an `image=` step to its end in a new container. `workspace` is the
/// job's workspace, mounted at [`CONTAINER_WORKSPACE`] with the step's
/// workdir below it; without one, the workdir itself is mounted.
///
/// # Errors
///
/// Fails when no runtime is found or the client cannot be started. A
/// runtime that fails later (for example on an image it cannot pull) makes the
/// step exit non-zero with the runtime's message in its stderr.
pub(crate) async fn run_container_step(
    config: &ContainerConfig,
    spec: &StepSpec,
    image: &str,
    workspace: Option<&Path>,
    output: mpsc::Sender<OutputChunk>,
    cancel: CancellationToken,
) -> Result<StepOutcome, BackendError> {
    let runtime = config
        .find_runtime()?
        .ok_or_else(|| BackendError::NoContainerRuntime {
            step: spec.step.clone(),
            image: image.to_owned(),
        })?;
    let name = container_name(spec);
    let (mount, workdir) = mount_and_workdir(workspace, &spec.workdir);
    let arguments = run_arguments(&RunRequest {
        name: &name,
        spec,
        image,
        mount: &mount,
        workdir: &workdir,
        interactive: false,
    });

    let mut command = Command::new(&runtime);
    command
        .args(&arguments)
        .current_dir(&spec.workdir)
        .envs(&config.client_env)
        // The values for the `--env KEY` arguments. NOTE: a `PATH` in the
        // step's env is therefore the client's `PATH` too.
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_in_new_group(&mut command).map_err(|source| BackendError::SpawnStep {
        step: spec.step.clone(),
        command_word: super::first_command_word(&spec.command),
        program: runtime.display().to_string(),
        workdir: spec.workdir.clone(),
        source,
    })?;
    SpawnHook::notify(spec);
    tracing::debug!(runtime = %runtime.display(), container = %name, image, "started container step");

    let labels = StepLabels {
        step: &spec.step,
        killed: "its container",
    };
    let outcome = run_to_end(child, labels, spec.timeout, output.clone(), cancel).await;

    // After a normal exit `--rm` has removed the container. Otherwise it may
    // still run: the client was killed, not the container.
    if !matches!(outcome, Ok(StepOutcome::Exited(_)))
        && let Err(err) = remove_container(&runtime, &name, &config.client_env).await
    {
        tracing::warn!(container = %name, error = %err, "failed to remove container of a stopped step");
        let note = format!(
            "danube: failed to remove container `{name}`: {err} (remove it with `{} rm -f {name}`)\n",
            runtime.display()
        );
        let chunk = OutputChunk {
            stream: Stream::Engine,
            data: note.into(),
        };
        output.send(chunk).await.ok();
    }
    outcome
}

/// Returns the command that opens an interactive `/bin/sh` in a new
/// container of `image`, with the same mount, workdir and environment as
/// [`run_container_step`] gives the step. The caller runs it on a terminal.
///
/// # Errors
///
/// Fails when no runtime is found.
pub(crate) fn shell_command(
    config: &ContainerConfig,
    spec: &StepSpec,
    image: &str,
    workspace: Option<&Path>,
) -> Result<std::process::Command, BackendError> {
    let runtime = config
        .find_runtime()?
        .ok_or_else(|| BackendError::NoContainerRuntime {
            step: spec.step.clone(),
            image: image.to_owned(),
        })?;
    let name = format!("{}-shell", container_name(spec));
    let (mount, workdir) = mount_and_workdir(workspace, &spec.workdir);
    let arguments = run_arguments(&RunRequest {
        name: &name,
        spec,
        image,
        mount: &mount,
        workdir: &workdir,
        interactive: true,
    });

    let mut command = std::process::Command::new(&runtime);
    command
        .args(&arguments)
        .current_dir(&spec.workdir)
        .envs(&config.client_env)
        .envs(&spec.env);
    Ok(command)
}

/// Everything the `run` arguments are built from.
struct RunRequest<'a> {
    name: &'a str,
    spec: &'a StepSpec,
    image: &'a str,
    mount: &'a Path,
    workdir: &'a Path,
    /// An interactive shell on the caller's terminal instead of the step's
    /// command.
    interactive: bool,
}

/// Builds the arguments of `<runtime> run`. Environment variables appear by
/// name only.
fn run_arguments(request: &RunRequest<'_>) -> Vec<OsString> {
    let interaction = if request.interactive {
        "--interactive=true"
    } else {
        "--interactive=false"
    };
    let mut arguments: Vec<OsString> = [
        "run",
        "--rm",
        interaction,
        // An init process as PID 1 forwards signals to the shell and reaps
        // the shell's orphaned children.
        "--init",
        // Keeps step output, which may hold secrets that the engine scrubs
        // only from its own logs, out of the runtime's log files.
        "--log-driver=none",
        "--entrypoint=/bin/sh",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();

    arguments.push("--name".into());
    arguments.push(request.name.into());
    arguments.push("--label".into());
    arguments.push(format!("danube.job={}", request.spec.job_id).into());
    arguments.push("--label".into());
    arguments.push(format!("danube.step={}", request.spec.step_id).into());

    // NOTE: `-v` splits at `:`, so a workspace path containing `:` is
    // mounted wrongly.
    let mut volume = request.mount.as_os_str().to_owned();
    volume.push(":");
    volume.push(CONTAINER_WORKSPACE);
    arguments.push("--volume".into());
    arguments.push(volume);
    arguments.push("--workdir".into());
    arguments.push(request.workdir.into());

    for name in request.spec.env.keys() {
        arguments.push("--env".into());
        arguments.push(name.into());
    }

    if request.interactive {
        arguments.push("--tty".into());
        arguments.push(request.image.into());
    } else {
        arguments.push(request.image.into());
        arguments.push("-c".into());
        arguments.push(request.spec.command.as_str().into());
    }
    arguments
}

/// `danube-<job id>-<step id>`. The whole job id is used because its first
/// characters are a timestamp that jobs started in the same minute share.
fn container_name(spec: &StepSpec) -> String {
    let job: String = spec
        .job_id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("danube-{job}-{}", spec.step_id)
}

/// Returns the host folder to mount at `/workspace` and the container's
/// working directory.
fn mount_and_workdir(workspace: Option<&Path>, workdir: &Path) -> (PathBuf, PathBuf) {
    let workdir = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    if let Some(workspace) = workspace
        && let Ok(relative) = workdir.strip_prefix(workspace)
    {
        return (
            workspace.to_path_buf(),
            Path::new(CONTAINER_WORKSPACE).join(relative),
        );
    }
    (workdir, PathBuf::from(CONTAINER_WORKSPACE))
}

/// Kills and removes a container, waiting at most [`REMOVE_LIMIT`] for each
/// call, then checks that it is gone.
async fn remove_container(
    runtime: &Path,
    name: &str,
    client_env: &BTreeMap<String, String>,
) -> Result<(), String> {
    // Both fail when the container is already gone, which is fine: the
    // `inspect` below decides.
    call_runtime(runtime, &["kill", name], client_env)
        .await
        .ok();
    let removal = call_runtime(runtime, &["rm", "-f", name], client_env).await;

    match call_runtime(runtime, &["container", "inspect", name], client_env).await {
        Ok(()) => Err(match removal {
            Err(err) => format!("`rm -f` failed: {err}"),
            Ok(()) => "it still exists after `rm -f`".to_owned(),
        }),
        Err(CallError::Failed(_)) => Ok(()),
        Err(err) => Err(err.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("failed to run the container runtime: {0}")]
    Start(std::io::Error),
    #[error("the container runtime did not finish within {}s", REMOVE_LIMIT.as_secs())]
    TimedOut,
    /// The command ran and exited non-zero. Contains its stderr.
    #[error("{}", .0.trim())]
    Failed(String),
}

async fn call_runtime(
    runtime: &Path,
    arguments: &[&str],
    client_env: &BTreeMap<String, String>,
) -> Result<(), CallError> {
    let mut command = Command::new(runtime);
    command
        .args(arguments)
        .envs(client_env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let result = tokio::time::timeout(REMOVE_LIMIT, command.output()).await;
    match result {
        Err(_elapsed) => Err(CallError::TimedOut),
        Ok(Err(err)) => Err(CallError::Start(err)),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(CallError::Failed(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )),
    }
}

/// Resolves a program as a shell would: a name containing `/` is a path,
/// any other name is searched in the directories of `search_path`.
fn find_program(program: &OsStr, search_path: &OsStr) -> Option<PathBuf> {
    if program.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return is_executable_file(&path).then_some(path);
    }
    std::env::split_paths(search_path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests;
