//! The Python environment that runs coordinators: the `danube` SDK embedded
//! in this binary, and a virtual environment with its gRPC dependencies.
//!
//! Both live under `<data_dir>/python/` and are made on first use:
//! `sdk-<hash>/danube/` is the SDK extracted from the binary, and
//! `venv-<hash>/` a venv with the pinned `grpcio` and `protobuf`. The hashes
//! change with the SDK and the pins, so an upgraded binary never runs against
//! stale files. `DANUBE_PYTHON_VENV` points at an existing venv instead (it
//! must already have the packages), and `DANUBE_PYTHON` picks the interpreter
//! used to create the venv.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::config::DataDir;

static SDK: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../sdk/python/danube");

/// The runtime packages the SDK's generated gRPC code needs, one pin per line.
const REQUIREMENTS: &str = include_str!("../../sdk/python/danube/_requirements.txt");

/// Marker written into a venv once its packages are installed.
const READY_MARKER: &str = ".danube-ready";

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(
        "`{interpreter}` was not found: install Python 3.10 or newer, or set DANUBE_PYTHON to the interpreter to use"
    )]
    InterpreterMissing { interpreter: String },

    #[error("failed to extract the danube SDK into `{path}`")]
    ExtractSdk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "failed to create a Python virtual environment in `{path}` ({status}):\n{output}\nOn Debian and Ubuntu install the `python3-venv` package."
    )]
    CreateVenv {
        path: PathBuf,
        status: std::process::ExitStatus,
        output: String,
    },

    #[error(
        "failed to install {packages} into `{path}` ({status}):\n{output}\nCheck that the Python package index is reachable (pip honours PIP_INDEX_URL), or set DANUBE_PYTHON_VENV to a venv that already has these packages."
    )]
    InstallPackages {
        path: PathBuf,
        packages: String,
        status: std::process::ExitStatus,
        output: String,
    },

    #[error(
        "DANUBE_PYTHON_VENV is set to `{path}`, which has no `bin/python`: create it with `python3 -m venv {path}` and install {packages}"
    )]
    VenvOverrideInvalid { path: PathBuf, packages: String },

    #[error("failed to prepare the Python environment in `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A ready environment: run `interpreter -m danube._coordinator` with
/// `sdk_root` on `PYTHONPATH`.
#[derive(Clone, Debug)]
pub struct PythonEnv {
    pub interpreter: PathBuf,
    /// The directory that contains the `danube` package.
    pub sdk_root: PathBuf,
}

impl PythonEnv {
    /// `PYTHONPATH` for a process that imports the SDK: `sdk_root` first,
    /// then the caller's own `PYTHONPATH`, if any.
    pub fn python_path(&self) -> std::ffi::OsString {
        let mut python_path = self.sdk_root.clone().into_os_string();
        if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            python_path.push(":");
            python_path.push(existing);
        }
        python_path
    }
}

/// Makes sure the SDK and the venv exist, creating them if needed.
/// `progress` receives one human-readable line per slow action.
pub async fn ensure_env(data: &DataDir, progress: &dyn Fn(&str)) -> Result<PythonEnv, PythonError> {
    let python_dir = data.python_dir();
    let sdk_root = extract_sdk(&python_dir)?;

    let interpreter = match std::env::var_os("DANUBE_PYTHON_VENV") {
        Some(venv) => {
            let venv = PathBuf::from(venv);
            let interpreter = venv.join("bin").join("python");
            if !interpreter.exists() {
                return Err(PythonError::VenvOverrideInvalid {
                    path: venv,
                    packages: packages(),
                });
            }
            interpreter
        }
        None => ensure_venv(&python_dir, progress).await?,
    };

    Ok(PythonEnv {
        interpreter,
        sdk_root,
    })
}

/// Returns the pinned packages as one line, for messages.
fn packages() -> String {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..6])
}

fn sdk_files() -> Vec<&'static include_dir::File<'static>> {
    let mut files = Vec::new();
    let mut pending = vec![&SDK];
    while let Some(dir) = pending.pop() {
        files.extend(dir.files());
        pending.extend(dir.dirs());
    }
    files.retain(|file| {
        let path = file.path();
        path.extension().is_none_or(|ext| ext != "pyc")
            && !path
                .components()
                .any(|part| part.as_os_str() == "__pycache__")
    });
    files.sort_by_key(|file| file.path());
    files
}

/// Writes the embedded SDK to `python_dir/sdk-<hash>/danube` unless it is
/// there already, and returns `python_dir/sdk-<hash>`.
fn extract_sdk(python_dir: &Path) -> Result<PathBuf, PythonError> {
    let files = sdk_files();
    let mut parts: Vec<&[u8]> = Vec::new();
    for file in &files {
        parts.push(file.path().as_os_str().as_encoded_bytes());
        parts.push(file.contents());
    }
    let root = python_dir.join(format!("sdk-{}", short_hash(&parts)));
    if root.join("danube").join("__init__.py").exists() {
        return Ok(root);
    }

    // Extract into a private directory and rename it into place, so that a
    // concurrent run never sees half an SDK.
    let staging = python_dir.join(format!(".sdk-staging-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let package = staging.join("danube");
        for file in &files {
            let target = package.join(file.path());
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&target, file.contents())?;
        }
        match fs::rename(&staging, &root) {
            Ok(()) => Ok(()),
            // Another run extracted the same SDK first.
            Err(_) if root.join("danube").join("__init__.py").exists() => {
                fs::remove_dir_all(&staging)
            }
            Err(err) => Err(err),
        }
    };
    write().map_err(|source| PythonError::ExtractSdk {
        path: root.clone(),
        source,
    })?;
    Ok(root)
}

fn base_interpreter() -> String {
    std::env::var("DANUBE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Creates `python_dir/venv-<hash>` with the pinned packages unless it is
/// ready, and returns its interpreter.
async fn ensure_venv(python_dir: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf, PythonError> {
    let base = base_interpreter();
    let venv = python_dir.join(format!(
        "venv-{}",
        short_hash(&[REQUIREMENTS.as_bytes(), base.as_bytes()])
    ));
    let interpreter = venv.join("bin").join("python");
    if venv.join(READY_MARKER).exists() {
        return Ok(interpreter);
    }

    let io_error = |source| PythonError::Io {
        path: venv.clone(),
        source,
    };
    fs::create_dir_all(python_dir).map_err(io_error)?;

    // Two runs starting at once would otherwise both install into the same
    // directory; the lock makes the second wait and then find it ready.
    let lock_path = python_dir.join(".venv.lock");
    let lock_file = fs::File::create(&lock_path).map_err(io_error)?;
    let lock = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await
    .expect("the lock task does not panic")
    .map_err(io_error)?;

    if venv.join(READY_MARKER).exists() {
        drop(lock);
        return Ok(interpreter);
    }

    progress(&format!(
        "Setting up the Python environment for pipelines in {} (first run only)",
        venv.display()
    ));
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(io_error)?;
    }
    create_venv(&base, &venv).await?;

    progress(&format!("Installing {}", packages()));
    install_packages(&venv, &interpreter).await?;

    let mut marker = fs::File::create(venv.join(READY_MARKER)).map_err(io_error)?;
    marker
        .write_all(REQUIREMENTS.as_bytes())
        .map_err(io_error)?;
    drop(lock);
    progress("Python environment ready");
    Ok(interpreter)
}

async fn create_venv(base: &str, venv: &Path) -> Result<(), PythonError> {
    let output = Command::new(base)
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                PythonError::InterpreterMissing {
                    interpreter: base.to_owned(),
                }
            } else {
                PythonError::Spawn {
                    command: format!("{base} -m venv"),
                    source,
                }
            }
        })?;
    if !output.status.success() {
        return Err(PythonError::CreateVenv {
            path: venv.to_owned(),
            status: output.status,
            output: combined_output(&output),
        });
    }
    Ok(())
}

async fn install_packages(venv: &Path, interpreter: &Path) -> Result<(), PythonError> {
    let requirements = venv.join("danube-requirements.txt");
    fs::write(&requirements, REQUIREMENTS).map_err(|source| PythonError::Io {
        path: requirements.clone(),
        source,
    })?;

    // Short network timeouts so that an unreachable index fails in seconds
    // rather than after pip's default retries.
    let output = Command::new(interpreter)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            "15",
            "--retries",
            "2",
            "-r",
        ])
        .arg(&requirements)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| PythonError::Spawn {
            command: format!("{} -m pip install", interpreter.display()),
            source,
        })?;
    if !output.status.success() {
        let _ = fs::remove_dir_all(venv);
        return Err(PythonError::InstallPackages {
            path: venv.to_owned(),
            packages: packages(),
            status: output.status,
            output: combined_output(&output),
        });
    }
    Ok(())
}

/// Returns the last lines of a failed command's output, enough to see the cause.
fn combined_output(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}
