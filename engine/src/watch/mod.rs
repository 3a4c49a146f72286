//! Watch mode: rerun a project's pipeline whenever one of its files
//! changes.
//!
//! [`ProjectWatcher`] turns file events under a project folder into
//! debounced [`ChangeBatch`]es, skipping `.git`, ignored paths, Danube's data
//! directory and editors' scratch files ([`IgnoreRules`]). A
//! [`WatchSession`] runs a job, cancels it when a batch arrives and starts
//! the next one with the `watch` trigger. [`Watches`] keeps the sessions
//! that the HTTP API started.

mod batch;
mod editor;
mod registry;
mod rules;
mod session;
mod watcher;

use std::path::PathBuf;
use std::time::Duration;

pub use batch::ChangeBatch;
pub use editor::is_editor_file;
pub use registry::{WatchInfo, Watches};
pub use rules::IgnoreRules;
pub use session::{
    DEFAULT_DEBOUNCE, MAX_DEBOUNCE, MIN_DEBOUNCE, RunFollower, SessionControls, WaitFollower,
    WatchRequest, WatchRun, WatchSession,
};
pub use watcher::ProjectWatcher;

use crate::orchestrator::{OrchestratorError, ProjectError};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "debounce window {} is out of range: use {} to {}",
        humantime::format_duration(*.0),
        humantime::format_duration(MIN_DEBOUNCE),
        humantime::format_duration(MAX_DEBOUNCE)
    )]
    Debounce(Duration),

    #[error(transparent)]
    Project(#[from] ProjectError),

    #[error(
        "failed to watch `{path}` for changes (on Linux, a folder tree larger than the inotify limit needs a higher `fs.inotify.max_user_watches`)",
        path = .path.display()
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },

    #[error("failed to start the first job of the watch session")]
    Submit(#[source] OrchestratorError),

    #[error("the watch session was stopped before its first job started")]
    Stopped,
}
