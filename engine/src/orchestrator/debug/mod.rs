//! Debugging a paused step: breakpoints, the pause itself, ad-hoc commands
//! in the step's environment, the workspace's files, and the user's
//! decision to continue, retry or abort.
//!
//! A step pauses before it runs when a breakpoint names it, or after it
//! fails when the job breaks on failure. While paused the job stays
//! `running`. The step's task waits for the decision. Other tasks keep
//! running, and a second step that reaches a breakpoint waits until the
//! first pause ends. Time spent paused does not count toward the job's
//! `max_duration`, whose deadline moves by the length of each pause.

mod breakpoints;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, OutputChunk, StepOutcome, StepSpec, WorkspaceEntry};
use crate::model::{JobId, RunState, Stream, UnixMillis, now_millis};

use super::events::JobEvent;
use super::job::JobRuntime;

pub use breakpoints::Breakpoints;

/// Bytes of each output stream of an ad-hoc command kept for the caller;
/// the rest is read and dropped.
pub const MAX_COMMAND_OUTPUT_BYTES: usize = 1 << 20;

/// Bytes read past [`MAX_COMMAND_OUTPUT_BYTES`] before masking, so that a
/// secret that straddles the cut is still masked as a whole.
const SCRUB_SLACK_BYTES: usize = 64 << 10;

/// Bytes of a workspace file returned by [`Debugger::browse`].
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The place and cause of a pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub step_id: i64,
    pub task: String,
    pub step: String,
    pub reason: PauseReason,
    /// The working directory the step runs in: on the engine's machine, or
    /// in the pod on Kubernetes.
    pub workdir: PathBuf,
    /// The container image the step runs in, if any.
    pub image: Option<String>,
    /// The run number of the step: 1, plus one per retry.
    pub attempt: i64,
    pub paused_at: UnixMillis,
}

/// The cause of a pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// A breakpoint named the step, which has not run yet.
    Before { breakpoint: String },
    /// The step ended without success: `state` is `failure` or `timeout`,
    /// and `exit_code` is absent when its process could not start.
    Failure {
        state: RunState,
        exit_code: Option<i32>,
    },
}

impl PauseReason {
    /// `before` or `failure`, as the API and the UI name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            PauseReason::Before { .. } => "before",
            PauseReason::Failure { .. } => "failure",
        }
    }
}

/// The user's choice that ends a pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the step (paused before it) or let its failure stand.
    Continue,
    /// Run the failed step again, as a new attempt. Paused before a step,
    /// which has not run, there is nothing to retry and
    /// [`Debugger::resume`] rejects it.
    Retry,
    /// Cancel the job: it ends `cancelled` and every process of it is
    /// stopped, ad-hoc commands included.
    Abort,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Continue => "continue",
            Decision::Retry => "retry",
            Decision::Abort => "abort",
        }
    }
}

/// The result of an ad-hoc command, with the job's secrets masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The command that ran, with the job's secrets masked.
    pub command: String,
    pub stdout: String,
    /// The command's stderr, then the engine's notes about it (a timeout,
    /// killed background processes).
    pub stderr: String,
    /// Absent when the command timed out or was stopped.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Output beyond [`MAX_COMMAND_OUTPUT_BYTES`] of a stream was dropped.
    pub truncated: bool,
}

/// A failed debugging request.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error(
        "job `{job}` is not paused (it pauses before a step named by a breakpoint, or after a failing step when it breaks on failure)"
    )]
    NotPaused { job: JobId },

    #[error(
        "job `{job}` is paused before step `{step}`, which has not run yet, so there is nothing to retry; continue to run it, or abort the job"
    )]
    NothingToRetry { job: JobId, step: String },

    #[error("the command is empty; give a shell command to run in the paused step's environment")]
    EmptyCommand,

    #[error("failed to run the command in the environment of step `{step}`")]
    RunCommand {
        step: String,
        #[source]
        source: Box<BackendError>,
    },

    #[error(transparent)]
    Browse(Box<BackendError>),
}

/// The state of debugging one job, owned by its runtime.
pub(crate) struct DebugState {
    pub breakpoints: Breakpoints,
    /// Held while a step is paused, so that pauses take turns.
    turn: Mutex<()>,
    current: StdMutex<Option<ActivePause>>,
    /// Ad-hoc commands run one at a time.
    command_turn: Mutex<()>,
    /// Tasks that started a step, to find a task's first step.
    started_tasks: StdMutex<BTreeSet<String>>,
    /// Steps the job ran, as `(task, step)`, to find unmatched breakpoints.
    ran: StdMutex<BTreeSet<(String, String)>>,
    /// The user continued past a failure, so failures no longer pause.
    failure_continued: AtomicBool,
    clock: StdMutex<PauseClock>,
    /// Notified when a pause starts or ends, so the job moves its deadline.
    pub changed: Notify,
}

struct ActivePause {
    pause: Pause,
    spec: StepSpec,
    decide: Option<oneshot::Sender<Decision>>,
    /// Cancelled when the pause ends; stops its ad-hoc commands.
    commands: CancellationToken,
}

#[derive(Default)]
struct PauseClock {
    /// Length of the pauses that ended.
    total: Duration,
    since: Option<Instant>,
}

impl DebugState {
    pub fn new(breakpoints: Breakpoints) -> DebugState {
        DebugState {
            breakpoints,
            turn: Mutex::new(()),
            current: StdMutex::new(None),
            command_turn: Mutex::new(()),
            started_tasks: StdMutex::new(BTreeSet::new()),
            ran: StdMutex::new(BTreeSet::new()),
            failure_continued: AtomicBool::new(false),
            clock: StdMutex::new(PauseClock::default()),
            changed: Notify::new(),
        }
    }

    /// Moves a deadline by the time spent paused; `None` while paused, since
    /// a paused job has no deadline.
    pub fn shift_deadline(&self, deadline: Instant) -> Option<Instant> {
        let clock = lock(&self.clock);
        match clock.since {
            Some(_) => None,
            None => Some(deadline + clock.total),
        }
    }

    /// Records that a step starts and returns the breakpoint that names it.
    pub fn step_starting(&self, task: &str, step: &str) -> Option<String> {
        let first_in_task = lock(&self.started_tasks).insert(task.to_owned());
        lock(&self.ran).insert((task.to_owned(), step.to_owned()));
        self.breakpoints
            .before_step(task, step, first_in_task)
            .map(ToOwned::to_owned)
    }

    /// Returns whether a step that ended with `result` pauses.
    pub fn pauses_after(&self, result: &Result<StepOutcome, BackendError>) -> bool {
        let failed = match result {
            Ok(StepOutcome::Exited(code)) => *code != 0,
            Ok(StepOutcome::TimedOut) | Err(_) => true,
            Ok(StepOutcome::Cancelled) => false,
        };
        // NOTE: the engine does not know whether the step ran with
        // `check=False`, so such a step pauses too when it exits non-zero.
        failed && self.breakpoints.on_failure && !self.failure_continued.load(Ordering::Relaxed)
    }

    /// Returns the breakpoints that named no step of the job, with the
    /// steps it ran.
    pub fn unmatched(&self) -> Option<(Vec<String>, Vec<String>)> {
        let ran = lock(&self.ran);
        let unmatched: Vec<String> = self
            .breakpoints
            .unmatched(&ran)
            .into_iter()
            .map(ToOwned::to_owned)
            .collect();
        if unmatched.is_empty() {
            return None;
        }
        let steps = ran
            .iter()
            .map(|(task, step)| format!("{task}/{step}"))
            .collect();
        Some((unmatched, steps))
    }

    /// Returns a warning for the `task/step` breakpoints of `task` that
    /// named none of its steps, for when the task succeeded and so ran all
    /// its steps.
    pub fn task_warning(&self, task: &str) -> Option<String> {
        let ran = lock(&self.ran);
        let unmatched: Vec<String> = self
            .breakpoints
            .unmatched(&ran)
            .into_iter()
            .filter(|breakpoint| {
                breakpoint
                    .split_once('/')
                    .is_some_and(|(named, _)| named == task)
            })
            .map(|breakpoint| format!("`{breakpoint}`"))
            .collect();
        if unmatched.is_empty() {
            return None;
        }
        let steps: Vec<&str> = ran
            .iter()
            .filter(|(ran_task, _)| ran_task == task)
            .map(|(_, step)| step.as_str())
            .collect();
        Some(format!(
            "danube: warning: breakpoint {} named no step of task `{task}`, which succeeded; its steps were: {}",
            unmatched.join(", "),
            steps.join(", ")
        ))
    }

    fn pause(&self) -> Option<Pause> {
        lock(&self.current)
            .as_ref()
            .map(|active| active.pause.clone())
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pauses the step of `spec` until the user decides, or the job stops
/// (which counts as [`Decision::Abort`]).
pub(crate) async fn pause(
    runtime: &Arc<JobRuntime>,
    spec: &StepSpec,
    reason: PauseReason,
    attempt: i64,
) -> Decision {
    let debug = &runtime.debug;
    let _turn = debug.turn.lock().await;
    if runtime.cancel.is_cancelled() {
        return Decision::Abort;
    }

    let pause = Pause {
        step_id: spec.step_id,
        task: spec.task.clone(),
        step: spec.step.clone(),
        reason,
        workdir: runtime.backend.step_workdir(spec),
        image: spec.image.clone(),
        attempt,
        paused_at: now_millis(),
    };
    let (decide, decided) = oneshot::channel();
    let commands = runtime.cancel.child_token();
    *lock(&debug.current) = Some(ActivePause {
        pause: pause.clone(),
        spec: spec.clone(),
        decide: Some(decide),
        commands: commands.clone(),
    });
    lock(&debug.clock).since = Some(Instant::now());
    debug.changed.notify_waiters();
    tracing::info!(
        reason = pause.reason.as_str(),
        attempt,
        "step paused for debugging"
    );
    runtime.emit(JobEvent::Paused {
        pause: pause.clone(),
    });

    let decision = tokio::select! {
        decision = decided => decision.unwrap_or(Decision::Abort),
        () = runtime.cancel.cancelled() => Decision::Abort,
    };

    *lock(&debug.current) = None;
    commands.cancel();
    {
        let mut clock = lock(&debug.clock);
        if let Some(since) = clock.since.take() {
            clock.total += since.elapsed();
        }
    }
    debug.changed.notify_waiters();
    if decision == Decision::Continue && matches!(pause.reason, PauseReason::Failure { .. }) {
        debug.failure_continued.store(true, Ordering::Relaxed);
    }
    tracing::info!(decision = decision.as_str(), "step resumed");
    runtime.emit(JobEvent::Resumed {
        step_id: pause.step_id,
        task: pause.task,
        step: pause.step,
        decision,
    });
    decision
}

/// Controls the debugging of one job this engine runs: the pause, ad-hoc
/// commands, the workspace's files and the decision.
#[derive(Clone)]
pub struct Debugger {
    runtime: Arc<JobRuntime>,
}

impl Debugger {
    pub(crate) fn new(runtime: Arc<JobRuntime>) -> Debugger {
        Debugger { runtime }
    }

    pub fn job_id(&self) -> &JobId {
        self.runtime.id()
    }

    /// Returns the current pause, or `None` while no step is paused.
    pub fn pause(&self) -> Option<Pause> {
        self.runtime.debug.pause()
    }

    /// Returns the spec of the paused step, for opening a shell in its
    /// environment with [`crate::backend::Backend::debug_shell`].
    pub fn paused_spec(&self) -> Option<StepSpec> {
        lock(&self.runtime.debug.current)
            .as_ref()
            .map(|active| active.spec.clone())
    }

    /// Returns a command that opens an interactive shell in the paused
    /// step's environment.
    ///
    /// # Errors
    ///
    /// [`DebugError::NotPaused`] when no step is paused, and
    /// [`DebugError::RunCommand`] when the backend cannot open a shell.
    pub fn shell(&self) -> Result<std::process::Command, DebugError> {
        let spec = self.paused_spec().ok_or_else(|| self.not_paused())?;
        self.runtime
            .backend
            .debug_shell(&spec)
            .map_err(|source| DebugError::RunCommand {
                step: spec.step.clone(),
                source: Box::new(source),
            })
    }

    /// Runs an interactive shell in the paused step's environment on this
    /// process's terminal until it exits. Dropping the future ends it.
    ///
    /// # Errors
    ///
    /// As [`Self::shell`], and when the shell cannot start.
    pub async fn interactive_shell(&self) -> Result<crate::backend::ShellEnd, DebugError> {
        let spec = self.paused_spec().ok_or_else(|| self.not_paused())?;
        let step = spec.step.clone();
        self.runtime
            .backend
            .interactive_shell(spec)
            .await
            .map_err(|source| DebugError::RunCommand {
                step,
                source: Box::new(source),
            })
    }

    /// Runs `command` with `/bin/sh -c` in the paused step's environment
    /// (workspace, workdir, env, image) and returns its output with the
    /// job's secrets masked. The output is not stored in the step's log; the
    /// job's log gets a note with the command and its exit code. Commands
    /// run one at a time, and ending the pause stops a running one.
    ///
    /// # Errors
    ///
    /// [`DebugError::NotPaused`] when no step is paused,
    /// [`DebugError::EmptyCommand`], and [`DebugError::RunCommand`] when the
    /// command could not start.
    pub async fn run_command(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, DebugError> {
        if command.trim().is_empty() {
            return Err(DebugError::EmptyCommand);
        }
        let _turn = self.runtime.debug.command_turn.lock().await;
        let (mut spec, cancel) = {
            let current = lock(&self.runtime.debug.current);
            let active = current.as_ref().ok_or_else(|| self.not_paused())?;
            (active.spec.clone(), active.commands.clone())
        };
        spec.command = command.to_owned();
        spec.timeout = Some(timeout);
        spec.on_spawn = None;
        let step = format!("{} › {}", spec.task, spec.step);

        let (output, chunks) = mpsc::channel(16);
        let backend = self.runtime.backend.clone();
        let running =
            tokio::spawn(async move { backend.run_debug_command(spec, output, cancel).await });
        let collected = collect(chunks).await;
        let result = match running.await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(error = %err, "debug command task panicked");
                Ok(StepOutcome::Exited(-1))
            }
        };
        let outcome = result.map_err(|source| DebugError::RunCommand {
            step: step.clone(),
            source: Box::new(source),
        })?;

        let scrubbed = |bytes: &[u8]| {
            let text = self
                .runtime
                .logs()
                .scrubber()
                .scrub_text(&String::from_utf8_lossy(bytes));
            cut_to(text, MAX_COMMAND_OUTPUT_BYTES)
        };
        let (exit_code, timed_out) = match outcome {
            StepOutcome::Exited(code) => (Some(code), false),
            StepOutcome::TimedOut => (None, true),
            StepOutcome::Cancelled => (None, false),
        };
        let ending = match outcome {
            StepOutcome::Exited(code) => format!("exited with {code}"),
            StepOutcome::TimedOut => format!("timed out after {}s", timeout.as_secs()),
            StepOutcome::Cancelled => "was stopped".to_owned(),
        };
        tracing::info!(step = %step, exit_code, timed_out, "debug command finished");
        self.runtime
            .engine_note(&format!(
                "danube: debug command in {step} {ending}: {command}"
            ))
            .await;
        let (stdout, stdout_cut) = scrubbed(&collected.stdout);
        let (stderr, stderr_cut) = scrubbed(&collected.stderr);
        let (command, _) = scrubbed(command.as_bytes());
        Ok(CommandOutput {
            command,
            stdout,
            stderr,
            exit_code,
            timed_out,
            truncated: collected.truncated || stdout_cut || stderr_cut,
        })
    }

    /// Lists the folder or reads the start of the file at `path`, relative
    /// to the workspace root, with the job's secrets masked in file text.
    ///
    /// # Errors
    ///
    /// [`DebugError::NotPaused`] when no step is paused, and
    /// [`DebugError::Browse`] for paths that are invalid, leave the
    /// workspace, or do not exist.
    pub async fn browse(&self, path: &str) -> Result<WorkspaceEntry, DebugError> {
        if self.pause().is_none() {
            return Err(self.not_paused());
        }
        let workspace = self
            .runtime
            .workspace
            .get()
            .ok_or_else(|| self.not_paused())?;
        let entry = self
            .runtime
            .backend
            .browse_workspace(workspace, path, MAX_FILE_BYTES)
            .await
            .map_err(|err| DebugError::Browse(Box::new(err)))?;
        Ok(match entry {
            WorkspaceEntry::File {
                path,
                size_bytes,
                content,
                truncated,
            } => {
                let text = String::from_utf8_lossy(&content);
                let scrubbed = self.runtime.logs().scrubber().scrub_text(&text);
                WorkspaceEntry::File {
                    path,
                    size_bytes,
                    content: scrubbed.into_bytes(),
                    truncated,
                }
            }
            directory => directory,
        })
    }

    /// Returns once the job is stopping: cancelled (by a watch session's
    /// change, say) or timed out, which also ends its pause.
    pub async fn stopped(&self) {
        self.runtime.cancel.cancelled().await;
    }

    /// Ends the pause with `decision` and returns the pause it ended.
    /// [`Decision::Abort`] cancels the job.
    ///
    /// # Errors
    ///
    /// [`DebugError::NotPaused`] when no step is paused, and
    /// [`DebugError::NothingToRetry`] for [`Decision::Retry`] before a step.
    pub fn resume(&self, decision: Decision) -> Result<Pause, DebugError> {
        let (pause, decide) = {
            let mut current = lock(&self.runtime.debug.current);
            let active = current.as_mut().ok_or_else(|| self.not_paused())?;
            if decision == Decision::Retry
                && matches!(active.pause.reason, PauseReason::Before { .. })
            {
                return Err(DebugError::NothingToRetry {
                    job: self.job_id().clone(),
                    step: format!("{}/{}", active.pause.task, active.pause.step),
                });
            }
            let decide = active.decide.take().ok_or_else(|| self.not_paused())?;
            (active.pause.clone(), decide)
        };
        tracing::info!(job_id = %self.job_id(), step_id = pause.step_id, decision = decision.as_str(), "debug decision");
        if decision == Decision::Abort {
            self.runtime.cancel_with_message(format!(
                "aborted in the debugger, paused {} {} › {}",
                if matches!(pause.reason, PauseReason::Before { .. }) {
                    "before"
                } else {
                    "after"
                },
                pause.task,
                pause.step
            ));
        }
        // The paused step may have given up waiting (the job stopped); the
        // cancel above then already did what was asked.
        let _ = decide.send(decision);
        Ok(pause)
    }

    fn not_paused(&self) -> DebugError {
        DebugError::NotPaused {
            job: self.job_id().clone(),
        }
    }
}

#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

/// Reads an ad-hoc command's output to its end, keeping at most
/// [`MAX_COMMAND_OUTPUT_BYTES`] plus [`SCRUB_SLACK_BYTES`] of each stream.
/// Engine notes go to stderr.
async fn collect(mut chunks: mpsc::Receiver<OutputChunk>) -> Collected {
    let mut collected = Collected::default();
    while let Some(chunk) = chunks.recv().await {
        let (target, data) = match chunk.stream {
            Stream::Stdout => (&mut collected.stdout, chunk.data),
            Stream::Stderr => (&mut collected.stderr, chunk.data),
            Stream::Engine => (&mut collected.stderr, command_note(&chunk.data)),
        };
        let room = (MAX_COMMAND_OUTPUT_BYTES + SCRUB_SLACK_BYTES).saturating_sub(target.len());
        let data: &Bytes = &data;
        if data.len() > room {
            collected.truncated = true;
        }
        target.extend_from_slice(&data[..data.len().min(room)]);
    }
    collected
}

/// Rewords a backend's note about a debug command, such as `danube: step
/// timed out after 60s`. Backends run a debug command as they run a step
/// and write their notes in step words, but the command is not a step.
fn command_note(note: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(note).replace("step", "command");
    Bytes::from(text)
}

/// Cuts `text` to at most `max` bytes at a character boundary; returns
/// whether it cut anything.
fn cut_to(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_note_says_command() {
        let note = command_note(b"danube: step timed out after 1s; killed its process group\n");
        assert_eq!(
            &note[..],
            b"danube: command timed out after 1s; killed its process group\n"
        );
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut_to("héllo".to_owned(), 2), ("h".to_owned(), true));
        assert_eq!(cut_to("hello".to_owned(), 5), ("hello".to_owned(), false));
    }
}
