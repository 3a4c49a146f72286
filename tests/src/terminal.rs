//! Pseudo-terminals for tests that drive `danube` as a person at a terminal
//! does: the test types on the controlling side and a thread collects what
//! `danube` and its shells print.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows and columns of every test terminal.
pub const SIZE: (u16, u16) = (33, 111);

/// The controlling side of a pseudo-terminal whose output a thread collects.
pub struct Terminal {
    writer: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Opens a pseudo-terminal of [`SIZE`] and returns it with its process
    /// side.
    pub fn open() -> (Terminal, OwnedFd) {
        let (controller, process_side) = crate::kube::terminal::open().expect("open a pty");
        let controller = controller.controller;
        let window = libc::winsize {
            ws_row: SIZE.0,
            ws_col: SIZE.1,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        let sized = unsafe { libc::ioctl(controller.as_raw_fd(), libc::TIOCSWINSZ, &window) };
        assert_eq!(sized, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());

        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = controller.try_clone().expect("clone the pty");
        let collected = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = reader.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                collected.lock().unwrap().extend_from_slice(&buffer[..read]);
            }
        });
        let terminal = Terminal {
            writer: controller,
            output,
        };
        (terminal, process_side)
    }

    /// Starts `command` on a new pseudo-terminal that is its controlling
    /// terminal, in a session of its own, as a terminal emulator starts a
    /// shell. Job control (`sh -i` taking the foreground, Ctrl-C to the
    /// foreground group) then works as it does for a person.
    pub fn spawn_session(command: &mut Command) -> (Terminal, Child) {
        let (terminal, process_side) = Terminal::open();
        command
            .stdin(process_side.try_clone().expect("clone the pty"))
            .stdout(process_side.try_clone().expect("clone the pty"))
            .stderr(process_side);
        // SAFETY: setsid and ioctl are async-signal-safe, as pre_exec needs.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start the command on the pty");
        (terminal, child)
    }

    /// Returns everything printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output after byte `from` contains `text`, and
    /// returns the byte after it.
    ///
    /// # Panics
    ///
    /// After 60 seconds without it, with the output in the message.
    pub fn wait_for(&self, text: &str, from: usize) -> usize {
        let wanted = text.as_bytes();
        for _ in 0..1200 {
            let output = self.output.lock().unwrap();
            let seen = &output[from.min(output.len())..];
            if let Some(start) = seen
                .windows(wanted.len())
                .position(|window| window == wanted)
            {
                return from + start + wanted.len();
            }
            drop(output);
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{text}` on the terminal within 60 s:\n{}", self.text());
    }

    /// Types `text`, as keys pressed on the terminal.
    pub fn type_text(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .expect("write to the pty");
    }
}
