//! Events a job reports while it runs, for the CLI's live view and, later, the
//! API's event streams.

use crate::model::{JobId, JobState, RunState};

use super::debug::{Decision, Pause};
use super::plan::PlannedTask;

/// One change in a job. Sent on a broadcast channel in the order it happened.
#[derive(Clone, Debug)]
pub enum JobEvent {
    JobState {
        state: JobState,
        reason: Option<String>,
    },
    /// The coordinator declared the graph; every task is `pending`.
    PlanDeclared {
        pipeline: String,
        tasks: Vec<PlannedTask>,
    },
    TaskState {
        task: String,
        state: RunState,
    },
    StepStarted {
        step_id: i64,
        task: String,
        name: String,
    },
    StepFinished {
        step_id: i64,
        task: String,
        name: String,
        state: RunState,
        exit_code: Option<i32>,
        duration_ms: i64,
    },
    ArtifactStored {
        name: String,
        size_bytes: i64,
    },
    /// A line the engine wants the user to see (setup progress, warnings).
    Notice {
        message: String,
    },
    /// A step paused for debugging; the job stays `running`.
    Paused {
        pause: Pause,
    },
    /// The user ended the pause of step `step_id` with `decision`.
    Resumed {
        step_id: i64,
        task: String,
        step: String,
        decision: Decision,
    },
}

/// A [`JobEvent`] tagged with its job, as sent on the engine-wide channel
/// that [`super::Engine::subscribe`] returns.
#[derive(Clone, Debug)]
pub struct EngineEvent {
    pub job_id: JobId,
    pub event: JobEvent,
}
