//! Container logs: the lines a container wrote to stdout and stderr, in the
//! order they arrived, with the time each line was read, as the kubelet's
//! CRI log files keep them. Held in memory for the pod's lifetime.

use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// One line (with its `\n`, unless the stream ended without one).
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub time: Timestamp,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    lines: Vec<LogLine>,
    /// Both streams reached end of file.
    closed: bool,
    open_streams: u8,
}

/// The log of one run of one container.
pub(crate) struct ContainerLog {
    inner: Mutex<Inner>,
    /// Bumped after every change, for followers.
    changed: watch::Sender<u64>,
}

impl ContainerLog {
    /// Creates a log fed by two streams, stdout and stderr, through
    /// [`Self::pump`].
    pub fn new() -> Arc<ContainerLog> {
        Arc::new(ContainerLog {
            inner: Mutex::new(Inner {
                open_streams: 2,
                ..Inner::default()
            }),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, bytes: Vec<u8>) {
        self.lock().lines.push(LogLine {
            time: Timestamp::now(),
            bytes,
        });
        self.changed.send_modify(|version| *version += 1);
    }

    /// Reads `stream` until end of file, appending whole lines. A line
    /// longer than the read buffer is stored as it arrives, in pieces.
    pub async fn pump(self: Arc<Self>, mut stream: impl AsyncRead + Unpin) {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut partial = Vec::new();
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            partial.extend_from_slice(&buffer[..read]);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                self.push(line);
            }
            if partial.len() >= buffer.len() {
                self.push(std::mem::take(&mut partial));
            }
        }
        if !partial.is_empty() {
            self.push(partial);
        }
        let mut inner = self.lock();
        inner.open_streams = inner.open_streams.saturating_sub(1);
        if inner.open_streams == 0 {
            inner.closed = true;
        }
        drop(inner);
        self.changed.send_modify(|version| *version += 1);
    }

    /// Lines from index `from` on, and whether the log is complete.
    pub fn read_from(&self, from: usize) -> (Vec<LogLine>, bool) {
        let inner = self.lock();
        let lines = inner.lines.get(from..).unwrap_or_default().to_vec();
        (lines, inner.closed)
    }

    /// Returns a receiver that changes whenever a line arrives or the log closes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
