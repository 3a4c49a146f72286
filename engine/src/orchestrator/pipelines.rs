//! Listing the pipelines a project's `danubefile.py` defines, so that a
//! view can offer the choice before a job starts. The engine runs
//! `python -m danube._inspect`, which imports the file as a job's
//! coordinator does and prints the pipelines as JSON.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::{Engine, PIPELINE_FILE, ProjectError, check_project};

/// How long importing a danubefile may take before the listing gives up.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code of `danube._inspect` for a file that could not be loaded.
const EXIT_LOAD_ERROR: i32 = 3;

/// One pipeline a file defines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineSummary {
    pub name: String,
    /// Its tasks in plan order; empty when the graph is invalid.
    pub tasks: Vec<String>,
    /// The reason the graph is invalid, such as a `needs` naming no task.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Project(#[from] ProjectError),

    #[error("failed to start `{interpreter}` to read {PIPELINE_FILE}", interpreter = .interpreter.display())]
    Spawn {
        interpreter: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The message is the SDK's, with the traceback when the file raised.
    #[error("{0}")]
    Load(String),

    #[error(
        "reading the pipelines of `{path}` took over {seconds} s; check that {PIPELINE_FILE} does no slow work at import time",
        path = .path.display(),
        seconds = INSPECT_TIMEOUT.as_secs()
    )]
    Timeout { path: PathBuf },

    #[error("the SDK's pipeline listing for `{path}` failed ({status}): {stderr}", path = .path.display())]
    Failed {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

#[derive(Deserialize)]
struct Described {
    pipelines: Option<Vec<PipelineSummary>>,
    error: Option<String>,
}

impl Engine {
    /// Lists the pipelines that `project`'s [`PIPELINE_FILE`] defines, in
    /// definition order.
    ///
    /// Importing the file runs its top-level code in the project folder
    /// itself, not in a copy: what a user's own file does when Python loads
    /// it. No task runs. The import is killed after [`INSPECT_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`InspectError::Project`] for a path that is no project,
    /// [`InspectError::Load`] when the file raises or does not exist, and
    /// the other variants when the SDK failed to list them.
    pub async fn list_pipelines(
        &self,
        project: &Path,
    ) -> Result<Vec<PipelineSummary>, InspectError> {
        let project = check_project(project)?;
        let python = &self.context.python;
        let mut command = Command::new(&python.interpreter);
        command
            .args(["-m", "danube._inspect", "--file", PIPELINE_FILE])
            .current_dir(&project)
            .env("PYTHONPATH", python.python_path())
            // Keep bytecode caches out of the project.
            .env(
                "PYTHONPYCACHEPREFIX",
                self.context.data.python_dir().join("pycache"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let child = command.spawn().map_err(|source| InspectError::Spawn {
            interpreter: python.interpreter.clone(),
            source,
        })?;
        let output = tokio::time::timeout(INSPECT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| InspectError::Timeout {
                path: project.clone(),
            })?
            .map_err(|source| InspectError::Spawn {
                interpreter: python.interpreter.clone(),
                source,
            })?;

        let failed = || InspectError::Failed {
            path: project.clone(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        };
        let described: Described = serde_json::from_slice(&output.stdout).map_err(|_| failed())?;
        match (output.status.code(), described) {
            (
                Some(0),
                Described {
                    pipelines: Some(pipelines),
                    ..
                },
            ) => Ok(pipelines),
            (
                Some(EXIT_LOAD_ERROR),
                Described {
                    error: Some(error), ..
                },
            ) => Err(InspectError::Load(error)),
            _ => Err(failed()),
        }
    }
}
