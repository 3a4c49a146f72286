//! Reading stored logs back, whole or by byte range.
//!
//! Readers may run while a writer appends, in this process or another one.
//! The index is read before the data, and the writer appends data before its
//! record, so every record read points at bytes that are already there.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::index::{self, IndexRecord, RECORD_LEN, with_path};
use super::{LogChunk, LogKey};

/// Reads every chunk of a stored log in order.
///
/// A log that was never written reads as empty.
pub fn read_log(dir: &Path, key: LogKey) -> io::Result<Vec<LogChunk>> {
    let index_path = index::index_path(dir, key);
    let Some(index) = open_if_exists(&index_path)? else {
        return Ok(Vec::new());
    };
    let records = read_records(index, &index_path, 0)?;
    if records.is_empty() {
        return Ok(Vec::new());
    }

    let data_path = index::data_path(dir, key);
    let data = match std::fs::read(&data_path) {
        Ok(data) => Bytes::from(data),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Bytes::new(),
        Err(err) => return Err(with_path("read log file", &data_path, err)),
    };
    Ok(cut_chunks(key, &records, 0, &data))
}

/// Reads the chunks overlapping data bytes `offset..offset + limit`, cut to
/// that range. Uses the index to seek instead of reading from the start.
///
/// A range past the end, or a `limit` of zero, reads as empty.
pub fn read_log_range(
    dir: &Path,
    key: LogKey,
    offset: u64,
    limit: u64,
) -> io::Result<Vec<LogChunk>> {
    let end = offset.saturating_add(limit);
    let index_path = index::index_path(dir, key);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let Some(index) = open_if_exists(&index_path)? else {
        return Ok(Vec::new());
    };

    let first = first_record_ending_after(&index, &index_path, offset)?;
    let mut records = Vec::new();
    for record in RecordIter::new(index, &index_path, first)? {
        let record = record?;
        if record.offset >= end {
            break;
        }
        records.push(record);
    }
    let Some(last) = records.last() else {
        return Ok(Vec::new());
    };

    let data_path = index::data_path(dir, key);
    let data_end = end.min(last.end());
    let data = match open_if_exists(&data_path)? {
        Some(file) => read_at_most(&file, offset, data_end.saturating_sub(offset))
            .map_err(|err| with_path("read log file", &data_path, err))?,
        None => Bytes::new(),
    };
    Ok(cut_chunks(key, &records, offset, &data))
}

/// Reads the whole scrubbed output of a log as one byte string, for printing.
///
/// This reads the data file directly, so it also returns bytes whose index
/// record a crash prevented. A log that was never written reads as empty.
pub fn read_log_bytes(dir: &Path, key: LogKey) -> io::Result<Vec<u8>> {
    let data_path = index::data_path(dir, key);
    match std::fs::read(&data_path) {
        Ok(data) => Ok(data),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(with_path("read log file", &data_path, err)),
    }
}

/// Lists the logs stored in a job's log directory: the coordinator's first,
/// then steps by id. A missing directory lists nothing.
pub fn list_logs(dir: &Path) -> io::Result<Vec<LogKey>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(with_path("list log directory", dir, err)),
    };

    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| with_path("list log directory", dir, err))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let stem = name
            .strip_suffix(".log")
            .or_else(|| name.strip_suffix(".idx"));
        if let Some(key) = stem.and_then(LogKey::from_stem) {
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn open_if_exists(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(with_path("open", path, err)),
    }
}

/// Turns records into chunks, where `data` contains the data file's bytes
/// from `data_start` on. Each chunk is cut to the bytes `data` contains.
fn cut_chunks(
    key: LogKey,
    records: &[IndexRecord],
    data_start: u64,
    data: &Bytes,
) -> Vec<LogChunk> {
    let data_end = data_start + data.len() as u64;
    records
        .iter()
        .filter_map(|record| {
            let start = record.offset.max(data_start);
            let end = record.end().min(data_end);
            (start < end).then(|| LogChunk {
                key,
                stream: record.stream,
                offset: start,
                timestamp: record.timestamp,
                data: data.slice(to_index(start - data_start)..to_index(end - data_start)),
            })
        })
        .collect()
}

fn to_index(position: u64) -> usize {
    usize::try_from(position).expect("a position inside an in-memory buffer fits in usize")
}

/// Reads up to `len` bytes at `offset`, fewer if the file ends first.
fn read_at_most(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let mut buffer = vec![0u8; to_index(len)];
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    buffer.truncate(filled);
    Ok(Bytes::from(buffer))
}

/// Counts the complete records, leaving out a partial last record.
fn record_count(index: &File, index_path: &Path) -> io::Result<u64> {
    let len = index
        .metadata()
        .map_err(|err| with_path("read the size of log index", index_path, err))?
        .len();
    Ok(len / RECORD_LEN as u64)
}

fn read_record_at(index: &File, index_path: &Path, position: u64) -> io::Result<IndexRecord> {
    let mut record = [0u8; RECORD_LEN];
    index
        .read_exact_at(&mut record, position * RECORD_LEN as u64)
        .map_err(|err| with_path("read log index", index_path, err))?;
    IndexRecord::decode(&record, index_path, position)
}

/// Binary-searches the index for the first record that ends after `offset`.
/// Records are sorted by offset and do not overlap, because they are
/// appended in the order their data is.
fn first_record_ending_after(index: &File, index_path: &Path, offset: u64) -> io::Result<u64> {
    let (mut low, mut high) = (0, record_count(index, index_path)?);
    while low < high {
        let middle = low + (high - low) / 2;
        if read_record_at(index, index_path, middle)?.end() <= offset {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

fn read_records(index: File, index_path: &Path, first: u64) -> io::Result<Vec<IndexRecord>> {
    RecordIter::new(index, index_path, first)?.collect()
}

/// Reads complete records in order from record number `first`.
struct RecordIter<'a> {
    reader: BufReader<File>,
    path: &'a Path,
    position: u64,
    count: u64,
}

impl<'a> RecordIter<'a> {
    fn new(index: File, path: &'a Path, first: u64) -> io::Result<RecordIter<'a>> {
        let count = record_count(&index, path)?;
        let mut reader = BufReader::with_capacity(64 * 1024, index);
        reader
            .seek(SeekFrom::Start(first * RECORD_LEN as u64))
            .map_err(|err| with_path("seek in log index", path, err))?;
        Ok(RecordIter {
            reader,
            path,
            position: first,
            count,
        })
    }
}

impl Iterator for RecordIter<'_> {
    type Item = io::Result<IndexRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        // Stopping at the count taken at the start ignores a partial record
        // at the end and records appended while reading.
        if self.position >= self.count {
            return None;
        }
        let mut record = [0u8; RECORD_LEN];
        if let Err(err) = self.reader.read_exact(&mut record) {
            self.position = self.count;
            return Some(Err(with_path("read log index", self.path, err)));
        }
        let decoded = IndexRecord::decode(&record, self.path, self.position);
        self.position += 1;
        Some(decoded)
    }
}
