//! Where steps run. The orchestrator talks to a [`Backend`]; `local` runs
//! steps as child processes on this machine.

pub mod local;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{JobId, Stream};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    // Implementer: one variant per failed operation: copy the project into
    // the workspace (with the path), spawn a step (with the command's first
    // word), no container runtime for `image=` (naming step and image and the
    // fix: install podman or docker), remove the workspace.
}

/// The directory a job's steps run in.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub path: PathBuf,
    /// The project folder itself (`--in-place`); never removed.
    pub in_place: bool,
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub job_id: JobId,
    pub step_id: i64,
    pub task: String,
    pub step: String,
    /// Run as `/bin/sh -c command`.
    pub command: String,
    pub workdir: PathBuf,
    /// Added to the inherited environment (the user's on the local backend).
    pub env: BTreeMap<String, String>,
    /// Run inside a container of this image instead of on the host.
    pub image: Option<String>,
    pub timeout: Option<Duration>,
}

/// A piece of a step's output. `Stream::Engine` chunks are notes from the
/// backend itself (for example that background processes were killed).
#[derive(Clone, Debug)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The shell exited with this code (128 + N when signal N ended it).
    Exited(i32),
    /// The step ran past its timeout; its process tree was killed.
    TimedOut,
    /// The cancellation token fired; its process tree was killed.
    Cancelled,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Makes the job's workspace: a copy of `project` (tracked and untracked
    /// but not ignored files, without `.git`) under the data directory, or
    /// `project` itself when `in_place`.
    async fn prepare_workspace(
        &self,
        job: &JobId,
        project: &Path,
        in_place: bool,
    ) -> Result<Workspace, BackendError>;

    /// Runs one step to its end, sending output to `output` as it arrives
    /// (stdout and stderr read concurrently). Returns when the shell has
    /// exited and the step's whole process group is gone.
    async fn run_step(
        &self,
        spec: StepSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError>;

    /// Removes a copied workspace; does nothing for an in-place one.
    async fn remove_workspace(&self, workspace: &Workspace) -> Result<(), BackendError>;
}
