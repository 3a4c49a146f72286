//! Job and step logs: scrubbed of secrets, stored append-only per step with
//! stream tags and timestamps, and published to live subscribers.
//!
//! Layout under `<data_dir>/logs/<job_id>/`: for each log key a data file
//! (`<stem>.log`, the scrubbed bytes exactly as written) and an index file
//! (`<stem>.idx`, one fixed-size record per chunk: data offset, length,
//! stream tag, timestamp). Reading one step or a range of it touches only that
//! step's files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::model::{Stream, UnixMillis};

/// Which log of a job: the coordinator's output or one step's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
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

/// Replaces secrets known to a job, their base64 and URL-encoded forms, and
/// token-like patterns (JWTs, `password=...`) with `***`.
pub struct Scrubber {
    // Implementer: a lock-protected matcher rebuilt when a secret is added.
}

impl Scrubber {
    pub fn new() -> Arc<Scrubber> {
        todo!()
    }

    /// Adds a secret value; every later write is scrubbed of it.
    pub fn add_secret(&self, value: &[u8]) {
        todo!("{}", value.len())
    }

    /// Scrubs a complete text, such as a command line or an error message.
    pub fn scrub_text(&self, text: &str) -> String {
        todo!("{text}")
    }
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
        todo!("{dir:?}")
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
    pub fn writer(&self, key: LogKey) -> io::Result<LogWriter> {
        todo!("{key:?}")
    }
}

/// Appends to one log. Stdout and stderr are scrubbed separately, each
/// holding back only a tail that could be the start of a secret split across
/// writes; `finish` releases those tails.
pub struct LogWriter {
    // Implementer.
}

impl LogWriter {
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        todo!("{stream} {}", data.len())
    }

    /// Flushes held-back tails and the files; returns the data file's size.
    pub fn finish(self) -> io::Result<u64> {
        todo!()
    }
}

/// Reads every chunk of a stored log in order.
pub fn read_log(dir: &Path, key: LogKey) -> io::Result<Vec<LogChunk>> {
    todo!("{dir:?} {key:?}")
}

/// Reads the chunks overlapping data bytes `offset..offset + limit`, cut to
/// that range; uses the index to seek instead of reading from the start.
pub fn read_log_range(
    dir: &Path,
    key: LogKey,
    offset: u64,
    limit: u64,
) -> io::Result<Vec<LogChunk>> {
    todo!("{dir:?} {key:?} {offset} {limit}")
}

pub fn read_log_bytes(dir: &Path, key: LogKey) -> io::Result<Vec<u8>> {
    todo!("{dir:?} {key:?}")
}
