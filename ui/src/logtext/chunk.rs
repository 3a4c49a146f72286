//! Raw bytes of the API's log chunks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::lines::Stream;
use crate::api::Chunk;

/// A chunk this viewer cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(
        "log chunk at byte {offset} has unknown stream `{stream}` (expected stdout, stderr or engine)"
    )]
    UnknownStream { offset: u64, stream: String },
    #[error(
        "log chunk at byte {offset} has unknown encoding `{encoding}` (expected utf8 or base64)"
    )]
    UnknownEncoding { offset: u64, encoding: String },
    #[error("log chunk at byte {offset} is not valid base64")]
    InvalidBase64 {
        offset: u64,
        #[source]
        source: base64::DecodeError,
    },
}

/// Returns the chunk's stream and its bytes exactly as stored.
pub fn chunk_bytes(chunk: &Chunk) -> Result<(Stream, Vec<u8>), ChunkError> {
    let stream = Stream::from_api(&chunk.stream).ok_or_else(|| ChunkError::UnknownStream {
        offset: chunk.offset,
        stream: chunk.stream.clone(),
    })?;
    let bytes = match chunk.encoding.as_str() {
        "utf8" => chunk.data.as_bytes().to_vec(),
        "base64" => STANDARD
            .decode(&chunk.data)
            .map_err(|source| ChunkError::InvalidBase64 {
                offset: chunk.offset,
                source,
            })?,
        other => {
            return Err(ChunkError::UnknownEncoding {
                offset: chunk.offset,
                encoding: other.to_owned(),
            });
        }
    };
    Ok((stream, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: &str, encoding: &str, data: &str) -> Chunk {
        Chunk {
            step_id: Some(1),
            task: Some("build".to_owned()),
            step: Some("make".to_owned()),
            stream: stream.to_owned(),
            offset: 7,
            timestamp: 0,
            encoding: encoding.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn utf8_chunk_gives_its_text_bytes() {
        let (stream, bytes) = chunk_bytes(&chunk("stderr", "utf8", "héllo")).unwrap();
        assert_eq!(stream, Stream::Stderr);
        assert_eq!(bytes, "héllo".as_bytes());
    }

    #[test]
    fn base64_chunk_gives_raw_bytes() {
        let (stream, bytes) = chunk_bytes(&chunk("stdout", "base64", "/wBh")).unwrap();
        assert_eq!(stream, Stream::Stdout);
        assert_eq!(bytes, [0xff, 0x00, b'a']);
    }

    #[test]
    fn unknown_stream_and_bad_base64_are_errors() {
        let err = chunk_bytes(&chunk("stdin", "utf8", "x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "log chunk at byte 7 has unknown stream `stdin` (expected stdout, stderr or engine)"
        );
        let err = chunk_bytes(&chunk("stdout", "base64", "%%")).unwrap_err();
        assert!(matches!(err, ChunkError::InvalidBase64 { offset: 7, .. }));
    }
}
