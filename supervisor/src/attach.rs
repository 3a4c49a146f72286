//! `danube-supervisor attach` and `status`: pick up a step after the exec
//! connection that started it was dropped.
//!
//! `attach ID --stdout-offset N --stderr-offset M` writes the step's output
//! from those byte offsets on, follows it while the step runs, and exits with
//! the step's exit code once it is recorded. A [`CANCEL`](crate::run::CANCEL) byte on stdin kills
//! the step's process group, as it does for `run`.
//!
//! `status ID` prints one line: `running`, `exited N`, `missing` (the step
//! never started here) or `lost` (its supervisor is gone without recording
//! an exit code, for example after the container restarted). For a step
//! that started, a second line `output N M` gives the bytes its stdout and
//! stderr files hold, which the engine compares with what it received to
//! find a stalled connection.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::run::{self, SUPERVISOR_FAILED, raw_stderr, raw_stdout};
use crate::signals;
use crate::steps::StepDir;

/// How often a running step's files are checked for new output.
/// NOTE: polling, since inotify would need more than std and libc offer
/// portably; 20 ms bounds the added latency of a reattached step.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);

/// Exit code of `attach` when the step cannot be followed.
pub const ATTACH_FAILED: i32 = SUPERVISOR_FAILED;

/// What `status` reports about a step.
#[derive(Debug, PartialEq, Eq)]
pub enum StepStatus {
    Missing,
    Running,
    Exited(i32),
    Lost,
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepStatus::Missing => f.write_str("missing"),
            StepStatus::Running => f.write_str("running"),
            StepStatus::Exited(code) => write!(f, "exited {code}"),
            StepStatus::Lost => f.write_str("lost"),
        }
    }
}

/// Reads the state of step `id` under `state_dir`.
pub fn status(state_dir: &Path, id: &str) -> Result<StepStatus, String> {
    let step = StepDir::new(state_dir, id)?;
    if !step.exists() {
        return Ok(StepStatus::Missing);
    }
    if let Some(record) = step.read_exit() {
        return Ok(StepStatus::Exited(record.code));
    }
    if step_is_alive(&step) {
        return Ok(StepStatus::Running);
    }
    // The exit may have been recorded between the two reads above.
    Ok(match step.read_exit() {
        Some(record) => StepStatus::Exited(record.code),
        None => StepStatus::Lost,
    })
}

/// Returns the bytes step `id` has written to its stdout and stderr files
/// so far, or `None` when it has no state directory.
pub fn output_sizes(state_dir: &Path, id: &str) -> Option<(u64, u64)> {
    let step = StepDir::new(state_dir, id).ok()?;
    let size = |path: std::path::PathBuf| std::fs::metadata(path).map_or(0, |meta| meta.len());
    step.exists()
        .then(|| (size(step.stdout()), size(step.stderr())))
}

/// Returns true while the step's process group exists. A step whose group was never
/// recorded counts as alive only until its supervisor wrote the pgid, which
/// happens right after the start; a directory without one is treated as lost.
fn step_is_alive(step: &StepDir) -> bool {
    step.read_pgid().is_some_and(signals::group_exists)
}

/// Follows step `id` from the given offsets and returns its exit code.
pub fn attach(state_dir: &Path, id: &str, offsets: (u64, u64)) -> i32 {
    let step = match StepDir::new(state_dir, id) {
        Ok(step) => step,
        Err(message) => return attach_failed(&message),
    };
    if !step.exists() {
        return attach_failed(&format!("step `{id}` never started in this container"));
    }
    let opened = open_at(&step.stdout(), offsets.0)
        .and_then(|stdout| open_at(&step.stderr(), offsets.1).map(|stderr| (stdout, stderr)));
    let (mut stdout_file, mut stderr_file) = match opened {
        Ok(files) => files,
        Err(err) => {
            return attach_failed(&format!("failed to open the output of step `{id}`: {err}"));
        }
    };

    if let Some(pgid) = step.read_pgid() {
        thread::spawn(move || run::watch_stdin(io::stdin(), pgid));
    }

    let mut stdout = raw_stdout();
    let mut stderr = raw_stderr();
    loop {
        // Read the record before the files: output is complete once it exists.
        let record = step.read_exit();
        let copied = copy_new(&mut stdout_file, &mut stdout)
            .and_then(|()| copy_new(&mut stderr_file, &mut stderr));
        if let Err(err) = copied {
            return attach_failed(&format!("failed to copy the output of step `{id}`: {err}"));
        }
        if let Some(record) = record {
            return record.code;
        }
        if !step_is_alive(&step) && step.read_exit().is_none() {
            return attach_failed(&format!(
                "step `{id}` is no longer running and no exit code was recorded (its supervisor was killed)"
            ));
        }
        thread::sleep(FOLLOW_INTERVAL);
    }
}

fn attach_failed(message: &str) -> i32 {
    eprintln!("danube-supervisor: {message}");
    ATTACH_FAILED
}

fn open_at(path: &Path, offset: u64) -> io::Result<File> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    if offset > length {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "offset {offset} is past the end of `{}` ({length} bytes)",
                path.display()
            ),
        ));
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

fn copy_new(file: &mut File, sink: &mut File) -> io::Result<()> {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        sink.write_all(&buffer[..read])?;
    }
}
