//! Running one step's process to its end: reading its output, the rule that
//! a step ends when its shell exits, timeout and cancel.
//!
//! The same code runs a host step (`/bin/sh -c`) and the container runtime's
//! client for an `image=` step: both are a process group whose leader's exit
//! ends the step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::process::{GroupChild, exit_code};
use crate::backend::{BackendError, OutputChunk, StepOutcome};
use crate::model::Stream;

/// Bytes asked for in one read of a pipe.
const READ_CHUNK_BYTES: usize = 128 * 1024;

/// How long output that is already in the pipes may still arrive after the
/// shell exits, before the engine looks for leftover background processes.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Time between SIGTERM and SIGKILL on timeout and cancel.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Once the process group is gone, the pipes are read until EOF. A process
/// outside the group (for example one started with `setsid`) can hold them open for
/// ever, so reading stops when nothing arrived for this long...
const PIPE_IDLE_LIMIT: Duration = Duration::from_secs(1);

/// ...or at the latest this long after the group was gone.
const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// After `stop` fires, a pipe is still read while data is ready,
/// up to this many bytes: more than a full pipe buffer (1 MiB on Linux), so
/// that output written before the group died is not lost.
const STOP_DRAIN_BYTES: usize = 2 * 1024 * 1024;

const BACKGROUND_KILLED_NOTE: &str = "danube: killed background processes of this step that were still running after the shell exited";
const PIPES_HELD_NOTE: &str = "danube: stopped reading this step's output: a process outside its process group still holds stdout or stderr open";

/// Names used in error messages and engine notes.
pub(crate) struct StepLabels<'a> {
    pub step: &'a str,
    /// Object of "killed …" in the timeout and cancel notes, such as `its process group`.
    pub killed: &'a str,
}

/// Runs `child` (spawned with piped stdout and stderr) until its leader
/// exits, its timeout passes or `cancel` fires, sending its output to
/// `output` as it arrives. Returns once the process group is gone and the
/// pipes are read.
///
/// Output is read no faster than `output` is received: a full channel stops
/// the reading and the process then blocks on its full pipe. If the receiver
/// is dropped the output is read and discarded, so that the process is not
/// blocked.
pub(crate) async fn run_to_end(
    mut child: GroupChild,
    labels: StepLabels<'_>,
    timeout: Option<Duration>,
    output: mpsc::Sender<OutputChunk>,
    cancel: CancellationToken,
) -> Result<StepOutcome, BackendError> {
    let mut pumps = Pumps::start(&mut child, &output);

    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    // Biased so that a shell that exits at the same moment as the timeout
    // fires is reported with its own exit code.
    let ending = tokio::select! {
        biased;
        status = child.wait() => Ending::Exited(status),
        () = sleep_until(deadline) => Ending::TimedOut,
        () = cancel.cancelled() => Ending::Cancelled,
    };

    let outcome = match ending {
        Ending::Exited(Ok(status)) => {
            pumps.finish_within(DRAIN_GRACE).await;

            // The shell is gone, so whatever is left in its group was started
            // in the background and would otherwise outlive the step.
            let group = child.group();
            if group.is_alive() {
                tracing::debug!(
                    pgid = group.id(),
                    "killing background processes left by the step"
                );
                if let Err(err) = group.send_kill() {
                    tracing::warn!(pgid = group.id(), error = %err, "failed to kill background processes of step");
                }
                group.wait_until_gone(KILL_GRACE).await;
                send_note(&output, BACKGROUND_KILLED_NOTE).await;
            }
            StepOutcome::Exited(exit_code(status))
        }
        Ending::Exited(Err(source)) => {
            child.group().send_kill().ok();
            pumps.stop.cancel();
            return Err(BackendError::WaitStep {
                step: labels.step.to_owned(),
                source,
            });
        }
        Ending::TimedOut => {
            stop(&mut child, labels.step).await?;
            let after = format_duration(timeout.expect("a timeout fired, so one was set"));
            send_note(
                &output,
                &format!(
                    "danube: step timed out after {after}; killed {}",
                    labels.killed
                ),
            )
            .await;
            StepOutcome::TimedOut
        }
        Ending::Cancelled => {
            stop(&mut child, labels.step).await?;
            send_note(
                &output,
                &format!("danube: step cancelled; killed {}", labels.killed),
            )
            .await;
            StepOutcome::Cancelled
        }
    };

    if !pumps.finish().await {
        send_note(&output, PIPES_HELD_NOTE).await;
    }
    Ok(outcome)
}

enum Ending {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

async fn stop(child: &mut GroupChild, step: &str) -> Result<(), BackendError> {
    let (_status, termination) =
        child
            .terminate(KILL_GRACE)
            .await
            .map_err(|source| BackendError::WaitStep {
                step: step.to_owned(),
                source,
            })?;
    tracing::debug!(?termination, "stopped the step's process group");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends a line from the engine itself. A dropped receiver is ignored: the
/// note only describes what happened to the step.
async fn send_note(output: &mpsc::Sender<OutputChunk>, text: &str) {
    let chunk = OutputChunk {
        stream: Stream::Engine,
        data: Bytes::from(format!("{text}\n")),
    };
    output.send(chunk).await.ok();
}

/// Formats a timeout as the user wrote it: `5s`, `90s` or `1500ms`.
fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The two tasks that copy stdout and stderr into the output channel.
struct Pumps {
    handle: Option<JoinHandle<()>>,
    /// Tells the tasks to stop once the data that is ready has been read.
    stop: CancellationToken,
    activity: Arc<Activity>,
}

impl Pumps {
    fn start(child: &mut GroupChild, output: &mpsc::Sender<OutputChunk>) -> Pumps {
        let leader = child.child_mut();
        let stdout = leader
            .stdout
            .take()
            .expect("step processes are spawned with piped stdout");
        let stderr = leader
            .stderr
            .take()
            .expect("step processes are spawned with piped stderr");
        let stop = CancellationToken::new();
        let activity = Arc::new(Activity::new());

        let stdout_pump = pump(
            stdout,
            Stream::Stdout,
            output.clone(),
            stop.clone(),
            activity.clone(),
        );
        let stderr_pump = pump(
            stderr,
            Stream::Stderr,
            output.clone(),
            stop.clone(),
            activity.clone(),
        );
        let handle = tokio::spawn(async move {
            tokio::join!(stdout_pump, stderr_pump);
        });

        Pumps {
            handle: Some(handle),
            stop,
            activity,
        }
    }

    /// Waits up to `limit` for both pipes to reach EOF. Returns true if they
    /// did.
    async fn finish_within(&mut self, limit: Duration) -> bool {
        let Some(handle) = self.handle.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, handle).await {
            Ok(joined) => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    std::panic::resume_unwind(err.into_panic());
                }
                self.handle = None;
                true
            }
            Err(_elapsed) => false,
        }
    }

    /// Reads the pipes to EOF, or stops as described at [`PIPE_IDLE_LIMIT`].
    /// Call it once the process group is gone. Returns true if both pipes
    /// reached EOF.
    async fn finish(&mut self) -> bool {
        let started = Instant::now();
        loop {
            if self.finish_within(Duration::from_millis(100)).await {
                return true;
            }
            if self.activity.idle_for() >= PIPE_IDLE_LIMIT || started.elapsed() >= PIPE_DRAIN_LIMIT
            {
                break;
            }
        }

        self.stop.cancel();
        // Unbounded on purpose: after `stop` a pump reads at most
        // STOP_DRAIN_BYTES more, so only a slow receiver can make this wait.
        let Some(handle) = self.handle.take() else {
            return true;
        };
        if let Err(err) = handle.await
            && err.is_panic()
        {
            std::panic::resume_unwind(err.into_panic());
        }
        false
    }
}

/// When the pumps last made progress, so that a pipe held open by a
/// process outside the group can be distinguished from a slow receiver.
struct Activity {
    base: Instant,
    last_progress_millis: AtomicU64,
    /// Pumps that are waiting for room in the output channel.
    sending: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_progress_millis: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_millis.store(millis, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.sending.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_progress_millis.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// Copies one pipe into the output channel until EOF, or until `stop` fires
/// and no more data is ready.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    output: mpsc::Sender<OutputChunk>,
    stop: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut buffer = BytesMut::new();
    let mut receiver_gone = false;
    let mut stop_budget = STOP_DRAIN_BYTES;

    loop {
        buffer.reserve(READ_CHUNK_BYTES);
        // Biased towards the read: once `stop` fires, data that is ready is
        // still read and a read that would block ends the loop.
        let read = tokio::select! {
            biased;
            read = pipe.read_buf(&mut buffer) => read,
            () = stop.cancelled() => break,
        };
        let read = match read {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(%stream, error = %err, "failed to read step output; stopped reading this pipe");
                break;
            }
        };
        activity.touch();

        let data = buffer.split().freeze();
        if !receiver_gone {
            activity.sending.fetch_add(1, Ordering::Relaxed);
            let sent = output.send(OutputChunk { stream, data }).await;
            activity.sending.fetch_sub(1, Ordering::Relaxed);
            activity.touch();
            if sent.is_err() {
                // Keep reading so that the process does not block on a full
                // pipe. The receiver no longer wants its output.
                tracing::debug!(%stream, "output receiver dropped; discarding the rest of the step's output");
                receiver_gone = true;
            }
        }

        if stop.is_cancelled() {
            stop_budget = stop_budget.saturating_sub(read);
            if stop_budget == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_formatted_in_seconds_or_milliseconds() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
