//! `danube-supervisor idle`: the command of every worker container. It
//! waits until the pod is deleted and does what PID 1 must: reaps orphaned
//! processes (a step's background children that outlived it would otherwise
//! stay zombies) and exits on SIGTERM or SIGINT, which the kubelet sends when
//! the pod stops. It also works when it is not PID 1.

use crate::signals::SignalSet;

/// Idles until SIGTERM or SIGINT and returns the exit code.
pub fn idle() -> i32 {
    let signals = match SignalSet::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGCHLD]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("danube-supervisor: failed to block signals: {err}");
            return crate::run::SUPERVISOR_FAILED;
        }
    };
    // Orphans may have exited before the signals were blocked.
    reap_all();
    loop {
        match signals.wait() {
            libc::SIGCHLD => reap_all(),
            _ => return 0,
        }
    }
}

/// Reaps every child that has exited, without blocking.
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}
