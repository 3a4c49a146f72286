//! The coordinator: `python -m danube._coordinator` running the user's
//! script, with its output in the job's coordinator log. It is a local
//! process in its own process group, unless the job's backend runs it
//! itself ([`Backend::runs_coordinator`](crate::backend::Backend::runs_coordinator)),
//! as the kubernetes backend does in the job pod.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::backend::local::OutputReader;
use crate::backend::local::process::{GroupChild, spawn_in_new_group};
use crate::backend::{BackendError, CoordinatorLaunch, OutputChunk, StepOutcome, Workspace};
use crate::logs::{LogKey, LogWriter};
use crate::model::{JobId, Stream};

use super::PIPELINE_FILE;
use super::job::JobRuntime;

/// How long the coordinator gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a coordinator that the backend runs may take to end after it
/// was asked to stop. The kubernetes backend gives a stopped exec 15
/// seconds to report its end, so this bounds the rest.
const BACKEND_STOP_LIMIT: Duration = Duration::from_secs(30);

/// Chunks of output that may wait between the pipes and the coordinator log.
const OUTPUT_BUFFER: usize = 16;

const PIPES_HELD_NOTE: &str = "danube: stopped reading the coordinator's output: a process outside its process group still holds stdout or stderr open";

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("failed to start the coordinator `{interpreter}`: {source}")]
    Spawn {
        interpreter: String,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to open the coordinator log: {0}")]
    OpenLog(#[source] std::io::Error),
}

/// The way the coordinator process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorExit {
    Exited(i32),
    Signaled(i32),
    /// The coordinator could not be followed to its end, and is treated as
    /// gone. The text completes "the coordinator …", such as `could not be
    /// waited for`.
    Lost(String),
}

impl fmt::Display for CoordinatorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordinatorExit::Exited(code) => write!(f, "exited with code {code}"),
            CoordinatorExit::Signaled(signal) => write!(f, "was killed by signal {signal}"),
            CoordinatorExit::Lost(reason) => f.write_str(reason),
        }
    }
}

/// The process or task that runs the coordinator.
enum Running {
    /// A child process of the engine.
    Process {
        child: GroupChild,
        reader: OutputReader,
    },
    /// A task that follows the coordinator the backend runs. `task` is
    /// taken, and `exit` set, once it ended.
    Backend {
        task: Option<JoinHandle<Result<StepOutcome, BackendError>>>,
        cancel: CancellationToken,
        exit: Option<CoordinatorExit>,
    },
}

pub struct Coordinator {
    running: Running,
    /// Sends the engine's own notes to the log. Dropped once the pipes are
    /// read, so that the channel closes and the log task ends.
    notes: Option<mpsc::Sender<OutputChunk>>,
    log_done: Option<JoinHandle<()>>,
    /// Holds a copy of `notes` in [`JobRuntime::engine_notes`], which is
    /// cleared with it.
    runtime: Arc<JobRuntime>,
}

/// Starts the coordinator in `workspace` and hands it the job token on stdin
/// (never in its environment or arguments).
pub async fn start(
    runtime: &Arc<JobRuntime>,
    workspace: &Workspace,
    token: &str,
) -> Result<Coordinator, CoordinatorError> {
    if runtime.backend.runs_coordinator() {
        return start_in_backend(runtime, workspace, token);
    }
    let context = &runtime.context;
    let python = &context.python;
    let record = &runtime.record;

    let mut command = Command::new(&python.interpreter);
    command
        .arg("-m")
        .arg("danube._coordinator")
        .arg("--file")
        .arg(workspace.path.join(PIPELINE_FILE))
        // Load errors then name the user's own files, not the workspace's
        // copies of them.
        .arg("--project-dir")
        .arg(runtime.project())
        .current_dir(&workspace.path)
        .env("PYTHONPATH", python.python_path())
        .env("PYTHONUNBUFFERED", "1")
        // Keep bytecode caches out of the project when running in place.
        .env(
            "PYTHONPYCACHEPREFIX",
            context.data.python_dir().join("pycache"),
        )
        .env("DANUBE_ENGINE_ADDR", context.rpc_addr.to_string())
        .envs(context_env(runtime, &workspace.path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(pipeline) = &runtime.request.pipeline {
        // One argument, so a name starting with `-` is never read as an option.
        command.arg(format!("--pipeline={pipeline}"));
    }

    let mut child = spawn_in_new_group(&mut command).map_err(|source| CoordinatorError::Spawn {
        interpreter: python.interpreter.display().to_string(),
        source,
    })?;
    tracing::info!(job_id = %record.id, pid = child.group().id(), "coordinator started");

    let process = child.child_mut();
    if let Some(mut stdin) = process.stdin.take() {
        // A coordinator that dies at once closes its stdin; its exit status
        // then shows what happened, so a write error is not fatal here.
        let _ = stdin.write_all(format!("{token}\n").as_bytes()).await;
        drop(stdin);
    }

    let writer = runtime
        .logs()
        .writer(LogKey::Coordinator)
        .map_err(CoordinatorError::OpenLog)?;
    let (output, chunks) = mpsc::channel(OUTPUT_BUFFER);
    let reader = OutputReader::from_child(&mut child, &output);
    let log_done = tokio::spawn(write_log(writer, chunks));
    *runtime
        .engine_notes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(output.clone());

    Ok(Coordinator {
        running: Running::Process { child, reader },
        notes: Some(output),
        log_done: Some(log_done),
        runtime: runtime.clone(),
    })
}

/// Starts the coordinator through the job's backend, which hands it the
/// token on its stdin as a local start does.
fn start_in_backend(
    runtime: &Arc<JobRuntime>,
    workspace: &Workspace,
    token: &str,
) -> Result<Coordinator, CoordinatorError> {
    let launch = CoordinatorLaunch {
        job_id: runtime.id().clone(),
        workspace: workspace.clone(),
        project: runtime.project().to_owned(),
        pipeline: runtime.request.pipeline.clone(),
        env: context_env(runtime, &workspace.path).into_iter().collect(),
        engine_addr: runtime.context.rpc_addr,
        token: Zeroizing::new(token.to_owned()),
    };

    let writer = runtime
        .logs()
        .writer(LogKey::Coordinator)
        .map_err(CoordinatorError::OpenLog)?;
    let (output, chunks) = mpsc::channel(OUTPUT_BUFFER);
    let log_done = tokio::spawn(write_log(writer, chunks));
    *runtime
        .engine_notes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(output.clone());

    let cancel = CancellationToken::new();
    let backend = runtime.backend.clone();
    let backend_output = output.clone();
    let backend_cancel = cancel.clone();
    let task = tokio::spawn(async move {
        backend
            .run_coordinator(launch, backend_output, backend_cancel)
            .await
    });
    tracing::info!(job_id = %runtime.id(), "coordinator started by the backend");

    Ok(Coordinator {
        running: Running::Backend {
            task: Some(task),
            cancel,
            exit: None,
        },
        notes: Some(output),
        log_done: Some(log_done),
        runtime: runtime.clone(),
    })
}

/// Returns the `ctx` values as `DANUBE_*` variables, for the coordinator and steps.
pub fn context_env(runtime: &JobRuntime, workspace: &Path) -> Vec<(String, String)> {
    let record = &runtime.record;
    let pipeline = runtime.request.pipeline.clone().unwrap_or_default();
    vec![
        ("DANUBE_JOB_ID".into(), record.id.to_string()),
        ("DANUBE_PIPELINE".into(), pipeline),
        ("DANUBE_REPO".into(), record.repo.clone()),
        ("DANUBE_BRANCH".into(), record.branch.clone()),
        ("DANUBE_COMMIT_SHA".into(), record.commit_sha.clone()),
        (
            "DANUBE_TRIGGER_TYPE".into(),
            record.trigger_type.to_string(),
        ),
        ("DANUBE_TRIGGER_REF".into(), record.trigger_ref.clone()),
        ("DANUBE_WORKSPACE".into(), workspace.display().to_string()),
    ]
}

/// Writes the coordinator's output to its log until every sender is gone.
async fn write_log(mut writer: LogWriter, mut chunks: mpsc::Receiver<OutputChunk>) {
    while let Some(chunk) = chunks.recv().await {
        if let Err(err) = writer.write(chunk.stream, &chunk.data) {
            tracing::error!(error = %err, "failed to write the coordinator log");
        }
    }
    if let Err(err) = writer.finish() {
        tracing::error!(error = %err, "failed to finish the coordinator log");
    }
}

impl Coordinator {
    /// Waits for the coordinator to exit and its output to be stored.
    pub async fn wait(&mut self) -> CoordinatorExit {
        let exit = match &mut self.running {
            Running::Process { child, .. } => match child.wait().await {
                Ok(status) => exit_of(status),
                Err(err) => {
                    tracing::error!(error = %err, "failed to wait for the coordinator");
                    CoordinatorExit::Lost("could not be waited for".into())
                }
            },
            Running::Backend { task, exit, .. } => {
                backend_exit(self.runtime.id(), task, exit).await
            }
        };
        self.finish().await;
        exit
    }

    /// Terminates the coordinator's whole process group: SIGTERM, then
    /// SIGKILL after a grace period.
    /// A coordinator that the backend runs is asked to stop through its
    /// cancellation token, which kills its process group the same way.
    pub async fn stop(&mut self) -> CoordinatorExit {
        let exit = match &mut self.running {
            Running::Process { child, .. } => match child.terminate(STOP_GRACE).await {
                Ok((status, _)) => exit_of(status),
                Err(err) => {
                    tracing::error!(error = %err, "failed to stop the coordinator");
                    CoordinatorExit::Lost("could not be stopped".into())
                }
            },
            Running::Backend { task, cancel, exit } => {
                cancel.cancel();
                let ended = tokio::time::timeout(
                    BACKEND_STOP_LIMIT,
                    backend_exit(self.runtime.id(), task, exit),
                );
                match ended.await {
                    Ok(exit) => exit,
                    Err(_) => {
                        tracing::warn!(job_id = %self.runtime.id(), "the coordinator did not end after it was asked to stop");
                        if let Some(task) = task.take() {
                            task.abort();
                        }
                        let lost = CoordinatorExit::Lost(format!(
                            "did not end within {}s after it was asked to stop",
                            BACKEND_STOP_LIMIT.as_secs()
                        ));
                        *exit = Some(lost.clone());
                        lost
                    }
                }
            }
        };
        self.finish().await;
        exit
    }

    /// Kills what the script left running in its group, which would
    /// otherwise hold the output pipes open, then waits for the output to be
    /// read and stored. A process outside the group (started with `setsid`,
    /// for example) may keep a pipe open. Reading then stops after a second
    /// without output or five seconds after the kill, as
    /// [`OutputReader::finish`] does, and the log gets a note about it.
    ///
    /// Safe to call again after a call was dropped part way.
    async fn finish(&mut self) {
        let reached_eof = match &mut self.running {
            Running::Process { child, reader } => {
                let _ = child.group().send_kill();
                reader.finish().await
            }
            // The backend's task has ended and dropped its sender.
            Running::Backend { .. } => true,
        };

        let notes = self.notes.take();
        self.runtime
            .engine_notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(notes) = &notes
            && !reached_eof
        {
            let note = OutputChunk {
                stream: Stream::Engine,
                data: format!("{PIPES_HELD_NOTE}\n").into(),
            };
            notes.send(note).await.ok();
        }
        // The log task ends when the last sender is gone. The reader's pumps
        // dropped theirs when they stopped.
        drop(notes);

        if let Some(log_done) = self.log_done.as_mut() {
            if let Err(err) = log_done.await {
                tracing::error!(error = %err, "coordinator log task failed");
            }
            self.log_done = None;
        }
    }
}

/// Waits for the backend's task and returns how the coordinator ended,
/// remembering it, so that a call dropped part way can be repeated.
async fn backend_exit(
    job_id: &JobId,
    task: &mut Option<JoinHandle<Result<StepOutcome, BackendError>>>,
    exit: &mut Option<CoordinatorExit>,
) -> CoordinatorExit {
    if let Some(known) = exit {
        return known.clone();
    }
    let Some(handle) = task.as_mut() else {
        return CoordinatorExit::Lost("could not be waited for".into());
    };
    let result = handle.await;
    *task = None;
    let ended = match result {
        Ok(Ok(StepOutcome::Exited(code))) if code >= 128 => CoordinatorExit::Signaled(code - 128),
        Ok(Ok(StepOutcome::Exited(code))) => CoordinatorExit::Exited(code),
        Ok(Ok(StepOutcome::TimedOut | StepOutcome::Cancelled)) => {
            CoordinatorExit::Signaled(libc::SIGTERM)
        }
        Ok(Err(err)) => {
            let reason = super::error_chain(&err);
            tracing::warn!(job_id = %job_id, error = %reason, "the backend lost the coordinator");
            CoordinatorExit::Lost(format!("was lost: {reason}"))
        }
        Err(err) => {
            tracing::error!(job_id = %job_id, error = %err, "the coordinator's task failed");
            CoordinatorExit::Lost(format!("could not be followed: {err}"))
        }
    };
    *exit = Some(ended.clone());
    ended
}

fn exit_of(status: std::process::ExitStatus) -> CoordinatorExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => CoordinatorExit::Exited(code),
        (None, Some(signal)) => CoordinatorExit::Signaled(signal),
        (None, None) => CoordinatorExit::Lost("ended without an exit status".into()),
    }
}
