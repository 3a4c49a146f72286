//! Copying what a step changed in the pod's workspace back to the local
//! copy the coordinator reads, so that `artifacts.upload` and a pipeline
//! script that opens a file see what the steps wrote, as on the local
//! backend.
//!
//! After each step the engine runs `danube-supervisor pack /workspace
//! --newer-than <step>/started` in the worker: a tar stream of the entries
//! whose ctime is at or after the step's start, then a manifest of every
//! path in the pod's workspace. The engine unpacks the entries into the
//! local copy and deletes the local paths the manifest does not list.
//!
//! The local copy is confined as the local backend's workspace is. Entry
//! names that are absolute or contain `..` are rejected, and nothing is
//! written or deleted through a symbolic link. Links are copied as links,
//! and the SDK rejects an artifact whose links lead out of the workspace. Files past
//! [`KubeSettings::max_download_bytes`](super::KubeSettings) per step stay
//! in the pod, with a note in the step's log.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use kube::api::AttachParams;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::exec::ExecTarget;
use super::pod::{STATE_PATH, SUPERVISOR_PATH, WORKSPACE_PATH};
use super::retry;

/// Entry of the stream that lists every path in the pod's workspace, as
/// `danube-supervisor pack` names it.
const MANIFEST_NAME: &str = ".danube/pack-manifest";

/// The local copy's top-level folder that is never synced, as in the pod.
const STATE_FOLDER: &str = ".danube";

/// Largest manifest accepted, a bound on memory: about a million paths.
const MAX_MANIFEST_BYTES: u64 = 128 << 20;

/// Chunks of the stream buffered between the exec and the unpacking thread.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Returns the pod's path of the step's `started` marker.
fn marker_path(step_id: &str) -> String {
    format!("{STATE_PATH}/steps/{step_id}/started")
}

/// Changes one download made to the local copy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Downloaded {
    pub unpacked: usize,
    pub removed: usize,
    /// Lines of the supervisor about files it left in the pod.
    pub notes: Vec<String>,
}

/// Copies what step `step_id` changed in the workspace of `target` into
/// `local`.
///
/// # Errors
///
/// The reason as text: the exec failed or dropped, the stream was invalid
/// or unsafe, or the local copy could not be written.
pub async fn download_changes(
    target: &ExecTarget,
    step_id: &str,
    local: &Path,
    max_bytes: u64,
) -> Result<Downloaded, String> {
    let params = AttachParams {
        container: Some(target.container.clone()),
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdout_buf_size: Some(64 * 1024),
        ..AttachParams::default()
    };
    let command = vec![
        SUPERVISOR_PATH.to_owned(),
        "pack".to_owned(),
        WORKSPACE_PATH.to_owned(),
        format!("--newer-than={}", marker_path(step_id)),
        format!("--max-bytes={max_bytes}"),
    ];
    let mut process = retry::with_backoff("exec pack", || {
        target.api.exec(&target.pod, command.clone(), &params)
    })
    .await
    .map_err(|err| format!("failed to start the packing in the pod: {err}"))?;

    let mut stdout = process.stdout().ok_or("the exec has no stdout")?;
    let mut stderr = process.stderr().ok_or("the exec has no stderr")?;
    let status = process
        .take_status()
        .ok_or("the exec has no status channel")?;
    let (chunks, receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let root = local.to_owned();
    let unpacker = tokio::task::spawn_blocking(move || unpack(ChannelReader::new(receiver), &root));
    // Once the unpacking stopped on an error, the rest is read and dropped,
    // so that the supervisor does not block writing it.
    let forward = async move {
        let mut buffer = vec![0; 64 * 1024];
        let mut unpacking = true;
        loop {
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) if unpacking => {
                    let chunk = Bytes::copy_from_slice(&buffer[..read]);
                    unpacking = chunks.send(chunk).await.is_ok();
                }
                Ok(_) => {}
            }
        }
    };
    let collect_stderr = async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    };
    let ((), err_text, status) = tokio::join!(forward, collect_stderr, status);

    let unpacked = unpacker
        .await
        .map_err(|err| format!("the thread unpacking the changes failed: {err}"))?;
    match status {
        Some(status) if super::exec::is_success(&status) => {}
        Some(status) => {
            return Err(format!(
                "the supervisor failed to pack them: {} {}",
                err_text.trim(),
                status.message.as_deref().unwrap_or_default().trim()
            ));
        }
        None => return Err("the connection dropped before the packing finished".into()),
    }
    let mut downloaded = unpacked?;
    tracing::debug!(pod = %target.pod, step_id, summary = err_text.lines().last().unwrap_or_default(), "changes copied back");
    downloaded.notes = err_text
        .lines()
        .filter(|line| line.starts_with("danube-supervisor: not packed"))
        .map(|line| line.trim_start_matches("danube-supervisor: ").to_owned())
        .collect();
    Ok(downloaded)
}

/// Unpacks the stream into `root` and deletes what its manifest does not
/// list. Runs on a blocking thread.
fn unpack(input: impl Read, root: &Path) -> Result<Downloaded, String> {
    let mut archive = tar::Archive::new(input);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    let mut downloaded = Downloaded::default();
    let mut manifest = None;

    let entries = archive
        .entries()
        .map_err(|err| format!("failed to read the tar stream: {err}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| format!("failed to read the tar stream: {err}"))?;
        let name = entry
            .path()
            .map_err(|err| format!("a tar entry has an invalid name: {err}"))?
            .into_owned();
        if name == Path::new(MANIFEST_NAME) {
            manifest = Some(read_manifest(&mut entry)?);
            continue;
        }
        let relative = safe_relative(&name)?;
        if relative.starts_with(STATE_FOLDER) {
            return Err(format!(
                "tar entry `{}` lies in the reserved folder `{STATE_FOLDER}`",
                name.display()
            ));
        }

        let is_dir = entry.header().entry_type().is_dir();
        remove_conflicting(root, &relative, is_dir)?;
        let written = entry
            .unpack_in(root)
            .map_err(|err| format!("failed to write `{}`: {err}", relative.display()))?;
        if !written {
            return Err(format!(
                "tar entry `{}` would be written outside the workspace",
                relative.display()
            ));
        }
        downloaded.unpacked += 1;
    }

    let manifest = manifest.ok_or("the tar stream ended without the manifest of the workspace")?;
    downloaded.removed = remove_unlisted(root, Path::new(""), &manifest)?;
    Ok(downloaded)
}

fn read_manifest(entry: &mut impl Read) -> Result<HashSet<PathBuf>, String> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("failed to read the manifest: {err}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest of the workspace is larger than {} MiB",
            MAX_MANIFEST_BYTES >> 20
        ));
    }
    Ok(bytes
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(OsString::from_vec(name.to_vec())))
        .collect())
}

/// Converts the name to a relative path of normal components only.
fn safe_relative(name: &Path) -> Result<PathBuf, String> {
    let mut relative = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "tar entry `{}` is absolute or contains `..`",
                    name.display()
                ));
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err("a tar entry has an empty name".into());
    }
    Ok(relative)
}

/// Checks that every folder between `root` and `relative` is a real folder,
/// so that a change there stays inside `root`.
fn parents_are_real_folders(root: &Path, relative: &Path) -> bool {
    let mut current = root.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    for component in &parents[..parents.len().saturating_sub(1)] {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    true
}

/// Removes a local entry of the other kind at the entry's path: a file
/// where the pod now has a folder, or a folder where it now has a file or link.
fn remove_conflicting(root: &Path, relative: &Path, is_dir: bool) -> Result<(), String> {
    if !parents_are_real_folders(root, relative) {
        return Err(format!(
            "tar entry `{}` lies below a symbolic link or file of the workspace",
            relative.display()
        ));
    }
    let path = root.join(relative);
    let Ok(metadata) = std::fs::symlink_metadata(&path) else {
        return Ok(());
    };
    let removed = match (metadata.is_dir(), is_dir) {
        (true, false) => std::fs::remove_dir_all(&path),
        (false, true) => std::fs::remove_file(&path),
        _ => Ok(()),
    };
    removed.map_err(|err| format!("failed to replace `{}`: {err}", relative.display()))
}

/// Deletes the entries under `root/relative` that `listed` lacks and
/// returns how many it deleted. Links are deleted, never followed.
fn remove_unlisted(
    root: &Path,
    relative: &Path,
    listed: &HashSet<PathBuf>,
) -> Result<usize, String> {
    let dir = root.join(relative);
    let entries = std::fs::read_dir(&dir)
        .map_err(|err| format!("failed to list `{}`: {err}", dir.display()))?;
    let mut removed = 0;

    for entry in entries {
        let entry = entry.map_err(|err| format!("failed to list `{}`: {err}", dir.display()))?;
        let name = entry.file_name();
        if relative.as_os_str().is_empty() && name.as_bytes() == STATE_FOLDER.as_bytes() {
            continue;
        }
        let child = relative.join(&name);
        let file_type = entry
            .file_type()
            .map_err(|err| format!("failed to read `{}`: {err}", child.display()))?;
        let path = root.join(&child);

        if listed.contains(&child) {
            if file_type.is_dir() {
                removed += remove_unlisted(root, &child, listed)?;
            }
            continue;
        }
        let result = if file_type.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|err| format!("failed to delete `{}`: {err}", child.display()))?;
        removed += 1;
    }
    Ok(removed)
}

/// Reads the chunks an async task sends, on a blocking thread.
struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let count = buffer.len().min(self.current.len());
        buffer[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Builds a stream as `pack` writes it: `entries`, then the manifest.
    fn stream(entries: &[(&str, Option<&[u8]>)], listed: &[&str]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            match content {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder.append_data(&mut header, name, *data).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_cksum();
                    builder.append_data(&mut header, name, &[][..]).unwrap();
                }
            }
        }
        let manifest: Vec<u8> = listed
            .iter()
            .flat_map(|name| name.bytes().chain([0]))
            .collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, MANIFEST_NAME, manifest.as_slice())
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn changes_are_unpacked_and_deleted_paths_removed() {
        let local = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("kept.txt"), b"kept").unwrap();
        std::fs::write(local.path().join("gone.txt"), b"gone").unwrap();
        std::fs::create_dir_all(local.path().join("old/inner")).unwrap();
        std::fs::create_dir_all(local.path().join(".danube")).unwrap();
        std::fs::write(local.path().join("build"), b"a file, now a folder").unwrap();

        let input = stream(
            &[("build", None), ("build/out.zip", Some(b"zip"))],
            &["build", "build/out.zip", "kept.txt"],
        );
        let downloaded = unpack(input.as_slice(), local.path()).unwrap();

        assert_eq!(downloaded.unpacked, 2);
        assert_eq!(downloaded.removed, 2, "gone.txt and old/");
        assert_eq!(
            std::fs::read(local.path().join("build/out.zip")).unwrap(),
            b"zip"
        );
        assert!(local.path().join("kept.txt").exists());
        assert!(!local.path().join("gone.txt").exists());
        assert!(!local.path().join("old").exists());
        assert!(
            local.path().join(".danube").exists(),
            "the state folder stays"
        );
    }

    #[test]
    fn nothing_is_written_through_a_symbolic_link() {
        let local = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), local.path().join("escape")).unwrap();

        let input = stream(&[("escape/owned.txt", Some(b"x"))], &["escape"]);
        let error = unpack(input.as_slice(), local.path()).unwrap_err();

        assert!(error.contains("symbolic link"), "{error}");
        assert!(!outside.path().join("owned.txt").exists());
    }

    #[test]
    fn deleting_removes_a_link_but_not_its_target() {
        let local = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious.txt"), b"keep").unwrap();
        symlink(outside.path(), local.path().join("link")).unwrap();

        let input = stream(&[], &[]);
        let downloaded = unpack(input.as_slice(), local.path()).unwrap();

        assert_eq!(downloaded.removed, 1);
        assert!(!local.path().join("link").exists());
        assert!(outside.path().join("precious.txt").exists());
    }

    #[test]
    fn escaping_names_and_missing_manifests_are_rejected() {
        let local = tempfile::tempdir().unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_cksum();
        let mut escaping = tar::Builder::new(Vec::new());
        // append_data rejects `..` itself, so the name goes in raw.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../x.txt\0");
        header.set_cksum();
        escaping.append(&header, &b"x"[..]).unwrap();
        let escaping = escaping.into_inner().unwrap();

        let error = unpack(escaping.as_slice(), local.path()).unwrap_err();
        assert!(error.contains("contains `..`"), "{error}");

        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let error = unpack(empty.as_slice(), local.path()).unwrap_err();
        assert!(error.contains("without the manifest"), "{error}");
    }
}
