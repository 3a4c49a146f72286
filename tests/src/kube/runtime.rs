//! Container processes: each container runs in its own mount and PID
//! namespace, as a container runtime would start it, and each exec joins
//! the namespaces of its container.
//!
//! A new container is started in three processes:
//!
//! 1. the emulator forks a child (`std::process::Command`);
//! 2. the child unshares the mount and PID namespaces, makes `/` private,
//!    bind-mounts each volume at its `mountPath`, hides the shells if the
//!    image has none, then forks again and waits. It forwards the signals it
//!    gets to its own child and exits with that child's status (128 + the
//!    signal number for a signal, as container runtimes report it);
//! 3. the grandchild is PID 1 of the new namespace. It dies with its parent
//!    (`PR_SET_PDEATHSIG`), mounts its own `/proc`, changes to the working
//!    directory and the container's user, and execs the command, resolved on
//!    the container's `PATH` inside the namespace.
//!
//! When PID 1 exits the kernel kills every other process in the namespace,
//! execs and processes that left the process group included, before PID 1
//! can be reaped; so [`kill_container`] kills PID 1, and the middle
//! process's exit means the whole container is gone. A `SIGTERM`
//! to it reaches PID 1, which ignores it unless it installed a handler, as
//! in a real container.
//!
//! Mount points that do not exist on the host are created there as empty
//! directories first, because a bind mount needs a directory to cover.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::process::{Child, Command};

/// Shell names hidden in images without a shell.
const SHELLS: &[&str] = &["sh", "bash", "dash", "rbash"];

/// Folders that may hold shells on the host.
const SHELL_DIRS: &[&str] = &["/bin", "/usr/bin"];

/// How a process should be set up inside its namespaces.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessSpec {
    /// `command` followed by `args`.
    pub argv: Vec<String>,
    /// The full environment, `PATH` included.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `(uid, gid)`; `None` keeps the emulator's user (root).
    pub user: Option<(u32, u32)>,
    /// Whether the process reads a pipe on stdin (otherwise `/dev/null`).
    pub stdin: bool,
}

/// Streams of a process: pipes, or a pseudo-terminal's process side for
/// all three.
#[derive(Debug)]
pub(crate) enum Streams {
    Pipes,
    Terminal(std::os::fd::OwnedFd),
}

/// What a new container's namespace contains.
#[derive(Debug, Clone, Default)]
pub(crate) struct Isolation {
    /// `(host directory, mountPath)` bind mounts.
    pub mounts: Vec<(PathBuf, String)>,
    /// Overlay mounts that hide the shells, from [`ShellMask::prepare`].
    pub shell_mask: Option<ShellMask>,
}

/// Whiteout folders that, stacked over `/bin` and `/usr/bin` with overlayfs,
/// hide the shells in them.
#[derive(Debug, Clone)]
pub(crate) struct ShellMask {
    /// `(overlay options, target folder)`.
    overlays: Vec<(String, String)>,
}

impl ShellMask {
    /// Creates one whiteout folder per host folder that holds a shell, under
    /// `root`. Folders that are symlinks (`/bin` on merged-usr systems) are
    /// skipped: hiding their target hides the shells there too.
    ///
    /// # Errors
    ///
    /// Creating the folders or the whiteout device nodes failed.
    pub fn prepare(root: &Path) -> io::Result<ShellMask> {
        let mut overlays = Vec::new();
        for (index, dir) in SHELL_DIRS.iter().enumerate() {
            let is_real_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
            if !is_real_dir {
                continue;
            }
            let present: Vec<&str> = SHELLS
                .iter()
                .copied()
                .filter(|shell| Path::new(dir).join(shell).exists())
                .collect();
            if present.is_empty() {
                continue;
            }
            let whiteouts = root.join(format!("whiteouts-{index}"));
            std::fs::create_dir_all(&whiteouts)?;
            for shell in present {
                make_whiteout(&whiteouts.join(shell))?;
            }
            overlays.push((
                format!("lowerdir={}:{dir}", whiteouts.display()),
                (*dir).to_owned(),
            ));
        }
        Ok(ShellMask { overlays })
    }
}

/// Creates an overlayfs whiteout: a character device with number 0/0.
fn make_whiteout(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device()) {
        return Ok(());
    }
    let name = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let result = unsafe { libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o600, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A container's or an exec's process, seen from the emulator: the middle
/// process of the three described in the module documentation.
pub(crate) struct Process {
    pub child: Child,
}

impl Process {
    /// Returns the middle process's pid. Its `ns/mnt` and `ns/pid_for_children`
    /// are the container's namespaces.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Sends `signal` to a process started by this module. The middle process
/// forwards catchable signals to the container's PID 1; `SIGKILL` kills the
/// middle process and with it the whole namespace.
pub(crate) fn signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety requirements. A failure means the
    // process is already gone, which is what the caller wants.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Kills a container with `SIGKILL` to its PID 1 (the middle process
/// `pid`'s child). The middle process then exits once the kernel has
/// killed every other process of the namespace, so its exit means the
/// whole container is gone. Falls back to killing the middle process,
/// whose death kills PID 1 in turn, when the child cannot be found.
pub(crate) fn kill_container(pid: u32) {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    let pid_one = children
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok());
    signal(pid_one.unwrap_or(pid), libc::SIGKILL);
}

/// The namespaces of a running container, opened from its middle process.
pub(crate) struct Namespaces {
    mount: OwnedFd,
    pid: OwnedFd,
}

impl Namespaces {
    /// Opens the namespaces of the container whose middle process is `pid`.
    ///
    /// # Errors
    ///
    /// The process is gone.
    pub fn of(pid: u32) -> io::Result<Namespaces> {
        Ok(Namespaces {
            mount: File::open(format!("/proc/{pid}/ns/mnt"))?.into(),
            pid: File::open(format!("/proc/{pid}/ns/pid_for_children"))?.into(),
        })
    }
}

/// Everything the forked child needs, as C strings built before the fork:
/// between `fork` and `exec` the child may not allocate.
struct Prepared {
    mounts: Vec<(CString, CString)>,
    overlays: Vec<(CString, CString)>,
    working_dir: Option<CString>,
    user: Option<(u32, u32)>,
}

impl Prepared {
    fn new(spec: &ProcessSpec, isolation: Option<&Isolation>) -> io::Result<Prepared> {
        let c = |text: &str| CString::new(text).map_err(io::Error::other);
        let mut mounts = Vec::new();
        let mut overlays = Vec::new();
        if let Some(isolation) = isolation {
            for (source, target) in &isolation.mounts {
                std::fs::create_dir_all(target)?;
                mounts.push((CString::new(source.as_os_str().as_bytes())?, c(target)?));
            }
            for (options, target) in isolation.shell_mask.iter().flat_map(|m| &m.overlays) {
                overlays.push((c(options)?, c(target)?));
            }
        }
        Ok(Prepared {
            mounts,
            overlays,
            working_dir: spec.working_dir.as_deref().map(c).transpose()?,
            user: spec.user,
        })
    }
}

fn command(spec: &ProcessSpec, streams: Streams) -> io::Result<Command> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        ));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Streams::Terminal(terminal) = streams {
        command
            .stdin(Stdio::from(terminal.try_clone()?))
            .stdout(Stdio::from(terminal.try_clone()?))
            .stderr(Stdio::from(terminal));
    }
    Ok(command)
}

/// Starts a container's main process in new namespaces.
///
/// # Errors
///
/// The namespaces could not be set up, or the command was not found (the
/// error's kind is then `NotFound`).
pub(crate) fn start_container(spec: &ProcessSpec, isolation: &Isolation) -> io::Result<Process> {
    let prepared = Prepared::new(spec, Some(isolation))?;
    let mut command = command(spec, Streams::Pipes)?;
    // SAFETY: the closure runs in the forked child before exec. It only
    // makes system calls on data prepared before the fork and allocates
    // nothing.
    unsafe {
        command.pre_exec(move || {
            // A test killed outright must not leave its containers behind.
            die_with_parent()?;
            enter_new_namespaces(&prepared)?;
            become_pid_one(&prepared)
        });
    }
    Ok(Process {
        child: command.spawn()?,
    })
}

/// Starts an exec inside a running container's namespaces.
///
/// # Errors
///
/// Joining the namespaces failed, or the command was not found.
pub(crate) fn start_exec(
    spec: &ProcessSpec,
    namespaces: &Namespaces,
    streams: Streams,
) -> io::Result<Process> {
    let prepared = Prepared::new(spec, None)?;
    let mount_fd = namespaces.mount.as_raw_fd();
    let pid_fd = namespaces.pid.as_raw_fd();
    let terminal = matches!(streams, Streams::Terminal(_));
    let mut command = command(spec, streams)?;
    // SAFETY: as in `start_container`; the two descriptors stay open until
    // `spawn` returns because `namespaces` outlives this call.
    unsafe {
        command.pre_exec(move || {
            die_with_parent()?;
            check(libc::setns(mount_fd, libc::CLONE_NEWNS))?;
            check(libc::setns(pid_fd, libc::CLONE_NEWPID))?;
            fork_and_wait()?;
            die_with_parent()?;
            if terminal {
                // A new session whose controlling terminal is the pty, so
                // that the shell gets job control and Ctrl-C.
                check(libc::setsid())?;
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            enter_working_dir_and_user(&prepared)
        });
    }
    Ok(Process {
        child: command.spawn()?,
    })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child: new namespaces and the container's mounts.
unsafe fn enter_new_namespaces(prepared: &Prepared) -> io::Result<()> {
    let null = std::ptr::null();
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID))?;
        // Without this, the bind mounts below would propagate to the host.
        check(libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for (source, target) in &prepared.mounts {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
        for (options, target) in &prepared.overlays {
            check(libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            ))?;
        }
    }
    Ok(())
}

/// Runs in the forked child after `enter_new_namespaces`: returns in PID 1
/// of the new namespace, ready to exec.
unsafe fn become_pid_one(prepared: &Prepared) -> io::Result<()> {
    unsafe {
        fork_and_wait()?;
        die_with_parent()?;
        let null = std::ptr::null();
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            null,
        ))?;
    }
    enter_working_dir_and_user(prepared)
}

fn enter_working_dir_and_user(prepared: &Prepared) -> io::Result<()> {
    // SAFETY: plain system calls on prepared C strings.
    unsafe {
        if let Some(dir) = &prepared.working_dir {
            check(libc::chdir(dir.as_ptr()))?;
        }
        if let Some((uid, gid)) = prepared.user {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
        }
    }
    Ok(())
}

/// The grandchild's pid, read by the middle process's signal handler.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    // A zero pid would signal the whole process group.
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Forks. Returns `Ok` in the new child; the parent never returns: it
/// forwards signals to the child, waits for it and exits with its status.
fn fork_and_wait() -> io::Result<()> {
    // SAFETY: fork in a single-threaded child process (we are in the
    // pre_exec hook); both sides only make async-signal-safe calls after it.
    let child = unsafe { libc::fork() };
    if child == -1 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        return Ok(());
    }

    FORWARD_TO.store(child, Ordering::Relaxed);
    // SAFETY: only async-signal-safe calls, then `_exit`.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = forward_signal;
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(signal, handler as libc::sighandler_t);
        }
        // Close every descriptor, the pipes to the emulator included: the
        // emulator learns of a failed exec from a pipe that only reaches end
        // of file once every copy is closed, and its output pipes must close
        // when the grandchild's do.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        let mut status = 0;
        loop {
            if libc::waitpid(child, &mut status, 0) == child {
                break;
            }
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        libc::_exit(128 + libc::WTERMSIG(status));
    }
}

/// Makes the current process die with `SIGKILL` when its parent dies: the
/// middle process with the emulator's thread that started it, the
/// container's PID 1 with the middle process.
///
/// NOTE: a parent killed between the fork and this call leaves the child
/// running; `getppid` cannot tell, since a parent outside the child's PID
/// namespace always reads as 0.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))
    }
}

/// Returns the `PATH` containers get when neither the image nor the pod sets one.
pub(crate) fn default_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}
