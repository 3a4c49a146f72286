//! Reading a child's stdout and stderr into an output channel, for steps and
//! for the coordinator.
//!
//! Each read is sent on at once as one [`OutputChunk`] tagged with its
//! stream, so output without a trailing newline arrives as soon as the
//! process writes it. Stdout and stderr are read concurrently, so a flood on
//! one does not block the other. Nothing is buffered beyond the channel: a
//! full channel stops the reading and the process then blocks on its full
//! pipe.
//!
//! NOTE: the order of stdout and stderr relative to each other is the order
//! of the reads, not of the writes. When a process writes to both faster
//! than they are read (a burst of stdout, then one error line on stderr),
//! the stderr line can land before stdout lines written earlier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::process::GroupChild;
use crate::backend::OutputChunk;
use crate::model::Stream;

/// Bytes asked for in one read of a pipe.
const READ_CHUNK_BYTES: usize = 128 * 1024;

/// Once the process group is gone, the pipes are read until EOF. A process
/// outside the group (for example one started with `setsid`) can hold them open for
/// ever, so reading stops when nothing arrived for this long...
const PIPE_IDLE_LIMIT: Duration = Duration::from_secs(1);

/// ...or at the latest this long after the group was gone.
const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// After `stop` fires, a pipe is still read while data is ready,
/// up to this many bytes: more than a full pipe buffer (1 MiB on Linux), so
/// that output written before the group died is not lost.
const STOP_DRAIN_BYTES: usize = 2 * 1024 * 1024;

/// The task that copies a child's stdout and stderr into an output channel.
///
/// If the channel's receiver is dropped, the rest of the output is read and
/// discarded, so that the process does not block on a full pipe. Dropping
/// the reader does not stop the task: it runs until both pipes reach EOF.
pub struct OutputReader {
    handle: Option<JoinHandle<()>>,
    /// Tells the task to stop once the data that is ready has been read.
    stop: CancellationToken,
    activity: Arc<Activity>,
}

impl OutputReader {
    /// Takes the stdout and stderr pipes of `child` and starts reading them
    /// into `output`. The task runs in the caller's tracing span.
    ///
    /// # Panics
    ///
    /// Panics if `child` was spawned without piped stdout and stderr, or
    /// if its pipes were already taken.
    pub fn from_child(child: &mut GroupChild, output: &mpsc::Sender<OutputChunk>) -> OutputReader {
        let leader = child.child_mut();
        let stdout = leader
            .stdout
            .take()
            .expect("the process is spawned with piped stdout and the pipe is taken only here");
        let stderr = leader
            .stderr
            .take()
            .expect("the process is spawned with piped stderr and the pipe is taken only here");
        OutputReader::start(stdout, stderr, output)
    }

    fn start(
        stdout: impl AsyncRead + Unpin + Send + 'static,
        stderr: impl AsyncRead + Unpin + Send + 'static,
        output: &mpsc::Sender<OutputChunk>,
    ) -> OutputReader {
        let stop = CancellationToken::new();
        let activity = Arc::new(Activity::new());

        let stdout_pump = pump(
            stdout,
            Stream::Stdout,
            output.clone(),
            stop.clone(),
            activity.clone(),
        );
        let stderr_pump = pump(
            stderr,
            Stream::Stderr,
            output.clone(),
            stop.clone(),
            activity.clone(),
        );
        let handle = tokio::spawn(
            async move {
                tokio::join!(stdout_pump, stderr_pump);
            }
            .in_current_span(),
        );

        OutputReader {
            handle: Some(handle),
            stop,
            activity,
        }
    }

    /// Waits up to `limit` for both pipes to reach EOF. Returns true if they
    /// did. Reading goes on either way.
    pub async fn finish_within(&mut self, limit: Duration) -> bool {
        let Some(handle) = self.handle.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, handle).await {
            Ok(joined) => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    std::panic::resume_unwind(err.into_panic());
                }
                self.handle = None;
                true
            }
            Err(_elapsed) => false,
        }
    }

    /// Reads the pipes to EOF, or stops as described at [`PIPE_IDLE_LIMIT`].
    /// Call it once the process group is gone. Returns true if both pipes
    /// reached EOF, and false if reading was given up because a process
    /// outside the group still keeps a pipe open.
    ///
    /// The wait is bounded except by a slow receiver: a task waiting for room
    /// in the channel counts as progress.
    pub async fn finish(&mut self) -> bool {
        let started = Instant::now();
        loop {
            if self.finish_within(Duration::from_millis(100)).await {
                return true;
            }
            if self.activity.idle_for() >= PIPE_IDLE_LIMIT || started.elapsed() >= PIPE_DRAIN_LIMIT
            {
                break;
            }
        }

        self.stop.cancel();
        // Unbounded on purpose: after `stop` a pump reads at most
        // STOP_DRAIN_BYTES more, so only a slow receiver can make this wait.
        let Some(handle) = self.handle.take() else {
            return true;
        };
        if let Err(err) = handle.await
            && err.is_panic()
        {
            std::panic::resume_unwind(err.into_panic());
        }
        false
    }

    /// Tells the task to read what is ready, up to [`STOP_DRAIN_BYTES`] a
    /// pipe, and then end, without waiting for it. For a caller that gives
    /// up on the process.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// When the pumps last made progress, so that a pipe held open by a
/// process outside the group can be distinguished from a slow receiver.
struct Activity {
    base: Instant,
    last_progress_millis: AtomicU64,
    /// Pumps that are waiting for room in the output channel.
    sending: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_progress_millis: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_millis.store(millis, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.sending.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_progress_millis.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// Copies one pipe into the output channel until EOF, or until `stop` fires
/// and no more data is ready.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    output: mpsc::Sender<OutputChunk>,
    stop: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut buffer = BytesMut::new();
    let mut receiver_gone = false;
    let mut stop_budget = STOP_DRAIN_BYTES;

    loop {
        buffer.reserve(READ_CHUNK_BYTES);
        // Biased towards the read: once `stop` fires, data that is ready is
        // still read and a read that would block ends the loop.
        let read = tokio::select! {
            biased;
            read = pipe.read_buf(&mut buffer) => read,
            () = stop.cancelled() => break,
        };
        let read = match read {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(%stream, error = %err, "failed to read process output; stopped reading this pipe");
                break;
            }
        };
        activity.touch();

        let data = buffer.split().freeze();
        if !receiver_gone {
            activity.sending.fetch_add(1, Ordering::Relaxed);
            let sent = output.send(OutputChunk { stream, data }).await;
            activity.sending.fetch_sub(1, Ordering::Relaxed);
            activity.touch();
            if sent.is_err() {
                // Keep reading so that the process does not block on a full
                // pipe. The receiver no longer wants its output.
                tracing::debug!(%stream, "output receiver dropped; discarding the rest of the process's output");
                receiver_gone = true;
            }
        }

        if stop.is_cancelled() {
            stop_budget = stop_budget.saturating_sub(read);
            if stop_budget == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
