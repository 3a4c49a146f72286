//! Artifacts uploaded by jobs: single files, or directories as tar.gz.
//!
//! Stored under `<data_dir>/artifacts/<job_id>/`. An upload is written to a
//! temporary file, checked (size limit, digest, for directories every tar
//! entry), and renamed into place only when complete.
//!
//! A file artifact is stored as `<name>` and a directory artifact as
//! `<name>.tar.gz`. Because the two spellings can meet (a file named
//! `x.tar.gz` and a directory named `x`), an upload is rejected as a
//! duplicate when either `<name>` or `<name>.tar.gz` already exists, so each
//! stored file belongs to exactly one artifact.

mod archive;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::model::{JobId, now_millis};
use crate::store::ArtifactRecord;

pub use archive::{UnsafeReason, extract_directory};

/// Default upper bound on one artifact's stored size.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Maximum length of an artifact name, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// The file name the provenance record of a job takes in the job's artifact
/// directory, so no artifact may use it.
pub const RESERVED_NAME: &str = "provenance.json";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid artifact name `{name}`: {rule}")]
    InvalidName { name: String, rule: &'static str },

    #[error("invalid job id `{job}` for an artifact directory: it must be a single path component")]
    InvalidJobId { job: JobId },

    #[error(
        "artifact `{name}` already exists in job {job} (stored as `{stored}`); upload it under another name"
    )]
    Duplicate {
        job: JobId,
        name: String,
        stored: String,
    },

    #[error("artifact `{name}` exceeds the size limit of {}", format_size(*.limit))]
    TooLarge { name: String, limit: u64 },

    #[error(
        "archive `{archive}` contains an unsafe entry `{entry}`: {reason} (archive only regular files, directories and links that stay inside the directory)"
    )]
    UnsafeEntry {
        archive: String,
        entry: String,
        reason: UnsafeReason,
    },

    #[error("archive `{archive}` is not a valid tar.gz file")]
    InvalidArchive {
        archive: String,
        #[source]
        source: io::Error,
    },

    #[error("upload of artifact `{name}` failed")]
    Upload {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to create artifact directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to write artifact `{name}` to {}", path.display())]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to move artifact `{name}` into place at {}", path.display())]
    Publish {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to open archive {}", path.display())]
    OpenArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to extract `{entry}` to {}", path.display())]
    Extract {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Formats a byte count in the largest binary unit that divides it, such as
/// `1 GiB` or `1536 KiB`.
fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    File,
    /// A gzip-compressed tar of a directory.
    Directory,
}

impl ArtifactKind {
    /// Returns the spelling stored in `ArtifactRecord::kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::File => "file",
            ArtifactKind::Directory => "directory",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An artifact kind not spelled `file` or `directory`.
#[derive(Debug, thiserror::Error)]
#[error("unknown artifact kind `{0}` (expected `file` or `directory`)")]
pub struct UnknownKind(pub String);

impl FromStr for ArtifactKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<ArtifactKind, UnknownKind> {
        match text {
            "file" => Ok(ArtifactKind::File),
            "directory" => Ok(ArtifactKind::Directory),
            _ => Err(UnknownKind(text.to_owned())),
        }
    }
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
/// starting with `.`, and not `provenance.json`.
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    let invalid = |rule| {
        Err(ArtifactError::InvalidName {
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() {
        return invalid("a name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("a name has at most 128 characters");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return invalid("a name contains only letters A-Z and a-z, digits, `.`, `_` and `-`");
    }
    if name.starts_with('.') {
        return invalid("a name must not start with `.`");
    }
    if name == RESERVED_NAME {
        return invalid("`provenance.json` is reserved for the job's provenance record");
    }
    Ok(())
}

pub struct ArtifactStore {
    root: PathBuf,
    max_bytes: u64,
    /// Serializes the duplicate check and the rename into place, so that two
    /// uploads of one name cannot both succeed.
    publish: Mutex<()>,
}

impl ArtifactStore {
    pub fn new(root: PathBuf, max_bytes: u64) -> ArtifactStore {
        ArtifactStore {
            root,
            max_bytes,
            publish: Mutex::new(()),
        }
    }

    /// Streams an upload to disk and returns its record (not yet in the store).
    ///
    /// The upload is written to `<job dir>/.<name>.partial-<random>`, which is
    /// deleted on every error and when the returned future is dropped before
    /// it completes. Only a complete, checked upload is renamed into place,
    /// after an `fsync` of its data.
    ///
    /// # Errors
    ///
    /// An invalid name, a name already used in the job, an upload larger
    /// than the store's limit, an error from `chunks`, a directory archive
    /// that is not a valid tar.gz or has an unsafe entry, and I/O errors.
    pub async fn receive<S>(
        &self,
        meta: IncomingArtifact,
        mut chunks: S,
    ) -> Result<ArtifactRecord, ArtifactError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        validate_name(&meta.name)?;
        let job_dir = self.job_dir(&meta.job_id)?;
        tokio::fs::create_dir_all(&job_dir)
            .await
            .map_err(|source| ArtifactError::CreateDir {
                path: job_dir.clone(),
                source,
            })?;
        // The name is checked again when publishing. This early check saves
        // receiving a large upload that cannot be stored.
        self.check_name_free(&meta.job_id, &job_dir, &meta.name)?;

        let partial_path = job_dir.join(format!(
            ".{}.partial-{:016x}",
            meta.name,
            rand::random::<u64>()
        ));
        let partial = PartialFile::new(partial_path.clone());
        let write_error = |source| ArtifactError::Write {
            name: meta.name.clone(),
            path: partial_path.clone(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial_path)
            .await
            .map_err(write_error)?;

        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|source| ArtifactError::Upload {
                name: meta.name.clone(),
                source,
            })?;
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(ArtifactError::TooLarge {
                    name: meta.name.clone(),
                    limit: self.max_bytes,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        // tokio's `File` may still have a write in flight, and `flush` waits
        // for it before the data is synced.
        file.flush().await.map_err(write_error)?;
        file.sync_all().await.map_err(write_error)?;
        drop(file);

        if meta.kind == ArtifactKind::Directory {
            let path = partial_path.clone();
            let archive_name = meta.name.clone();
            tokio::task::spawn_blocking(move || archive::verify(&path, &archive_name))
                .await
                .map_err(|join| ArtifactError::InvalidArchive {
                    archive: meta.name.clone(),
                    source: io::Error::other(join),
                })??;
        }

        let final_path = self.path_of(&meta.job_id, &meta.name, meta.kind);
        self.publish(&meta, &job_dir, partial, &final_path)?;
        tracing::debug!(job_id = %meta.job_id, artifact = %meta.name, size, "stored artifact");

        Ok(ArtifactRecord {
            job_id: meta.job_id,
            name: meta.name,
            kind: meta.kind.as_str().to_owned(),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            sha256: hex::encode(hasher.finalize()),
            source_path: meta.source_path,
            task: meta.task,
            created_at: now_millis(),
        })
    }

    /// Path of a stored artifact's bytes: `<name>` for a file and
    /// `<name>.tar.gz` for a directory, in the job's artifact directory.
    pub fn path_of(&self, job: &JobId, name: &str, kind: ArtifactKind) -> PathBuf {
        let dir = self.root.join(job.as_str());
        match kind {
            ArtifactKind::File => dir.join(name),
            ArtifactKind::Directory => dir.join(format!("{name}.tar.gz")),
        }
    }

    fn job_dir(&self, job: &JobId) -> Result<PathBuf, ArtifactError> {
        let id = job.as_str();
        let single_component =
            !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\\', '\0']);
        if !single_component {
            return Err(ArtifactError::InvalidJobId { job: job.clone() });
        }
        Ok(self.root.join(id))
    }

    /// Fails with `Duplicate` if a file of either kind exists for `name`.
    fn check_name_free(
        &self,
        job: &JobId,
        job_dir: &Path,
        name: &str,
    ) -> Result<(), ArtifactError> {
        for stored in [name.to_owned(), format!("{name}.tar.gz")] {
            let taken = match std::fs::symlink_metadata(job_dir.join(&stored)) {
                Ok(_) => true,
                Err(err) if err.kind() == io::ErrorKind::NotFound => false,
                Err(source) => {
                    return Err(ArtifactError::Publish {
                        name: name.to_owned(),
                        path: job_dir.join(&stored),
                        source,
                    });
                }
            };
            if taken {
                return Err(ArtifactError::Duplicate {
                    job: job.clone(),
                    name: name.to_owned(),
                    stored,
                });
            }
        }
        Ok(())
    }

    fn publish(
        &self,
        meta: &IncomingArtifact,
        job_dir: &Path,
        partial: PartialFile,
        final_path: &Path,
    ) -> Result<(), ArtifactError> {
        let _guard = self.publish.lock().unwrap_or_else(PoisonError::into_inner);
        self.check_name_free(&meta.job_id, job_dir, &meta.name)?;
        std::fs::rename(&partial.path, final_path).map_err(|source| ArtifactError::Publish {
            name: meta.name.clone(),
            path: final_path.to_owned(),
            source,
        })?;
        partial.keep();
        Ok(())
    }
}

/// A temporary upload file, deleted when dropped unless kept.
struct PartialFile {
    path: PathBuf,
    delete_on_drop: bool,
}

impl PartialFile {
    fn new(path: PathBuf) -> PartialFile {
        PartialFile {
            path,
            delete_on_drop: true,
        }
    }

    /// Keeps the file, which has been renamed away.
    fn keep(mut self) {
        self.delete_on_drop = false;
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.delete_on_drop {
            return;
        }
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                path = %self.path.display(),
                error = %err,
                "failed to delete a partial artifact upload"
            );
        }
    }
}

#[cfg(test)]
mod tests;
