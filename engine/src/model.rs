//! Identifiers and state machines shared by every part of the engine.
//!
//! The words follow the product: a *pipeline* is a definition, a *job* is
//! one run of it, a *task* is a node of the job's graph and a *step* is one
//! `step.run` command inside a task.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as stored in SQLite and log indexes.
pub type UnixMillis = i64;

/// Returns the current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> UnixMillis {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is set after 1970");
    i64::try_from(elapsed.as_millis()).expect("milliseconds since 1970 fit in i64")
}

/// A job id: a UUIDv7 in its hyphenated form, so ids sort by creation time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eighteen characters: the millisecond timestamp of the
    /// UUIDv7 plus its next random bits, enough to tell jobs apart in a table
    /// and to find one again by prefix, even for jobs started in the same
    /// millisecond. Eight would not do: they change only every 65 seconds.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(18)]
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a job.
///
/// `Pending` when recorded; `Scheduling` while the workspace is prepared and
/// the coordinator loads the script and declares the graph; `Running` from the
/// accepted plan until every task is final. The last four are final and never
/// change again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Scheduling,
    Running,
    Success,
    Failure,
    /// The job ran past its `max_duration`.
    Timeout,
    Cancelled,
}

/// Lifecycle of a task or a step.
///
/// `Pending` until scheduled; `Running` while its commands run; then one of
/// the final states. `Skipped` is only entered from `Pending`, when a task it
/// needs did not succeed (or fail-fast stopped the job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Success,
    Failure,
    Skipped,
    /// A step past its own `timeout`, or a task whose step timed out.
    Timeout,
    Cancelled,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownState(text.to_owned())),
                }
            }
        }
    };
}

string_enum!(JobState {
    Pending => "pending",
    Scheduling => "scheduling",
    Running => "running",
    Success => "success",
    Failure => "failure",
    Timeout => "timeout",
    Cancelled => "cancelled",
});

string_enum!(RunState {
    Pending => "pending",
    Running => "running",
    Success => "success",
    Failure => "failure",
    Skipped => "skipped",
    Timeout => "timeout",
    Cancelled => "cancelled",
});

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failure | JobState::Timeout | JobState::Cancelled
        )
    }
}

impl RunState {
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }
}

/// A state name read from the database or a command line that no variant has.
#[derive(Debug, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(pub String);

/// Which output of a process a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the engine itself adds to a log (a timeout, a killed child).
    Engine,
}

string_enum!(Stream {
    Stdout => "stdout",
    Stderr => "stderr",
    Engine => "engine",
});

impl Stream {
    /// The one-byte tag stored in log indexes.
    pub fn tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
            Stream::Engine => 3,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Stream> {
        match tag {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            3 => Some(Stream::Engine),
            _ => None,
        }
    }
}

/// How a job was started, as exposed to scripts in `ctx.trigger_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerType {
    Webhook,
    Cron,
    Manual,
    Local,
    /// Rerun by a watch session after a file of the project changed; the
    /// job's `trigger_ref` is that file's path relative to the project.
    Watch,
}

string_enum!(TriggerType {
    Webhook => "webhook",
    Cron => "cron",
    Manual => "manual",
    Local => "local",
    Watch => "watch",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), *state);
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), *state);
        }
    }

    #[test]
    fn stream_tags_round_trip() {
        for stream in Stream::ALL {
            assert_eq!(Stream::from_tag(stream.tag()), Some(*stream));
        }
        assert_eq!(Stream::from_tag(0), None);
    }

    #[test]
    fn job_ids_sort_by_creation() {
        let first = JobId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = JobId::new();
        assert!(first < second);
    }
}
