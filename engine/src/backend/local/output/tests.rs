//! The reader on the pipes of real processes.

use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use super::*;
use crate::backend::local::process::spawn_in_new_group;

fn spawn_shell(script: &str) -> GroupChild {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_in_new_group(&mut command).expect("spawn /bin/sh")
}

/// Starts a reader on `child` with a channel that has no other sender, so
/// that the channel closes when the reader's task ends.
fn start_reader(
    child: &mut GroupChild,
    capacity: usize,
) -> (OutputReader, mpsc::Receiver<OutputChunk>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let reader = OutputReader::from_child(child, &sender);
    (reader, receiver)
}

/// Receives every chunk until the channel closes: stdout, stderr.
async fn collect(mut receiver: mpsc::Receiver<OutputChunk>) -> (Vec<u8>, Vec<u8>) {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(chunk) = receiver.recv().await {
        match chunk.stream {
            Stream::Stdout => stdout.extend_from_slice(&chunk.data),
            Stream::Stderr => stderr.extend_from_slice(&chunk.data),
            Stream::Engine => panic!("the reader sent an engine note: {chunk:?}"),
        }
    }
    (stdout, stderr)
}

/// What [`read_after_exit`] observed.
struct AfterExit {
    reached_eof: bool,
    /// Time [`OutputReader::finish`] took.
    finish_took: Duration,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `script`, waits for the shell to exit, then finishes the reader as a
/// caller does once the group is gone.
async fn read_after_exit(script: &str) -> AfterExit {
    let mut child = spawn_shell(script);
    let (mut reader, receiver) = start_reader(&mut child, 16);
    let collector = tokio::spawn(collect(receiver));

    child.wait().await.expect("wait for the shell");
    let started = Instant::now();
    let reached_eof = reader.finish().await;
    let finish_took = started.elapsed();
    let (stdout, stderr) = collector.await.expect("collector task");

    AfterExit {
        reached_eof,
        finish_took,
        stdout,
        stderr,
    }
}

#[tokio::test]
async fn streams_keep_their_tags_and_all_bytes() {
    let read = read_after_exit("echo out; echo err >&2; head -c 300000 /dev/zero").await;

    assert!(read.reached_eof);
    assert_eq!(read.stdout.len(), "out\n".len() + 300_000);
    assert!(read.stdout.starts_with(b"out\n"));
    assert_eq!(read.stderr, b"err\n");
}

#[tokio::test]
async fn chunk_without_newline_arrives_before_eof() {
    let mut child = spawn_shell("printf partial; sleep 30");
    let (mut reader, mut receiver) = start_reader(&mut child, 16);

    let chunk = tokio::time::timeout(Duration::from_secs(1), receiver.recv())
        .await
        .expect("a chunk within 1 s")
        .expect("the channel is open");
    let still_running = child.group().is_alive();
    child
        .terminate(Duration::from_secs(1))
        .await
        .expect("terminate the shell");
    let reached_eof = reader.finish().await;

    assert_eq!(chunk.stream, Stream::Stdout);
    assert_eq!(&chunk.data[..], b"partial");
    assert!(
        still_running,
        "the chunk must arrive while the pipe is open"
    );
    assert!(reached_eof);
}

#[tokio::test]
async fn finish_abandons_pipe_of_escaped_process() {
    let read = read_after_exit("setsid sleep 30 & echo $!").await;
    let escaped: i32 = String::from_utf8_lossy(&read.stdout)
        .trim()
        .parse()
        .expect("the shell printed the pid of the escaped sleep");
    kill(Pid::from_raw(escaped), Signal::SIGKILL).ok();

    assert!(!read.reached_eof);
    assert!(
        read.finish_took >= PIPE_IDLE_LIMIT / 2,
        "gave up after {:?}",
        read.finish_took
    );
    assert!(
        read.finish_took < PIPE_DRAIN_LIMIT,
        "gave up after {:?}",
        read.finish_took
    );
}

#[tokio::test]
async fn dropped_receiver_does_not_block_the_process() {
    let mut child = spawn_shell("head -c 5000000 /dev/zero; exit 4");
    let (mut reader, receiver) = start_reader(&mut child, 1);
    drop(receiver);

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the process exits instead of blocking on a full pipe")
        .expect("wait for the shell");
    let reached_eof = reader.finish().await;

    assert_eq!(status.code(), Some(4));
    assert!(reached_eof);
}

#[tokio::test]
async fn stop_ends_reading_a_pipe_that_stays_open() {
    let mut child = spawn_shell("echo ready; sleep 30");
    let (mut reader, mut receiver) = start_reader(&mut child, 16);
    let first = receiver.recv().await.expect("the ready line");

    reader.stop();
    let ended = reader.finish_within(Duration::from_secs(1)).await;
    child
        .terminate(Duration::from_secs(1))
        .await
        .expect("terminate the shell");

    assert_eq!(&first.data[..], b"ready\n");
    assert!(ended, "the reader still runs after stop");
    assert!(receiver.recv().await.is_none());
}
