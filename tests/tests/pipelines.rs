//! `danube run` on real pipelines: states, exit codes, logs and scheduling.

use danube_tests::{Sandbox, step, task};

#[test]
fn sequential_pipeline_records_every_step() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="seq")
def seq():
    step.run("echo one", name="first")
    step.run("echo two >&2", name="second")
    code = step.run("exit 3", name="tolerated", check=False)
    print(f"tolerated exit {code}")
"#,
    );

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("main › first │ one"), "{}", run.text());
    assert!(run.stdout.contains("main › second ┃ two"), "{}", run.text());
    assert!(
        run.stdout.contains("coordinator │ tolerated exit 3"),
        "{}",
        run.text()
    );

    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success");
    assert_eq!(job["job"]["pipeline"], "seq");
    assert_eq!(task(&job, "main")["state"], "success");
    assert_eq!(step(&job, "main", "first")["state"], "success");
    assert_eq!(step(&job, "main", "first")["exit_code"], 0);
    assert_eq!(step(&job, "main", "tolerated")["state"], "failure");
    assert_eq!(step(&job, "main", "tolerated")["exit_code"], 3);
}

#[test]
fn failing_step_fails_job_with_exit_status_one() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="fails")
def fails():
    step.run("echo before")
    step.run("echo broken >&2; exit 7", name="broken")
    step.run("echo never", name="never")
"#,
    );

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    assert!(
        job["job"]["reason"].as_str().unwrap().contains("broken"),
        "reason names the failed step: {job:#}"
    );
    assert_eq!(step(&job, "main", "broken")["exit_code"], 7);
    let names: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"never"),
        "no step runs after a failed check: {names:?}"
    );
}

#[test]
fn logs_keep_stdout_and_stderr_apart() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="streams")
def streams():
    step.run("echo out-1; echo err-1 >&2; echo out-2; printf 'err-2' >&2", name="mixed")
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();

    let stdout = sandbox.danube(&[
        "logs", id, "--task", "main", "--step", "mixed", "--stream", "stdout",
    ]);
    assert_eq!(stdout.stdout, "out-1\nout-2\n");
    let stderr = sandbox.danube(&[
        "logs", id, "--task", "main", "--step", "mixed", "--stream", "stderr",
    ]);
    assert_eq!(stderr.stdout, "err-1\nerr-2");
}

#[test]
fn independent_tasks_overlap_in_time() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def setup():
    step.run("true")

@task(needs=[setup])
def left():
    step.run("sleep 1.5", name="wait")

@task(needs=[setup])
def right():
    step.run("sleep 1.5", name="wait")

@task(needs=[left, right])
def join():
    step.run("true")

pipeline(name="diamond", tasks=[join])
"#,
    );

    let run = sandbox.run(&["--max-parallel", "4"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let left = task(&job, "left");
    let right = task(&job, "right");
    let (l0, l1) = (
        left["started_at"].as_i64().unwrap(),
        left["finished_at"].as_i64().unwrap(),
    );
    let (r0, r1) = (
        right["started_at"].as_i64().unwrap(),
        right["finished_at"].as_i64().unwrap(),
    );
    assert!(
        l0 < r1 && r0 < l1,
        "left {l0}..{l1} and right {r0}..{r1} overlap"
    );

    let setup_end = task(&job, "setup")["finished_at"].as_i64().unwrap();
    assert!(l0 >= setup_end && r0 >= setup_end, "both wait for setup");
    let join_start = task(&job, "join")["started_at"].as_i64().unwrap();
    assert!(join_start >= l1 && join_start >= r1, "join waits for both");
}

#[test]
fn max_parallel_one_runs_tasks_one_at_a_time() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def a():
    step.run("sleep 0.5")

@task()
def b():
    step.run("sleep 0.5")

pipeline(name="serial", tasks=[a, b])
"#,
    );
    let run = sandbox.run(&["--max-parallel", "1"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let a = task(&job, "a");
    let b = task(&job, "b");
    let a_range = (
        a["started_at"].as_i64().unwrap(),
        a["finished_at"].as_i64().unwrap(),
    );
    let b_range = (
        b["started_at"].as_i64().unwrap(),
        b["finished_at"].as_i64().unwrap(),
    );
    assert!(
        a_range.1 <= b_range.0 || b_range.1 <= a_range.0,
        "{a_range:?} {b_range:?} must not overlap"
    );
}

#[test]
fn failed_task_skips_dependents_and_independent_branch_finishes() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def broken():
    step.run("exit 1", name="fail")

@task(needs=[broken])
def after_broken():
    step.run("true")

@task(needs=[after_broken])
def later():
    step.run("true")

@task()
def independent():
    step.run("sleep 0.5; echo fine", name="work")

pipeline(name="branches", tasks=[later, independent])
"#,
    );

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    assert_eq!(task(&job, "broken")["state"], "failure");
    assert_eq!(task(&job, "after_broken")["state"], "skipped");
    assert_eq!(task(&job, "later")["state"], "skipped");
    assert_eq!(task(&job, "independent")["state"], "success");
    assert_eq!(step(&job, "independent", "work")["state"], "success");
}

#[test]
fn fail_fast_skips_pending_tasks() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def broken():
    step.run("exit 1", name="fail")

@task(needs=[broken])
def dependent():
    step.run("true")

@task(needs=["gate"])
def waits():
    step.run("true")

@task()
def gate():
    step.run("sleep 1")

pipeline(name="fast", tasks=[dependent, waits], fail_fast=True)
"#,
    );
    let run = sandbox.run(&["--max-parallel", "4"]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(task(&job, "dependent")["state"], "skipped");
    assert_eq!(
        task(&job, "gate")["state"],
        "success",
        "running tasks finish"
    );
    assert_eq!(task(&job, "waits")["state"], "skipped");
}

#[test]
fn large_output_keeps_each_step_under_its_label() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="loud")
def loud():
    step.run("seq 1 200000", name="count")
    step.run("echo second-step-output", name="second")
"#,
    );

    let run = sandbox.run(&[]);

    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let position = |wanted: &str| {
        lines
            .iter()
            .position(|line| *line == wanted)
            .unwrap_or_else(|| panic!("no line `{wanted}` in the output"))
    };
    let last_count = position("main › count │ 200000");
    let count_result = lines
        .iter()
        .position(|line| line.starts_with("✓ main › count"))
        .expect("a result line for `count`");
    let second_start = position("▶ main › second");
    let second_output = position("main › second │ second-step-output");
    assert!(
        last_count < count_result,
        "the result came before the output"
    );
    assert!(count_result < second_start);
    assert!(second_start < second_output);
    assert!(
        !lines.iter().any(|line| line.starts_with("? ")),
        "a line had no step label"
    );
}

#[test]
fn max_duration_past_the_limit_is_rejected() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from datetime import timedelta
from danube import pipeline, step

@pipeline(name="forever", max_duration=timedelta(days=8))
def forever():
    step.run("echo never runs")
"#,
    );

    let run = sandbox.run(&[]);

    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains(
            "the engine rejected the plan of pipeline `forever`: max_duration of 691200 s is \
             longer than the engine's limit of 604800 s (7 days); lower it"
        ),
        "{}",
        run.text()
    );
    assert!(!run.stdout.contains("never runs"), "{}", run.text());
}

#[test]
fn exception_in_script_fails_job_with_traceback() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

def helper():
    raise RuntimeError("the deploy target is unknown")

@pipeline(name="raises")
def raises():
    step.run("echo ok")
    helper()
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains("Traceback"),
        "traceback is shown: {}",
        run.text()
    );
    assert!(run.stdout.contains("in helper"), "{}", run.text());

    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(reason.contains("the deploy target is unknown"), "{reason}");

    let id = job["job"]["id"].as_str().unwrap();
    let logs = sandbox.danube(&["logs", id]);
    assert!(
        logs.stdout
            .contains("RuntimeError: the deploy target is unknown"),
        "{}",
        logs.text()
    );
}

#[test]
fn context_values_reach_script_and_steps() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import ctx, pipeline, step

@pipeline(name="ctx-check")
def check():
    print(f"ctx job={ctx.job_id} pipeline={ctx.pipeline} trigger={ctx.trigger_type}")
    step.run('echo "env CI=$CI job=$DANUBE_JOB_ID pipeline=$DANUBE_PIPELINE extra=$EXTRA"', name="env", env={"EXTRA": "yes"})
    step.run('test -n "$PATH" && test -n "$HOME"', name="inherited")
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert!(
        run.stdout
            .contains(&format!("ctx job={id} pipeline=ctx-check trigger=local")),
        "{}",
        run.text()
    );
    let log = sandbox.step_log(id, "main", "env");
    assert_eq!(
        log,
        format!("env CI=true job={id} pipeline=ctx-check extra=yes\n")
    );
}

#[test]
fn capture_returns_stdout_to_script() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="capture")
def capture():
    out = step.run("echo captured-value; echo noise >&2", name="produce", capture=True)
    assert out == "captured-value\n", repr(out)
    step.run(f"echo got {out.strip()}", name="consume")
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(
        sandbox.step_log(id, "main", "consume"),
        "got captured-value\n"
    );
}

#[test]
fn workspace_copy_skips_ignored_files_and_leaves_project_untouched() {
    let sandbox = Sandbox::new();
    sandbox
        .file(".gitignore", "ignored.txt\nbuild/\n")
        .file("kept.txt", "kept\n")
        .file("ignored.txt", "ignored\n")
        .file("build/out.bin", "x")
        .pipeline(
            r#"
from danube import pipeline, step

@pipeline(name="copy")
def copy():
    step.run("test -f kept.txt && test ! -e ignored.txt && test ! -e build", name="check")
    step.run("echo new > created.txt", name="write")
"#,
        );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        !sandbox.project().join("created.txt").exists(),
        "the copy is separate"
    );

    let in_place = sandbox.run(&["--in-place"]);
    assert_eq!(
        in_place.code,
        1,
        "ignored files exist in place: {}",
        in_place.text()
    );
}

#[test]
fn in_place_runs_in_project_folder() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="inplace")
def inplace():
    step.run("echo made > made-by-step.txt")
"#,
    );
    let run = sandbox.run(&["--in-place"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let made = std::fs::read_to_string(sandbox.project().join("made-by-step.txt")).unwrap();
    assert_eq!(made, "made\n");
}

#[test]
fn tasks_share_one_workspace() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def produce():
    step.run("mkdir -p out && echo artifact-data > out/file")

@task(needs=[produce])
def consume():
    step.run("cat out/file", name="read")

pipeline(name="shared", tasks=[consume])
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(sandbox.step_log(id, "consume", "read"), "artifact-data\n");
}

#[test]
fn jobs_lists_recent_runs_newest_first() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="listed")
def listed():
    step.run("true")
"#,
    );
    assert_eq!(sandbox.run(&[]).code, 0);
    assert_eq!(sandbox.run(&[]).code, 0);

    let jobs = sandbox.danube(&["jobs", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&jobs.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0]["id"].as_str().unwrap() > list[1]["id"].as_str().unwrap());
    assert!(
        list.iter()
            .all(|job| job["state"] == "success" && job["pipeline"] == "listed")
    );

    let table = sandbox.danube(&["jobs"]);
    assert_eq!(table.code, 0);
    assert!(
        table.stdout.contains("listed") && table.stdout.contains("success"),
        "{}",
        table.text()
    );

    let limited = sandbox.danube(&["jobs", "--json", "--limit", "1"]);
    let limited: serde_json::Value = serde_json::from_str(&limited.stdout).unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

#[test]
fn kube_only_option_warns_on_local() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="p")
def main():
    step.run("true")
"#,
    );

    let run = sandbox.run(&["--egress-allow", "pypi.org"]);

    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stderr.contains(
            "warning: --egress-allow applies to kube targets only and has no effect with --target local"
        ),
        "{}",
        run.text()
    );
    let both = sandbox.run(&["--egress-allow", "pypi.org", "--coordinator", "pod"]);
    assert!(
        both.stderr.contains(
            "warning: --egress-allow, --coordinator apply to kube targets only and have no effect \
             with --target local"
        ),
        "{}",
        both.text()
    );
}
