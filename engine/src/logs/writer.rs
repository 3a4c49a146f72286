//! Appending scrubbed output to one log and publishing it live.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::model::{Stream, now_millis};

use super::index::{self, IndexRecord, RECORD_LEN, with_path};
use super::scrub::{ScrubState, Scrubber};
use super::{LogChunk, LogKey};

/// Appends to one log. Stdout and stderr are scrubbed separately, each
/// holding back only a tail that could be the start of a secret split across
/// writes; `finish` releases those tails.
///
/// Each `write` hands its output to the kernel before it returns, with one
/// `write(2)` for the data and one for the index record. A reader in another
/// process sees it at once. Nothing is synced to the disk, so output of the
/// last moments before a power loss may be lost.
///
/// Dropping a writer without `finish` still releases the held tails, but an
/// error doing so is only logged.
pub struct LogWriter {
    key: LogKey,
    scrubber: Arc<Scrubber>,
    live: broadcast::Sender<LogChunk>,
    data: File,
    data_path: PathBuf,
    index: File,
    index_path: PathBuf,
    /// Size of the data file, which is where the next chunk goes.
    offset: u64,
    /// One per `Stream` variant, indexed by `stream_slot`.
    streams: [ScrubState; 3],
    /// Output buffer reused while there is no subscriber. Published chunks
    /// take ownership of theirs.
    spare: Vec<u8>,
    finished: bool,
}

fn stream_slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Engine => 2,
    }
}

impl LogWriter {
    /// Opens (or creates) the files of `key` in `dir` for appending.
    ///
    /// A partial last index record, left by a crash in the middle of a
    /// write, is cut off so that new records stay aligned.
    pub(super) fn open(
        dir: &Path,
        key: LogKey,
        scrubber: Arc<Scrubber>,
        live: broadcast::Sender<LogChunk>,
    ) -> io::Result<LogWriter> {
        let data_path = index::data_path(dir, key);
        let index_path = index::index_path(dir, key);
        let mut append = OpenOptions::new();
        append.create(true).append(true);

        let data = append
            .open(&data_path)
            .map_err(|err| with_path("open log file", &data_path, err))?;
        let offset = data
            .metadata()
            .map_err(|err| with_path("read the size of log file", &data_path, err))?
            .len();

        let index = append
            .open(&index_path)
            .map_err(|err| with_path("open log index", &index_path, err))?;
        let index_len = index
            .metadata()
            .map_err(|err| with_path("read the size of log index", &index_path, err))?
            .len();
        let partial = index_len % RECORD_LEN as u64;
        if partial != 0 {
            tracing::debug!(path = %index_path.display(), partial, "cutting off a partial log index record");
            index
                .set_len(index_len - partial)
                .map_err(|err| with_path("truncate log index", &index_path, err))?;
        }

        Ok(LogWriter {
            key,
            scrubber,
            live,
            data,
            data_path,
            index,
            index_path,
            offset,
            streams: Default::default(),
            spare: Vec::new(),
            finished: false,
        })
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(data.len());
        self.scrubber
            .scrub_stream(&mut self.streams[stream_slot(stream)], data, &mut out);
        self.append(stream, out)
    }

    /// Flushes held-back tails and the files; returns the data file's size.
    pub fn finish(mut self) -> io::Result<u64> {
        self.finished = true;
        self.release_held()?;
        Ok(self.offset)
    }

    fn release_held(&mut self) -> io::Result<()> {
        for stream in Stream::ALL.iter().copied() {
            let state = &mut self.streams[stream_slot(stream)];
            if state.held_len() == 0 {
                continue;
            }
            let mut out = Vec::new();
            self.scrubber.finish_stream(state, &mut out);
            self.append(stream, out)?;
        }
        Ok(())
    }

    /// Stores `out`, records it in the index and publishes it.
    fn append(&mut self, stream: Stream, out: Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            self.spare = out;
            return Ok(());
        }
        let timestamp = now_millis();
        let offset = self.offset;

        if let Err(err) = self.data.write_all(&out) {
            // Part of the chunk may have been written; later chunks must be
            // indexed at the real end of the file.
            if let Ok(metadata) = self.data.metadata() {
                self.offset = metadata.len();
            }
            return Err(with_path("append to log file", &self.data_path, err));
        }
        self.offset += out.len() as u64;
        super::BYTES_WRITTEN.fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);

        // The data is written before its record, so a record never points
        // past the end of the data file. A chunk longer than u32::MAX bytes
        // gets several records.
        let mut records = Vec::with_capacity(RECORD_LEN);
        let mut start = offset;
        while start < self.offset {
            let len = u32::try_from(self.offset - start).unwrap_or(u32::MAX);
            let record = IndexRecord {
                offset: start,
                len,
                stream,
                timestamp,
            };
            records.extend_from_slice(&record.encode());
            start += u64::from(len);
        }
        self.index
            .write_all(&records)
            .map_err(|err| with_path("append to log index", &self.index_path, err))?;

        // Without receivers the buffer is kept for the next write instead of
        // going into a chunk that no receiver reads. A send can still find
        // no receiver if the last one goes away in between, which is fine.
        if self.live.receiver_count() == 0 {
            self.spare = out;
        } else {
            let _ = self.live.send(LogChunk {
                key: self.key,
                stream,
                offset,
                timestamp,
                data: Bytes::from(out),
            });
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Err(err) = self.release_held() {
            tracing::error!(
                log = %self.key.stem(),
                error = %err,
                "lost held-back output of a dropped log writer"
            );
        }
    }
}
