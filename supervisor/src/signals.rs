//! Signals handled by a thread instead of a handler: the signals are blocked
//! in every thread (the mask is inherited by threads started afterwards) and
//! one thread takes them with `sigwait`. Children do not inherit the mask,
//! because `std::process::Command` resets it before `exec`.

use std::io;
use std::mem::MaybeUninit;

/// A set of blocked signals that [`SignalSet::wait`] takes one by one.
pub struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    /// Blocks `signals` in the calling thread. Call it before starting other
    /// threads so that none of them gets a signal delivered.
    pub fn block(signals: &[libc::c_int]) -> io::Result<SignalSet> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset and
        // pthread_sigmask only read and write the initialised set.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            let mut set = set.assume_init();
            for signal in signals {
                libc::sigaddset(&mut set, *signal);
            }
            let result = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if result != 0 {
                return Err(io::Error::from_raw_os_error(result));
            }
            set
        };
        Ok(SignalSet { set })
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> libc::c_int {
        let mut signal = 0;
        loop {
            // SAFETY: the set is initialised and `signal` is a valid out pointer.
            let result = unsafe { libc::sigwait(&self.set, &mut signal) };
            if result == 0 {
                return signal;
            }
        }
    }
}

/// Sends `signal` to every process of group `pgid`. A group that is gone is
/// not an error.
pub fn kill_group(pgid: libc::pid_t, signal: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill has no memory effects; a negative pid names a group.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Returns true while some process of group `pgid` exists.
pub fn group_exists(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}
