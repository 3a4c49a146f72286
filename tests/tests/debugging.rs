//! Debugging a paused step through the engine library on the local
//! backend: breakpoints, ad-hoc commands, the workspace's files, continue,
//! retry and abort.

use std::time::Duration;

use danube::backend::{BackendError, WorkspaceEntry};
use danube::config::DataDir;
use danube::logs::{LogKey, read_log};
use danube::model::{JobState, RunState};
use danube::orchestrator::debug::{DebugError, Decision, Pause, PauseReason};
use danube::orchestrator::{Breakpoints, JobHandle, JobRequest};
use danube::secrets::{Scope, SecretVault};
use danube_tests::engine::{local_engine, on_failure};
use danube_tests::{Sandbox, process_alive};
use std::path::Path;

/// Upper bound for waiting on a pause or a job's end, so that a broken
/// engine fails the test instead of hanging it.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

fn request(sandbox: &Sandbox, breakpoints: Breakpoints) -> JobRequest {
    JobRequest {
        project: sandbox.project(),
        repository: None,
        pipeline: None,
        in_place: false,
        max_parallel: 4,
        trigger: danube::model::TriggerType::Local,
        trigger_ref: None,
        backend: None,
        breakpoints,
    }
}

fn before(step: &str) -> Breakpoints {
    Breakpoints {
        before: vec![step.to_owned()],
        on_failure: false,
    }
}

/// Waits for the job's next pause.
async fn next_pause(handle: &mut JobHandle) -> Pause {
    danube_tests::engine::next_pause(handle, WAIT_LIMIT).await
}

/// The text of one stored log, chunks of every stream in order.
fn log_text(dir: &Path, key: LogKey) -> String {
    let chunks = read_log(dir, key).unwrap();
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|chunk| chunk.data.to_vec())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn finish(handle: JobHandle) -> danube::orchestrator::JobOutcome {
    tokio::time::timeout(WAIT_LIMIT, handle.wait())
        .await
        .expect("the job ends")
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_before_step_waits_until_continue() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("echo prepared > prepared.txt", name="prepare")
    step.run("echo compiled > compiled.txt", name="compile")

pipeline(name="app", tasks=[build])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, before("build/compile")))
        .await
        .unwrap();
    let id = handle.id.clone();

    let pause = next_pause(&mut handle).await;

    assert_eq!(pause.task, "build");
    assert_eq!(pause.step, "compile");
    assert_eq!(
        pause.reason,
        PauseReason::Before {
            breakpoint: "build/compile".into()
        }
    );
    assert_eq!(pause.attempt, 1);
    assert!(pause.workdir.join("prepared.txt").is_file());
    assert!(!pause.workdir.join("compiled.txt").exists());
    let job = engine.store().find_job(id.as_str()).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    let debugger = engine.debugger(&id).expect("the engine runs the job");
    assert_eq!(debugger.pause(), Some(pause.clone()));

    let ended = debugger.resume(Decision::Continue).unwrap();
    assert_eq!(ended.step_id, pause.step_id);

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let steps = engine.store().list_steps(&id).await.unwrap();
    assert!(steps.iter().all(|step| step.state == RunState::Success));
}

#[tokio::test(flavor = "multi_thread")]
async fn task_name_pauses_before_its_first_step() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("true", name="one")
    step.run("true", name="two")

pipeline(name="app", tasks=[build])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, before("build")))
        .await
        .unwrap();

    let pause = next_pause(&mut handle).await;
    assert_eq!(pause.step, "one");
    handle.debugger().resume(Decision::Continue).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_on_failure_then_retry_after_fix_succeeds() {
    let sandbox = Sandbox::new();
    sandbox.file("status.txt", "broken\n").pipeline(
        r#"
from danube import pipeline, step, task

@task()
def test():
    step.run("cat status.txt; grep -q fixed status.txt", name="check")

pipeline(name="app", tasks=[test])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, on_failure()))
        .await
        .unwrap();
    let id = handle.id.clone();

    let pause = next_pause(&mut handle).await;
    assert_eq!(
        pause.reason,
        PauseReason::Failure {
            state: RunState::Failure,
            exit_code: Some(1)
        }
    );
    // The task is not marked failed while the step is paused.
    let tasks = engine.store().list_tasks(&id).await.unwrap();
    assert_eq!(tasks[0].state, RunState::Running);
    let steps = engine.store().list_steps(&id).await.unwrap();
    assert_eq!(steps[0].state, RunState::Failure);
    assert_eq!(steps[0].exit_code, Some(1));

    let debugger = handle.debugger();
    let fix = debugger
        .run_command("echo fixed > status.txt", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fix.exit_code, Some(0), "{fix:?}");
    debugger.resume(Decision::Retry).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let steps = engine.store().list_steps(&id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state, RunState::Success);
    assert_eq!(steps[0].exit_code, Some(0));
    assert_eq!(steps[0].attempt, 2);
    let logs = sandbox.data_dir().join("logs").join(id.as_str());
    let log = log_text(&logs, LogKey::Step(steps[0].id));
    let broken = log
        .find("broken")
        .expect("the first attempt's output is kept");
    let retried = log
        .find("attempt 2 of this step")
        .expect("the log notes the retry");
    let fixed = log
        .rfind("fixed")
        .expect("the second attempt's output follows");
    assert!(broken < retried && retried < fixed, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_after_failure_fails_the_task() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def test():
    step.run("exit 5", name="check")

pipeline(name="app", tasks=[test])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, on_failure()))
        .await
        .unwrap();
    let id = handle.id.clone();

    next_pause(&mut handle).await;
    let paused_for = Duration::from_millis(1200);
    tokio::time::sleep(paused_for).await;
    handle.debugger().resume(Decision::Continue).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Failure, "{outcome:?}");
    let tasks = engine.store().list_tasks(&id).await.unwrap();
    assert_eq!(tasks[0].state, RunState::Failure);
    let steps = engine.store().list_steps(&id).await.unwrap();
    assert_eq!(steps[0].exit_code, Some(5));
    assert_eq!(steps[0].attempt, 1);
    // The pause came after the step ended, so it counts for the task only.
    assert_eq!(steps[0].paused_ms, 0);
    let paused_ms = i64::try_from(paused_for.as_millis()).unwrap();
    assert!(tasks[0].paused_ms >= paused_ms, "{:?}", tasks[0]);
    let wall = tasks[0].finished_at.unwrap() - tasks[0].started_at.unwrap();
    assert_eq!(tasks[0].duration_ms(), Some(wall - tasks[0].paused_ms));
}

#[tokio::test(flavor = "multi_thread")]
async fn command_output_masks_secret_and_skips_step_log() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, secrets, step, task

@task()
def deploy():
    token = secrets.get("DEPLOY_TOKEN")
    step.run("echo deploying", name="push", env={"TOKEN": token})

pipeline(name="app", tasks=[deploy])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let data = DataDir::open(&sandbox.data_dir()).unwrap();
    let vault = SecretVault::open(engine.store().clone(), &data.encryption_key_path())
        .await
        .unwrap();
    vault
        .set(&Scope::Global, "DEPLOY_TOKEN", b"hunter2-very-secret")
        .await
        .unwrap();
    let mut handle = engine
        .submit(request(&sandbox, before("push")))
        .await
        .unwrap();
    let id = handle.id.clone();
    let pause = next_pause(&mut handle).await;
    let debugger = handle.debugger();

    let output = debugger
        .run_command(
            "echo token=$TOKEN; pwd; echo oops >&2; exit 4",
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    assert_eq!(output.exit_code, Some(4));
    assert!(!output.timed_out);
    assert!(!output.stdout.contains("hunter2"), "{output:?}");
    assert!(output.stdout.contains("token=***"), "{output:?}");
    assert!(
        output.stdout.contains(&pause.workdir.display().to_string()),
        "{output:?}"
    );
    assert_eq!(output.stderr, "oops\n");

    debugger.resume(Decision::Continue).unwrap();
    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let logs = sandbox.data_dir().join("logs").join(id.as_str());
    let step_log = log_text(&logs, LogKey::Step(pause.step_id));
    assert_eq!(step_log, "deploying\n");
    let job_log = log_text(&logs, LogKey::Coordinator);
    assert!(
        job_log.contains("debug command in deploy › push exited with 4: echo token="),
        "{job_log}"
    );
    assert!(!job_log.contains("hunter2"), "{job_log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_browsing_stays_in_workspace() {
    let sandbox = Sandbox::new();
    let outside = sandbox.path().join("outside.txt");
    std::fs::write(&outside, "not yours").unwrap();
    sandbox
        .file("src/app.py", "print('app')\n")
        .pipeline(&format!(
            r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("ln -s {outside} escape; ln -s src/app.py entry.py", name="links")
    step.run("true", name="inspect")

pipeline(name="app", tasks=[build])
"#,
            outside = outside.display()
        ));
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, before("inspect")))
        .await
        .unwrap();
    next_pause(&mut handle).await;
    let debugger = handle.debugger();

    let WorkspaceEntry::Directory { entries, .. } = debugger.browse("").await.unwrap() else {
        panic!("the workspace root is a folder");
    };
    let names: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| (entry.name.as_str(), entry.kind))
        .collect();
    assert!(names.contains(&("danubefile.py", "file")), "{names:?}");
    assert!(names.contains(&("src", "directory")), "{names:?}");
    assert!(names.contains(&("escape", "symlink")), "{names:?}");

    let file = debugger.browse("entry.py").await.unwrap();
    assert!(
        matches!(&file, WorkspaceEntry::File { content, truncated: false, .. } if content == b"print('app')\n"),
        "{file:?}"
    );
    for path in ["escape", "../outside.txt", &outside.display().to_string()] {
        let error = debugger.browse(path).await.unwrap_err();
        assert!(
            matches!(&error, DebugError::Browse(source) if matches!(**source, BackendError::InvalidWorkspacePath { .. })),
            "{path}: {error:?}"
        );
    }
    let missing = debugger.browse("src/nope.py").await.unwrap_err();
    assert!(
        matches!(&missing, DebugError::Browse(source) if matches!(**source, BackendError::WorkspacePathNotFound { .. })),
        "{missing:?}"
    );

    debugger.resume(Decision::Continue).unwrap();
    assert_eq!(finish(handle).await.state, JobState::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_cancels_job_and_kills_every_process() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    sandbox.pipeline(&format!(
        r#"
import os
from danube import pipeline, step, task

@task()
def serve():
    with open("{pids}/coordinator", "w") as out:
        out.write(str(os.getpid()))
    step.run("sleep 300 & echo $! > {pids}/step-child; true", name="start")
    step.run("true", name="check")

pipeline(name="app", tasks=[serve])
"#,
        pids = pids.display()
    ));
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, before("check")))
        .await
        .unwrap();
    let id = handle.id.clone();
    next_pause(&mut handle).await;
    let debugger = handle.debugger();

    let command = format!(
        "sleep 300 & echo $! > {pids}/child; echo $$ > {pids}/shell; wait",
        pids = pids.display()
    );
    let running = {
        let debugger = debugger.clone();
        tokio::spawn(async move {
            debugger
                .run_command(&command, Duration::from_secs(600))
                .await
        })
    };
    let read_pid = |name: &str| -> Option<i32> {
        std::fs::read_to_string(pids.join(name))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    let (shell, child) = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            if let (Some(shell), Some(child)) = (read_pid("shell"), read_pid("child")) {
                return (shell, child);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ad-hoc command starts");
    let coordinator = read_pid("coordinator").expect("the script wrote its pid");
    assert!(process_alive(shell) && process_alive(child));

    debugger.resume(Decision::Abort).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Cancelled, "{outcome:?}");
    let aborted = running.await.unwrap().unwrap();
    assert_eq!(aborted.exit_code, None, "{aborted:?}");
    for (name, pid) in [
        ("shell", shell),
        ("child", child),
        ("coordinator", coordinator),
    ] {
        assert!(
            !process_alive(pid),
            "the {name} (pid {pid}) outlived the abort"
        );
    }
    let step_child = read_pid("step-child").expect("the first step wrote its child's pid");
    assert!(!process_alive(step_child));
    let steps = engine.store().list_steps(&id).await.unwrap();
    let check = steps.iter().find(|step| step.name == "check").unwrap();
    assert_eq!(check.state, RunState::Cancelled);
    assert!(engine.debugger(&id).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_time_does_not_count_toward_max_duration() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="short", max_duration=10)
def short():
    step.run("true", name="quick")
"#,
    );
    let engine = local_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, before("quick")))
        .await
        .unwrap();
    next_pause(&mut handle).await;

    // Longer than the job's max_duration, which leaves the job ample time
    // to reach the pause on a loaded machine.
    tokio::time::sleep(Duration::from_secs(11)).await;
    handle.debugger().resume(Decision::Continue).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
}

/// A pipeline of one task, `build`, with one step, `compile`.
const BUILD_PIPELINE: &str = r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("true", name="compile")

pipeline(name="app", tasks=[build])
"#;

/// Starts [`BUILD_PIPELINE`] with a breakpoint before `breakpoint`.
async fn start_build(breakpoint: &str) -> (Sandbox, danube::orchestrator::Engine, JobHandle) {
    let sandbox = Sandbox::new();
    sandbox.pipeline(BUILD_PIPELINE);
    let engine = local_engine(&sandbox).await;
    let handle = engine
        .submit(request(&sandbox, before(breakpoint)))
        .await
        .unwrap();
    (sandbox, engine, handle)
}

/// Runs [`BUILD_PIPELINE`] with a breakpoint before `breakpoint` to its end.
async fn run_build_with_breakpoint(breakpoint: &str) -> danube::orchestrator::JobOutcome {
    let (_sandbox, _engine, handle) = start_build(breakpoint).await;
    finish(handle).await
}

#[tokio::test(flavor = "multi_thread")]
async fn breakpoint_on_unknown_task_fails_at_plan() {
    let outcome = run_build_with_breakpoint("deploy/push").await;

    assert_eq!(outcome.state, JobState::Failure);
    assert!(outcome.load_error);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("`deploy`"), "{reason}");
    assert!(reason.contains("its tasks are: build"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn breakpoint_matching_no_step_fails_job() {
    let outcome = run_build_with_breakpoint("compil").await;

    assert_eq!(outcome.state, JobState::Failure);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("`compil` named no step"), "{reason}");
    assert!(reason.contains("build/compile"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_breakpoint_is_rejected_before_start() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline\n");
    let engine = local_engine(&sandbox).await;

    let error = engine
        .submit(request(&sandbox, before("build/")))
        .await
        .err()
        .expect("the breakpoint is rejected");

    assert!(error.to_string().contains("`build/` is invalid"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debugging_a_job_that_is_not_paused_fails() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="plain")
def plain():
    step.run("sleep 1", name="wait")
"#,
    );
    let engine = local_engine(&sandbox).await;
    let handle = engine
        .submit(request(&sandbox, Breakpoints::default()))
        .await
        .unwrap();
    let debugger = handle.debugger();

    assert_eq!(debugger.pause(), None);
    let resumed = debugger.resume(Decision::Continue).unwrap_err();
    assert!(
        matches!(resumed, DebugError::NotPaused { .. }),
        "{resumed:?}"
    );
    let command = debugger
        .run_command("true", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(command, DebugError::NotPaused { .. }),
        "{command:?}"
    );
    assert!(command.to_string().contains("is not paused"));

    assert_eq!(finish(handle).await.state, JobState::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_breakpoint_of_no_task_warns() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("echo compiling", name="compile")

pipeline(name="app", tasks=[build])
"#,
    );
    let engine = local_engine(&sandbox).await;
    let breakpoints = Breakpoints {
        before: vec!["compil".to_owned(), "build/compil".to_owned()],
        on_failure: false,
    };
    let handle = engine.submit(request(&sandbox, breakpoints)).await.unwrap();
    let id = handle.id.clone();

    let outcome = finish(handle).await;

    assert_eq!(outcome.state, JobState::Failure, "{outcome:?}");
    let logs = sandbox.data_dir().join("logs").join(id.as_str());
    let job_log = log_text(&logs, LogKey::Coordinator);
    let warning = job_log
        .lines()
        .find(|line| line.contains("breakpoint `compil` names no task of pipeline `app`"))
        .unwrap_or_else(|| panic!("no plan-time warning in the job log:\n{job_log}"));
    assert!(warning.contains("its tasks are: build"), "{warning}");
    assert!(warning.contains("step names are known only"), "{warning}");
    let task_end = job_log
        .lines()
        .find(|line| line.contains("breakpoint `build/compil` named no step of task `build`"))
        .unwrap_or_else(|| panic!("no warning at the task's end in the job log:\n{job_log}"));
    assert!(task_end.contains("its steps were: compile"), "{task_end}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_before_step_is_rejected() {
    let (_sandbox, engine, mut handle) = start_build("build/compile").await;
    let id = handle.id.clone();
    let pause = next_pause(&mut handle).await;
    let debugger = engine.debugger(&id).expect("the engine runs the job");
    let paused_for = Duration::from_millis(1500);
    tokio::time::sleep(paused_for).await;

    let rejected = debugger.resume(Decision::Retry).unwrap_err();
    assert!(
        matches!(rejected, DebugError::NothingToRetry { .. }),
        "{rejected:?}"
    );
    let message = rejected.to_string();
    assert!(message.contains("`build/compile`"), "{message}");
    assert!(message.contains("nothing to retry"), "{message}");
    assert_eq!(debugger.pause(), Some(pause), "the pause goes on");
    debugger.resume(Decision::Continue).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let steps = engine.store().list_steps(&id).await.unwrap();
    let step = &steps[0];
    let wall = step.finished_at.unwrap() - step.started_at;
    let paused_ms = i64::try_from(paused_for.as_millis()).unwrap();
    assert!(step.paused_ms >= paused_ms, "{step:?}");
    assert!(wall >= step.paused_ms, "{step:?}");
    assert_eq!(step.duration_ms(), Some(wall - step.paused_ms));
    assert!(step.duration_ms().unwrap() < paused_ms, "{step:?}");
}
