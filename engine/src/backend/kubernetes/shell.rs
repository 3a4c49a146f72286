//! The debugger's interactive shell in a job pod: an exec with a TTY of
//! `danube-supervisor shell` in the paused step's container, joined to this
//! process's terminal.
//!
//! The step's request (workdir and environment, secrets included) goes over
//! the exec's stdin after the supervisor has turned the pod terminal's echo
//! off and printed its ready marker. So it appears neither in the exec URL
//! and argv nor on the screen. The local terminal is in raw mode while the
//! shell runs, so keys such as Ctrl-C reach the pod's shell, and a guard
//! restores it however the shell ends. Window size changes (`SIGWINCH`)
//! are sent on the exec's resize channel.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::api::{AttachParams, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use super::KubeError;
use super::exec::ExecTarget;
use super::pod::SUPERVISOR_PATH;
use crate::backend::ShellEnd;

/// The supervisor's output line after which the request may be sent.
pub const READY: &[u8] = b"danube-shell-ready";

/// How often the stdin reader checks whether the shell has ended, so that
/// it stops before reading what the user types after it.
const STDIN_POLL: Duration = Duration::from_millis(100);

/// How long the shell's last output and exit status may take to arrive
/// once either the output or the connection has ended.
const END_GRACE: Duration = Duration::from_secs(2);

/// Runs the shell until it exits or the connection ends, and returns which
/// of the two happened.
///
/// # Errors
///
/// The exec could not be opened, or ended before the supervisor was ready.
pub async fn run_shell(
    target: &ExecTarget,
    step: &str,
    request: Zeroizing<Vec<u8>>,
) -> Result<ShellEnd, KubeError> {
    let params = AttachParams::interactive_tty().container(target.container.clone());
    let command = vec![SUPERVISOR_PATH.to_owned(), "shell".to_owned()];
    let mut attached = target
        .api
        .exec(&target.pod, command, &params)
        .await
        .map_err(|source| KubeError::StartStep {
            step: step.to_owned(),
            pod: target.pod.clone(),
            container: target.container.clone(),
            source: Box::new(source),
        })?;
    let lost = |reason: &str| KubeError::StepLost {
        step: step.to_owned(),
        pod: target.pod.clone(),
        reason: reason.to_owned(),
    };
    let mut remote_in = attached
        .stdin()
        .ok_or_else(|| lost("the exec has no stdin"))?;
    let mut remote_out = attached
        .stdout()
        .ok_or_else(|| lost("the exec has no stdout"))?;

    let early = wait_until_ready(&mut remote_out)
        .await
        .map_err(|reason| lost(&reason))?;
    remote_in
        .write_all(&request)
        .await
        .map_err(|_| lost("the connection closed while sending the step's environment"))?;
    drop(request);
    tracing::info!(pod = %target.pod, container = %target.container, step, "debug shell opened");

    let _raw = RawMode::enable();
    if let Some(mut sizes) = attached.terminal_size() {
        tokio::spawn(async move { forward_window_sizes(&mut sizes).await });
    }
    let status = attached.take_status();
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let input = forward_stdin(remote_in, stop.0.clone());

    let mut stdout = tokio::io::stdout();
    let _ = stdout.write_all(&early).await;
    let _ = stdout.flush().await;
    // kube-rs leaves the output stream open when the WebSocket fails, so
    // the connection's end is watched besides the output.
    let connection = attached.join();
    let mut copying = Box::pin(copy_output(&mut remote_out, &mut stdout));
    tokio::pin!(connection);
    let broken = tokio::select! {
        () = &mut copying => None,
        joined = &mut connection => {
            // The same copy goes on, so no write is cut off halfway.
            let _ = tokio::time::timeout(END_GRACE, &mut copying).await;
            joined.err()
        }
    };
    drop(copying);
    let _ = stdout.flush().await;
    drop(stop);
    input.abort();

    let end = match broken {
        Some(error) => ShellEnd::Lost(error.to_string()),
        None => match status {
            Some(status) => match tokio::time::timeout(END_GRACE, status).await {
                Ok(Some(status)) => ShellEnd::Exited(super::exec::exit_code(&status).ok()),
                Ok(None) | Err(_) => {
                    ShellEnd::Lost("the connection closed without the shell's exit status".into())
                }
            },
            None => ShellEnd::Exited(None),
        },
    };
    tracing::info!(pod = %target.pod, step, end = ?end, "debug shell closed");
    Ok(end)
}

/// Copies the shell's output to this process's stdout until it ends.
async fn copy_output(
    remote_out: &mut (impl tokio::io::AsyncRead + Unpin),
    stdout: &mut tokio::io::Stdout,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = remote_out.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        let _ = stdout.write_all(&buffer[..read]).await;
        let _ = stdout.flush().await;
    }
}

/// Reads the pod's output until the ready line and returns what followed
/// it, or the reason it never came.
async fn wait_until_ready(
    remote_out: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        if let Some(start) = seen.windows(READY.len()).position(|window| window == READY) {
            let rest = &seen[start + READY.len()..];
            let end = rest.iter().position(|byte| *byte == b'\n');
            if let Some(end) = end {
                return Ok(rest[end + 1..].to_vec());
            }
        }
        match remote_out.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let text = String::from_utf8_lossy(&seen);
                return Err(format!(
                    "the shell ended before it was ready: {}",
                    text.trim()
                ));
            }
            Ok(read) => seen.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Copies this process's stdin to the exec's stdin on a thread of its own
/// until `stop` is set. Polling lets the thread stop without consuming the
/// input that follows the shell, such as the answer to the debugger's next
/// question.
fn forward_stdin(
    mut remote_in: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let fd = std::io::stdin().as_raw_fd();
        while !stop.load(Ordering::SeqCst) {
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout = STDIN_POLL.as_millis() as libc::c_int;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
            if ready <= 0 || stop.load(Ordering::SeqCst) {
                continue;
            }
            let mut buffer = [0u8; 4096];
            // SAFETY: reads into a valid buffer of its length.
            let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if read <= 0
                || sender
                    .blocking_send(buffer[..read as usize].to_vec())
                    .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = receiver.recv().await {
            if remote_in.write_all(&bytes).await.is_err() {
                return;
            }
        }
    })
}

/// Sends the terminal's size now and after each `SIGWINCH`.
async fn forward_window_sizes(sizes: &mut futures::channel::mpsc::Sender<TerminalSize>) {
    use futures::SinkExt;

    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    loop {
        if let Some(size) = window_size()
            && sizes.send(size).await.is_err()
        {
            return;
        }
        if changes.recv().await.is_none() {
            return;
        }
    }
}

/// Returns the window size of the terminal on stdout, if it is one.
fn window_size() -> Option<TerminalSize> {
    // SAFETY: winsize is plain data that TIOCGWINSZ fills.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer.
    let result = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0).then_some(TerminalSize {
        width: size.ws_col,
        height: size.ws_row,
    })
}

/// Stops the stdin reader when dropped, on every way out of [`run_shell`].
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The local terminal in raw mode while alive; the settings it had are
/// restored on drop, so on every way out of [`run_shell`].
struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enable() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        // SAFETY: termios is plain data that tcgetattr fills.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and termios pointer.
        if unsafe { libc::tcgetattr(stdin.as_raw_fd(), &mut saved) } != 0 {
            return RawMode { saved: None };
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the given termios only.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: as for tcgetattr.
        unsafe { libc::tcsetattr(stdin.as_raw_fd(), libc::TCSANOW, &raw) };
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = std::io::stdout().flush();
            // SAFETY: restores the settings read in `enable`.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, saved) };
        }
    }
}
