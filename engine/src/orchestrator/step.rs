//! One `step.run`: record it, run it through the backend, store its scrubbed
//! output, and report the exit to the coordinator.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::mpsc;
use tonic::Status;

use crate::backend::{BackendError, OutputChunk, SpawnHook, StepOutcome, StepSpec};
use crate::logs::{LogKey, LogWriter};
use crate::model::{RunState, Stream, now_millis};
use crate::proto::{self, RunStepEvent, RunStepRequest, StepExit, run_step_event};
use crate::store::NewStep;

use super::coordinator::context_env;
use super::debug::{self, Decision, PauseReason};
use super::events::JobEvent;
use super::job::{JobRuntime, error_chain};

/// Exit code reported for a step killed by its timeout, as `timeout(1)` does.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// Longest step name accepted, so that tables and log prefixes stay readable.
const MAX_STEP_NAME_CHARS: usize = 200;

/// Output chunks buffered between the backend and the log writer. Small, so
/// a slow disk slows the step instead of growing memory.
const OUTPUT_BUFFER: usize = 16;

pub type EventSender = mpsc::Sender<Result<RunStepEvent, Status>>;

/// Seconds from a `RunStep` request arriving to its step's process being
/// spawned, for every step this process started: validation, recording the
/// step, and the backend's spawn. Buckets from 0.5 ms to about 16 s.
pub fn dispatch_latency() -> &'static Histogram {
    static LATENCY: LazyLock<Histogram> =
        LazyLock::new(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
    &LATENCY
}

/// Validates the request, records the step and runs it in the background;
/// the returned channel carries its output (when captured) and its exit.
pub async fn start(
    runtime: Arc<JobRuntime>,
    request: RunStepRequest,
) -> Result<mpsc::Receiver<Result<RunStepEvent, Status>>, Status> {
    let requested = Instant::now();
    // Names are shown and stored everywhere, so a secret in one (a default
    // name taken from a command, say) is masked like any other output.
    let name = runtime.logs().scrubber().scrub_text(request.name.trim());
    if name.is_empty() {
        return Err(Status::invalid_argument("the step name is empty"));
    }
    if name.chars().count() > MAX_STEP_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "step name `{}` is invalid: use at most {MAX_STEP_NAME_CHARS} characters and no control characters",
            name.chars().take(MAX_STEP_NAME_CHARS).collect::<String>()
        )));
    }
    if !(request.timeout_seconds.is_finite() && request.timeout_seconds >= 0.0) {
        return Err(Status::invalid_argument(format!(
            "step `{name}`: timeout must be a positive number of seconds, got {}",
            request.timeout_seconds
        )));
    }

    let (task_image, pipeline) = {
        let shared = runtime.shared.lock().await;
        let Some(plan) = shared.plan.as_ref() else {
            return Err(Status::failed_precondition(
                "declare the plan before running steps",
            ));
        };
        if plan.state(&request.task) != Some(RunState::Running) {
            return Err(Status::failed_precondition(format!(
                "task `{}` is not running, so it cannot run step `{name}`",
                request.task
            )));
        }
        let image = plan.task(&request.task).and_then(|task| task.image.clone());
        (image, shared.pipeline.clone())
    };

    let (events, receiver) = mpsc::channel(OUTPUT_BUFFER);
    if runtime.cancel.is_cancelled() {
        let _ = events
            .send(Ok(exit_event(
                proto::StepOutcome::Cancelled,
                0,
                "the job is stopping",
            )))
            .await;
        return Ok(receiver);
    }

    let image = Some(request.image.clone())
        .filter(|image| !image.is_empty())
        .or(task_image);
    let scrubber = runtime.logs().scrubber().clone();
    let new_step = NewStep {
        job_id: runtime.id().clone(),
        task: request.task.clone(),
        name: name.clone(),
        command: scrubber.scrub_text(&request.command),
        image: image.clone(),
        started_at: now_millis(),
    };
    let step_id = runtime
        .context
        .store
        .insert_step(&new_step)
        .await
        .map_err(|err| {
            tracing::error!(job_id = %runtime.id(), error = %err, "failed to record a step");
            Status::internal("failed to record the step")
        })?;
    runtime.step_started();

    let workspace = runtime
        .workspace
        .get()
        .expect("steps only run after the workspace exists")
        .path
        .clone();
    let mut env: BTreeMap<String, String> = context_env(&runtime, &workspace).into_iter().collect();
    env.insert("CI".into(), "true".into());
    env.insert("DANUBE_PIPELINE".into(), pipeline);
    env.insert("DANUBE_TASK".into(), request.task.clone());
    env.insert("DANUBE_STEP".into(), name.clone());
    env.extend(request.env.clone());

    let spec = StepSpec {
        job_id: runtime.id().clone(),
        step_id,
        task: request.task.clone(),
        step: name.clone(),
        command: request.command.clone(),
        workdir: workspace,
        env,
        image,
        timeout: Some(request.timeout_seconds)
            .filter(|seconds| *seconds > 0.0)
            .map(Duration::from_secs_f64),
        on_spawn: Some(SpawnHook::new(move || {
            dispatch_latency().observe(requested.elapsed().as_secs_f64());
        })),
    };

    runtime.emit(JobEvent::StepStarted {
        step_id,
        task: request.task.clone(),
        name: name.clone(),
    });
    let span = tracing::info_span!("step", job_id = %runtime.id(), task = %request.task, step = %name, step_id);
    tokio::spawn(tracing::Instrument::instrument(
        run(runtime, spec, request.capture, events),
        span,
    ));
    Ok(receiver)
}

async fn run(runtime: Arc<JobRuntime>, spec: StepSpec, capture: bool, events: EventSender) {
    tracing::info!("step started");
    let step_id = spec.step_id;
    let mut attempt = 1;
    let mut writer = open_log(&runtime, step_id);

    let mut timing = StepTiming {
        paused: Duration::ZERO,
        attempt_started: Instant::now(),
    };
    let breakpoint = runtime.debug.step_starting(&spec.task, &spec.step);
    let paused_before = match breakpoint {
        Some(breakpoint) => {
            let reason = PauseReason::Before { breakpoint };
            let (decision, length) = timed_pause(&runtime, &spec, reason, attempt).await;
            timing.paused += length;
            timing.attempt_started = Instant::now();
            Some(decision)
        }
        None => None,
    };
    let mut result = if paused_before == Some(Decision::Abort) {
        Ok(StepOutcome::Cancelled)
    } else {
        execute(&runtime, &spec, capture, &events, writer.as_mut()).await
    };

    let exit = loop {
        let pauses = runtime.debug.pauses_after(&result);
        let (state, exit_code, exit) = end_of(&runtime, &spec.task, result, writer.as_mut()).await;
        finish_log(writer.take());
        record_end(&runtime, &spec, state, exit_code, &timing).await;
        if !pauses {
            break exit;
        }

        let reason = PauseReason::Failure { state, exit_code };
        let (decision, length) = timed_pause(&runtime, &spec, reason, attempt).await;
        if decision != Decision::Retry {
            break exit;
        }
        timing.paused += length;
        timing.attempt_started = Instant::now();
        attempt = match retry(&runtime, &spec).await {
            Some(attempt) => attempt,
            None => break exit,
        };
        writer = open_log(&runtime, step_id);
        if let Some(log) = writer.as_mut() {
            let note =
                format!("danube: attempt {attempt} of this step, retried from a debug pause\n");
            let _ = log.write(Stream::Engine, note.as_bytes());
        }
        result = execute(&runtime, &spec, capture, &events, writer.as_mut()).await;
    };

    runtime.step_finished();
    // The coordinator may be gone (cancelled job); the record above is what counts.
    let _ = events.send(Ok(exit)).await;
}

/// Pauses the step and returns the decision with the length of the pause,
/// waiting for an earlier pause to end included.
async fn timed_pause(
    runtime: &Arc<JobRuntime>,
    spec: &StepSpec,
    reason: PauseReason,
    attempt: i64,
) -> (Decision, Duration) {
    let since = Instant::now();
    let decision = debug::pause(runtime, spec, reason, attempt).await;
    let length = since.elapsed();
    let paused_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
    if let Err(err) = runtime
        .context
        .store
        .add_task_pause(runtime.id(), &spec.task, paused_ms)
        .await
    {
        tracing::error!(error = %err, "failed to record the time the task spent paused");
    }
    (decision, length)
}

fn open_log(runtime: &JobRuntime, step_id: i64) -> Option<LogWriter> {
    match runtime.logs().writer(LogKey::Step(step_id)) {
        Ok(writer) => Some(writer),
        Err(err) => {
            tracing::error!(error = %err, "failed to open the step log");
            None
        }
    }
}

fn finish_log(writer: Option<LogWriter>) {
    if let Some(log) = writer
        && let Err(err) = log.finish()
    {
        tracing::error!(error = %err, "failed to finish the step log");
    }
}

/// Runs one attempt of the step through the backend, storing its output
/// and sending its stdout to the coordinator when captured.
async fn execute(
    runtime: &Arc<JobRuntime>,
    spec: &StepSpec,
    capture: bool,
    events: &EventSender,
    mut writer: Option<&mut LogWriter>,
) -> Result<StepOutcome, BackendError> {
    let (output, mut chunks) = mpsc::channel::<OutputChunk>(OUTPUT_BUFFER);
    let backend = runtime.backend.clone();
    let cancel = runtime.cancel.child_token();
    let attempt = spec.clone();
    let execution = tokio::spawn(async move { backend.run_step(attempt, output, cancel).await });

    while let Some(chunk) = chunks.recv().await {
        if let Some(log) = writer.as_mut()
            && let Err(err) = log.write(chunk.stream, &chunk.data)
        {
            tracing::error!(error = %err, "failed to write the step log");
        }
        // NOTE: a step retried from a debug pause sends the stdout of every
        // attempt, so a captured result holds all of them.
        if capture && chunk.stream == Stream::Stdout {
            let event = RunStepEvent {
                event: Some(run_step_event::Event::Output(proto::OutputChunk {
                    stream: proto::Stream::Stdout as i32,
                    data: chunk.data.to_vec(),
                })),
            };
            let _ = events.send(Ok(event)).await;
        }
    }

    match execution.await {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(error = %err, "step execution task panicked");
            Ok(StepOutcome::Exited(-1))
        }
    }
}

/// Maps an attempt's result to the step's state, exit code and the exit
/// event for the coordinator.
async fn end_of(
    runtime: &JobRuntime,
    task: &str,
    result: Result<StepOutcome, BackendError>,
    writer: Option<&mut LogWriter>,
) -> (RunState, Option<i32>, RunStepEvent) {
    match result {
        Ok(StepOutcome::Exited(0)) => (
            RunState::Success,
            Some(0),
            exit_event(proto::StepOutcome::Exited, 0, ""),
        ),
        Ok(StepOutcome::Exited(code)) => (
            RunState::Failure,
            Some(code),
            exit_event(proto::StepOutcome::Exited, code, ""),
        ),
        Ok(StepOutcome::TimedOut) => {
            runtime
                .shared
                .lock()
                .await
                .timed_out_tasks
                .insert(task.to_owned());
            (
                RunState::Timeout,
                Some(TIMEOUT_EXIT_CODE),
                exit_event(
                    proto::StepOutcome::TimedOut,
                    TIMEOUT_EXIT_CODE,
                    "the step ran past its timeout",
                ),
            )
        }
        Ok(StepOutcome::Cancelled) => (
            RunState::Cancelled,
            None,
            exit_event(proto::StepOutcome::Cancelled, 0, "the job was stopped"),
        ),
        Err(err) => {
            let message = runtime.logs().scrubber().scrub_text(&error_chain(&err));
            tracing::info!(error = %message, "step could not run");
            if let Some(log) = writer {
                let _ = log.write(Stream::Engine, format!("danube: {message}\n").as_bytes());
            }
            let exit_code = err.exit_code();
            (
                RunState::Failure,
                exit_code,
                exit_event(proto::StepOutcome::Error, exit_code.unwrap_or(-1), &message),
            )
        }
    }
}

/// How long a step was paused in the debugger, which its recorded duration
/// leaves out, and when its current attempt started, which the duration of
/// its end event counts from.
struct StepTiming {
    /// Paused before the step ran, and between a failure and its retry.
    paused: Duration,
    attempt_started: Instant,
}

/// Records how an attempt ended.
async fn record_end(
    runtime: &JobRuntime,
    spec: &StepSpec,
    state: RunState,
    exit_code: Option<i32>,
    timing: &StepTiming,
) {
    let paused = timing.paused;
    let paused_ms = i64::try_from(paused.as_millis()).unwrap_or(i64::MAX);
    if !paused.is_zero()
        && let Err(err) = runtime
            .context
            .store
            .set_step_pause(spec.step_id, paused_ms)
            .await
    {
        tracing::error!(error = %err, "failed to record the time the step spent paused");
    }
    if let Err(err) = runtime
        .context
        .store
        .finish_step(spec.step_id, state, exit_code)
        .await
    {
        tracing::error!(error = %err, "failed to record the step's end");
    }
    let duration_ms =
        i64::try_from(timing.attempt_started.elapsed().as_millis()).unwrap_or(i64::MAX);
    tracing::info!(state = %state, exit_code, duration_ms, "step finished");
    runtime.emit(JobEvent::StepFinished {
        step_id: spec.step_id,
        task: spec.task.clone(),
        name: spec.step.clone(),
        state,
        exit_code,
        duration_ms,
    });
}

/// Records a new attempt of a step that failed; `None` when it cannot be
/// recorded, in which case the failure stands.
async fn retry(runtime: &JobRuntime, spec: &StepSpec) -> Option<i64> {
    let attempt = match runtime.context.store.restart_step(spec.step_id).await {
        Ok(attempt) => attempt,
        Err(err) => {
            tracing::error!(error = %err, "failed to record a retry of the step");
            return None;
        }
    };
    // A timeout of the earlier attempt no longer decides the task's state.
    runtime
        .shared
        .lock()
        .await
        .timed_out_tasks
        .remove(&spec.task);
    tracing::info!(attempt, "step retried");
    runtime.emit(JobEvent::StepStarted {
        step_id: spec.step_id,
        task: spec.task.clone(),
        name: spec.step.clone(),
    });
    Some(attempt)
}

fn exit_event(outcome: proto::StepOutcome, exit_code: i32, message: &str) -> RunStepEvent {
    RunStepEvent {
        event: Some(run_step_event::Event::Exit(StepExit {
            outcome: outcome as i32,
            exit_code,
            message: message.to_owned(),
        })),
    }
}
