//! The on-disk format of a log: file names and index records.
//!
//! A log is two append-only files. `<stem>.log` contains the scrubbed bytes
//! as written. `<stem>.idx` contains one 24-byte record per chunk, all
//! integers little-endian:
//!
//! | bytes  | field                                        |
//! |--------|----------------------------------------------|
//! | 0..8   | offset of the chunk in the data file (u64)   |
//! | 8..12  | length of the chunk (u32)                    |
//! | 12     | stream tag (`Stream::tag`)                   |
//! | 13..16 | zero                                         |
//! | 16..24 | timestamp, milliseconds since the epoch (i64) |
//!
//! Fixed-size records let a reader binary-search the index by offset with
//! positioned reads. The writer appends a chunk's data before its record, so
//! every record points at bytes that exist. A crash can leave a partial last
//! record, which readers ignore and the next writer truncates, and data bytes
//! after the last record, which [`read_log`](super::read_log) does not return
//! but [`read_log_bytes`](super::read_log_bytes) does.

use std::io;
use std::path::{Path, PathBuf};

use crate::model::{Stream, UnixMillis};

use super::LogKey;

pub(crate) const RECORD_LEN: usize = 24;

pub(crate) fn data_path(dir: &Path, key: LogKey) -> PathBuf {
    dir.join(format!("{}.log", key.stem()))
}

pub(crate) fn index_path(dir: &Path, key: LogKey) -> PathBuf {
    dir.join(format!("{}.idx", key.stem()))
}

/// One chunk as described by the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexRecord {
    pub offset: u64,
    pub len: u32,
    pub stream: Stream,
    pub timestamp: UnixMillis,
}

impl IndexRecord {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }

    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut record = [0u8; RECORD_LEN];
        record[0..8].copy_from_slice(&self.offset.to_le_bytes());
        record[8..12].copy_from_slice(&self.len.to_le_bytes());
        record[12] = self.stream.tag();
        record[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
        record
    }

    /// Decodes one record. `path` and `position` only name it in the error.
    pub fn decode(
        record: &[u8; RECORD_LEN],
        path: &Path,
        position: u64,
    ) -> io::Result<IndexRecord> {
        let stream = Stream::from_tag(record[12]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "log index {} has unknown stream tag {} in record {position}; \
                     the file is corrupt",
                    path.display(),
                    record[12]
                ),
            )
        })?;
        let [offset, len, timestamp] = [0..8, 8..12, 16..24].map(|range| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&record[range]);
            u64::from_le_bytes(bytes)
        });
        Ok(IndexRecord {
            offset,
            len: u32::try_from(len).expect("a four-byte field fits in u32"),
            stream,
            timestamp: timestamp as i64,
        })
    }
}

/// Adds the file path to an I/O error, keeping its kind.
pub(crate) fn with_path(action: &str, path: &Path, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("failed to {action} {}: {err}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_bytes() {
        let record = IndexRecord {
            offset: 0x0102_0304_0506_0708,
            len: 0xAABB_CCDD,
            stream: Stream::Stderr,
            timestamp: 1_700_000_000_123,
        };

        let bytes = record.encode();

        assert_eq!(&bytes[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[13..16], &[0, 0, 0]);
        assert_eq!(
            IndexRecord::decode(&bytes, Path::new("x.idx"), 0).unwrap(),
            record
        );
    }

    #[test]
    fn record_with_unknown_tag_is_invalid_data() {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[12] = 9;

        let err = IndexRecord::decode(&bytes, Path::new("step-1.idx"), 4).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("step-1.idx"), "{err}");
    }
}
