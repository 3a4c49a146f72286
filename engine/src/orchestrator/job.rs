//! One job from start to end: its shared state, the scheduler and the run
//! loop that decides the final state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use zeroize::Zeroizing;

use crate::backend::{Backend, OutputChunk, Workspace};
use crate::logs::JobLogs;
use crate::model::{JobId, JobState, RunState, Stream};
use crate::proto::{DeclarePlanRequest, ScheduleEvent};
use crate::rpc::TokenHash;
use crate::secrets::SecretsError;
use crate::store::{NewJob, NewTask};

use super::coordinator::{self, CoordinatorExit};
use super::debug::DebugState;
use super::events::{EngineEvent, JobEvent};
use super::ownership::JobLock;
use super::plan::{Plan, PlannedTask};
use super::{DEFAULT_MAX_DURATION, EngineContext, JobOutcome, JobRequest};

/// How long running steps get to record their end after the job stops.
const STEP_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The cause of a job stopping before its tasks finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    Cancelled,
    TimedOut,
}

/// The coordinator's reports and the scheduler's state.
#[derive(Default)]
pub(crate) struct Shared {
    pub plan: Option<Plan>,
    /// The pipeline the coordinator declared.
    pub pipeline: String,
    pub fail_fast: bool,
    pub max_duration: Option<Duration>,
    pub schedule: Option<mpsc::UnboundedSender<Result<ScheduleEvent, Status>>>,
    pub schedule_opened: bool,
    pub load_error: Option<String>,
    pub script_error: Option<String>,
    pub task_errors: BTreeMap<String, String>,
    /// Tasks that were running when the coordinator exited on its own.
    pub coordinator_lost_during: Vec<String>,
    /// Tasks with a step that timed out, so a failure is reported as timeout.
    pub timed_out_tasks: BTreeSet<String>,
}

/// Everything the RPC handlers and the run loop share about one job.
pub struct JobRuntime {
    pub(crate) context: Arc<EngineContext>,
    /// The request's backend, else the engine's.
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) record: NewJob,
    pub(crate) request: JobRequest,
    project: PathBuf,
    logs: JobLogs,
    events: broadcast::Sender<JobEvent>,
    /// Fires when the job stops early; running steps are children of it.
    pub(crate) cancel: CancellationToken,
    stop_reason: StdMutex<Option<StopReason>>,
    /// The job's recorded reason when it is cancelled, if the caller gave
    /// one.
    cancel_message: StdMutex<Option<String>>,
    pub(crate) shared: Mutex<Shared>,
    plan_declared: Notify,
    pub(crate) workspace: OnceLock<Workspace>,
    token: OnceLock<TokenHash>,
    /// Secrets this job has read, by key.
    secret_cache: Mutex<BTreeMap<String, Zeroizing<String>>>,
    /// Marks this process as the job's owner until the final state is stored.
    lock: StdMutex<Option<JobLock>>,
    /// Steps between `insert_step` and `finish_step`.
    active_steps: StdMutex<usize>,
    steps_drained: Notify,
    /// Breakpoints and the current pause.
    pub(crate) debug: DebugState,
    /// Sends the engine's notes to the coordinator log, the job's own log,
    /// while the coordinator runs; the coordinator clears it when it ends.
    pub(crate) engine_notes: StdMutex<Option<mpsc::Sender<OutputChunk>>>,
}

impl JobRuntime {
    pub(crate) fn new(
        context: Arc<EngineContext>,
        record: NewJob,
        request: JobRequest,
        project: PathBuf,
        logs: JobLogs,
        lock: JobLock,
    ) -> Arc<JobRuntime> {
        let (events, _) = broadcast::channel(4096);
        let debug = DebugState::new(request.breakpoints.clone());
        let backend = match &request.backend {
            Some(chosen) => chosen.backend.clone(),
            None => context.backend.clone(),
        };
        Arc::new(JobRuntime {
            context,
            backend,
            record,
            request,
            project,
            logs,
            events,
            cancel: CancellationToken::new(),
            stop_reason: StdMutex::new(None),
            cancel_message: StdMutex::new(None),
            shared: Mutex::new(Shared::default()),
            plan_declared: Notify::new(),
            workspace: OnceLock::new(),
            token: OnceLock::new(),
            secret_cache: Mutex::new(BTreeMap::new()),
            lock: StdMutex::new(Some(lock)),
            active_steps: StdMutex::new(0),
            steps_drained: Notify::new(),
            debug,
            engine_notes: StdMutex::new(None),
        })
    }

    pub fn id(&self) -> &JobId {
        &self.record.id
    }

    pub fn project(&self) -> &Path {
        &self.project
    }

    pub fn logs(&self) -> &JobLogs {
        &self.logs
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: JobEvent) {
        // No subscriber is fine: the CLI may have gone, the store has the truth.
        let _ = self.context.events.send(EngineEvent {
            job_id: self.id().clone(),
            event: event.clone(),
        });
        let _ = self.events.send(event);
    }

    /// Writes a line from the engine into the job's log. Dropped when the
    /// coordinator has ended, since its log is then closed.
    pub(crate) async fn engine_note(&self, text: &str) {
        let sender = self
            .engine_notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(sender) = sender {
            let chunk = OutputChunk {
                stream: Stream::Engine,
                data: format!("{text}\n").into(),
            };
            sender.send(chunk).await.ok();
        }
    }

    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        *self
            .stop_reason
            .lock()
            .expect("stop reason lock is never poisoned")
    }

    /// Stops the job early. The first reason wins.
    pub(crate) fn stop(&self, reason: StopReason) {
        {
            let mut slot = self
                .stop_reason
                .lock()
                .expect("stop reason lock is never poisoned");
            if slot.is_some() {
                return;
            }
            *slot = Some(reason);
        }
        tracing::info!(job_id = %self.id(), ?reason, "stopping job");
        self.cancel.cancel();
    }

    pub fn cancel(&self) {
        self.stop(StopReason::Cancelled);
    }

    /// Cancels the job and records `message` as its reason, unless the job
    /// was already stopped.
    pub fn cancel_with_message(&self, message: String) {
        if self.stop_reason().is_none() {
            *self
                .cancel_message
                .lock()
                .expect("cancel message lock is never poisoned") = Some(message);
        }
        self.stop(StopReason::Cancelled);
    }

    fn cancel_message(&self) -> Option<String> {
        self.cancel_message
            .lock()
            .expect("cancel message lock is never poisoned")
            .clone()
    }

    pub(crate) fn step_started(&self) {
        *self
            .active_steps
            .lock()
            .expect("step counter lock is never poisoned") += 1;
    }

    pub(crate) fn step_finished(&self) {
        let mut active = self
            .active_steps
            .lock()
            .expect("step counter lock is never poisoned");
        *active -= 1;
        if *active == 0 {
            self.steps_drained.notify_waiters();
        }
    }

    async fn wait_for_steps(&self) {
        loop {
            let drained = self.steps_drained.notified();
            if *self
                .active_steps
                .lock()
                .expect("step counter lock is never poisoned")
                == 0
            {
                return;
            }
            drained.await;
        }
    }

    /// Validates and records the declared graph, then moves the job to
    /// `running`.
    pub(crate) async fn declare_plan(&self, request: DeclarePlanRequest) -> Result<(), Status> {
        let mut shared = self.shared.lock().await;
        if let Some(plan) = &shared.plan {
            // The coordinator resends a plan whose response it lost; the same
            // plan again is accepted, a different one is not.
            let same = plan.tasks().len() == request.tasks.len()
                && plan
                    .tasks()
                    .iter()
                    .zip(&request.tasks)
                    .all(|(known, sent)| known.name == sent.name && known.needs == sent.needs);
            return if same && shared.pipeline == request.pipeline {
                Ok(())
            } else {
                Err(Status::failed_precondition(
                    "a different plan was already declared",
                ))
            };
        }
        if let Some(wanted) = &self.request.pipeline
            && wanted != &request.pipeline
        {
            return Err(Status::invalid_argument(format!(
                "the coordinator declared pipeline `{}` but `{wanted}` was requested",
                request.pipeline
            )));
        }

        let tasks: Vec<PlannedTask> = request
            .tasks
            .iter()
            .map(|task| PlannedTask {
                name: task.name.clone(),
                needs: task.needs.clone(),
                image: Some(task.image.clone()).filter(|image| !image.is_empty()),
            })
            .collect();
        let plan =
            Plan::new(tasks.clone()).map_err(|err| Status::invalid_argument(err.to_string()))?;
        self.debug
            .breakpoints
            .check_plan(&request.pipeline, &tasks)
            .map_err(Status::invalid_argument)?;
        for warning in self
            .debug
            .breakpoints
            .plan_warnings(&request.pipeline, &tasks)
        {
            tracing::info!(job_id = %self.id(), "{warning}");
            self.engine_note(&warning).await;
        }
        let max_duration = Some(request.max_duration_seconds)
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs);
        if max_duration.is_some_and(|declared| declared > super::MAX_JOB_DURATION) {
            return Err(Status::invalid_argument(format!(
                "max_duration of {} s is longer than the engine's limit of {} s (7 days); lower it",
                request.max_duration_seconds,
                super::MAX_JOB_DURATION.as_secs()
            )));
        }
        self.tell_backend(
            &request.pipeline,
            max_duration.unwrap_or(DEFAULT_MAX_DURATION),
        )
        .await?;
        self.apply_egress(&request.egress_allowlist).await?;

        let store = &self.context.store;
        let new_tasks: Vec<NewTask> = tasks
            .iter()
            .map(|task| NewTask {
                name: task.name.clone(),
                needs: task.needs.clone(),
                image: task.image.clone(),
            })
            .collect();
        let internal = |err: crate::store::StoreError| {
            tracing::error!(job_id = %self.id(), error = %err, "failed to record the plan");
            Status::internal("failed to record the plan")
        };
        store
            .set_job_pipeline(self.id(), &request.pipeline)
            .await
            .map_err(internal)?;
        store
            .insert_tasks(self.id(), &new_tasks)
            .await
            .map_err(internal)?;
        store
            .set_job_state(self.id(), JobState::Running, None)
            .await
            .map_err(internal)?;

        shared.plan = Some(plan);
        shared.pipeline = request.pipeline.clone();
        shared.fail_fast = request.fail_fast;
        shared.max_duration = max_duration;
        drop(shared);

        tracing::info!(job_id = %self.id(), pipeline = %request.pipeline, tasks = tasks.len(), "plan declared");
        self.emit(JobEvent::PlanDeclared {
            pipeline: request.pipeline.clone(),
            tasks,
        });
        self.emit(JobEvent::JobState {
            state: JobState::Running,
            reason: None,
        });
        self.plan_declared.notify_waiters();
        Ok(())
    }

    /// Gives the backend the declared pipeline and the job's wall-time bound.
    async fn tell_backend(&self, pipeline: &str, max_duration: Duration) -> Result<(), Status> {
        self.backend
            .plan_declared(self.id(), pipeline, max_duration)
            .await
            .map_err(|err| {
                tracing::warn!(job_id = %self.id(), error = %err, "the backend failed to apply the declared plan");
                Status::failed_precondition(error_chain(&err))
            })
    }

    /// Checks the pipeline's egress allowlist and has the backend enforce
    /// it before any step runs.
    async fn apply_egress(&self, allowlist: &[String]) -> Result<(), Status> {
        crate::backend::kubernetes::network::parse_allowlist(allowlist)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let notes = self
            .backend
            .apply_egress(self.id(), allowlist)
            .await
            .map_err(|err| {
                if err.rejects_plan() {
                    tracing::info!(job_id = %self.id(), error = %err, "the egress allowlist was rejected");
                    Status::invalid_argument(err.to_string())
                } else {
                    tracing::warn!(job_id = %self.id(), error = %err, "failed to apply the egress allowlist");
                    Status::failed_precondition(err.to_string())
                }
            })?;
        for note in notes {
            self.engine_note(&note).await;
        }
        Ok(())
    }

    /// Opens the schedule stream and starts the first tasks.
    pub(crate) async fn open_schedule(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<Result<ScheduleEvent, Status>>, Status> {
        let mut shared = self.shared.lock().await;
        if shared.plan.is_none() {
            return Err(Status::failed_precondition(
                "declare the plan before watching the schedule",
            ));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        if shared.schedule_opened {
            // A reconnecting coordinator gets the tasks it may have missed;
            // it ignores those it already runs.
            let plan = shared.plan.as_ref().expect("the plan was checked above");
            for task in plan.in_state(RunState::Running) {
                let _ = sender.send(Ok(ScheduleEvent { start_task: task }));
            }
            if plan.all_final() {
                return Ok(receiver);
            }
        }
        shared.schedule = Some(sender);
        shared.schedule_opened = true;
        self.dispatch(&mut shared).await;
        Ok(receiver)
    }

    /// Records a task's end reported by the coordinator and schedules what it
    /// unblocked.
    pub(crate) async fn finish_task(
        &self,
        task: &str,
        success: bool,
        error: &str,
    ) -> Result<(), Status> {
        let mut shared = self.shared.lock().await;
        let Some(plan) = shared.plan.as_ref() else {
            return Err(Status::failed_precondition("no plan was declared"));
        };
        if plan.state(task) != Some(RunState::Running) {
            return Err(Status::failed_precondition(format!(
                "task `{task}` is not running"
            )));
        }

        let state = if success {
            RunState::Success
        } else if self.stop_reason() == Some(StopReason::Cancelled) {
            RunState::Cancelled
        } else if shared.timed_out_tasks.contains(task)
            || self.stop_reason() == Some(StopReason::TimedOut)
        {
            RunState::Timeout
        } else {
            RunState::Failure
        };
        let error = Some(error).filter(|e| !success && !e.is_empty());
        if let Some(error) = error {
            let scrubbed = self.logs.scrubber().scrub_text(error);
            shared.task_errors.insert(task.to_owned(), scrubbed);
        }
        let error = shared.task_errors.get(task).cloned();
        self.set_task_state(&mut shared, task, state, error.as_deref())
            .await;
        self.dispatch(&mut shared).await;
        Ok(())
    }

    /// Reads a secret for this job's pipeline and teaches the scrubber its
    /// value before anyone can print it.
    /// Reads a secret for this job's pipeline and teaches the scrubber its
    /// value before anyone can print it. Each key is decrypted once per job
    /// and then served from the job's cache, which is dropped with the job.
    pub(crate) async fn read_secret(&self, key: &str) -> Result<String, Status> {
        if let Some(value) = self.secret_cache.lock().await.get(key) {
            return Ok(value.to_string());
        }

        let pipeline = self.shared.lock().await.pipeline.clone();
        let actor = format!("job:{}", self.id());
        let value = self
            .context
            .vault
            .read_for_pipeline(&pipeline, key, &actor)
            .await
            .map_err(|err| {
                tracing::info!(job_id = %self.id(), key, error = %err, "secret read failed");
                secret_status(&err)
            })?;
        self.logs.scrubber().add_secret(&value);
        let text = String::from_utf8(value.to_vec()).map_err(|_| {
            Status::failed_precondition(format!("secret `{key}` is not valid UTF-8 text"))
        })?;
        tracing::info!(job_id = %self.id(), key, "secret read");

        let cached = Zeroizing::new(text.clone());
        self.secret_cache
            .lock()
            .await
            .insert(key.to_owned(), cached);
        Ok(text)
    }

    pub(crate) async fn record_load_error(&self, message: String) {
        tracing::info!(job_id = %self.id(), "the pipeline could not be loaded");
        self.shared.lock().await.load_error = Some(message);
    }

    pub(crate) async fn record_script_error(&self, message: String) {
        tracing::info!(job_id = %self.id(), "the pipeline script raised an exception");
        let scrubbed = self.logs.scrubber().scrub_text(&message);
        self.shared.lock().await.script_error = Some(scrubbed);
    }

    async fn set_task_state(
        &self,
        shared: &mut Shared,
        task: &str,
        state: RunState,
        error: Option<&str>,
    ) {
        if let Some(plan) = shared.plan.as_mut() {
            plan.set_state(task, state);
        }
        if let Err(err) = self
            .context
            .store
            .set_task_state(self.id(), task, state, error)
            .await
        {
            tracing::error!(job_id = %self.id(), task, error = %err, "failed to record task state");
        }
        tracing::info!(job_id = %self.id(), task, state = %state, "task state");
        if state == RunState::Success
            && let Some(warning) = self.debug.task_warning(task)
        {
            tracing::info!(job_id = %self.id(), task, "{warning}");
            self.engine_note(&warning).await;
        }
        self.emit(JobEvent::TaskState {
            task: task.to_owned(),
            state,
        });
    }

    /// Skips what can no longer run, starts what is ready within the
    /// parallelism bound, and closes the schedule when nothing is left.
    async fn dispatch(&self, shared: &mut Shared) {
        if self.stop_reason().is_some() {
            shared.schedule = None;
            return;
        }
        let Some(plan) = shared.plan.as_ref() else {
            return;
        };

        let any_failed = plan.tasks().iter().any(|task| {
            matches!(
                plan.state(&task.name),
                Some(RunState::Failure | RunState::Timeout)
            )
        });
        let mut skipped = plan.blocked();
        if shared.fail_fast && any_failed {
            skipped.extend(plan.in_state(RunState::Pending));
            skipped.dedup();
        }
        for task in skipped {
            self.set_task_state(shared, &task, RunState::Skipped, None)
                .await;
        }

        let plan = shared.plan.as_ref().expect("the plan was checked above");
        let free = self
            .request
            .max_parallel
            .max(1)
            .saturating_sub(plan.running_count());
        let ready: Vec<String> = plan.ready().into_iter().take(free).collect();
        if shared.schedule.is_some() {
            for task in ready {
                self.set_task_state(shared, &task, RunState::Running, None)
                    .await;
                if let Some(schedule) = &shared.schedule {
                    let _ = schedule.send(Ok(ScheduleEvent { start_task: task }));
                }
            }
        }

        if shared.plan.as_ref().is_some_and(Plan::all_final) {
            // Dropping the sender ends the coordinator's schedule stream.
            shared.schedule = None;
        }
    }

    /// Ends every task that is not final yet, after the job stopped or the
    /// coordinator went away.
    async fn close_open_tasks(&self, shared: &mut Shared, exit: CoordinatorExit) {
        let Some(plan) = shared.plan.as_ref() else {
            return;
        };
        let stop = self.stop_reason();
        let running_state = match stop {
            Some(StopReason::Cancelled) => RunState::Cancelled,
            Some(StopReason::TimedOut) => RunState::Timeout,
            None => RunState::Failure,
        };
        let pending_state = match stop {
            Some(_) => RunState::Cancelled,
            None => RunState::Skipped,
        };
        let running = plan.in_state(RunState::Running);
        let pending = plan.in_state(RunState::Pending);

        // Without a stop request, tasks still running mean the coordinator
        // went away in the middle of them.
        let lost = (stop.is_none() && !running.is_empty()).then(|| {
            format!(
                "the pipeline process {exit} while this task was running; see the coordinator log"
            )
        });
        if let Some(lost) = &lost {
            shared.coordinator_lost_during = running.clone();
            for task in &running {
                shared.task_errors.insert(task.clone(), lost.clone());
            }
        }
        for task in running {
            self.set_task_state(shared, &task, running_state, lost.as_deref())
                .await;
        }
        for task in pending {
            self.set_task_state(shared, &task, pending_state, None)
                .await;
        }
    }
}

/// Runs a job to its end and records the outcome.
pub(crate) async fn run(runtime: Arc<JobRuntime>) -> JobOutcome {
    let id = runtime.id().clone();
    let outcome = drive(&runtime).await;

    runtime.cancel.cancel();
    if let Some(token) = runtime.token.get() {
        runtime.context.tokens.revoke(token);
    }
    runtime.secret_cache.lock().await.clear();

    // Processes that left their step's process group (`setsid`, daemons)
    // still carry the job id in their environment.
    let leftovers = runtime.backend.kill_leftovers(&id);
    if leftovers > 0 {
        tracing::info!(job_id = %id, leftovers, "killed processes that outlived their steps");
        runtime.emit(JobEvent::Notice {
            message: format!(
                "killed {leftovers} process(es) of this job that had left their step's process group"
            ),
        });
    }
    if let Some(workspace) = runtime.workspace.get()
        && let Err(err) = runtime.backend.remove_workspace(workspace).await
    {
        tracing::warn!(job_id = %id, error = %err, "failed to remove the workspace");
    }
    if runtime.request.repository.is_some() {
        remove_checkout(&id, runtime.project()).await;
    }
    if let Err(err) = runtime
        .context
        .store
        .set_job_state(&id, outcome.state, outcome.reason.as_deref())
        .await
    {
        tracing::error!(job_id = %id, error = %err, "failed to record the job's final state");
    }
    runtime
        .lock
        .lock()
        .expect("job lock mutex is never poisoned")
        .take();
    tracing::info!(job_id = %id, state = %outcome.state, reason = outcome.reason.as_deref().unwrap_or(""), "job finished");
    runtime.emit(JobEvent::JobState {
        state: outcome.state,
        reason: outcome.reason.clone(),
    });
    outcome
}

/// Removes the clone of a job's repository.
async fn remove_checkout(id: &JobId, checkout: &Path) {
    match tokio::fs::remove_dir_all(checkout).await {
        Ok(()) => tracing::debug!(job_id = %id, "checkout removed"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(job_id = %id, path = %checkout.display(), error = %err, "failed to remove the checkout");
        }
    }
}

async fn drive(runtime: &Arc<JobRuntime>) -> JobOutcome {
    let context = runtime.context.clone();
    let id = runtime.id().clone();
    let failure = |reason: String| JobOutcome {
        state: JobState::Failure,
        reason: Some(reason),
        load_error: false,
    };

    if let Err(err) = context
        .store
        .set_job_state(&id, JobState::Scheduling, None)
        .await
    {
        return failure(format!("failed to record the job state: {err}"));
    }
    runtime.emit(JobEvent::JobState {
        state: JobState::Scheduling,
        reason: None,
    });

    let workspace = match runtime
        .backend
        .prepare_workspace(
            &id,
            runtime.project(),
            runtime.request.in_place,
            runtime.request.pipeline.as_deref(),
        )
        .await
    {
        Ok(workspace) => workspace,
        Err(err) => {
            return failure(format!(
                "failed to prepare the workspace: {}",
                error_chain(&err)
            ));
        }
    };
    let workspace = runtime.workspace.get_or_init(|| workspace).clone();

    let (token, token_hash) = context.tokens.issue(runtime.clone());
    let _ = runtime.token.set(token_hash);

    let mut coordinator = match coordinator::start(runtime, &workspace, &token).await {
        Ok(coordinator) => coordinator,
        Err(err) => return failure(err.to_string()),
    };
    drop(token);

    // Until the plan arrives the pipeline's own max_duration is unknown;
    // the default bounds loading too.
    let started = tokio::time::Instant::now();
    let mut deadline = started + DEFAULT_MAX_DURATION;
    let mut plan_seen = false;
    let exit = loop {
        let plan_declared = runtime.plan_declared.notified();
        let pause_changed = runtime.debug.changed.notified();
        // Paused time moves the deadline; a paused job has none.
        let shifted = runtime.debug.shift_deadline(deadline);
        tokio::select! {
            exit = coordinator.wait() => break exit,
            () = sleep_until(shifted) => {
                runtime.stop(StopReason::TimedOut);
                break coordinator.stop().await;
            }
            () = runtime.cancel.cancelled() => break coordinator.stop().await,
            () = plan_declared, if !plan_seen => {
                plan_seen = true;
                if let Some(max) = runtime.shared.lock().await.max_duration {
                    deadline = started + max;
                }
            }
            () = pause_changed => {}
        }
    };

    // Steps check the cancellation token; give them time to record their end.
    if runtime.stop_reason().is_some() || !matches!(exit, CoordinatorExit::Exited(0)) {
        runtime.cancel.cancel();
    }
    if tokio::time::timeout(STEP_DRAIN_TIMEOUT, runtime.wait_for_steps())
        .await
        .is_err()
    {
        tracing::warn!(job_id = %id, "steps did not finish within the drain timeout");
    }

    let mut shared = runtime.shared.lock().await;
    runtime.close_open_tasks(&mut shared, exit.clone()).await;
    let outcome = decide(runtime, &shared, exit);
    drop(shared);
    check_breakpoints_matched(runtime, outcome)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Fails a job that succeeded although a breakpoint named none of its
/// steps: the user asked to stop somewhere the job never went, which is
/// most likely a typo. A job that ended otherwise keeps its reason, since
/// it may have ended before the step the breakpoint names.
fn check_breakpoints_matched(runtime: &JobRuntime, outcome: JobOutcome) -> JobOutcome {
    if outcome.state != JobState::Success {
        return outcome;
    }
    let Some((unmatched, steps)) = runtime.debug.unmatched() else {
        return outcome;
    };
    let quoted: Vec<String> = unmatched.iter().map(|name| format!("`{name}`")).collect();
    let message = format!(
        "breakpoint {} named no step of this job; its steps were: {}",
        quoted.join(", "),
        if steps.is_empty() {
            "none".to_owned()
        } else {
            steps.join(", ")
        }
    );
    tracing::info!(job_id = %runtime.id(), unmatched = ?unmatched, "breakpoints matched no step");
    runtime.emit(JobEvent::Notice {
        message: message.clone(),
    });
    JobOutcome {
        state: JobState::Failure,
        reason: Some(message),
        load_error: false,
    }
}

fn decide(runtime: &JobRuntime, shared: &Shared, exit: CoordinatorExit) -> JobOutcome {
    let outcome = |state, reason: Option<String>, load_error| JobOutcome {
        state,
        reason,
        load_error,
    };
    match runtime.stop_reason() {
        Some(StopReason::Cancelled) => {
            let message = runtime
                .cancel_message()
                .unwrap_or_else(|| "the job was cancelled".into());
            return outcome(JobState::Cancelled, Some(message), false);
        }
        Some(StopReason::TimedOut) => {
            let max = shared.max_duration.unwrap_or(DEFAULT_MAX_DURATION);
            return outcome(
                JobState::Timeout,
                Some(format!(
                    "the job ran longer than its max_duration of {}s",
                    max.as_secs()
                )),
                false,
            );
        }
        None => {}
    }

    if let Some(error) = &shared.load_error {
        return outcome(JobState::Failure, Some(error.clone()), true);
    }
    let Some(plan) = &shared.plan else {
        return outcome(
            JobState::Failure,
            Some(format!(
                "the coordinator {exit} before declaring a plan; see the coordinator log"
            )),
            true,
        );
    };
    if plan.all_succeeded()
        && matches!(exit, CoordinatorExit::Exited(0))
        && shared.script_error.is_none()
    {
        return outcome(JobState::Success, None, false);
    }

    if !shared.coordinator_lost_during.is_empty() {
        let tasks: Vec<String> = shared
            .coordinator_lost_during
            .iter()
            .map(|task| format!("`{task}`"))
            .collect();
        return outcome(
            JobState::Failure,
            Some(format!(
                "the pipeline process {exit} while {} {} running; see the coordinator log",
                if tasks.len() == 1 { "task" } else { "tasks" },
                tasks.join(", ") + if tasks.len() == 1 { " was" } else { " were" }
            )),
            false,
        );
    }

    let failed_task = plan.tasks().iter().find(|task| {
        matches!(
            plan.state(&task.name),
            Some(RunState::Failure | RunState::Timeout)
        )
    });
    let reason = if let Some(task) = failed_task {
        let detail = shared
            .task_errors
            .get(&task.name)
            .and_then(|error| error.lines().rev().find(|line| !line.trim().is_empty()))
            .unwrap_or("see its log");
        format!("task `{}` failed: {}", task.name, detail.trim())
    } else if let Some(error) = &shared.script_error {
        format!(
            "the pipeline script raised an exception: {}",
            last_line(error)
        )
    } else {
        format!("the coordinator {exit}; see the coordinator log")
    };
    outcome(JobState::Failure, Some(reason), false)
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

/// Formats an error with its sources, for reasons stored with a job and
/// the CLI's last line. A cause whose text the message already contains is
/// left out, and a Kubernetes API error ends the chain with its status
/// message and a hint ([`crate::backend::kubernetes::error::api_error_text`]).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(api) = crate::backend::kubernetes::error::api_error_text(cause) {
            push_cause(&mut text, &api);
            break;
        }
        // Wrappers such as hyper's and kube's repeat their source's message.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            push_cause(&mut text, &cause_text);
        }
        next = cause.source();
    }
    text
}

fn push_cause(text: &mut String, cause: &str) {
    if !text.is_empty() {
        text.push_str(": ");
    }
    text.push_str(cause);
}

fn secret_status(err: &SecretsError) -> Status {
    let message = error_chain(err);
    match err {
        SecretsError::SecretNotFound { .. } => Status::not_found(message),
        SecretsError::InvalidKey { .. } => Status::invalid_argument(message),
        _ => Status::failed_precondition(message),
    }
}
