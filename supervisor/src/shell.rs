//! `danube-supervisor shell`: an interactive shell with a paused step's
//! environment, on the terminal of an exec with a TTY.
//!
//! The step's request (the same JSON line `run` reads) arrives over the
//! exec's stdin, never in the exec URL or argv, because the environment can
//! hold secrets. A terminal echoes what it receives, so the command turns
//! echo off first and then prints [`READY`]. The engine sends the line only
//! after seeing that marker, so the line never shows on the terminal.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::request::StepRequest;

/// The line printed once echo is off and the request may be sent.
pub const READY: &str = "danube-shell-ready";

/// Exit code when the image has no shell or the request is invalid.
pub const SHELL_FAILED: i32 = 127;

/// Maximum length of the request line, environment included.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Reads the request and replaces this process with `shell`. Returns only
/// when that fails.
pub fn shell(shell: &Path) -> i32 {
    let echo = EchoOff::new();
    println!("{READY}\r");
    let _ = std::io::stdout().flush();
    let line = read_line();
    drop(echo);

    let request = match line.as_deref().map(StepRequest::parse) {
        Some(Ok(request)) => request,
        Some(Err(message)) => return fail(&message),
        None => return fail("stdin ended before the step's request arrived"),
    };
    if !shell.exists() {
        return fail(&format!(
            "this image has no shell at `{}`, so no interactive shell can open; \
             run single commands from the debug panel of the web UI or the app \
             (`POST /api/v1/jobs/JOB/debug/exec`) instead",
            shell.display()
        ));
    }
    if let Err(err) = std::env::set_current_dir(&request.workdir) {
        eprintln!(
            "danube-supervisor: cannot enter the step's workdir `{}` ({err}); staying in `{}`",
            request.workdir,
            std::env::current_dir().unwrap_or_default().display()
        );
    }

    let err = std::process::Command::new(shell)
        .envs(request.env.iter().map(|(name, value)| (name, value)))
        .exec();
    fail(&format!("failed to start `{}`: {err}", shell.display()))
}

fn fail(message: &str) -> i32 {
    eprintln!("danube-supervisor: {message}\r");
    SHELL_FAILED
}

/// Reads one line from stdin a byte at a time, so that nothing the shell
/// should read next is consumed here. `None` at end of input or past
/// [`MAX_REQUEST_BYTES`].
fn read_line() -> Option<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let read = unsafe { libc::read(0, (&raw mut byte).cast(), 1) };
        match read {
            1 if byte == b'\n' => break,
            1 => line.push(byte),
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
        if line.len() > MAX_REQUEST_BYTES {
            return None;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).ok()
}

/// Turns terminal echo off on stdin while alive, when stdin is a terminal.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return EchoOff { saved: None };
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        // SAFETY: as above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}
