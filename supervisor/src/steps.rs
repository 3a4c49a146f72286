//! Where a step leaves its traces in the pod, so that the engine
//! can reattach after a dropped exec connection:
//!
//! ```text
//! <state dir>/<step id>/started  empty; its ctime is when the step began
//! <state dir>/<step id>/stdout   everything the step wrote to stdout
//! <state dir>/<step id>/stderr   everything the step wrote to stderr
//! <state dir>/<step id>/pgid     the step's process group id, once started
//! <state dir>/<step id>/exit     `exited N`, written once the step is over
//! ```
//!
//! `exit` is written to a temporary name and renamed, so a reader sees it
//! whole or not at all. Output files are complete once `exit` exists.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// State directory when none is given: on the job pod's `state` volume,
/// which every container that runs steps mounts, and out of the user's
/// workspace, so that a step emptying `/workspace` keeps its records.
pub const DEFAULT_STATE_DIR: &str = "/danube-state/steps";

/// Longest step id accepted.
const MAX_ID_LEN: usize = 64;

/// The files of one step.
pub struct StepDir {
    path: PathBuf,
}

/// How a step ended, as recorded in its `exit` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// The shell's exit code, 128 + N when signal N ended it.
    pub code: i32,
}

impl StepDir {
    /// Returns the directory of step `id` under `state_dir`.
    ///
    /// # Errors
    ///
    /// Rejects an id that is not 1 to 64 ASCII letters, digits, `-` or `_`,
    /// so that an id never names a path outside `state_dir`.
    pub fn new(state_dir: &Path, id: &str) -> Result<StepDir, String> {
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid {
            return Err(format!(
                "invalid step id `{}`: use 1 to {MAX_ID_LEN} ASCII letters, digits, `-` or `_`",
                id.chars().take(MAX_ID_LEN).collect::<String>()
            ));
        }
        Ok(StepDir {
            path: state_dir.join(id),
        })
    }

    /// Creates the directory and its `started` marker; fails if the step
    /// id was used before, so that two runs never mix their output.
    pub fn create(&self) -> io::Result<()> {
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::create_dir(&self.path)?;
        fs::write(self.path.join("started"), b"")
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }

    pub fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }

    fn pgid_path(&self) -> PathBuf {
        self.path.join("pgid")
    }

    fn exit_path(&self) -> PathBuf {
        self.path.join("exit")
    }

    pub fn write_pgid(&self, pgid: libc::pid_t) -> io::Result<()> {
        write_atomically(&self.pgid_path(), &format!("{pgid}\n"))
    }

    /// Returns the step's process group, once it started.
    pub fn read_pgid(&self) -> Option<libc::pid_t> {
        let text = fs::read_to_string(self.pgid_path()).ok()?;
        text.trim().parse().ok()
    }

    pub fn write_exit(&self, record: ExitRecord) -> io::Result<()> {
        write_atomically(&self.exit_path(), &format!("exited {}\n", record.code))
    }

    /// Returns the recorded end of the step; `None` while it runs.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        let text = fs::read_to_string(self.exit_path()).ok()?;
        let code = text.trim().strip_prefix("exited ")?.parse().ok()?;
        Some(ExitRecord { code })
    }
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, text)?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_are_rejected() {
        let root = Path::new("/state");
        for id in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(StepDir::new(root, id).is_err(), "{id:?}");
        }
        assert!(StepDir::new(root, "step-12_a").is_ok());
    }

    #[test]
    fn exit_record_round_trips() {
        let temp = tempfile::tempdir().unwrap();
        let step = StepDir::new(temp.path(), "7").unwrap();
        step.create().unwrap();
        assert_eq!(step.read_exit(), None);

        step.write_exit(ExitRecord { code: 137 }).unwrap();
        step.write_pgid(4242).unwrap();

        assert_eq!(step.read_exit(), Some(ExitRecord { code: 137 }));
        assert_eq!(step.read_pgid(), Some(4242));
        assert!(step.create().is_err(), "a step id is used once");
    }
}
