//! Artifacts uploaded by jobs: single files, or directories as tar.gz.
//!
//! Stored under `<data_dir>/artifacts/<job_id>/`. An upload is written to a
//! temporary file, checked (size limit, digest, for directories every tar
//! entry), and renamed into place only when complete.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;

use crate::model::JobId;
use crate::store::ArtifactRecord;

/// Default upper bound on one artifact's stored size.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    // Implementer: invalid name (naming the rule), duplicate name in the job,
    // size limit exceeded (naming the limit), unsafe tar entry (absolute
    // path, `..`, symlink or hard link leaving the archive, device file), I/O
    // errors with the path, upload stream errors.
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    File,
    /// A gzip-compressed tar of a directory.
    Directory,
}

/// What the coordinator said about an upload before its bytes.
#[derive(Clone, Debug)]
pub struct IncomingArtifact {
    pub job_id: JobId,
    pub name: String,
    pub kind: ArtifactKind,
    pub source_path: String,
    pub task: String,
}

/// Checks an artifact name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, not
/// starting with `.`.
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    todo!("{name}")
}

pub struct ArtifactStore {
    root: PathBuf,
    max_bytes: u64,
}

impl ArtifactStore {
    pub fn new(root: PathBuf, max_bytes: u64) -> ArtifactStore {
        ArtifactStore { root, max_bytes }
    }

    /// Streams an upload to disk and returns its record (not yet in the store).
    pub async fn receive<S>(
        &self,
        meta: IncomingArtifact,
        chunks: S,
    ) -> Result<ArtifactRecord, ArtifactError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        todo!(
            "{meta:?} {} {:?}",
            self.max_bytes,
            std::mem::size_of_val(&chunks)
        )
    }

    /// Path of a stored artifact's bytes.
    pub fn path_of(&self, job: &JobId, name: &str) -> PathBuf {
        todo!("{job} {name} {:?}", self.root)
    }
}

/// Extracts a stored directory artifact into `out_dir`, refusing entries that
/// would land outside it.
pub fn extract_directory(archive: &Path, out_dir: &Path) -> Result<(), ArtifactError> {
    todo!("{archive:?} {out_dir:?}")
}
