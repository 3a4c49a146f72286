//! The local backend: steps are `/bin/sh -c` child processes, each in its own
//! process group, in a per-job copy of the project folder.

pub mod process;
pub mod workspace;

use std::path::PathBuf;

/// Runs steps on this machine.
pub struct LocalBackend {
    /// `<data_dir>/workspaces`.
    workspaces_root: PathBuf,
}

impl LocalBackend {
    pub fn new(workspaces_root: PathBuf) -> LocalBackend {
        LocalBackend { workspaces_root }
    }
}

#[async_trait::async_trait]
impl super::Backend for LocalBackend {
    async fn prepare_workspace(
        &self,
        job: &crate::model::JobId,
        project: &std::path::Path,
        in_place: bool,
    ) -> Result<super::Workspace, super::BackendError> {
        todo!("{job} {project:?} {in_place} {:?}", self.workspaces_root)
    }

    async fn run_step(
        &self,
        spec: super::StepSpec,
        output: tokio::sync::mpsc::Sender<super::OutputChunk>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<super::StepOutcome, super::BackendError> {
        todo!("{spec:?} {output:?} {cancel:?}")
    }

    async fn remove_workspace(
        &self,
        workspace: &super::Workspace,
    ) -> Result<(), super::BackendError> {
        todo!("{workspace:?}")
    }
}
