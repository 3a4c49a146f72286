//! Pseudo-terminals for execs with `tty=true`: the process gets the pty's
//! terminal side as stdin, stdout and stderr and as its controlling
//! terminal, and the session reads and writes the other side. Resize
//! messages (channel 4, `{"Width": W, "Height": H}`) set its window size.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The emulator's side of a pseudo-terminal.
pub(crate) struct Terminal {
    pub controller: File,
}

/// Opens a pseudo-terminal and returns the emulator's side and the
/// process's side.
pub(crate) fn open() -> io::Result<(Terminal, OwnedFd)> {
    let mut controller = -1;
    let mut terminal = -1;
    // SAFETY: openpty writes two descriptors into the given integers; the
    // name, settings and size pointers may be null.
    let result = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and have no other owner.
    let (controller, terminal) = unsafe {
        (
            File::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    };
    Ok((Terminal { controller }, terminal))
}

impl Terminal {
    /// Applies a resize message's `{"Width": W, "Height": H}`. Other
    /// payloads are ignored.
    pub fn resize(&self, payload: &[u8]) {
        let Ok(size) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let dimension = |name: &str| {
            size[name]
                .as_u64()
                .and_then(|value| u16::try_from(value).ok())
        };
        let (Some(columns), Some(rows)) = (dimension("Width"), dimension("Height")) else {
            return;
        };
        let window = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        unsafe { libc::ioctl(self.controller.as_raw_fd(), libc::TIOCSWINSZ, &window) };
    }
}
