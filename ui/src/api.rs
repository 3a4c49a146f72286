//! The HTTP API's JSON shapes as the UI reads them.
//!
//! These mirror `engine/src/api`; `tests/tests/ui_types.rs` deserialises a
//! real server's answers into them, so a change on either side that breaks
//! the other fails a test.

use serde::Deserialize;

/// State of a job, a task or a step, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Scheduling,
    Running,
    Success,
    Failure,
    Skipped,
    Timeout,
    Cancelled,
}

impl State {
    pub const JOB_STATES: [State; 7] = [
        State::Pending,
        State::Scheduling,
        State::Running,
        State::Success,
        State::Failure,
        State::Timeout,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Scheduling => "scheduling",
            State::Running => "running",
            State::Success => "success",
            State::Failure => "failure",
            State::Skipped => "skipped",
            State::Timeout => "timeout",
            State::Cancelled => "cancelled",
        }
    }

    /// A glyph that tells the state apart without colour.
    pub fn icon(self) -> &'static str {
        match self {
            State::Pending | State::Scheduling => "○",
            State::Running => "◐",
            State::Success => "✓",
            State::Failure => "✗",
            State::Skipped => "⤼",
            State::Timeout => "⏱",
            State::Cancelled => "⊘",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Success | State::Failure | State::Skipped | State::Timeout | State::Cancelled
        )
    }

    /// Failed in a way the user has to look at.
    pub fn is_bad(self) -> bool {
        matches!(self, State::Failure | State::Timeout)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Job {
    pub id: String,
    pub pipeline: String,
    pub project: String,
    pub state: State,
    pub reason: Option<String>,
    pub trigger_type: String,
    /// For a `watch` job, the changed file relative to the project.
    #[serde(default)]
    pub trigger_ref: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The target this job alone ran on, such as `kube:kind-dev`; `None` for
    /// the server's own.
    #[serde(default)]
    pub target: Option<String>,
}

impl Job {
    /// The file whose change made a watch session rerun this job; `None`
    /// for other triggers.
    pub fn changed_file(&self) -> Option<&str> {
        (self.trigger_type == "watch" && !self.trigger_ref.is_empty())
            .then_some(self.trigger_ref.as_str())
    }

    /// The pipeline's name, or what stands in for it before the script
    /// declared one: `(loading)` while the job runs, `(no pipeline)` after.
    pub fn pipeline_label(&self) -> String {
        match (self.pipeline.is_empty(), self.state.is_final()) {
            (false, _) => self.pipeline.clone(),
            (true, false) => "(loading)".to_owned(),
            (true, true) => "(no pipeline)".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub tasks: Vec<Task>,
    pub edges: Vec<Edge>,
    pub artifacts: Vec<Artifact>,
    /// Where the job is paused for debugging. Boxed, so that a job without
    /// a pause stays small.
    #[serde(default)]
    pub pause: Option<Box<DebugPause>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Task {
    pub name: String,
    pub needs: Vec<String>,
    pub image: Option<String>,
    pub state: State,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Without the time its steps spent paused in the debugger.
    pub duration_ms: Option<i64>,
    /// Time its steps spent paused in the debugger.
    #[serde(default)]
    pub paused_ms: i64,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Step {
    pub id: i64,
    pub task: String,
    pub name: String,
    pub command: String,
    pub image: Option<String>,
    pub state: State,
    pub exit_code: Option<i32>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Without the time paused in the debugger.
    pub duration_ms: Option<i64>,
    /// Time paused in the debugger before the step ran or before a retry.
    #[serde(default)]
    pub paused_ms: i64,
    /// Runs of the step: 1, plus one per retry from a debug pause.
    #[serde(default = "first_attempt")]
    pub attempt: i64,
}

fn first_attempt() -> i64 {
    1
}

/// A step paused for debugging, from `GET /api/v1/jobs/{id}/debug`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DebugPause {
    pub step_id: i64,
    pub task: String,
    pub step: String,
    /// `before` or `failure`.
    pub reason: String,
    pub breakpoint: Option<String>,
    /// `failure` or `timeout`, for a pause after a failure.
    pub step_state: Option<String>,
    pub exit_code: Option<i32>,
    pub workdir: String,
    pub image: Option<String>,
    pub attempt: i64,
    pub paused_at: i64,
}

impl DebugPause {
    /// Returns whether the step can be retried: only after it failed, since
    /// a step paused before has not run.
    pub fn can_retry(&self) -> bool {
        self.reason == "failure"
    }

    /// Says where and why the job paused, in one line.
    pub fn summary(&self) -> String {
        let place = format!("{} › {}", self.task, self.step);
        let attempt = if self.attempt > 1 {
            format!(", attempt {}", self.attempt)
        } else {
            String::new()
        };
        match self.reason.as_str() {
            "before" => format!(
                "Paused before {place} (breakpoint `{}`{attempt})",
                self.breakpoint.as_deref().unwrap_or(&self.step)
            ),
            _ => {
                let exit = self
                    .exit_code
                    .map(|code| format!(", exit {code}"))
                    .unwrap_or_default();
                let state = self.step_state.as_deref().unwrap_or("failure");
                format!("Paused after {place} ended with {state}{exit}{attempt}")
            }
        }
    }
}

/// The answer of `POST /api/v1/jobs/{id}/debug/exec`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ExecResult {
    pub command: String,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
}

/// The answer of `GET /api/v1/jobs/{id}/debug/files`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkspaceFiles {
    Directory {
        path: String,
        entries: Vec<FileEntry>,
    },
    File {
        path: String,
        size_bytes: u64,
        content: String,
        truncated: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub kind: String,
    pub size_bytes: i64,
    pub task: String,
    pub created_at: i64,
    pub download_url: String,
}

/// The error body every failed API call returns.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// One event of `GET /api/v1/events`, named by its `type`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeEvent {
    Job {
        job_id: String,
        state: State,
        reason: Option<String>,
    },
    Plan {
        job_id: String,
        pipeline: String,
        tasks: Vec<PlannedTask>,
    },
    Task {
        job_id: String,
        task: String,
        state: State,
    },
    Step {
        job_id: String,
        step_id: i64,
        task: String,
        name: String,
        state: State,
        exit_code: Option<i32>,
        duration_ms: Option<i64>,
    },
    Artifact {
        job_id: String,
        name: String,
        size_bytes: i64,
    },
    Notice {
        job_id: String,
        message: String,
    },
    Paused {
        job_id: String,
        pause: DebugPause,
    },
    Resumed {
        job_id: String,
        step_id: i64,
        task: String,
        step: String,
        decision: String,
    },
    Lagged {
        missed: u64,
    },
}

impl ChangeEvent {
    /// The job this event is about; `None` for `lagged`.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            ChangeEvent::Job { job_id, .. }
            | ChangeEvent::Plan { job_id, .. }
            | ChangeEvent::Task { job_id, .. }
            | ChangeEvent::Step { job_id, .. }
            | ChangeEvent::Artifact { job_id, .. }
            | ChangeEvent::Notice { job_id, .. }
            | ChangeEvent::Paused { job_id, .. }
            | ChangeEvent::Resumed { job_id, .. } => Some(job_id),
            ChangeEvent::Lagged { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PlannedTask {
    pub name: String,
    pub needs: Vec<String>,
}

/// One chunk of a log, from `GET .../logs` or a `chunk` SSE event.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Chunk {
    pub step_id: Option<i64>,
    pub task: Option<String>,
    pub step: Option<String>,
    /// `stdout`, `stderr` or `engine`.
    pub stream: String,
    pub offset: u64,
    pub timestamp: i64,
    /// `utf8` or `base64`.
    pub encoding: String,
    pub data: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_event_reads_a_step_event() {
        let json = r#"{"type":"step","job_id":"j1","step_id":4,"task":"build","name":"make",
            "state":"failure","exit_code":2,"duration_ms":31}"#;
        let event: ChangeEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.job_id(), Some("j1"));
        let ChangeEvent::Step {
            state, exit_code, ..
        } = event
        else {
            panic!("expected a step event, got {event:?}");
        };
        assert_eq!(state, State::Failure);
        assert_eq!(exit_code, Some(2));
    }

    #[test]
    fn pipeline_label_tells_loading_from_never_declared() {
        let mut job: Job = serde_json::from_str(
            r#"{"id":"j","pipeline":"","project":"/p","state":"running","reason":null,
                "trigger_type":"manual","created_at":1,"started_at":1,"finished_at":null,"duration_ms":null}"#,
        )
        .unwrap();
        assert_eq!(job.pipeline_label(), "(loading)");
        job.state = State::Failure;
        assert_eq!(job.pipeline_label(), "(no pipeline)");
        job.pipeline = "calc".to_owned();
        assert_eq!(job.pipeline_label(), "calc");
    }

    #[test]
    fn pause_summary_says_where_and_why() {
        let json = r#"{"step_id":3,"task":"test","step":"unit","reason":"failure",
            "breakpoint":null,"step_state":"failure","exit_code":2,"workdir":"/w",
            "image":null,"attempt":2,"paused_at":5}"#;
        let pause: DebugPause = serde_json::from_str(json).unwrap();

        assert_eq!(
            pause.summary(),
            "Paused after test › unit ended with failure, exit 2, attempt 2"
        );
    }

    #[test]
    fn only_final_states_are_final() {
        let finals: Vec<&str> = State::JOB_STATES
            .iter()
            .filter(|state| state.is_final())
            .map(|state| state.as_str())
            .collect();
        assert_eq!(finals, ["success", "failure", "timeout", "cancelled"]);
    }
}

/// `GET /api/v1/desktop`: present only in the desktop app, which is how
/// the UI knows to show the project picker.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DesktopInfo {
    pub version: String,
    /// The project given with `--project`, to open first.
    pub project: Option<Project>,
    pub data_dir: String,
}

/// A project folder the desktop app opened.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Project {
    pub path: String,
    pub name: String,
    /// The pipeline last chosen, when the file defines several.
    pub pipeline: Option<String>,
    pub opened_at: i64,
    /// Whether the folder still holds a `danubefile.py`.
    pub available: bool,
    /// Why it is not available: the folder is gone, or lacks the file.
    #[serde(default)]
    pub problem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

/// The answer of the native folder dialog.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Picked {
    /// `None` when the dialog was cancelled.
    pub project: Option<Project>,
}

/// `GET /api/v1/projects/pipelines`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ProjectPipelines {
    pub project: String,
    pub pipelines: Vec<PipelineSummary>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PipelineSummary {
    pub name: String,
    pub tasks: Vec<String>,
    /// Why the graph is invalid, when it is.
    pub error: Option<String>,
}

/// A watch session: `POST /api/v1/watches` and each entry of `GET
/// /api/v1/watches`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Watch {
    pub id: String,
    /// The project folder, canonical.
    pub project: String,
    pub pipeline: Option<String>,
    /// The session's latest job.
    pub current_job: Option<String>,
}

/// `GET /api/v1/watches`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct WatchList {
    pub watches: Vec<Watch>,
}

/// `GET /api/v1/desktop/targets`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TargetList {
    pub targets: Vec<Target>,
    pub kubeconfig: Vec<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Target {
    pub id: String,
    pub name: String,
    /// `local` or `kubernetes`.
    pub kind: String,
    pub cluster: Option<String>,
    pub current: bool,
    pub available: bool,
    /// Why a job cannot start there, when it cannot.
    pub note: Option<String>,
}

/// `GET /api/v1/secrets`: keys and scopes, never values.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<Secret>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Secret {
    pub key: String,
    /// `global` or `pipeline:<name>`.
    pub scope: String,
    pub pipeline: Option<String>,
    pub updated_at: i64,
}
