use std::fs::OpenOptions;
use std::io::Write;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::index::RECORD_LEN;
use super::*;

fn job_logs() -> (tempfile::TempDir, JobLogs) {
    let temp = tempfile::tempdir().unwrap();
    let logs = JobLogs::create(temp.path().join("logs").join("job-1")).unwrap();
    (temp, logs)
}

fn concat(chunks: &[LogChunk]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|chunk| chunk.data.iter().copied())
        .collect()
}

#[test]
fn tricky_bytes_are_stored_exactly() {
    let (_temp, logs) = job_logs();
    let mut long_line = vec![b'x'; 3 * 1024 * 1024];
    long_line.extend_from_slice(b"\xf0\x28\x8c\xbc");
    let pieces: [&[u8]; 5] = [
        b"\x1b[1;32mgreen\x1b[0m\n",
        b"progress 10%\rprogress 20%\rprogress 100%\r\n",
        b"invalid \xff\xfe\xc3 utf-8\n",
        b"\0nul\0and\ttabs",
        &long_line,
    ];

    let mut writer = logs.writer(LogKey::Step(7)).unwrap();
    for piece in pieces {
        writer.write(Stream::Stdout, piece).unwrap();
    }
    let size = writer.finish().unwrap();

    let expected = pieces.concat();
    assert_eq!(size, expected.len() as u64);
    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(7)).unwrap(),
        expected
    );
    assert_eq!(
        concat(&read_log(logs.dir(), LogKey::Step(7)).unwrap()),
        expected
    );
}

#[test]
fn stream_tags_and_order_are_preserved() {
    let (_temp, logs) = job_logs();
    let writes = [
        (Stream::Stdout, "out 1\n"),
        (Stream::Stderr, "err 1\n"),
        (Stream::Stdout, "out 2\n"),
        (Stream::Engine, "step timed out\n"),
        (Stream::Stderr, "err 2\n"),
    ];

    let mut writer = logs.writer(LogKey::Coordinator).unwrap();
    for (stream, text) in writes {
        writer.write(stream, text.as_bytes()).unwrap();
    }
    writer.finish().unwrap();

    let chunks = read_log(logs.dir(), LogKey::Coordinator).unwrap();
    let read: Vec<_> = chunks
        .iter()
        .map(|chunk| {
            (
                chunk.stream,
                String::from_utf8(chunk.data.to_vec()).unwrap(),
            )
        })
        .collect();
    let expected: Vec<_> = writes
        .iter()
        .map(|&(stream, text)| (stream, text.to_owned()))
        .collect();
    assert_eq!(read, expected);

    let mut offset = 0;
    for chunk in &chunks {
        assert_eq!(chunk.key, LogKey::Coordinator);
        assert_eq!(chunk.offset, offset);
        assert!(
            chunk.timestamp > 1_600_000_000_000,
            "timestamp {}",
            chunk.timestamp
        );
        offset += chunk.data.len() as u64;
    }
}

#[test]
fn secret_split_across_writes_is_stored_masked() {
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"ghp_topsecret");
    let line = b"pushing with ghp_topsecret\n";

    for split in 0..=line.len() {
        let key = LogKey::Step(split as i64);
        let mut writer = logs.writer(key).unwrap();
        writer.write(Stream::Stdout, &line[..split]).unwrap();
        writer.write(Stream::Stdout, &line[split..]).unwrap();
        writer.finish().unwrap();

        let stored = read_log_bytes(logs.dir(), key).unwrap();
        assert_eq!(stored, b"pushing with ***\n", "split at {split}");
    }
}

#[test]
fn streams_are_scrubbed_separately() {
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"abcdef");

    let mut writer = logs.writer(LogKey::Step(1)).unwrap();
    writer.write(Stream::Stdout, b"out abc").unwrap();
    writer.write(Stream::Stderr, b"def err\n").unwrap();
    writer.write(Stream::Stdout, b"def\n").unwrap();
    writer.finish().unwrap();

    let chunks = read_log(logs.dir(), LogKey::Step(1)).unwrap();
    let stdout: Vec<u8> = chunks
        .iter()
        .filter(|chunk| chunk.stream == Stream::Stdout)
        .flat_map(|chunk| chunk.data.to_vec())
        .collect();
    assert_eq!(stdout, b"out ***\n");
    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(1)).unwrap(),
        b"out def err\n***\n"
    );
}

#[test]
fn output_is_published_before_the_next_write() {
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"s3cret-token");
    let mut live = logs.subscribe();

    let mut writer = logs.writer(LogKey::Step(3)).unwrap();
    writer.write(Stream::Stdout, b"downloading... 42%").unwrap();

    let chunk = live.try_recv().unwrap();
    assert_eq!(chunk.data, Bytes::from_static(b"downloading... 42%"));
    assert_eq!(chunk.key, LogKey::Step(3));
    assert_eq!(chunk.stream, Stream::Stdout);
    assert_eq!(chunk.offset, 0);
    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(3)).unwrap(),
        b"downloading... 42%"
    );
    writer.finish().unwrap();
}

#[test]
fn held_secret_prefix_is_released_by_finish() {
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"s3cret-token");
    let mut live = logs.subscribe();

    let mut writer = logs.writer(LogKey::Step(4)).unwrap();
    writer.write(Stream::Stderr, b"value: s3cret").unwrap();
    assert_eq!(
        live.try_recv().unwrap().data,
        Bytes::from_static(b"value: ")
    );
    assert!(matches!(live.try_recv(), Err(TryRecvError::Empty)));

    let size = writer.finish().unwrap();

    let released = live.try_recv().unwrap();
    assert_eq!(released.data, Bytes::from_static(b"s3cret"));
    assert_eq!(released.stream, Stream::Stderr);
    assert_eq!(released.offset, 7);
    assert_eq!(size, 13);
    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(4)).unwrap(),
        b"value: s3cret"
    );
}

#[test]
fn dropped_writer_releases_held_output() {
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"s3cret-token");

    let mut writer = logs.writer(LogKey::Step(5)).unwrap();
    writer.write(Stream::Stdout, b"partial s3c").unwrap();
    drop(writer);

    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(5)).unwrap(),
        b"partial s3c"
    );
}

#[test]
fn range_reads_equal_slices_of_the_whole() {
    let (_temp, logs) = job_logs();
    let mut writer = logs.writer(LogKey::Step(9)).unwrap();
    let mut expected = Vec::new();
    for i in 0..40u32 {
        let stream = if i % 3 == 0 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let piece: Vec<u8> = (0..(i * 7 % 23 + 1))
            .map(|j| b'a' + ((i + j) % 26) as u8)
            .collect();
        writer.write(stream, &piece).unwrap();
        expected.extend_from_slice(&piece);
    }
    writer.finish().unwrap();
    let total = expected.len() as u64;
    let whole = read_log(logs.dir(), LogKey::Step(9)).unwrap();

    for offset in (0..=total + 3).step_by(5) {
        for limit in [0, 1, 2, 7, 31, 100, total, u64::MAX] {
            let chunks = read_log_range(logs.dir(), LogKey::Step(9), offset, limit).unwrap();
            let start = offset.min(total) as usize;
            let end = offset.saturating_add(limit).min(total) as usize;
            assert_eq!(
                concat(&chunks),
                &expected[start..end],
                "offset {offset} limit {limit}"
            );

            for chunk in &chunks {
                let source = whole
                    .iter()
                    .find(|whole_chunk| {
                        whole_chunk.offset <= chunk.offset
                            && chunk.offset < whole_chunk.offset + whole_chunk.data.len() as u64
                    })
                    .unwrap();
                assert_eq!(chunk.stream, source.stream, "offset {offset} limit {limit}");
                assert_eq!(chunk.timestamp, source.timestamp);
                let at = chunk.offset as usize;
                assert_eq!(chunk.data, expected[at..at + chunk.data.len()]);
            }
        }
    }
}

#[test]
fn missing_log_reads_as_empty() {
    let (_temp, logs) = job_logs();

    assert!(read_log(logs.dir(), LogKey::Step(1)).unwrap().is_empty());
    assert!(
        read_log_range(logs.dir(), LogKey::Step(1), 0, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        read_log_bytes(logs.dir(), LogKey::Step(1))
            .unwrap()
            .is_empty()
    );
    assert!(
        list_logs(&logs.dir().join("no-such-job"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn truncated_index_record_is_ignored() {
    let (_temp, logs) = job_logs();
    let key = LogKey::Step(2);
    let mut writer = logs.writer(key).unwrap();
    writer.write(Stream::Stdout, b"first\n").unwrap();
    writer.write(Stream::Stdout, b"second\n").unwrap();
    writer.finish().unwrap();

    // Simulate a crash in the middle of appending a third record.
    let index_path = index::index_path(logs.dir(), key);
    let mut index = OpenOptions::new().append(true).open(&index_path).unwrap();
    index.write_all(&[1, 2, 3, 4, 5]).unwrap();
    drop(index);

    let chunks = read_log(logs.dir(), key).unwrap();
    assert_eq!(concat(&chunks), b"first\nsecond\n");
    assert_eq!(
        concat(&read_log_range(logs.dir(), key, 3, 100).unwrap()),
        b"st\nsecond\n"
    );

    let mut writer = logs.writer(key).unwrap();
    writer.write(Stream::Stderr, b"third\n").unwrap();
    writer.finish().unwrap();

    assert_eq!(
        std::fs::metadata(&index_path).unwrap().len(),
        3 * RECORD_LEN as u64
    );
    let chunks = read_log(logs.dir(), key).unwrap();
    assert_eq!(concat(&chunks), b"first\nsecond\nthird\n");
    assert_eq!(chunks[2].stream, Stream::Stderr);
    assert_eq!(chunks[2].offset, 13);
}

#[test]
fn list_logs_orders_coordinator_then_steps() {
    let (_temp, logs) = job_logs();
    for key in [LogKey::Step(10), LogKey::Step(2), LogKey::Coordinator] {
        let mut writer = logs.writer(key).unwrap();
        writer.write(Stream::Stdout, b"x").unwrap();
        writer.finish().unwrap();
    }
    std::fs::write(logs.dir().join("notes.txt"), b"not a log").unwrap();
    std::fs::write(logs.dir().join("step-007.log"), b"not canonical").unwrap();

    let keys = list_logs(logs.dir()).unwrap();

    assert_eq!(
        keys,
        vec![LogKey::Coordinator, LogKey::Step(2), LogKey::Step(10)]
    );
}

#[test]
fn log_key_stem_round_trips() {
    for key in [
        LogKey::Coordinator,
        LogKey::Step(0),
        LogKey::Step(42),
        LogKey::Step(-1),
    ] {
        assert_eq!(LogKey::from_stem(&key.stem()), Some(key));
    }
    for stem in [
        "step-",
        "step-x",
        "step-+1",
        "step-01",
        "Coordinator",
        "step-1.log",
    ] {
        assert_eq!(LogKey::from_stem(stem), None, "stem {stem}");
    }
}

#[test]
fn lagging_subscriber_gets_lagged() {
    let (_temp, logs) = job_logs();
    let mut live = logs.subscribe();

    let mut writer = logs.writer(LogKey::Step(1)).unwrap();
    for i in 0..LIVE_CHANNEL_CAPACITY + 10 {
        writer
            .write(Stream::Stdout, format!("line {i}\n").as_bytes())
            .unwrap();
    }
    writer.finish().unwrap();

    assert!(matches!(live.try_recv(), Err(TryRecvError::Lagged(10))));
    let next = live.try_recv().unwrap();
    assert_eq!(next.data, Bytes::from_static(b"line 10\n"));
}

#[tokio::test]
async fn async_subscriber_receives_chunks_in_order() {
    let (_temp, logs) = job_logs();
    let mut live = logs.subscribe();

    let mut writer = logs.writer(LogKey::Step(1)).unwrap();
    writer.write(Stream::Stdout, b"one\n").unwrap();
    writer.write(Stream::Stderr, b"two\n").unwrap();
    writer.finish().unwrap();
    drop(logs);

    let first = live.recv().await.unwrap();
    let second = live.recv().await.unwrap();
    assert_eq!(
        (first.stream, first.data),
        (Stream::Stdout, Bytes::from_static(b"one\n"))
    );
    assert_eq!((second.stream, second.offset), (Stream::Stderr, 4));
    assert!(matches!(live.recv().await, Err(RecvError::Closed)));
}

#[test]
fn token_patterns_are_stored_masked() {
    let (_temp, logs) = job_logs();
    let mut writer = logs.writer(LogKey::Step(1)).unwrap();
    writer
        .write(Stream::Stdout, b"DB_PASSWORD=hunter2 ok\n")
        .unwrap();
    writer
        .write(
            Stream::Stdout,
            b"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\n",
        )
        .unwrap();
    writer.finish().unwrap();

    assert_eq!(
        read_log_bytes(logs.dir(), LogKey::Step(1)).unwrap(),
        b"DB_PASSWORD=*** ok\njwt ***\n"
    );
}

#[test]
fn many_megabytes_pass_through_unchanged() {
    // A quick sanity check of the bulk path; the throughput benchmark lives
    // elsewhere.
    let (_temp, logs) = job_logs();
    logs.scrubber().add_secret(b"not-in-this-log-1234");
    let line = b"2024-05-01T12:00:00Z INFO compiling crate foo v1.2.3 (/src/foo) ... done\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();

    let mut writer = logs.writer(LogKey::Step(1)).unwrap();
    for _ in 0..256 {
        writer.write(Stream::Stdout, &chunk).unwrap();
    }
    let size = writer.finish().unwrap();

    assert_eq!(size, 256 * chunk.len() as u64);
    let stored = read_log_bytes(logs.dir(), LogKey::Step(1)).unwrap();
    assert!(
        stored
            .chunks(chunk.len())
            .all(|piece| piece == chunk.as_slice())
    );
}
