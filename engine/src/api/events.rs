//! `GET /api/v1/events`: every job, task and step state change of the jobs
//! this server runs, as Server-Sent Events, for live lists.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::AppState;
use super::debug::DebugPause;
use super::metrics::SseKind;
use crate::model::{JobState, RunState};
use crate::orchestrator::{EngineEvent, JobEvent};

/// One change, sent as an SSE event whose name is `type`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeEvent {
    /// The job entered `state`.
    Job {
        job_id: String,
        #[schema(value_type = String)]
        state: JobState,
        reason: Option<String>,
    },
    /// The script declared its pipeline; every task is `pending`.
    Plan {
        job_id: String,
        pipeline: String,
        tasks: Vec<PlannedTask>,
    },
    Task {
        job_id: String,
        task: String,
        #[schema(value_type = String)]
        state: RunState,
    },
    /// A step started (`state` is `running`) or finished.
    Step {
        job_id: String,
        step_id: i64,
        task: String,
        name: String,
        #[schema(value_type = String)]
        state: RunState,
        exit_code: Option<i32>,
        duration_ms: Option<i64>,
    },
    Artifact {
        job_id: String,
        name: String,
        size_bytes: i64,
    },
    /// A message the engine shows the user (setup progress, warnings).
    Notice { job_id: String, message: String },
    /// A step paused for debugging; the job stays `running`.
    Paused { job_id: String, pause: DebugPause },
    /// The pause of step `step_id` ended with `decision`: `continue`,
    /// `retry` or `abort`.
    Resumed {
        job_id: String,
        step_id: i64,
        task: String,
        step: String,
        decision: &'static str,
    },
    /// This client fell behind and missed `missed` events: refetch what it
    /// shows.
    Lagged { missed: u64 },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedTask {
    pub name: String,
    pub needs: Vec<String>,
}

impl ChangeEvent {
    fn name(&self) -> &'static str {
        match self {
            ChangeEvent::Job { .. } => "job",
            ChangeEvent::Plan { .. } => "plan",
            ChangeEvent::Task { .. } => "task",
            ChangeEvent::Step { .. } => "step",
            ChangeEvent::Artifact { .. } => "artifact",
            ChangeEvent::Notice { .. } => "notice",
            ChangeEvent::Paused { .. } => "paused",
            ChangeEvent::Resumed { .. } => "resumed",
            ChangeEvent::Lagged { .. } => "lagged",
        }
    }
}

impl From<EngineEvent> for ChangeEvent {
    fn from(engine_event: EngineEvent) -> ChangeEvent {
        let job_id = engine_event.job_id.0;
        match engine_event.event {
            JobEvent::JobState { state, reason } => ChangeEvent::Job {
                job_id,
                state,
                reason,
            },
            JobEvent::PlanDeclared { pipeline, tasks } => ChangeEvent::Plan {
                job_id,
                pipeline,
                tasks: tasks
                    .into_iter()
                    .map(|task| PlannedTask {
                        name: task.name,
                        needs: task.needs,
                    })
                    .collect(),
            },
            JobEvent::TaskState { task, state } => ChangeEvent::Task {
                job_id,
                task,
                state,
            },
            JobEvent::StepStarted {
                step_id,
                task,
                name,
            } => ChangeEvent::Step {
                job_id,
                step_id,
                task,
                name,
                state: RunState::Running,
                exit_code: None,
                duration_ms: None,
            },
            JobEvent::StepFinished {
                step_id,
                task,
                name,
                state,
                exit_code,
                duration_ms,
            } => ChangeEvent::Step {
                job_id,
                step_id,
                task,
                name,
                state,
                exit_code,
                duration_ms: Some(duration_ms),
            },
            JobEvent::ArtifactStored { name, size_bytes } => ChangeEvent::Artifact {
                job_id,
                name,
                size_bytes,
            },
            JobEvent::Notice { message } => ChangeEvent::Notice { job_id, message },
            JobEvent::Paused { pause } => ChangeEvent::Paused {
                job_id,
                pause: pause.into(),
            },
            JobEvent::Resumed {
                step_id,
                task,
                step,
                decision,
            } => ChangeEvent::Resumed {
                job_id,
                step_id,
                task,
                step,
                decision: decision.as_str(),
            },
        }
    }
}

/// Follow every state change
///
/// Server-Sent Events named `job`, `plan`, `task`, `step`, `artifact`,
/// `notice`, `paused`, `resumed` and `lagged`, each carrying a [`ChangeEvent`]. Only jobs this
/// server runs are reported. Events carry no id and cannot be resumed: after
/// a reconnect or a `lagged` event, refetch the lists.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    responses((status = 200, description = "An event stream of ChangeEvent", content_type = "text/event-stream", body = ChangeEvent))
)]
pub async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let guard = state.metrics.sse_client(SseKind::Events);
    let receiver = state.engine.subscribe();
    let shutdown = state.shutdown.clone();
    let events = futures::stream::unfold(
        (receiver, shutdown, guard),
        |(mut receiver, shutdown, guard)| async move {
            // The receiver is polled first, so events published before the
            // server ended the streams, such as the final states of the
            // jobs it cancelled, are sent before the stream ends.
            let change = tokio::select! {
                biased;
                received = receiver.recv() => match received {
                    Ok(event) => ChangeEvent::from(event),
                    Err(RecvError::Lagged(missed)) => ChangeEvent::Lagged { missed },
                    Err(RecvError::Closed) => return None,
                },
                () = shutdown.cancelled() => return None,
            };
            let body =
                serde_json::to_string(&change).expect("an event of strings and numbers serializes");
            let event = Event::default().event(change.name()).data(body);
            Some((Ok(event), (receiver, shutdown, guard)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::default())
}
