//! Runs the real `danube-supervisor` binary as a child process.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CANCEL: u8 = 0x18;

fn supervisor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_danube-supervisor"))
}

fn request(id: &str, command: &str, workdir: &Path, env: &[(&str, &str)]) -> String {
    let env: Vec<String> = env
        .iter()
        .map(|(name, value)| format!("{name:?}:{value:?}"))
        .collect();
    format!(
        "{{\"id\":{id:?},\"command\":{command:?},\"workdir\":{:?},\"env\":{{{}}}}}\n",
        workdir.display().to_string(),
        env.join(",")
    )
}

/// Starts `run` with the request written and stdin kept open.
fn start_run(state: &Path, line: &str, extra: &[&str]) -> Child {
    let mut child = supervisor()
        .arg("run")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    child
}

/// Runs a step to its end with stdin closed after the request.
fn run_step(state: &Path, line: &str, extra: &[&str]) -> Output {
    let mut child = start_run(state, line, extra);
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_file(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn group_exists(pgid: i32) -> bool {
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Killed processes whose parent died are reaped by init a moment later;
/// until then they still count as group members.
fn group_gone_soon(pgid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_exists(pgid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the supervisor did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_streams_output_and_records_the_exit_code() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request(
        "1",
        "printf 'out\\n'; printf 'err\\n' >&2; printf partial; exit 3",
        temp.path(),
        &[],
    );

    let output = run_step(&state, &line, &[]);

    assert_eq!(output.status.code(), Some(3));
    assert_eq!(text(&output.stdout), "out\npartial");
    assert_eq!(text(&output.stderr), "err\n");
    assert_eq!(read_file(state.join("1/stdout")), "out\npartial");
    assert_eq!(read_file(state.join("1/stderr")), "err\n");
    assert_eq!(read_file(state.join("1/exit")), "exited 3\n");
}

#[test]
fn run_applies_env_and_workdir() {
    let temp = tempfile::tempdir().unwrap();
    let workdir = temp.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    let line = request(
        "2",
        "pwd; printf '%s' \"$GREETING\"",
        &workdir,
        &[("GREETING", "hello \"quoted\" \u{e9}")],
    );

    let output = run_step(&temp.path().join("state"), &line, &[]);

    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        format!("{}\nhello \"quoted\" \u{e9}", workdir.display())
    );
}

#[test]
fn signal_exit_is_reported_as_128_plus_signal() {
    let temp = tempfile::tempdir().unwrap();
    let line = request("3", "kill -KILL $$", temp.path(), &[]);

    let output = run_step(&temp.path().join("state"), &line, &[]);

    assert_eq!(output.status.code(), Some(137));
}

#[test]
fn cancel_byte_kills_the_whole_process_group() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request("4", "sleep 60 & echo started; wait", temp.path(), &[]);
    let mut child = start_run(&state, &line, &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "started\n");
    let pgid: i32 = read_file(state.join("4/pgid")).trim().parse().unwrap();
    assert!(group_exists(pgid));

    child.stdin.as_mut().unwrap().write_all(&[CANCEL]).unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(10));

    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(group_gone_soon(pgid), "the background sleep survived");
    assert_eq!(read_file(state.join("4/exit")), "exited 143\n");
}

#[test]
fn sigterm_to_the_supervisor_kills_the_step() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request("5", "echo started; sleep 60", temp.path(), &[]);
    let mut child = start_run(&state, &line, &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let pgid: i32 = read_file(state.join("5/pgid")).trim().parse().unwrap();

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for_exit(&mut child, Duration::from_secs(10));

    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(group_gone_soon(pgid));
}

#[test]
fn closed_stdin_leaves_the_step_running_and_attach_resumes_it() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let marker = temp.path().join("go");
    let command = format!(
        "echo one; echo warn >&2; while [ ! -e {} ]; do sleep 0.05; done; echo two; exit 4",
        marker.display()
    );
    let mut child = start_run(&state, &request("6", &command, temp.path(), &[]), &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "one\n");

    // The connection drops: stdin ends without a cancel byte and nobody
    // reads stdout any more.
    drop(child.stdin.take());
    drop(stdout);
    let status = supervisor()
        .args(["status", "6", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let running = text(&status.stdout);
    assert!(running.starts_with("running\noutput 4 "), "{running}");

    std::fs::write(&marker, "").unwrap();
    let attached = supervisor()
        .args([
            "attach",
            "6",
            "--stdout-offset",
            "4",
            "--stderr-offset",
            "0",
            "--state-dir",
        ])
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();

    assert_eq!(attached.status.code(), Some(4));
    assert_eq!(text(&attached.stdout), "two\n");
    assert_eq!(text(&attached.stderr), "warn\n");
    assert_eq!(
        wait_for_exit(&mut child, Duration::from_secs(10)).code(),
        Some(4)
    );
    let status = supervisor()
        .args(["status", "6", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(text(&status.stdout), "exited 4\noutput 8 5\n");
}

#[test]
fn attach_cancel_kills_a_detached_step() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let mut child = start_run(
        &state,
        &request("7", "echo up; sleep 60", temp.path(), &[]),
        &[],
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(child.stdin.take());

    let mut attached = supervisor()
        .args([
            "attach",
            "7",
            "--stdout-offset",
            "3",
            "--stderr-offset",
            "0",
            "--state-dir",
        ])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    attached
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&[CANCEL])
        .unwrap();

    assert_eq!(
        wait_for_exit(&mut attached, Duration::from_secs(10)).code(),
        Some(143)
    );
    assert_eq!(
        wait_for_exit(&mut child, Duration::from_secs(10)).code(),
        Some(143)
    );
}

#[test]
fn status_of_an_unknown_step_is_missing() {
    let temp = tempfile::tempdir().unwrap();
    let output = supervisor()
        .args(["status", "never", "--state-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), "missing\n");

    let attached = supervisor()
        .args([
            "attach",
            "never",
            "--stdout-offset",
            "0",
            "--stderr-offset",
            "0",
            "--state-dir",
        ])
        .arg(temp.path())
        .output()
        .unwrap();
    assert_eq!(attached.status.code(), Some(125));
    assert!(text(&attached.stderr).contains("never started"));
}

#[test]
fn without_a_shell_commands_are_split_into_words() {
    let temp = tempfile::tempdir().unwrap();
    let line = request("8", "printf '%s|' a 'b c' \"d\\\"e\"", temp.path(), &[]);

    let output = run_step(
        &temp.path().join("state"),
        &line,
        &["--shell", "/nonexistent/sh"],
    );

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "a|b c|d\"e|");
}

#[test]
fn without_a_shell_shell_syntax_fails_clearly() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request("9", "make && make install", temp.path(), &[]);

    let output = run_step(&state, &line, &["--shell", "/nonexistent/sh"]);

    assert_eq!(output.status.code(), Some(127));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("shell syntax (`&`)"), "{stderr}");
    assert!(stderr.contains("no /bin/sh"), "{stderr}");
    assert_eq!(read_file(state.join("9/exit")), "exited 127\n");
}

#[test]
fn missing_program_exits_127() {
    let temp = tempfile::tempdir().unwrap();
    let line = request("10", "no-such-program-danube --flag", temp.path(), &[]);

    let output = run_step(
        &temp.path().join("state"),
        &line,
        &["--shell", "/nonexistent/sh"],
    );

    assert_eq!(output.status.code(), Some(127));
    assert!(text(&output.stderr).contains("failed to start `no-such-program-danube`"));
}

#[test]
fn a_step_id_runs_only_once() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request("11", "true", temp.path(), &[]);
    assert_eq!(run_step(&state, &line, &[]).status.code(), Some(0));

    let again = run_step(&state, &line, &[]);

    assert_eq!(again.status.code(), Some(125));
    assert!(text(&again.stderr).contains("each step id runs once"));
}

#[test]
fn invalid_request_names_the_problem() {
    let temp = tempfile::tempdir().unwrap();
    let output = run_step(temp.path(), "{\"id\": \"1\"}\n", &[]);
    assert_eq!(output.status.code(), Some(125));
    assert!(text(&output.stderr).contains("`command` is missing"));

    let mut child = supervisor()
        .args(["run", "--state-dir"])
        .arg(temp.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(125));
    assert!(stderr.contains("stdin ended before"), "{stderr}");
}

#[test]
fn install_copies_an_executable_binary() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("danube/bin");

    let output = supervisor().arg("install").arg(&dir).output().unwrap();

    assert!(output.status.success(), "{}", text(&output.stderr));
    let installed = dir.join("danube-supervisor");
    let usage = Command::new(&installed).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("usage: danube-supervisor"));
}

#[test]
fn idle_exits_on_sigterm() {
    let mut child = supervisor().arg("idle").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "idle exited on its own"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };

    assert_eq!(
        wait_for_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn untar_unpacks_a_stream_from_tar() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("source");
    std::fs::create_dir_all(source.join("nested")).unwrap();
    std::fs::write(source.join("nested/file.txt"), "content").unwrap();
    let archive = Command::new("tar")
        .arg("-C")
        .arg(&source)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(archive.status.success());

    let target = temp.path().join("target");
    let mut child = supervisor()
        .arg("untar")
        .arg(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    let output = child.wait_with_output().unwrap();

    assert!(output.status.success());
    assert_eq!(read_file(target.join("nested/file.txt")), "content");
}

#[test]
fn usage_errors_exit_2() {
    for arguments in [&[][..], &["bogus"], &["attach", "1"], &["idle", "extra"]] {
        let output = supervisor().args(arguments).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
    }
}

#[test]
fn request_stdin_reaches_the_step_and_is_closed() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = format!(
        "{{\"id\":\"c-0\",\"command\":\"read first; echo \\\"got $first\\\"; cat; echo end\",\"workdir\":{:?},\"stdin\":\"tok-42\\n\"}}\n",
        temp.path().display().to_string()
    );

    // The supervisor's own stdin stays open, so only the request's text
    // and its end can let `cat` finish.
    let mut child = start_run(&state, &line, &[]);
    let status = wait_for_exit(&mut child, Duration::from_secs(10));

    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout, "got tok-42\nend\n");
}

#[test]
fn step_without_request_stdin_reads_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let line = request("s-0", "cat; echo done", temp.path(), &[]);

    let mut child = start_run(&state, &line, &[]);
    let status = wait_for_exit(&mut child, Duration::from_secs(10));

    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout, "done\n");
}
