//! Process handling: timeouts, cancellation, background children, partial
//! lines and floods of output.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use danube_tests::{Sandbox, process_alive, step};

fn read_pids(path: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

fn wait_for_file(path: &std::path::Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn step_past_timeout_is_killed_with_its_children() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="timeout")
def timeout():
    code = step.run(
        "sleep 300 & echo $! >> {pids}; sh -c 'trap \"\" TERM; sleep 300' & echo $! >> {pids}; echo $$ >> {pids}; wait",
        name="hang", timeout=1, check=False)
    print(f"hang exited {{code}}")
"#,
        pids = pids.display()
    ));

    let started = Instant::now();
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(run.stdout.contains("hang exited 124"), "{}", run.text());

    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "hang")["state"], "timeout");
    assert_eq!(step(&job, "main", "hang")["exit_code"], 124);
    let recorded = read_pids(&pids);
    assert_eq!(recorded.len(), 3);
    for pid in recorded {
        assert!(!process_alive(pid), "process {pid} outlived its step");
    }
}

#[test]
fn step_timeout_with_check_fails_task_as_timeout() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="timeout-check")
def timeout_check():
    step.run("sleep 30", name="slow", timeout=0.5)
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "slow")["state"], "timeout");
    assert_eq!(danube_tests::task(&job, "main")["state"], "timeout");
    assert_eq!(job["job"]["state"], "failure");
}

#[test]
fn ctrl_c_cancels_job_and_leaves_no_process() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    let ready = sandbox.path().join("ready");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step, task

@task()
def one():
    step.run("sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; touch {ready}; wait", name="hang")

@task()
def two():
    step.run("sleep 300 & echo $! >> {pids}; wait", name="hang")

@task(needs=[one])
def after():
    step.run("true")

pipeline(name="cancel", tasks=[after, two])
"#,
        pids = pids.display(),
        ready = ready.display()
    ));

    let project = sandbox.project();
    let mut child = sandbox
        .command()
        .args(["run", project.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&ready, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();

    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");

    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "cancelled", "{job:#}");
    assert_eq!(danube_tests::task(&job, "one")["state"], "cancelled");
    assert_eq!(danube_tests::task(&job, "after")["state"], "cancelled");
    assert_eq!(step(&job, "one", "hang")["state"], "cancelled");
    let recorded = read_pids(&pids);
    assert!(recorded.len() >= 2, "{recorded:?}");
    for pid in recorded {
        assert!(
            !process_alive(pid),
            "process {pid} outlived the cancelled job"
        );
    }
}

#[test]
fn background_child_holding_pipe_does_not_hold_step() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="background")
def background():
    step.run("sleep 300 & echo $! > {pids}; echo started", name="spawn")
    step.run("echo next", name="next")
"#,
        pids = pids.display()
    ));
    let started = Instant::now();
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the step ended with its shell"
    );

    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "spawn")["state"], "success");
    for pid in read_pids(&pids) {
        assert!(!process_alive(pid), "background process {pid} was killed");
    }
    let id = job["job"]["id"].as_str().unwrap();
    let log = sandbox.step_log(id, "main", "spawn");
    assert!(log.starts_with("started\n"), "{log}");
    assert!(
        log.contains("killed"),
        "the log says the background process was killed: {log}"
    );
}

#[test]
fn partial_line_reaches_live_output_within_a_second() {
    let sandbox = Sandbox::new();
    let release = sandbox.path().join("release");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="partial")
def partial():
    step.run("printf 'no-newline-yet'; while [ ! -e {release} ]; do sleep 0.05; done; printf ' done'", name="progress")
"#,
        release = release.display()
    ));

    let project = sandbox.project();
    let mut child = sandbox
        .command()
        .args(["run", project.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            let _ = sender.send((Instant::now(), seen.clone()));
        }
    });

    // Wait for the step to start, then time how long the partial line takes.
    let mut step_started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown_at = loop {
        let (at, seen) = receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("danube run kept printing");
        if step_started.is_none() && seen.contains("▶ main › progress") {
            step_started = Some(at);
        }
        if seen.contains("main › progress │ no-newline-yet") {
            break at;
        }
    };
    let started = step_started.expect("the step start is shown before its output");
    assert!(
        shown_at.duration_since(started) < Duration::from_secs(1),
        "partial line shown after {:?}",
        shown_at.duration_since(started)
    );
    std::fs::write(&release, "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(
        sandbox.step_log(id, "main", "progress"),
        "no-newline-yet done"
    );
}

#[test]
fn flooding_stderr_does_not_block_stdout() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="flood")
def flood():
    step.run("head -c 20000000 /dev/zero | tr '\\0' 'e' >&2; echo stdout-after-flood", name="flood")
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stdout.len());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    let stdout = sandbox.danube(&[
        "logs", id, "--task", "main", "--step", "flood", "--stream", "stdout",
    ]);
    assert_eq!(stdout.stdout, "stdout-after-flood\n");
    let stderr = sandbox.danube(&[
        "logs", id, "--task", "main", "--step", "flood", "--stream", "stderr",
    ]);
    assert_eq!(stderr.stdout.len(), 20_000_000);
    assert!(stderr.stdout.bytes().all(|b| b == b'e'));
}

#[test]
fn raw_bytes_are_stored_exactly() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="bytes")
def raw():
    step.run("printf 'a\\r\\nprogress 10%%\\rprogress 100%%\\n\\033[31mred\\033[0m\\n\\377\\376 invalid utf-8\\n'", name="raw")
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    let output = sandbox
        .command()
        .args(["logs", id, "--task", "main", "--step", "raw"])
        .output()
        .unwrap();
    assert_eq!(
        output.stdout,
        b"a\r\nprogress 10%\rprogress 100%\n\x1b[31mred\x1b[0m\n\xff\xfe invalid utf-8\n".to_vec()
    );
}

#[test]
fn job_of_killed_engine_is_failed_and_cleaned_up_later() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    let ready = sandbox.path().join("ready");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="orphan")
def orphan():
    step.run("sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; touch {ready}; wait", name="hang")
"#,
        pids = pids.display(),
        ready = ready.display()
    ));

    let project = sandbox.project();
    let mut child = sandbox
        .command()
        .args(["run", project.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        sandbox.last_job()["job"]["state"],
        "failure",
        "the next command recovers the job"
    );

    let job = sandbox.last_job();
    assert!(
        job["job"]["reason"]
            .as_str()
            .unwrap()
            .contains("stopped before it finished")
    );
    assert_eq!(step(&job, "main", "hang")["state"], "failure");
    assert_eq!(danube_tests::task(&job, "main")["state"], "failure");
    std::thread::sleep(Duration::from_millis(200));
    for pid in read_pids(&pids) {
        assert!(
            !process_alive(pid),
            "process {pid} of the abandoned job was killed"
        );
    }
    let workspaces = std::fs::read_dir(sandbox.data_dir().join("workspaces"))
        .unwrap()
        .count();
    assert_eq!(workspaces, 0, "the abandoned workspace is removed");
}

#[test]
fn concurrent_runs_on_one_data_dir_do_not_disturb_each_other() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="parallel-runs")
def runs():
    step.run("sleep 1.5", name="wait")
"#,
    );
    let project = sandbox.project();
    let first = sandbox
        .command()
        .args(["run", project.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = sandbox.run(&[]);
    assert_eq!(second.code, 0, "{}", second.text());
    assert_eq!(first.wait_with_output().unwrap().status.code(), Some(0));

    let jobs = sandbox.danube(&["jobs", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&jobs.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|job| job["state"] == "success"),
        "{list:#}"
    );
}

#[test]
fn daemon_that_left_its_group_is_killed_when_job_ends() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="daemon")
def daemon():
    step.run(
        "setsid sh -c 'echo $$ > {pids}.tmp; mv {pids}.tmp {pids}; exec sleep 300' >/dev/null 2>&1 < /dev/null & "
        "while [ ! -s {pids} ]; do sleep 0.05; done",
        name="start", timeout=30)
    step.run("true", name="after")
"#,
        pids = pids.display()
    ));
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let recorded = read_pids(&pids);
    assert_eq!(recorded.len(), 1, "the daemon wrote its pid");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!process_alive(recorded[0]), "the daemon outlived its job");
}

#[test]
fn daemon_holding_coordinator_pipes_does_not_hold_job() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    sandbox.pipeline(&format!(
        r#"
import subprocess
from danube import pipeline, step

@pipeline(name="escaped")
def escaped():
    # The daemon keeps the coordinator's stdout and stderr open.
    subprocess.run("setsid sleep 300 & echo $! > {pids}", shell=True, check=True)
    step.run("true", name="after")
    print("script done")
"#,
        pids = pids.display()
    ));

    let started = Instant::now();
    let run = sandbox.run(&[]);
    let elapsed = started.elapsed();
    let recorded = read_pids(&pids);
    std::thread::sleep(Duration::from_millis(200));
    let daemon_alive = recorded.iter().any(|pid| process_alive(*pid));
    for pid in &recorded {
        // Leave nothing behind even if the assertions below fail.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }

    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        elapsed < Duration::from_secs(60),
        "the job waited {elapsed:?} for the daemon to close the pipes"
    );
    assert!(run.stdout.contains("script done"), "{}", run.text());
    assert_eq!(recorded.len(), 1, "the shell wrote the daemon's pid");
    assert!(!daemon_alive, "the daemon outlived its job");
    let id = sandbox.last_job()["job"]["id"].as_str().unwrap().to_owned();
    let logs = sandbox.danube(&["logs", &id]);
    assert!(
        logs.stdout
            .contains("stopped reading the coordinator's output"),
        "{}",
        logs.text()
    );
}

#[test]
fn coordinator_exiting_mid_task_names_that_task() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
import os
from danube import pipeline, step, task

@task()
def steady():
    step.run("sleep 1", name="wait")

@task()
def crashes():
    step.run("true")
    os._exit(0)

pipeline(name="crash", tasks=[steady, crashes])
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("pipeline process exited with code 0"),
        "{reason}"
    );
    assert!(reason.contains("`crashes`"), "{reason}");
    assert_eq!(danube_tests::task(&job, "crashes")["state"], "failure");
}
