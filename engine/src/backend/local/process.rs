//! Process groups: spawn a child as the leader of a new group, kill the group
//! as a whole.
//!
//! A step's shell may start background children (`server &`) and those may
//! start more. Signalling only the shell would leave them running, so every
//! step, container client and coordinator is spawned as the leader of its own
//! process group and signalled through the group. Everything that differs
//! between Linux and macOS lives in this file.
//!
//! Caveat: a process that leaves the group (`setsid`, a double-forking
//! daemon) is out of reach of these functions.

use std::io;
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How often the loops below check whether a group still has members.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait for a group to disappear after SIGKILL. A process in
/// uninterruptible sleep (for example a hung NFS read) can outlive SIGKILL for a
/// while. The wait is bounded so that the caller is never stuck on it.
const AFTER_KILL_LIMIT: Duration = Duration::from_secs(5);

/// Pipe buffer size requested on Linux, so that a chatty step rarely blocks
/// on a full pipe between two reads.
#[cfg(target_os = "linux")]
const PIPE_BUFFER_BYTES: i32 = 1 << 20;

/// A process group, named by the process id of its leader.
///
/// The id stays valid while any member lives, because the kernel does not
/// reuse a process id that is still in use as a group id. Once the last
/// member is gone the id may be reused, so signal a group only while its
/// leader's [`Child`] has not been reaped or [`is_alive`](Self::is_alive)
/// still returns true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessGroup {
    pgid: Pid,
}

/// Result of [`ProcessGroup::terminate`]: which signal ended the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// No member was alive when it was called.
    AlreadyGone,
    /// Every member exited within the grace period after SIGTERM.
    Terminated,
    /// Some member outlived the grace period and the group got SIGKILL.
    Killed,
}

impl ProcessGroup {
    /// Returns the group led by the process with this id. The caller must know that
    /// the process was spawned as a group leader, for example by
    /// [`spawn_in_new_group`].
    pub fn from_leader_pid(pid: u32) -> ProcessGroup {
        let pid = i32::try_from(pid).expect("process ids fit in pid_t");
        ProcessGroup {
            pgid: Pid::from_raw(pid),
        }
    }

    /// Returns the group id, which is the process id of its leader.
    pub fn id(&self) -> u32 {
        u32::try_from(self.pgid.as_raw()).expect("process ids are positive")
    }

    /// Returns true while the group has a member that has not exited.
    ///
    /// Zombies do not count on Linux: a killed background child can stay a
    /// zombie for a while when the init process reaps orphans late, and
    /// waiting for that would make every step end late. Elsewhere only
    /// `killpg(pgid, 0)` is checked, which zombies may pass, so reap the
    /// leader (see [`GroupChild`]) before relying on this.
    pub fn is_alive(&self) -> bool {
        match killpg(self.pgid, None) {
            Ok(()) => has_running_member(self.pgid),
            Err(Errno::ESRCH) => false,
            // EPERM: a member runs as another user (a setuid program). It is
            // alive, even if this process cannot signal it.
            Err(_) => true,
        }
    }

    /// Sends SIGTERM to every member. A group that is already gone is not an
    /// error.
    pub fn send_terminate(&self) -> io::Result<()> {
        self.send(Signal::SIGTERM)
    }

    /// Sends SIGKILL to every member. A group that is already gone is not an
    /// error.
    pub fn send_kill(&self) -> io::Result<()> {
        self.send(Signal::SIGKILL)
    }

    fn send(&self, signal: Signal) -> io::Result<()> {
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    /// Waits until no member is alive, checking every few milliseconds.
    /// Returns false if members remain after `limit`.
    pub async fn wait_until_gone(&self, limit: Duration) -> bool {
        wait_until_gone(*self, limit, || {}).await
    }

    /// Stops the whole group: SIGTERM, then SIGKILL to whatever is still
    /// alive after `grace`, then waits up to five seconds for the members to
    /// disappear.
    ///
    /// Use [`GroupChild::terminate`] instead when this process spawned the
    /// leader and has not reaped it yet, because only that one reaps the
    /// leader while it waits.
    pub async fn terminate(&self, grace: Duration) -> Termination {
        terminate_group(*self, grace, || {}).await
    }
}

/// A child spawned by [`spawn_in_new_group`]: the leader of its own process
/// group.
///
/// Dropping it neither kills nor waits for the group. Call
/// [`terminate`](Self::terminate) or [`wait`](Self::wait) first.
#[derive(Debug)]
pub struct GroupChild {
    child: Child,
    group: ProcessGroup,
    status: Option<ExitStatus>,
}

impl GroupChild {
    pub fn group(&self) -> ProcessGroup {
        self.group
    }

    /// The leader, for taking its pipes. Use [`wait`](Self::wait) rather than
    /// waiting on it directly so that the exit status is kept here.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the leader to exit and reaps it. Other members of the group
    /// may still run afterwards.
    ///
    /// # Errors
    ///
    /// Fails only if waiting for the child fails at the OS level.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Stops the whole group as [`ProcessGroup::terminate`] does, reaping the
    /// leader on the way, and returns the leader's exit status along with how
    /// the group ended.
    ///
    /// # Errors
    ///
    /// Fails only if waiting for the leader fails at the OS level.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<(ExitStatus, Termination)> {
        let child = &mut self.child;
        let status = &mut self.status;
        let termination = terminate_group(self.group, grace, || {
            if status.is_none()
                && let Ok(Some(exited)) = child.try_wait()
            {
                *status = Some(exited);
            }
        })
        .await;
        let status = self.wait().await?;
        Ok((status, termination))
    }
}

/// Spawns `command` as the leader of a new process group, with its pipes
/// enlarged on Linux. The command's own settings (arguments, environment,
/// working directory, stdio) are kept.
///
/// # Errors
///
/// Returns the spawn error unchanged; the caller knows which program it was.
pub fn spawn_in_new_group(command: &mut Command) -> io::Result<GroupChild> {
    command.process_group(0);
    let child = command.spawn()?;
    let pid = child
        .id()
        .expect("a child that was just spawned and not waited for has a pid");

    if let Some(stdout) = child.stdout.as_ref() {
        enlarge_pipe(stdout);
    }
    if let Some(stderr) = child.stderr.as_ref() {
        enlarge_pipe(stderr);
    }

    Ok(GroupChild {
        child,
        group: ProcessGroup::from_leader_pid(pid),
        status: None,
    })
}

/// Stops a whole process group: see [`ProcessGroup::terminate`].
pub async fn kill_process_group(group: ProcessGroup, grace: Duration) -> Termination {
    group.terminate(grace).await
}

/// The exit code a shell would report: the status code, or 128 + N when
/// signal N ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;

    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        // A stopped or continued status is never returned by wait().
        (None, None) => 128,
    }
}

async fn terminate_group(
    group: ProcessGroup,
    grace: Duration,
    mut reap_leader: impl FnMut(),
) -> Termination {
    reap_leader();
    if !group.is_alive() {
        return Termination::AlreadyGone;
    }

    if let Err(err) = group.send_terminate() {
        tracing::debug!(pgid = group.id(), error = %err, "failed to send SIGTERM to process group");
    }
    if wait_until_gone(group, grace, &mut reap_leader).await {
        return Termination::Terminated;
    }

    if let Err(err) = group.send_kill() {
        tracing::warn!(pgid = group.id(), error = %err, "failed to send SIGKILL to process group");
    }
    if !wait_until_gone(group, AFTER_KILL_LIMIT, &mut reap_leader).await {
        tracing::warn!(
            pgid = group.id(),
            "process group still has members after SIGKILL; they may be in uninterruptible sleep"
        );
    }
    Termination::Killed
}

/// Polls until the group has no live member or `limit` has passed, calling
/// `reap_leader` before each check so that an unreaped leader does not look
/// alive.
async fn wait_until_gone(
    group: ProcessGroup,
    limit: Duration,
    mut reap_leader: impl FnMut(),
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap_leader();
        if !group.is_alive() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Asks for a larger pipe buffer. Best effort: a failure (the system limit
/// in `/proc/sys/fs/pipe-max-size` is lower, for example) keeps the default size.
#[cfg(target_os = "linux")]
fn enlarge_pipe(pipe: &impl AsFd) {
    use nix::fcntl::{FcntlArg, fcntl};

    if let Err(errno) = fcntl(pipe.as_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER_BYTES)) {
        tracing::debug!(error = %errno, "failed to enlarge pipe buffer; keeping the default size");
    }
}

#[cfg(not(target_os = "linux"))]
fn enlarge_pipe(_pipe: &impl AsFd) {}

/// Returns true if a member of the group is not a zombie, scanning `/proc`.
/// Called only after `killpg(pgid, 0)` succeeded, which zombies also pass.
#[cfg(target_os = "linux")]
fn has_running_member(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc there is no telling zombies apart: assume alive.
        return true;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // The process may exit between read_dir and this read; it is then
        // not a running member.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_state_and_group(&stat)
            && group == pgid.as_raw()
            && state != 'Z'
            && state != 'X'
        {
            return true;
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn has_running_member(_pgid: Pid) -> bool {
    true
}

/// Reads the state (field 3) and process group (field 5) of a
/// `/proc/<pid>/stat` line. The command name in field 2 may contain spaces
/// and parentheses, so the fields are counted from its last `)`.
#[cfg(target_os = "linux")]
fn parse_state_and_group(stat: &str) -> Option<(char, i32)> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// Kills every process whose environment has `name=value`, and returns how
/// many it signalled. The engine uses it for a job whose engine process
/// died: the job's coordinator and steps carry `DANUBE_JOB_ID=<id>` in their
/// environment, which no unrelated process has, so a reused process id is
/// never hit.
///
/// NOTE: Linux only (it reads `/proc/<pid>/environ`); elsewhere it kills
/// nothing and returns 0.
pub fn kill_processes_with_env(name: &str, value: &str) -> usize {
    #[cfg(target_os = "linux")]
    {
        let wanted = format!("{name}={value}");
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let own = std::process::id();
        let mut killed = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == own {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|byte| *byte == 0)
                .any(|pair| pair == wanted.as_bytes())
                && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                killed += 1;
            }
        }
        killed
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, value);
        0
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    fn sleeper_group(script: &str) -> GroupChild {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        spawn_in_new_group(&mut command).expect("spawn /bin/sh")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_parsing_handles_parentheses_in_command_names() {
        let stat = "4242 (weird) name)) S 1 777 777 0 -1 4194560";
        assert_eq!(parse_state_and_group(stat), Some(('S', 777)));
    }

    #[test]
    fn exit_code_adds_128_to_signal_numbers() {
        use std::os::unix::process::ExitStatusExt;

        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + 9);
    }

    #[tokio::test]
    async fn spawned_child_leads_its_own_group() {
        let mut child = sleeper_group("sleep 5");
        let pid = Pid::from_raw(child.group().id() as i32);

        let pgid = nix::unistd::getpgid(Some(pid)).expect("getpgid of a live child");

        assert_eq!(pgid, pid);
        assert_ne!(pgid, nix::unistd::getpgrp());
        child
            .terminate(Duration::from_secs(1))
            .await
            .expect("terminate");
    }

    #[tokio::test]
    async fn terminate_stops_leader_and_background_children() {
        let mut child = sleeper_group("sleep 100 & sleep 100");
        let group = child.group();
        assert!(group.is_alive());

        let (status, termination) = child
            .terminate(Duration::from_secs(2))
            .await
            .expect("terminate");

        assert_eq!(termination, Termination::Terminated);
        assert_eq!(exit_code(status), 128 + libc::SIGTERM);
        assert!(!group.is_alive());
    }

    #[tokio::test]
    async fn terminate_escalates_to_sigkill_after_grace() {
        let mut child = sleeper_group("trap '' TERM; echo ready; sleep 100 & wait");
        let mut ready = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(
            child.child_mut().stdout.as_mut().expect("piped"),
            &mut ready,
        )
        .await
        .expect("read ready line");
        let started = Instant::now();

        let (status, termination) = child
            .terminate(Duration::from_millis(300))
            .await
            .expect("terminate");

        assert_eq!(termination, Termination::Killed);
        assert_eq!(exit_code(status), 128 + libc::SIGKILL);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!child.group().is_alive());
    }

    #[tokio::test]
    async fn group_without_leader_can_be_killed_by_id() {
        let mut child = sleeper_group("sleep 100 & echo started");
        let status = child.wait().await.expect("wait for the shell");
        assert!(status.success());
        let group = child.group();
        assert!(
            group.is_alive(),
            "the background sleep keeps the group alive"
        );

        let termination = kill_process_group(group, Duration::from_secs(1)).await;

        assert_eq!(termination, Termination::Terminated);
        assert!(!group.is_alive());
    }
}
