//! The data directory: where the database, logs, artifacts, workspaces and
//! keys live, and the checks that it is usable before anything is written.

use std::path::{Path, PathBuf};

use crate::model::JobId;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Implementer: one variant per failed operation, each naming the path and the fix.
}

/// A data directory that exists and is writable.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory to use: `explicit` if given, else the platform's user
    /// data directory joined with `danube` (for example
    /// `~/.local/share/danube` on Linux).
    pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
        todo!("{explicit:?}")
    }

    /// Creates the layout under `root` (`logs/`, `artifacts/`, `workspaces/`,
    /// `keys/` with mode 0700, `python/`) and checks it is writable.
    pub fn open(root: &Path) -> Result<DataDir, ConfigError> {
        todo!("{root:?}")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join("danube.db")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn job_logs_dir(&self, job: &JobId) -> PathBuf {
        self.logs_dir().join(job.as_str())
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    pub fn workspaces_dir(&self) -> PathBuf {
        self.root.join("workspaces")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn encryption_key_path(&self) -> PathBuf {
        self.keys_dir().join("encryption.key")
    }

    pub fn python_dir(&self) -> PathBuf {
        self.root.join("python")
    }
}
