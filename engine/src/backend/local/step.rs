//! Running one step's process to its end: reading its output, the rule that
//! a step ends when its shell exits, timeout and cancel.
//!
//! The same code runs a host step (`/bin/sh -c`) and the container runtime's
//! client for an `image=` step: both are a process group whose leader's exit
//! ends the step.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::output::OutputReader;
use super::process::{GroupChild, exit_code};
use crate::backend::{BackendError, OutputChunk, StepOutcome};
use crate::model::Stream;

/// How long output that is already in the pipes may still arrive after the
/// shell exits, before the engine looks for leftover background processes.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Time between SIGTERM and SIGKILL on timeout and cancel.
const KILL_GRACE: Duration = Duration::from_secs(2);

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
    let mut reader = OutputReader::from_child(&mut child, &output);

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
            reader.finish_within(DRAIN_GRACE).await;

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
            reader.stop();
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

    if !reader.finish().await {
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
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
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
