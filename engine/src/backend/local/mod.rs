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
