//! The data directory: where the database, logs, artifacts, workspaces and
//! keys live, and the checks that it is usable before anything is written.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::model::JobId;

/// Fix appended to every error: choosing another data directory.
const CHOOSE_ANOTHER: &str = "choose another with --data-dir or DANUBE_DATA_DIR";

/// Mode of `keys/`: only the owner may list or open the key files.
const KEYS_DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("data directory `{path}` cannot be made absolute: {source}; {CHOOSE_ANOTHER}")]
    ResolvePath { path: PathBuf, source: io::Error },

    #[error("data directory `{path}` is not a directory; {CHOOSE_ANOTHER}")]
    NotADirectory { path: PathBuf },

    #[error("failed to create data directory `{path}`: {source}; {CHOOSE_ANOTHER}")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error(
        "failed to restrict key directory `{path}` to mode 0700: {source}; \
         run `chmod 700 {path}` or {CHOOSE_ANOTHER}"
    )]
    RestrictKeysDir { path: PathBuf, source: io::Error },

    #[error("data directory `{path}` is not writable: {source}; {CHOOSE_ANOTHER}")]
    NotWritable { path: PathBuf, source: io::Error },
}

/// A data directory that exists and is writable.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Returns the directory to use: `explicit` if given, else the platform's user
    /// data directory joined with `danube` (for example
    /// `~/.local/share/danube` on Linux).
    ///
    /// Without a platform directory it falls back to
    /// `$HOME/.local/share/danube`, and without `HOME` to `/var/lib/danube`,
    /// the directory of a system service. Nothing is created or checked here;
    /// [`DataDir::open`] does that.
    pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
        if let Some(path) = explicit {
            return path;
        }
        if let Some(platform) = dirs::data_dir() {
            return platform.join("danube");
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/danube"),
            _ => PathBuf::from("/var/lib/danube"),
        }
    }

    /// Creates the layout under `root` (`logs/`, `artifacts/`, `workspaces/`,
    /// `keys/` with mode 0700, `python/`) and checks it is writable.
    ///
    /// A relative `root` is made absolute against the current directory, so
    /// paths handed to child processes stay valid wherever they run. An
    /// existing `keys/` that group or others may enter is narrowed to 0700.
    ///
    /// # Errors
    ///
    /// Every error names the directory and the way to choose another one.
    /// Writability is checked by creating and removing a probe file in the
    /// root and in each subdirectory, because permission bits alone do not
    /// tell (read-only mounts, ACLs, a process running as root).
    pub fn open(root: &Path) -> Result<DataDir, ConfigError> {
        let root = std::path::absolute(root).map_err(|source| ConfigError::ResolvePath {
            path: root.to_path_buf(),
            source,
        })?;
        match std::fs::metadata(&root) {
            Ok(metadata) if !metadata.is_dir() => {
                return Err(ConfigError::NotADirectory { path: root });
            }
            _ => {}
        }
        create_dir(&root, None)?;
        let data_dir = DataDir { root };

        let keys_dir = data_dir.keys_dir();
        let subdirs = [
            (data_dir.logs_dir(), None),
            (data_dir.artifacts_dir(), None),
            (data_dir.workspaces_dir(), None),
            (data_dir.python_dir(), None),
            (keys_dir.clone(), Some(KEYS_DIR_MODE)),
        ];
        for (dir, mode) in &subdirs {
            create_dir(dir, *mode)?;
        }
        restrict_keys_dir(&keys_dir)?;

        probe_writable(data_dir.root())?;
        for (dir, _) in &subdirs {
            probe_writable(dir)?;
        }
        tracing::debug!(data_dir = %data_dir.root.display(), "data directory ready");
        Ok(data_dir)
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

    /// Clones of server jobs' repositories, one folder per job, removed
    /// when the job ends.
    pub fn checkouts_dir(&self) -> PathBuf {
        self.root.join("checkouts")
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

/// Creates `dir` and its missing parents; `mode` applies to the directories
/// created here, never to ones that already exist.
fn create_dir(dir: &Path, mode: Option<u32>) -> Result<(), ConfigError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    if let Some(mode) = mode {
        builder.mode(mode);
    }
    builder
        .create(dir)
        .map_err(|source| ConfigError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

fn restrict_keys_dir(keys_dir: &Path) -> Result<(), ConfigError> {
    let restrict = |source| ConfigError::RestrictKeysDir {
        path: keys_dir.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(keys_dir)
        .map_err(restrict)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(keys_dir, std::fs::Permissions::from_mode(KEYS_DIR_MODE))
            .map_err(restrict)?;
        tracing::info!(
            path = %keys_dir.display(),
            old_mode = format!("{mode:o}"),
            "narrowed key directory to mode 0700"
        );
    }
    Ok(())
}

fn probe_writable(dir: &Path) -> Result<(), ConfigError> {
    let not_writable = |source| ConfigError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    let probe = dir.join(format!(
        ".danube-write-probe-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn resolve_prefers_explicit_path() {
        let explicit = PathBuf::from("/srv/danube-data");
        assert_eq!(DataDir::resolve(Some(explicit.clone())), explicit);
    }

    #[test]
    fn resolve_defaults_to_a_danube_directory() {
        let resolved = DataDir::resolve(None);
        assert!(resolved.is_absolute(), "{}", resolved.display());
        assert_eq!(resolved.file_name().unwrap(), "danube");
        if let Some(platform) = dirs::data_dir() {
            assert_eq!(resolved, platform.join("danube"));
        }
    }

    #[test]
    fn open_creates_layout() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("nested/data");

        let data_dir = DataDir::open(&root).unwrap();

        assert_eq!(data_dir.root(), root);
        for dir in [
            data_dir.logs_dir(),
            data_dir.artifacts_dir(),
            data_dir.workspaces_dir(),
            data_dir.keys_dir(),
            data_dir.python_dir(),
        ] {
            assert!(dir.is_dir(), "{} is missing", dir.display());
        }
        assert_eq!(mode_of(&data_dir.keys_dir()), 0o700);
        assert_eq!(data_dir.database_path(), root.join("danube.db"));
        assert_eq!(
            data_dir.encryption_key_path(),
            root.join("keys/encryption.key")
        );
    }

    #[test]
    fn open_leaves_no_probe_files() {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(temp.path()).unwrap();

        let mut names: Vec<String> = std::fs::read_dir(data_dir.root())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["artifacts", "keys", "logs", "python", "workspaces"]);
        assert_eq!(std::fs::read_dir(data_dir.keys_dir()).unwrap().count(), 0);
    }

    #[test]
    fn open_twice_is_fine() {
        let temp = tempfile::tempdir().unwrap();
        DataDir::open(temp.path()).unwrap();
        DataDir::open(temp.path()).unwrap();
    }

    #[test]
    fn open_narrows_an_open_keys_dir() {
        let temp = tempfile::tempdir().unwrap();
        let keys = temp.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();

        DataDir::open(temp.path()).unwrap();

        assert_eq!(mode_of(&keys), 0o700);
    }

    #[test]
    fn open_under_a_regular_file_names_path_and_fix() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("plain-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let root = file.join("data");

        let error = DataDir::open(&root).unwrap_err();

        assert!(matches!(error, ConfigError::CreateDir { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("`{}`", root.display())),
            "{message}"
        );
        assert!(
            message.contains("--data-dir or DANUBE_DATA_DIR"),
            "{message}"
        );
    }

    #[test]
    fn open_on_a_regular_file_is_rejected() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("plain-file");
        std::fs::write(&file, b"not a directory").unwrap();

        let error = DataDir::open(&file).unwrap_err();

        assert!(
            matches!(error, ConfigError::NotADirectory { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("is not a directory"));
    }

    #[test]
    fn open_read_only_directory_is_not_writable() {
        // Root bypasses permission bits, so a mode-0500 directory stays
        // writable for it and open would succeed.
        if nix::unistd::geteuid().is_root() {
            eprintln!("skipped: running as root, where mode 0500 does not stop writes");
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("read-only");
        std::fs::create_dir(&root).unwrap();
        for name in ["logs", "artifacts", "workspaces", "python", "keys"] {
            std::fs::create_dir(root.join(name)).unwrap();
        }
        std::fs::set_permissions(root.join("keys"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o500)).unwrap();

        let error = DataDir::open(&root).unwrap_err();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();

        assert!(
            matches!(error, ConfigError::NotWritable { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "data directory `{}` is not writable: Permission denied",
                root.display()
            )),
            "{message}"
        );
        assert!(message.ends_with(CHOOSE_ANOTHER), "{message}");
    }
}
