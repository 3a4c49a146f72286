//! `danube-supervisor run`: one step, started by an exec from the engine.
//!
//! The request comes as the first line of stdin. The step runs as
//! `/bin/sh -c COMMAND`, or split into words when the image has no shell,
//! as the leader of its own process group. Its stdout and stderr go both to
//! the supervisor's own stdout and stderr (the exec stream) and to files in
//! its state directory, and its exit code is recorded there when it ends.
//!
//! The request's `stdin` text, when it has one, is written to the step's
//! stdin, which is then closed; otherwise the step's stdin is `/dev/null`.
//!
//! After the request, the supervisor's stdin stays open as a control channel:
//!
//! - a [`CANCEL`] byte kills the whole process group (SIGTERM, then SIGKILL
//!   after [`KILL_GRACE`]);
//! - end of stdin without that byte means the exec connection went away.
//!   The step keeps running and the engine can reattach with `attach`.
//!
//! SIGTERM, SIGINT and SIGHUP to the supervisor kill the group as a cancel
//! does. The supervisor exits with the step's exit code (128 + N when signal
//! N ended it), so the exec status channel carries it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::request::StepRequest;
use crate::signals::{self, SignalSet};
use crate::steps::{ExitRecord, StepDir};
use crate::words;

/// The byte that asks for the step to be killed (ASCII CAN).
pub const CANCEL: u8 = 0x18;

/// Time between SIGTERM and SIGKILL when a step is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Exit code when the supervisor itself fails before the step starts, as
/// container runtimes use 125 for their own errors.
pub const SUPERVISOR_FAILED: i32 = 125;

/// Exit code when the command cannot be started (not found, not executable,
/// or shell syntax without a shell), as shells use 127.
pub const NOT_STARTED: i32 = 127;

/// Longest request line read, a bound against a runaway writer.
const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// How long output may still be read after the group was killed, for pipes
/// that a process outside the group holds open.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Settings of `run`.
pub struct RunOptions {
    pub state_dir: PathBuf,
    pub shell: PathBuf,
}

/// Runs the step from stdin and returns the supervisor's exit code.
pub fn run(options: &RunOptions) -> i32 {
    // Blocked before any thread starts, so only the signal thread takes them.
    let signals = match SignalSet::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        Ok(signals) => signals,
        Err(err) => return fail(&format!("failed to block signals: {err}")),
    };

    let mut stdin = BufReader::new(io::stdin());
    let request = match read_request(&mut stdin) {
        Ok(request) => request,
        Err(message) => return fail(&message),
    };
    let step = match StepDir::new(&options.state_dir, &request.id) {
        Ok(step) => step,
        Err(message) => return fail(&message),
    };
    if let Err(err) = step.create() {
        return fail(&format!(
            "failed to create the state directory of step `{}` under `{}`: {err} (each step id runs once)",
            request.id,
            options.state_dir.display()
        ));
    }
    let files = match (File::create(step.stdout()), File::create(step.stderr())) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(err), _) | (_, Err(err)) => {
            return fail(&format!(
                "failed to create the output files of step `{}`: {err}",
                request.id
            ));
        }
    };

    let code = match start(&request, &options.shell) {
        Ok(child) => supervise(child, &step, files, stdin, signals),
        Err(message) => {
            let mut stderr_file = files.1;
            let line = format!("danube-supervisor: {message}\n");
            let _ = stderr_file.write_all(line.as_bytes());
            let _ = raw_stderr().write_all(line.as_bytes());
            NOT_STARTED
        }
    };

    if let Err(err) = step.write_exit(ExitRecord { code }) {
        eprintln!(
            "danube-supervisor: failed to record the exit code of step `{}`: {err}",
            request.id
        );
    }
    code
}

fn fail(message: &str) -> i32 {
    eprintln!("danube-supervisor: {message}");
    SUPERVISOR_FAILED
}

fn read_request(stdin: &mut BufReader<io::Stdin>) -> Result<StepRequest, String> {
    let mut line = String::new();
    let read = stdin
        .by_ref()
        .take(MAX_REQUEST_BYTES)
        .read_line(&mut line)
        .map_err(|err| format!("failed to read the step request from stdin: {err}"))?;
    if read == 0 || !line.ends_with('\n') {
        return Err("stdin ended before a complete step request line".into());
    }
    StepRequest::parse(line.trim_end())
}

/// Starts the command as the leader of a new process group.
fn start(request: &StepRequest, shell: &Path) -> Result<Child, String> {
    let mut command = if is_executable(shell) {
        let mut command = Command::new(shell);
        command.arg("-c").arg(&request.command);
        command
    } else {
        let words = words::split(&request.command).map_err(|err| err.to_string())?;
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        command
    };
    command
        .current_dir(&request.workdir)
        .envs(request.env.iter().map(|(name, value)| (name, value)))
        .stdin(if request.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the hook runs between fork and exec and calls only
    // pthread_sigmask, which is async-signal-safe.
    unsafe {
        command.pre_exec(unblock_signals);
    }

    let mut child = command.spawn().map_err(|err| {
        let program = command.get_program().to_string_lossy().into_owned();
        format!(
            "failed to start `{program}` in `{}`: {err}",
            request.workdir
        )
    })?;
    if let (Some(text), Some(mut stdin)) = (&request.stdin, child.stdin.take()) {
        // A command that exits without reading its stdin breaks the pipe,
        // and its exit code then shows why. Dropping `stdin` closes it.
        let _ = stdin.write_all(text.as_bytes());
    }
    Ok(child)
}

/// Clears the signal mask the supervisor set for its signal thread, since a
/// child inherits it across `exec` and would otherwise ignore SIGTERM.
fn unblock_signals() -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set before pthread_sigmask reads it.
    let result = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    match result {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Pumps output, watches stdin and signals, and waits for the step's end.
fn supervise(
    mut child: Child,
    step: &StepDir,
    (stdout_file, stderr_file): (File, File),
    stdin: BufReader<io::Stdin>,
    signals: SignalSet,
) -> i32 {
    let pgid = child.id() as libc::pid_t;
    if let Err(err) = step.write_pgid(pgid) {
        eprintln!("danube-supervisor: failed to record the process group of the step: {err}");
    }

    let (done, pumps_done) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    spawn_pump(stdout, stdout_file, raw_stdout(), done.clone());
    spawn_pump(stderr, stderr_file, raw_stderr(), done);

    thread::spawn(move || watch_stdin(stdin, pgid));
    thread::spawn(move || {
        signals.wait();
        terminate_group(pgid);
    });

    let code = match child.wait() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(err) => {
            eprintln!("danube-supervisor: failed to wait for the step: {err}");
            SUPERVISOR_FAILED
        }
    };

    // The leader is gone; what is left of its group ran in the background
    // and would hold the pipes open.
    signals::kill_group(pgid, libc::SIGKILL);
    let deadline = Instant::now() + DRAIN_LIMIT;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if pumps_done.recv_timeout(left).is_err() {
            eprintln!(
                "danube-supervisor: stopped reading the step's output: a process outside its process group holds it open"
            );
            break;
        }
    }
    code
}

/// Copies `source` to `file` and then `sink` until the end. A failed write
/// to `sink` (the exec connection is gone) stops only the copies to it, so
/// the file stays complete for a later `attach`.
fn spawn_pump(
    mut source: impl Read + Send + 'static,
    mut file: File,
    mut sink: ManuallyDrop<File>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        let mut sink_open = true;
        loop {
            let read = match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Err(err) = file.write_all(&buffer[..read]) {
                eprintln!("danube-supervisor: failed to write step output to its file: {err}");
            }
            if sink_open && sink.write_all(&buffer[..read]).is_err() {
                sink_open = false;
            }
        }
        let _ = done.send(());
    });
}

/// Kills the group when the engine sends [`CANCEL`]; returns at the end of
/// stdin, which leaves the step running.
pub fn watch_stdin(mut stdin: impl Read, pgid: libc::pid_t) {
    let mut buffer = [0; 256];
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) if buffer[..read].contains(&CANCEL) => {
                terminate_group(pgid);
                return;
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Sends SIGTERM to the group, then SIGKILL to whatever outlives [`KILL_GRACE`].
pub fn terminate_group(pgid: libc::pid_t) {
    signals::kill_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    while signals::group_exists(pgid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    signals::kill_group(pgid, libc::SIGKILL);
}

/// Returns the process's stdout as an unbuffered file, since `io::stdout()` buffers
/// by line and would hold back output without a newline.
pub fn raw_stdout() -> ManuallyDrop<File> {
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
    // keeps this handle from closing it.
    ManuallyDrop::new(unsafe { File::from_raw_fd(1) })
}

/// Returns the process's stderr as an unbuffered file, as [`raw_stdout`].
pub fn raw_stderr() -> ManuallyDrop<File> {
    // SAFETY: as in raw_stdout, for fd 2.
    ManuallyDrop::new(unsafe { File::from_raw_fd(2) })
}
