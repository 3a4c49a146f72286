//! Streaming the project folder into the pod's workspace, as `kubectl cp`
//! does: a tar stream on the stdin of `danube-supervisor untar /workspace`,
//! so the worker image needs neither a shell nor `tar`.
//!
//! The files are the ones a local job's workspace gets (tracked and
//! untracked-but-not-ignored, without `.git`), listed by the local backend's
//! [`list_project_files`]. Symbolic links travel as links.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kube::api::AttachParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::ExecTarget;
use super::pod::{SUPERVISOR_PATH, WORKSPACE_PATH};
use super::retry;
use crate::backend::local::workspace::list_project_files;

/// Tar chunks buffered between the thread that reads files and the exec.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Sends the files of `project` into the workspace of `target` and returns
/// how many it sent.
///
/// # Errors
///
/// The reason as text: a file could not be listed or read, the exec failed,
/// or the supervisor rejected the stream (its message is included).
pub async fn upload_project(target: &ExecTarget, project: &Path) -> Result<usize, String> {
    let params = AttachParams {
        container: Some(target.container.clone()),
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: Some(64 * 1024),
        ..AttachParams::default()
    };
    let command = vec![
        SUPERVISOR_PATH.to_owned(),
        "untar".to_owned(),
        WORKSPACE_PATH.to_owned(),
    ];
    let mut process = retry::with_backoff("exec untar", || {
        target.api.exec(&target.pod, command.clone(), &params)
    })
    .await
    .map_err(|err| format!("failed to start the unpacking in the pod: {err}"))?;

    let (chunks, mut receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let root = project.to_path_buf();
    let packer = tokio::task::spawn_blocking(move || write_tar(&root, chunks));

    let mut stdin = process.stdin().ok_or("the exec has no stdin")?;
    let mut stdout = process.stdout().ok_or("the exec has no stdout")?;
    let mut stderr = process.stderr().ok_or("the exec has no stderr")?;
    let status = process
        .take_status()
        .ok_or("the exec has no status channel")?;
    let readers = tokio::spawn(async move {
        let mut out = String::new();
        let mut err = String::new();
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    });

    let mut send_error = None;
    while let Some(chunk) = receiver.recv().await {
        if let Err(err) = stdin.write_all(&chunk).await {
            send_error = Some(err);
            break;
        }
    }
    drop(receiver);
    let _ = stdin.shutdown().await;

    let packed = packer
        .await
        .map_err(|err| format!("the thread packing the project failed: {err}"))?;
    let status = status.await;
    let (out, err) = readers.await.unwrap_or_default();
    let count = packed?;

    match status {
        Some(status) if super::exec::is_success(&status) => {
            tracing::debug!(pod = %target.pod, files = count, unpacked = out.trim(), "project sent into the pod");
            Ok(count)
        }
        Some(status) => Err(format!(
            "the supervisor failed to unpack it: {} {}",
            err.trim(),
            status.message.as_deref().unwrap_or_default().trim()
        )),
        None => Err(match send_error {
            Some(error) => format!("the connection dropped while sending: {error}"),
            None => "the connection dropped before the unpacking finished".into(),
        }),
    }
}

/// Writes the tar stream of `root`'s project files to `chunks`. Runs on a
/// blocking thread.
fn write_tar(root: &Path, chunks: mpsc::Sender<Bytes>) -> Result<usize, String> {
    let files = list_project_files(root).map_err(|err| crate::orchestrator::error_chain(&err))?;
    // Buffered, so that the exec gets large messages rather than one per
    // 512-byte tar block.
    let writer = BufWriter::with_capacity(64 * 1024, ChannelWriter { chunks });
    let mut builder = tar::Builder::new(writer);
    builder.follow_symlinks(false);

    for relative in &files {
        let path: PathBuf = root.join(relative);
        builder
            .append_path_with_name(&path, relative)
            .map_err(|err| format!("failed to add `{}`: {err}", relative.display()))?;
    }
    let mut writer = builder
        .into_inner()
        .map_err(|err| format!("failed to finish the tar stream: {err}"))?;
    writer
        .flush()
        .map_err(|err| format!("failed to finish the tar stream: {err}"))?;
    Ok(files.len())
}

/// Sends what is written to it as chunks to an async receiver.
struct ChannelWriter {
    chunks: mpsc::Sender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.chunks
            .blocking_send(Bytes::copy_from_slice(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the exec closed"))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
