//! Job and step logs: scrubbed of secrets, stored append-only per step with
//! stream tags and timestamps, and published to live subscribers.
//!
//! Layout under `<data_dir>/logs/<job_id>/`: for each log key a data file
//! (`<stem>.log`, the scrubbed bytes exactly as written) and an index file
//! (`<stem>.idx`, one fixed-size record per chunk: data offset, length,
//! stream tag, timestamp). Reading one step or a range of it touches only that
//! step's files.
//!
//! Bytes are stored as the process wrote them (after scrubbing): invalid
//! UTF-8, carriage returns, ANSI escapes and long lines are kept as they are,
//! and rendering them is left to the reader.

mod index;
mod reader;
mod scrub;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::model::{Stream, UnixMillis};

pub use reader::{list_logs, read_log, read_log_bytes, read_log_range};
pub use scrub::{MASK, ScrubState, Scrubber};
pub use writer::LogWriter;

/// Number of chunks a live subscriber may fall behind before it gets
/// `RecvError::Lagged`. The channel keeps this many recent chunks of up to
/// 128 KiB each, so it bounds a job's live backlog to about 32 MiB.
pub const LIVE_CHANNEL_CAPACITY: usize = 256;

/// Scrubbed log bytes stored by this process since it started, for metrics.
static BYTES_WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns the number of scrubbed log bytes this process has stored, over all
/// jobs, since it started.
pub fn bytes_written() -> u64 {
    BYTES_WRITTEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which log of a job: the coordinator's output or one step's.
///
/// Ordered with the coordinator first, then steps by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum LogKey {
    Coordinator,
    Step(i64),
}

impl LogKey {
    /// The file stem: `coordinator` or `step-<id>`.
    pub fn stem(&self) -> String {
        match self {
            LogKey::Coordinator => "coordinator".to_owned(),
            LogKey::Step(id) => format!("step-{id}"),
        }
    }

    /// Parses a file stem made by [`LogKey::stem`].
    pub fn from_stem(stem: &str) -> Option<LogKey> {
        if stem == "coordinator" {
            return Some(LogKey::Coordinator);
        }
        let id: i64 = stem.strip_prefix("step-")?.parse().ok()?;
        // Only the canonical spelling, so that each key has one file name.
        (LogKey::Step(id).stem() == stem).then_some(LogKey::Step(id))
    }
}

/// One chunk of output as published live and as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub key: LogKey,
    pub stream: Stream,
    /// Byte offset of `data` in the log's data file.
    pub offset: u64,
    pub timestamp: UnixMillis,
    pub data: Bytes,
}

/// The logs of one job: its directory, scrubber and live channel.
pub struct JobLogs {
    dir: PathBuf,
    scrubber: Arc<Scrubber>,
    live: broadcast::Sender<LogChunk>,
}

impl JobLogs {
    /// Creates `dir` if needed.
    pub fn create(dir: PathBuf) -> io::Result<JobLogs> {
        std::fs::create_dir_all(&dir)
            .map_err(|err| index::with_path("create log directory", &dir, err))?;
        let (live, _) = broadcast::channel(LIVE_CHANNEL_CAPACITY);
        Ok(JobLogs {
            dir,
            scrubber: Scrubber::new(),
            live,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    /// Live chunks from now on. A receiver that falls behind gets
    /// `RecvError::Lagged` and should catch up from disk by offset.
    pub fn subscribe(&self) -> broadcast::Receiver<LogChunk> {
        self.live.subscribe()
    }

    /// Opens the log for `key` for appending.
    ///
    /// Use one writer per key at a time: two writers on the same key would
    /// index their chunks at wrong offsets.
    pub fn writer(&self, key: LogKey) -> io::Result<LogWriter> {
        LogWriter::open(
            &self.dir,
            key,
            Arc::clone(&self.scrubber),
            self.live.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
