//! Listing folders and reading files of a job workspace on this machine,
//! for a user debugging a paused step. Every path stays inside the
//! workspace: absolute paths and `..` are rejected before the file system is
//! touched, and symbolic links are resolved and checked against the
//! workspace root.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::backend::{BackendError, DirectoryEntry, WorkspaceEntry};

/// Lists the folder or reads the start of the file at `relative` below
/// `root`; see [`crate::backend::Backend::browse_workspace`].
///
/// NOTE: the path is checked when it is resolved, so a step that swaps a
/// folder for a symbolic link between the check and the read could still
/// lead it outside. A paused job runs no step of its own, but an ad-hoc
/// command running at the same time could.
pub(crate) fn browse(
    root: &Path,
    relative: &str,
    max_bytes: u64,
) -> Result<WorkspaceEntry, BackendError> {
    let clean = clean_relative(relative)?;
    let shown = clean.to_string_lossy().into_owned();
    let read_error = |source: io::Error| BackendError::ReadWorkspace {
        path: shown.clone(),
        source,
    };

    let root = fs::canonicalize(root).map_err(read_error)?;
    let resolved = match fs::canonicalize(root.join(&clean)) {
        Ok(resolved) => resolved,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(BackendError::WorkspacePathNotFound { path: shown });
        }
        Err(err) => return Err(read_error(err)),
    };
    if !resolved.starts_with(&root) {
        return Err(BackendError::InvalidWorkspacePath {
            path: shown,
            reason: "it is a symbolic link that leads out of the workspace",
        });
    }

    let metadata = fs::metadata(&resolved).map_err(read_error)?;
    if metadata.is_dir() {
        let entries = list_directory(&resolved).map_err(read_error)?;
        Ok(WorkspaceEntry::Directory {
            path: shown,
            entries,
        })
    } else if metadata.is_file() {
        let content = read_start(&resolved, max_bytes).map_err(read_error)?;
        Ok(WorkspaceEntry::File {
            path: shown,
            size_bytes: metadata.len(),
            truncated: (content.len() as u64) < metadata.len(),
            content,
        })
    } else {
        Err(BackendError::InvalidWorkspacePath {
            path: shown,
            reason: "it is neither a file nor a folder",
        })
    }
}

/// Turns a user's path into one relative to the workspace root: `.` and
/// empty parts are dropped, and `..`, absolute paths and NUL are rejected.
fn clean_relative(relative: &str) -> Result<PathBuf, BackendError> {
    let invalid = |reason| BackendError::InvalidWorkspacePath {
        path: relative.to_owned(),
        reason,
    };
    if relative.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }

    let mut clean = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(
                    "`..` is not allowed; give the path from the workspace root",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(
                    "absolute paths are not allowed; give the path from the workspace root",
                ));
            }
        }
    }
    Ok(clean)
}

fn list_directory(dir: &Path) -> io::Result<Vec<DirectoryEntry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Not followed: a link is shown as a link wherever it points.
        let metadata = entry.metadata()?;
        let file_type = metadata.file_type();
        let kind = if file_type.is_symlink() {
            "symlink"
        } else if file_type.is_dir() {
            "directory"
        } else if file_type.is_file() {
            "file"
        } else {
            "other"
        };
        entries.push(DirectoryEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind,
            size_bytes: if file_type.is_file() {
                metadata.len()
            } else {
                0
            },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn read_start(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut content = Vec::new();
    fs::File::open(path)?
        .take(max_bytes)
        .read_to_end(&mut content)?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.py"), "print('hi')\n").unwrap();
        fs::write(dir.path().join("README"), "read me").unwrap();
        dir
    }

    fn invalid_reason(result: Result<WorkspaceEntry, BackendError>) -> &'static str {
        match result {
            Err(BackendError::InvalidWorkspacePath { reason, .. }) => reason,
            other => panic!("expected an invalid path, got {other:?}"),
        }
    }

    #[test]
    fn root_lists_entries_by_name() {
        let dir = workspace();

        let entry = browse(dir.path(), "", 1024).unwrap();

        let WorkspaceEntry::Directory { path, entries } = entry else {
            panic!("the root is a folder");
        };
        assert_eq!(path, "");
        let names: Vec<(&str, &str, u64)> = entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.kind, entry.size_bytes))
            .collect();
        assert_eq!(names, [("README", "file", 7), ("src", "directory", 0)]);
    }

    #[test]
    fn file_is_read_up_to_limit() {
        let dir = workspace();

        let entry = browse(dir.path(), "./src/main.py", 5).unwrap();

        assert_eq!(
            entry,
            WorkspaceEntry::File {
                path: "src/main.py".into(),
                size_bytes: 12,
                content: b"print".to_vec(),
                truncated: true,
            }
        );
    }

    #[test]
    fn parent_and_absolute_paths_are_rejected() {
        let dir = workspace();

        assert!(invalid_reason(browse(dir.path(), "src/../../etc", 10)).contains("`..`"));
        assert!(invalid_reason(browse(dir.path(), "/etc/passwd", 10)).contains("absolute"));
    }

    #[test]
    fn symlink_out_of_workspace_is_rejected() {
        let dir = workspace();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s3cret").unwrap();
        symlink(outside.path(), dir.path().join("escape")).unwrap();

        let reason = invalid_reason(browse(dir.path(), "escape/secret", 100));

        assert!(reason.contains("symbolic link"), "{reason}");
    }

    #[test]
    fn symlink_inside_workspace_is_followed() {
        let dir = workspace();
        symlink("src/main.py", dir.path().join("entry.py")).unwrap();

        let entry = browse(dir.path(), "entry.py", 100).unwrap();

        assert!(
            matches!(&entry, WorkspaceEntry::File { content, .. } if content == b"print('hi')\n"),
            "{entry:?}"
        );
        let WorkspaceEntry::Directory { entries, .. } = browse(dir.path(), ".", 100).unwrap()
        else {
            panic!("the root is a folder");
        };
        let link = entries
            .iter()
            .find(|entry| entry.name == "entry.py")
            .unwrap();
        assert_eq!(link.kind, "symlink");
    }

    #[test]
    fn missing_path_is_not_found() {
        let dir = workspace();

        let result = browse(dir.path(), "src/nope.py", 100);

        assert!(
            matches!(&result, Err(BackendError::WorkspacePathNotFound { path }) if path == "src/nope.py"),
            "{result:?}"
        );
    }
}
