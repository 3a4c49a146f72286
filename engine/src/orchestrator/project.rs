//! The checks that a path names a project folder, shared by `danube run`,
//! `POST /api/v1/jobs` and [`Engine::submit`](super::Engine::submit), so
//! that each names a wrong path the same way.

use std::io;
use std::path::{Path, PathBuf};

use super::PIPELINE_FILE;

/// A path that is not a project folder, with the fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "project folder `{path}` does not exist: pass the folder that contains {PIPELINE_FILE}",
        path = .0.display()
    )]
    Missing(PathBuf),

    #[error(
        "`{path}` is a file; pass the folder that contains {PIPELINE_FILE}: `{folder}`",
        path = .path.display(),
        folder = .folder.display()
    )]
    FileInProject { path: PathBuf, folder: PathBuf },

    #[error(
        "`{path}` is a file; pass the folder that contains {PIPELINE_FILE}",
        path = .0.display()
    )]
    File(PathBuf),

    #[error(
        "`{path}` is not a folder: pass the folder that contains {PIPELINE_FILE}",
        path = .0.display()
    )]
    NotFolder(PathBuf),

    #[error("project folder `{path}` is not readable: {source}", path = .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "no {PIPELINE_FILE} in `{path}`: create one (see the README for a first pipeline) or pass the folder that contains it",
        path = .0.display()
    )]
    NoPipelineFile(PathBuf),
}

/// Checks that `path` is a folder that contains [`PIPELINE_FILE`] and
/// returns its canonical path.
///
/// # Errors
///
/// A [`ProjectError`] variant for each way the path can be wrong. For a
/// file, [`ProjectError::FileInProject`] names the file's folder when that
/// folder contains [`PIPELINE_FILE`].
pub fn check_project(path: &Path) -> Result<PathBuf, ProjectError> {
    let unreadable = |source| ProjectError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(ProjectError::Missing(path.to_owned()));
        }
        Err(err) => return Err(unreadable(err)),
    };

    if metadata.is_file() {
        let folder = match path.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => return Err(ProjectError::File(path.to_owned())),
        };
        if folder.join(PIPELINE_FILE).is_file() {
            return Err(ProjectError::FileInProject {
                path: path.to_owned(),
                folder: folder.to_owned(),
            });
        }
        return Err(ProjectError::File(path.to_owned()));
    }
    if !metadata.is_dir() {
        return Err(ProjectError::NotFolder(path.to_owned()));
    }

    let project = path.canonicalize().map_err(unreadable)?;
    if !project.join(PIPELINE_FILE).is_file() {
        return Err(ProjectError::NoPipelineFile(project));
    }
    Ok(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_in(root: &Path) -> PathBuf {
        let project = root.join("proj");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join(PIPELINE_FILE), "").unwrap();
        project
    }

    #[test]
    fn project_folder_is_returned_canonical() {
        let root = tempfile::tempdir().unwrap();
        let project = project_in(root.path());

        let checked = check_project(&project.join("..").join("proj")).unwrap();

        assert_eq!(checked, project.canonicalize().unwrap());
    }

    #[test]
    fn pipeline_file_suggests_its_folder() {
        let root = tempfile::tempdir().unwrap();
        let project = project_in(root.path());
        let file = project.join(PIPELINE_FILE);

        let err = check_project(&file).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is a file; pass the folder that contains danubefile.py: `{}`",
                file.display(),
                project.display()
            )
        );
    }

    #[test]
    fn file_beside_pipeline_file_suggests_its_folder() {
        let root = tempfile::tempdir().unwrap();
        let project = project_in(root.path());
        let file = project.join("README.md");
        std::fs::write(&file, "").unwrap();

        let err = check_project(&file).unwrap_err();

        assert!(
            matches!(&err, ProjectError::FileInProject { folder, .. } if *folder == project),
            "{err}"
        );
    }

    #[test]
    fn file_outside_a_project_suggests_no_folder() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("notes.txt");
        std::fs::write(&file, "").unwrap();

        let err = check_project(&file).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is a file; pass the folder that contains danubefile.py",
                file.display()
            )
        );
    }

    #[test]
    fn missing_path_is_named() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nope");

        let err = check_project(&missing).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "project folder `{}` does not exist: pass the folder that contains danubefile.py",
                missing.display()
            )
        );
    }

    #[test]
    fn fifo_is_not_a_folder() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());

        let err = check_project(&fifo).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is not a folder: pass the folder that contains danubefile.py",
                fifo.display()
            )
        );
    }

    #[test]
    fn folder_without_pipeline_file_is_named_canonical() {
        let root = tempfile::tempdir().unwrap();
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();

        let err = check_project(&empty.join(".")).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "no danubefile.py in `{}`: create one (see the README for a first pipeline) or pass the folder that contains it",
                empty.canonicalize().unwrap().display()
            )
        );
    }
}
