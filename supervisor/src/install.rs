//! `danube-supervisor install DIR`: the tools init container copies this
//! binary into the shared `/danube/bin` volume, from which every container of
//! the pod runs it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the installed binary.
pub const BINARY_NAME: &str = "danube-supervisor";

/// Copies the running executable to `dir/danube-supervisor`, mode 0755,
/// and returns the path it wrote.
pub fn install(dir: &Path) -> Result<PathBuf, String> {
    let source = std::env::current_exe()
        .map_err(|err| format!("failed to find the running executable: {err}"))?;
    fs::create_dir_all(dir)
        .map_err(|err| format!("failed to create `{}`: {err}", dir.display()))?;

    // Copied under a temporary name and renamed, so that a container that
    // starts early never runs a half-written binary.
    let target = dir.join(BINARY_NAME);
    let temporary = dir.join(format!(".{BINARY_NAME}.partial"));
    fs::copy(&source, &temporary).map_err(|err| {
        format!(
            "failed to copy `{}` to `{}`: {err}",
            source.display(),
            temporary.display()
        )
    })?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))
        .map_err(|err| format!("failed to make `{}` executable: {err}", temporary.display()))?;
    fs::rename(&temporary, &target)
        .map_err(|err| format!("failed to move the binary to `{}`: {err}", target.display()))?;
    Ok(target)
}
