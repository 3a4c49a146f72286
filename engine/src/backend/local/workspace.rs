//! Copying a project folder into a job workspace the way a CI checkout looks.
//!
//! A checkout contains the files Git tracks, so the copy takes every path in the
//! Git index (force-added files that match `.gitignore` included) plus the
//! untracked files that Git would not ignore. Ignore rules come from
//! `.gitignore` files at any depth, `.git/info/exclude` and the user's global
//! excludes file; `.gitignore` is honoured in a folder that is not a Git
//! repository too. `.git` is never copied. Regular files keep their
//! permission bits and symbolic links are copied as links, never followed.
//!
//! The copy reflects the working tree, not a commit: uncommitted edits are
//! included and a tracked file deleted from the working tree is left out.
//! Empty directories are not copied, as Git does not track them.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::backend::{BackendError, Workspace};
use crate::model::JobId;

/// Git's file mode for a submodule entry in the index.
const GITLINK_MODE: u32 = 0o160000;
const FILE_TYPE_MASK: u32 = 0o170000;

/// Makes the workspace of `job`: a copy of `project` in
/// `<workspaces_root>/<job id>/`, or `project` itself when `in_place`. The
/// returned path is absolute.
///
/// # Errors
///
/// Fails if the project is not a readable directory, the workspace already
/// exists, or listing or copying a file fails. A failed copy removes what
/// it had copied.
pub(crate) async fn prepare_workspace(
    workspaces_root: &Path,
    job: &JobId,
    project: &Path,
    in_place: bool,
) -> Result<Workspace, BackendError> {
    let workspaces_root = workspaces_root.to_path_buf();
    let job = job.clone();
    let project = project.to_path_buf();

    let task_path = project.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let project = canonical_project(&project)?;
        if in_place {
            return Ok(Workspace {
                path: project,
                in_place: true,
            });
        }
        copy_project(&workspaces_root, &job, &project)
    });
    join_blocking(blocking, task_path).await?
}

/// Deletes a copied workspace, including read-only files and directories
/// inside it (Go's module cache makes those). An in-place workspace and one
/// that is already gone are left alone.
///
/// # Errors
///
/// Refuses a path outside `workspaces_root`, and fails if a file cannot be
/// deleted (for example one created by another user inside a container).
pub(crate) async fn remove_workspace(
    workspaces_root: &Path,
    workspace: &Workspace,
) -> Result<(), BackendError> {
    if workspace.in_place {
        return Ok(());
    }
    let root = workspaces_root.to_path_buf();
    let path = workspace.path.clone();

    let blocking = tokio::task::spawn_blocking(move || {
        let root = fs::canonicalize(&root).unwrap_or(root);
        let inside_root = path.starts_with(&root) && path != root && !has_parent_component(&path);
        if !inside_root {
            return Err(BackendError::RemoveOutsideRoot { path, root });
        }
        remove_tree(&path).map_err(|source| BackendError::RemoveWorkspace { path, source })
    });
    join_blocking(blocking, workspace.path.clone()).await?
}

/// Lists the files of `project` that a CI checkout would have, as paths
/// relative to `project`, sorted: see the module documentation for the
/// rules. Directories are not listed; symbolic links are, whatever they
/// point to.
///
/// Blocking: call it from a blocking thread.
///
/// # Errors
///
/// Fails if the Git index cannot be read or a directory cannot be listed.
pub fn list_project_files(project: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let project = canonical_project(project)?;
    let files = collect_files(&project, None)?;
    Ok(files.into_iter().collect())
}

fn canonical_project(project: &Path) -> Result<PathBuf, BackendError> {
    let open_error = |source| BackendError::OpenProject {
        path: project.to_path_buf(),
        source,
    };
    let canonical = fs::canonicalize(project).map_err(open_error)?;
    if !canonical.is_dir() {
        return Err(open_error(io::Error::new(
            io::ErrorKind::NotADirectory,
            "the project path is not a directory",
        )));
    }
    Ok(canonical)
}

fn copy_project(
    workspaces_root: &Path,
    job: &JobId,
    project: &Path,
) -> Result<Workspace, BackendError> {
    fs::create_dir_all(workspaces_root).map_err(|source| BackendError::CreateWorkspace {
        path: workspaces_root.to_path_buf(),
        source,
    })?;
    let root =
        fs::canonicalize(workspaces_root).map_err(|source| BackendError::CreateWorkspace {
            path: workspaces_root.to_path_buf(),
            source,
        })?;
    let destination = root.join(job.as_str());
    if !is_plain_name(job.as_str()) {
        return Err(BackendError::CreateWorkspace {
            path: destination,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "the job id is not a plain directory name",
            ),
        });
    }
    // create_dir, not create_dir_all: a leftover directory of the same job
    // must not be mixed into the new copy.
    fs::create_dir(&destination).map_err(|source| BackendError::CreateWorkspace {
        path: destination.clone(),
        source,
    })?;

    // A data directory inside the project must not be copied into itself.
    let files = collect_files(project, Some(&root))
        .and_then(|files| copy_files(project, &destination, &files));
    match files {
        Ok(copied) => {
            tracing::debug!(job_id = %job, files = copied, path = %destination.display(), "copied project into workspace");
            Ok(Workspace {
                path: destination,
                in_place: false,
            })
        }
        Err(err) => {
            if let Err(cleanup) = remove_tree(&destination) {
                tracing::warn!(path = %destination.display(), error = %cleanup, "failed to remove partly copied workspace");
            }
            Err(err)
        }
    }
}

/// Collects tracked and untracked-but-not-ignored files of `project`,
/// relative to it, leaving out anything under `excluded`.
fn collect_files(
    project: &Path,
    excluded: Option<&Path>,
) -> Result<BTreeSet<PathBuf>, BackendError> {
    let is_excluded = |path: &Path| excluded.is_some_and(|excluded| path.starts_with(excluded));
    let mut files = tracked_files(project)?;
    files.retain(|relative| !is_excluded(&project.join(relative)));

    let excluded_dir = excluded.map(Path::to_path_buf);
    let walker = ignore::WalkBuilder::new(project)
        .hidden(false)
        .ignore(false)
        .parents(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(move |entry| {
            entry.file_name() != OsStr::new(".git")
                && !excluded_dir
                    .as_deref()
                    .is_some_and(|excluded| entry.path().starts_with(excluded))
        })
        .build();

    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            // A malformed line in a `.gitignore` is a partial error: the
            // other rules still apply, as they do for Git.
            Err(err) if err.is_partial() => {
                tracing::warn!(error = %err, "ignoring an invalid rule in an ignore file");
                continue;
            }
            Err(source) => {
                return Err(BackendError::ListProjectFiles {
                    path: project.to_path_buf(),
                    source,
                });
            }
        };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        if let Ok(relative) = entry.path().strip_prefix(project) {
            files.insert(relative.to_path_buf());
        }
    }
    Ok(files)
}

/// Lists the paths in the Git index under `project`, relative to `project`.
/// Empty when `project` is not inside a Git repository with a working tree.
fn tracked_files(project: &Path) -> Result<BTreeSet<PathBuf>, BackendError> {
    let mut files = BTreeSet::new();
    let repository = match git2::Repository::discover(project) {
        Ok(repository) => repository,
        Err(err) if err.code() == git2::ErrorCode::NotFound => return Ok(files),
        Err(source) => {
            return Err(BackendError::ReadGitIndex {
                path: project.to_path_buf(),
                source,
            });
        }
    };
    let Some(workdir) = repository.workdir() else {
        return Ok(files);
    };
    let workdir = fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    let Ok(prefix) = project.strip_prefix(&workdir) else {
        return Ok(files);
    };

    let index = repository
        .index()
        .map_err(|source| BackendError::ReadGitIndex {
            path: workdir.clone(),
            source,
        })?;
    for entry in index.iter() {
        // A submodule's own files come from the walk of its folder.
        if entry.mode & FILE_TYPE_MASK == GITLINK_MODE {
            continue;
        }
        let path = Path::new(OsStr::from_bytes(&entry.path));
        if let Ok(relative) = path.strip_prefix(prefix)
            && is_normal_relative(relative)
        {
            files.insert(relative.to_path_buf());
        }
    }
    Ok(files)
}

/// Copies `files` from `project` into `destination`. Returns how many were
/// copied; tracked files missing from the working tree are skipped.
fn copy_files(
    project: &Path,
    destination: &Path,
    files: &BTreeSet<PathBuf>,
) -> Result<usize, BackendError> {
    let mut safe_dirs = HashSet::new();
    let mut copied = 0;

    for relative in files {
        let from = project.join(relative);
        let to = destination.join(relative);
        let copy_error = |source| BackendError::CopyIntoWorkspace {
            from: from.clone(),
            to: to.clone(),
            source,
        };

        // An index entry can name a path below a symbolic link (a folder
        // replaced by a link after it was added). Copying it would follow
        // the link, possibly out of the project.
        if has_symlink_ancestor(project, relative, &mut safe_dirs).map_err(copy_error)? {
            tracing::debug!(path = %relative.display(), "skipping a tracked path below a symbolic link");
            continue;
        }
        let metadata = match fs::symlink_metadata(&from) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %relative.display(), "skipping a tracked file deleted from the working tree");
                continue;
            }
            Err(err) => return Err(copy_error(err)),
        };
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(copy_error)?;
        }

        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(&from).map_err(copy_error)?;
            std::os::unix::fs::symlink(&target, &to).map_err(copy_error)?;
        } else if file_type.is_file() {
            // fs::copy also copies the permission bits, executable bit included.
            fs::copy(&from, &to).map_err(copy_error)?;
        } else {
            tracing::debug!(path = %relative.display(), "skipping a path that is neither a file nor a symbolic link");
            continue;
        }
        copied += 1;
    }
    Ok(copied)
}

/// Returns true if a directory on the way from `project` to `relative` is a
/// symbolic link. Directories found safe are remembered in `safe_dirs`.
fn has_symlink_ancestor(
    project: &Path,
    relative: &Path,
    safe_dirs: &mut HashSet<PathBuf>,
) -> io::Result<bool> {
    let mut ancestors: Vec<&Path> = relative
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty())
        .collect();
    ancestors.reverse();
    for dir in ancestors {
        if safe_dirs.contains(dir) {
            continue;
        }
        match fs::symlink_metadata(project.join(dir)) {
            Ok(metadata) if metadata.file_type().is_symlink() => return Ok(true),
            Ok(_) => {
                safe_dirs.insert(dir.to_path_buf());
            }
            // The file is gone too; the caller skips it.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

/// Deletes a directory tree after giving the owner write access to every
/// directory in it, since a read-only directory's entries cannot be unlinked.
/// A tree that does not exist is not an error.
fn remove_tree(path: &Path) -> io::Result<()> {
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let metadata = match fs::symlink_metadata(&dir) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if !metadata.is_dir() {
            continue;
        }
        let mode = metadata.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))?;
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
    }

    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

async fn join_blocking<T>(
    task: tokio::task::JoinHandle<T>,
    path: PathBuf,
) -> Result<T, BackendError> {
    match task.await {
        Ok(value) => Ok(value),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(source) => Err(BackendError::WorkspaceTask { path, source }),
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn is_normal_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

fn has_parent_component(path: &Path) -> bool {
    path.components()
        .any(|component| component == Component::ParentDir)
}

#[cfg(test)]
mod tests;
