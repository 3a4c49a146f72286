//! Host steps run through the real backend with real processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::*;
use crate::model::Stream;

struct Harness {
    _temp: TempDir,
    backend: LocalBackend,
    dir: PathBuf,
}

fn harness() -> Harness {
    let temp = TempDir::new().expect("temp dir");
    let dir = temp.path().join("work");
    std::fs::create_dir_all(&dir).expect("create work dir");
    let backend = LocalBackend::new(temp.path().join("workspaces"));
    Harness {
        _temp: temp,
        backend,
        dir,
    }
}

fn spec(dir: &Path, command: &str) -> StepSpec {
    StepSpec {
        job_id: JobId::new(),
        step_id: 1,
        task: "main".to_owned(),
        step: "test-step".to_owned(),
        command: command.to_owned(),
        workdir: dir.to_path_buf(),
        env: BTreeMap::new(),
        image: None,
        timeout: None,
        on_spawn: None,
    }
}

/// Everything a step sent, by stream.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    engine: String,
}

impl Collected {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn pids(&self) -> Vec<Pid> {
        self.stdout_text()
            .split_whitespace()
            .map(|word| Pid::from_raw(word.parse().expect("the command printed only pids")))
            .collect()
    }
}

async fn collect(mut receiver: mpsc::Receiver<OutputChunk>) -> Collected {
    let mut collected = Collected::default();
    while let Some(chunk) = receiver.recv().await {
        match chunk.stream {
            Stream::Stdout => collected.stdout.extend_from_slice(&chunk.data),
            Stream::Stderr => collected.stderr.extend_from_slice(&chunk.data),
            Stream::Engine => collected
                .engine
                .push_str(&String::from_utf8_lossy(&chunk.data)),
        }
    }
    collected
}

async fn run_with_cancel(
    backend: &LocalBackend,
    spec: StepSpec,
    cancel: CancellationToken,
) -> (Result<StepOutcome, BackendError>, Collected) {
    let (sender, receiver) = mpsc::channel(16);
    let collector = tokio::spawn(collect(receiver));
    let outcome = backend.run_step(spec, sender, cancel).await;
    let collected = collector.await.expect("collector task");
    (outcome, collected)
}

async fn run(backend: &LocalBackend, spec: StepSpec) -> (StepOutcome, Collected) {
    let (outcome, collected) = run_with_cancel(backend, spec, CancellationToken::new()).await;
    (outcome.expect("run_step"), collected)
}

/// Returns true if the process has exited. Zombies count: on a machine whose init reaps
/// orphans late, a killed orphan stays a zombie for a while.
fn is_dead(pid: Pid) -> bool {
    if kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let harness = harness();

    for (command, expected) in [
        ("true", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -9 $$", 128 + 9),
    ] {
        let (outcome, _) = run(&harness.backend, spec(&harness.dir, command)).await;
        assert_eq!(
            outcome,
            StepOutcome::Exited(expected),
            "command `{command}`"
        );
    }
}

#[tokio::test]
async fn stdout_and_stderr_are_separate_and_complete() {
    let harness = harness();
    let command = "printf 'to stdout\\n'; printf 'to stderr\\n' >&2; seq 1 50000; seq 1 30000 >&2";

    let (outcome, collected) = run(&harness.backend, spec(&harness.dir, command)).await;

    assert_eq!(outcome, StepOutcome::Exited(0));
    let expected_stdout: String = std::iter::once("to stdout\n".to_owned())
        .chain((1..=50000).map(|n| format!("{n}\n")))
        .collect();
    let expected_stderr: String = std::iter::once("to stderr\n".to_owned())
        .chain((1..=30000).map(|n| format!("{n}\n")))
        .collect();
    assert_eq!(collected.stdout_text(), expected_stdout);
    assert_eq!(String::from_utf8_lossy(&collected.stderr), expected_stderr);
    assert_eq!(collected.engine, "");
}

#[tokio::test]
async fn flooding_stderr_does_not_block_stdout() {
    let harness = harness();
    let command = "head -c 10000000 /dev/zero >&2 & seq 1 100000; wait; echo done";

    let (outcome, collected) = tokio::time::timeout(
        Duration::from_secs(60),
        run(&harness.backend, spec(&harness.dir, command)),
    )
    .await
    .expect("the step finishes instead of deadlocking");

    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(collected.stderr.len(), 10_000_000);
    assert!(collected.stdout_text().ends_with("100000\ndone\n"));
}

#[tokio::test]
async fn output_without_newline_arrives_before_exit() {
    let harness = harness();
    let (sender, mut receiver) = mpsc::channel::<OutputChunk>(16);
    let step = spec(&harness.dir, "printf partial; sleep 2");
    let started = Instant::now();
    let backend = &harness.backend;

    let (first, outcome) = tokio::join!(
        async {
            let chunk = tokio::time::timeout(Duration::from_secs(1), receiver.recv()).await;
            let elapsed = started.elapsed();
            // Keep receiving so the step can end.
            while receiver.recv().await.is_some() {}
            (chunk, elapsed)
        },
        backend.run_step(step, sender, CancellationToken::new()),
    );

    let (chunk, elapsed) = first;
    let chunk = chunk
        .expect("a chunk within 1 s")
        .expect("the channel is open");
    assert_eq!(chunk.stream, Stream::Stdout);
    assert_eq!(&chunk.data[..], b"partial");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(outcome.unwrap(), StepOutcome::Exited(0));
}

#[tokio::test]
async fn background_child_is_killed_when_shell_exits() {
    let harness = harness();
    let started = Instant::now();

    let (outcome, collected) =
        run(&harness.backend, spec(&harness.dir, "sleep 100 & echo $!")).await;

    assert_eq!(outcome, StepOutcome::Exited(0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let pids = collected.pids();
    assert_eq!(pids.len(), 1);
    assert!(is_dead(pids[0]), "background sleep {} still runs", pids[0]);
    assert!(
        collected.engine.contains("killed background processes"),
        "engine note: {:?}",
        collected.engine
    );
}

#[tokio::test]
async fn background_child_without_pipes_is_killed_too() {
    let harness = harness();

    let (outcome, collected) = run(
        &harness.backend,
        spec(&harness.dir, "sleep 100 >/dev/null 2>&1 & echo $!"),
    )
    .await;

    assert_eq!(outcome, StepOutcome::Exited(0));
    assert!(is_dead(collected.pids()[0]));
    assert!(collected.engine.contains("killed background processes"));
}

#[tokio::test]
async fn finished_background_children_leave_no_engine_note() {
    let harness = harness();

    let (outcome, collected) = run(
        &harness.backend,
        spec(&harness.dir, "(echo from child) & wait; exit 5"),
    )
    .await;

    assert_eq!(outcome, StepOutcome::Exited(5));
    assert_eq!(collected.stdout_text(), "from child\n");
    assert_eq!(collected.engine, "");
}

#[tokio::test]
async fn escaped_process_cannot_hold_step_open() {
    let harness = harness();
    let started = Instant::now();

    let (outcome, collected) = run(
        &harness.backend,
        spec(&harness.dir, "setsid sleep 30 & echo $!"),
    )
    .await;

    let pids = collected.pids();
    for pid in &pids {
        kill(*pid, Signal::SIGKILL).ok();
    }
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        collected
            .engine
            .contains("still holds stdout or stderr open"),
        "engine note: {:?}",
        collected.engine
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let harness = harness();
    let command = "sh -c 'trap \"\" TERM; while :; do sleep 1; done' & echo $!; sleep 100 & echo $!; echo $$; sleep 100";
    let mut step = spec(&harness.dir, command);
    step.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();

    let (outcome, collected) = run(&harness.backend, step).await;

    assert_eq!(outcome, StepOutcome::TimedOut);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500),
        "SIGKILL came before the grace ended: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let pids = collected.pids();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(is_dead(pid), "process {pid} survived the timeout");
    }
    assert_eq!(
        collected.engine,
        "danube: step timed out after 500ms; killed its process group\n"
    );
}

#[tokio::test]
async fn cancel_kills_whole_process_group() {
    let harness = harness();
    let cancel = CancellationToken::new();
    let (sender, mut receiver) = mpsc::channel::<OutputChunk>(16);
    let step = spec(&harness.dir, "sleep 100 & echo $!; echo $$; sleep 100");
    let backend = &harness.backend;
    let started = Instant::now();

    let (collected, outcome) = tokio::join!(
        async {
            let mut collected = Collected::default();
            while let Some(chunk) = receiver.recv().await {
                match chunk.stream {
                    Stream::Stdout => collected.stdout.extend_from_slice(&chunk.data),
                    Stream::Stderr => collected.stderr.extend_from_slice(&chunk.data),
                    Stream::Engine => collected
                        .engine
                        .push_str(&String::from_utf8_lossy(&chunk.data)),
                }
                if collected.stdout_text().lines().count() == 2 {
                    cancel.cancel();
                }
            }
            collected
        },
        backend.run_step(step, sender, cancel.clone()),
    );

    assert_eq!(outcome.unwrap(), StepOutcome::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    for pid in collected.pids() {
        assert!(is_dead(pid), "process {pid} survived the cancel");
    }
    assert_eq!(
        collected.engine,
        "danube: step cancelled; killed its process group\n"
    );
}

#[tokio::test]
async fn step_env_is_added_to_the_inherited_environment() {
    let harness = harness();
    let mut step = spec(
        &harness.dir,
        "printf '%s|%s|%s' \"$PATH\" \"$DANUBE_TEST_ADDED\" \"$HOME\"",
    );
    step.env
        .insert("DANUBE_TEST_ADDED".to_owned(), "added value".to_owned());
    step.env
        .insert("HOME".to_owned(), "/overridden/home".to_owned());

    let (outcome, collected) = run(&harness.backend, step).await;

    assert_eq!(outcome, StepOutcome::Exited(0));
    let path = std::env::var("PATH").expect("tests run with PATH set");
    assert_eq!(
        collected.stdout_text(),
        format!("{path}|added value|/overridden/home")
    );
}

#[tokio::test]
async fn step_runs_in_its_workdir() {
    let harness = harness();

    let (_, collected) = run(&harness.backend, spec(&harness.dir, "pwd")).await;

    let expected = std::fs::canonicalize(&harness.dir).unwrap();
    assert_eq!(
        collected.stdout_text().trim_end(),
        expected.display().to_string()
    );
}

#[tokio::test]
async fn slow_receiver_stops_the_process() {
    let harness = harness();
    let (sender, mut receiver) = mpsc::channel::<OutputChunk>(1);
    let marker = harness.dir.join("written-everything");
    let step = spec(
        &harness.dir,
        "head -c 8000000 /dev/zero; touch written-everything",
    );
    let backend = &harness.backend;

    let (received, outcome) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let blocked = !marker.exists();
            let mut bytes = 0;
            while let Some(chunk) = receiver.recv().await {
                bytes += chunk.data.len();
            }
            (blocked, bytes)
        },
        backend.run_step(step, sender, CancellationToken::new()),
    );

    let (blocked, bytes) = received;
    assert!(
        blocked,
        "the process wrote 8 MB although no output was received"
    );
    assert_eq!(bytes, 8_000_000);
    assert_eq!(outcome.unwrap(), StepOutcome::Exited(0));
    assert!(marker.exists());
}

#[tokio::test]
async fn dropped_receiver_does_not_block_the_process() {
    let harness = harness();
    let (sender, receiver) = mpsc::channel(1);
    drop(receiver);

    let outcome = harness
        .backend
        .run_step(
            spec(&harness.dir, "head -c 5000000 /dev/zero; exit 4"),
            sender,
            CancellationToken::new(),
        )
        .await;

    assert_eq!(outcome.unwrap(), StepOutcome::Exited(4));
}

#[tokio::test]
async fn missing_workdir_is_an_error_naming_it() {
    let harness = harness();
    let missing = harness.dir.join("does-not-exist");

    let (outcome, _) = run_with_cancel(
        &harness.backend,
        spec(&missing, "true"),
        CancellationToken::new(),
    )
    .await;

    let err = outcome.unwrap_err();
    assert!(
        matches!(err, BackendError::MissingWorkdir { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does-not-exist"), "{err}");
    assert!(err.to_string().contains("test-step"), "{err}");
}

#[tokio::test]
async fn invalid_env_name_is_rejected() {
    let harness = harness();
    let mut step = spec(&harness.dir, "true");
    step.env.insert("A=B".to_owned(), "value".to_owned());

    let (outcome, _) = run_with_cancel(&harness.backend, step, CancellationToken::new()).await;

    let err = outcome.unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidEnvName { ref name, .. } if name == "A=B"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("value"));
}

#[test]
fn command_word_skips_assignments() {
    assert_eq!(
        first_command_word("TOKEN=s3cret ./deploy.sh --now"),
        "./deploy.sh"
    );
    assert_eq!(first_command_word("  npm test"), "npm");
    assert_eq!(first_command_word("A=1 B=2"), "");
}

#[tokio::test]
async fn spawn_hook_runs_once_when_the_process_starts_and_not_when_it_cannot() {
    let harness = harness();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let hook = SpawnHook::new(move || {
        recorded
            .lock()
            .expect("no test code panics while holding it")
            .push(Instant::now());
    });
    let mut sleeping = spec(&harness.dir, "sleep 0.3");
    sleeping.on_spawn = Some(hook.clone());
    let mut missing = spec(&harness.dir.join("absent"), "true");
    missing.on_spawn = Some(hook);

    let (outcome, _) = run(&harness.backend, sleeping).await;
    let ended = Instant::now();
    let (failed, _) = run_with_cancel(&harness.backend, missing, CancellationToken::new()).await;

    assert_eq!(outcome, StepOutcome::Exited(0));
    assert!(failed.is_err(), "{failed:?}");
    let calls = calls.lock().expect("not poisoned").clone();
    assert_eq!(calls.len(), 1);
    assert!(
        ended.duration_since(calls[0]) >= Duration::from_millis(250),
        "the hook ran {:?} before the step ended, not at its start",
        ended.duration_since(calls[0])
    );
}
