//! The desktop app end to end: the real `danube-desktop` window under Xvfb,
//! driven by WebDriver through `tauri-driver` and WebKitWebDriver, on a
//! fresh data directory, a copy of `examples/dag` and a project whose one
//! step fails until a file is fixed.
//!
//! The stages: run the DAG to success. Watch the project and see a change
//! to a file start a new run by itself. Break on the failing step, run
//! commands in its environment, fix the file there, retry and see the job
//! succeed. Quit the app while a step sleeps and see the step's process
//! stop.
//!
//! Each stage saves a screenshot under `target/screenshots/desktop/`. In CI
//! (or with `DANUBE_DESKTOP_E2E` set) missing programs fail the test; a
//! local run without them prints why it skips.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use danube_tests::desktop::{DesktopApp, DesktopLaunch, desktop_programs, desktop_test_required};
use danube_tests::{process_alive, shared_venv, workspace_root};

/// How long the example's job may take, Python start-up included.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the UI gets to show a page once the app is up.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Copies `examples/dag` into `into`, as a user's own project folder.
fn copy_dag_example(into: &Path) -> std::path::PathBuf {
    let project = into.join("dag");
    let status = Command::new("cp")
        .arg("-R")
        .arg(workspace_root().join("examples/dag"))
        .arg(&project)
        .status()
        .expect("run cp");
    assert!(status.success(), "copying examples/dag failed: {status}");
    project
}

/// A project whose step fails until `status.txt` contains `fixed`.
fn write_fixme_project(into: &Path) -> std::path::PathBuf {
    let project = into.join("fixme");
    std::fs::create_dir_all(&project).expect("create the fixme project");
    std::fs::write(
        project.join("danubefile.py"),
        "from danube import pipeline, step\n\n\n\
         @pipeline(name=\"fixme\")\n\
         def fixme() -> None:\n    \
         step.run(\"grep -q fixed status.txt\", name=\"check\")\n",
    )
    .expect("write danubefile.py");
    std::fs::write(project.join("status.txt"), "broken\n").expect("write status.txt");
    project
}

/// Returns whether the test can run; panics in CI when it cannot.
fn programs_present() -> bool {
    match desktop_programs() {
        Ok(_) => true,
        Err(missing) if desktop_test_required() => {
            panic!("the desktop end-to-end test needs {missing}")
        }
        Err(missing) => {
            eprintln!(
                "skipping the desktop end-to-end test: {missing}; set DANUBE_DESKTOP_E2E=1 to make this a failure"
            );
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_runs_watches_and_debugs() {
    if !programs_present() {
        return;
    }
    let sandbox = tempfile::Builder::new()
        .prefix("danube-desktop-e2e-")
        .tempdir()
        .expect("create a temp dir");
    let project = copy_dag_example(sandbox.path());
    let data_dir = sandbox.path().join("data");
    let venv = shared_venv();

    let app = DesktopApp::launch(DesktopLaunch {
        args: vec!["--project".to_owned(), project.display().to_string()],
        env: vec![
            ("DANUBE_DATA_DIR", data_dir.clone()),
            ("DANUBE_PYTHON_VENV", venv),
        ],
        log_dir: sandbox.path(),
    })
    .await;

    // Stage 1: the project page of the --project folder, ready to run.
    app.wait_for(
        "the project page of examples/dag with Run enabled",
        PAGE_TIMEOUT,
        "const run = document.querySelector('[data-testid=run-project]');
         const name = document.querySelector('[data-testid=project-name]')?.textContent;
         return run !== null && !run.disabled && name === 'dag';",
    )
    .await;
    let url = app.url().await;
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.contains("token="),
        "the window shows the embedded engine's UI without the token in its address: {url}"
    );
    let pipeline = app
        .eval("return document.querySelector('[data-testid=pipeline-select]').value;")
        .await;
    assert_eq!(
        pipeline, "calc",
        "the example's one pipeline is preselected"
    );
    app.screenshot("1-project").await;

    // Stage 1, run: every task of the DAG succeeds.
    app.click("[data-testid=run-project]").await;
    app.wait_for(
        "every DAG node of the job to succeed",
        JOB_TIMEOUT,
        "const nodes = [...document.querySelectorAll('[data-testid=dag-node]')];
         const states = nodes.map(node => node.getAttribute('data-state'));
         return nodes.length === 5 && states.every(state => state === 'success')
             ? true : states.join(',') || 'no DAG yet';",
    )
    .await;
    app.wait_for(
        "the job to show as succeeded",
        PAGE_TIMEOUT,
        "return document.querySelector('.job-title .state-success') !== null;",
    )
    .await;
    let tasks = app
        .eval(
            "return [...document.querySelectorAll('[data-testid=dag-node]')]
                 .map(node => node.getAttribute('data-task')).sort();",
        )
        .await;
    assert_eq!(
        tasks,
        serde_json::json!(["docs", "lint", "package", "prepare", "unit_tests"])
    );
    app.screenshot("2-run-succeeded").await;

    // The run shows in the project's history, recorded in the app's own
    // data directory, which the CLI reads too.
    app.click("[data-testid=nav-project]").await;
    app.wait_for(
        "the run in the project's history",
        PAGE_TIMEOUT,
        "const rows = [...document.querySelectorAll('[data-testid=history] [data-testid=job-row]')];
         return rows.length === 1 && rows[0].getAttribute('data-state') === 'success'
             ? true : rows.map(row => row.getAttribute('data-state')).join(',') || 'no rows';",
    )
    .await;
    app.screenshot("3-history").await;
    assert!(
        data_dir.join("danube.db").is_file(),
        "the job was recorded in DANUBE_DATA_DIR"
    );

    watch_reruns_after_change(&app, &project).await;
    break_retry_succeeds(&app, sandbox.path()).await;
    load_error_clears_on_reload(&app, sandbox.path()).await;
    let step_pid = start_long_step(&app, sandbox.path()).await;

    // SIGTERM, as a desktop session that logs out sends, quits the app the
    // way closing its window does: the engine stops the running job.
    let app_pid = app.app_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the app");
    assert_process_ends("the app", app_pid);
    assert_process_ends("the step's process", step_pid);
    app.close().await;
}

/// Stage 3b: the Project tab returns to the project opened last; a
/// project whose file does not load shows the traceback with its line
/// breaks; the page reads the file again after a job of the project
/// ends, and on Reload.
async fn load_error_clears_on_reload(app: &DesktopApp, sandbox: &Path) {
    app.click("[data-testid=nav-project]").await;
    app.wait_for(
        "the Project tab to show the project opened last",
        PAGE_TIMEOUT,
        "const name = document.querySelector('[data-testid=project-name]')?.textContent;
         return name === 'fixme' ? true : `project: ${name}`;",
    )
    .await;

    let project = sandbox.join("broken");
    std::fs::create_dir_all(&project).expect("create the broken project");
    let file = project.join("danubefile.py");
    std::fs::write(&file, "import no_such_module_here\n").expect("write danubefile.py");
    app.type_text("[data-testid=project-path]", &project.display().to_string())
        .await;
    app.click("[data-testid=open-path]").await;
    app.wait_for(
        "the load error as preformatted text, with Run disabled",
        PAGE_TIMEOUT,
        "const error = document.querySelector('[data-testid=error-text]');
         const run = document.querySelector('[data-testid=run-project]');
         const name = document.querySelector('[data-testid=project-name]')?.textContent;
         return name === 'broken' && error?.tagName === 'PRE'
             && error.textContent.includes('\\n') && error.textContent.includes('no_such_module_here')
             && run.disabled
             ? true : `${name}: ${error?.tagName} ${error?.textContent}`;",
    )
    .await;
    app.screenshot("6-load-error").await;

    // The user's loop: watch on, fix the file, and the watch's run that
    // follows makes the page read the file again.
    app.click("[data-testid=watch-toggle]").await;
    app.wait_for(
        "the watch session to start",
        PAGE_TIMEOUT,
        "return document.querySelector('[data-testid=watch-status]') !== null;",
    )
    .await;
    std::fs::write(
        &file,
        "from danube import pipeline, step\n\n\n\
         @pipeline(name=\"fixed\")\n\
         def fixed() -> None:\n    \
         step.run(\"true\", name=\"check\")\n",
    )
    .expect("fix danubefile.py");
    app.wait_for(
        "Run to be enabled after the watch's run of the fixed file",
        JOB_TIMEOUT,
        "const run = document.querySelector('[data-testid=run-project]');
         return !run.disabled && document.querySelector('[data-testid=error-text]') === null;",
    )
    .await;
    app.click("[data-testid=watch-toggle]").await;
    app.wait_for(
        "the watch session to stop",
        PAGE_TIMEOUT,
        "const toggle = document.querySelector('[data-testid=watch-toggle]');
         return document.querySelector('[data-testid=watch-status]') === null
             && !toggle.checked && !toggle.disabled;",
    )
    .await;

    // Without a job, Reload reads the file again.
    std::fs::write(&file, "import no_such_module_here\n").expect("break danubefile.py");
    app.click("[data-testid=reload-pipelines]").await;
    app.wait_for(
        "the load error again after Reload",
        PAGE_TIMEOUT,
        "const run = document.querySelector('[data-testid=run-project]');
         return run.disabled && document.querySelector('[data-testid=error-text]') !== null;",
    )
    .await;
}

/// Stage 4: starts a job whose step sleeps for ten minutes and returns the
/// step's process id, so that the test can check quitting the app stops it.
async fn start_long_step(app: &DesktopApp, sandbox: &Path) -> i32 {
    let project = sandbox.join("sleeper");
    let pid_file = sandbox.join("sleeper.pid");
    std::fs::create_dir_all(&project).expect("create the sleeper project");
    std::fs::write(
        project.join("danubefile.py"),
        format!(
            "from danube import pipeline, step\n\n\n\
             @pipeline(name=\"sleeper\")\n\
             def sleeper() -> None:\n    \
             step.run(\"echo $$ > {} && exec sleep 600\", name=\"sleep\")\n",
            pid_file.display()
        ),
    )
    .expect("write danubefile.py");
    app.click("[data-testid=nav-project]").await;
    open_runnable_project(app, &project, "sleeper").await;
    app.click("[data-testid=run-project]").await;

    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if let Ok(pid) = text.trim().parse::<i32>() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the sleeper's step did not start within {JOB_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that process `pid` ends within 30 seconds.
fn assert_process_ends(label: &str, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{label} ({pid}) still runs 30 seconds after the app was told to quit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stage 2: with the Watch toggle on, a change to a file of the project
/// starts a new run by itself, which the history labels with the file.
async fn watch_reruns_after_change(app: &DesktopApp, project: &Path) {
    app.click("[data-testid=watch-toggle]").await;
    app.wait_for(
        "the watch session to start and its first run to succeed",
        JOB_TIMEOUT,
        "const on = document.querySelector('[data-testid=watch-status]') !== null;
         const rows = [...document.querySelectorAll('[data-testid=history] [data-testid=job-row]')];
         const states = rows.map(row => row.getAttribute('data-state'));
         return on && rows.length === 2 && states.every(state => state === 'success')
             ? true : `watching: ${on}, runs: ${states.join(',')}`;",
    )
    .await;

    std::fs::write(
        project.join("calc").join("notes.txt"),
        "changed by the test\n",
    )
    .expect("change a file of the project");
    app.wait_for(
        "a run triggered by calc/notes.txt to succeed",
        JOB_TIMEOUT,
        "const rows = [...document.querySelectorAll('[data-testid=history] [data-testid=job-row]')];
         const rerun = rows.find(row =>
             (row.querySelector('[data-testid=job-trigger]')?.textContent ?? '')
                 .includes('rerun after a change to calc/notes.txt'));
         if (!rerun) {
             return 'no rerun yet: ' + rows.map(row => row.getAttribute('data-state')).join(',');
         }
         return rerun.getAttribute('data-state') === 'success'
             ? true : 'rerun is ' + rerun.getAttribute('data-state');",
    )
    .await;
    app.screenshot("4-watch-rerun").await;

    app.click("[data-testid=watch-toggle]").await;
    app.wait_for(
        "the watch session to stop",
        PAGE_TIMEOUT,
        "const toggle = document.querySelector('[data-testid=watch-toggle]');
         return document.querySelector('[data-testid=watch-status]') === null
             && !toggle.checked && !toggle.disabled;",
    )
    .await;
}

/// Opens `project` by its path and waits for its page, named `name`, with
/// Run enabled.
async fn open_runnable_project(app: &DesktopApp, project: &Path, name: &str) {
    app.type_text("[data-testid=project-path]", &project.display().to_string())
        .await;
    app.click("[data-testid=open-path]").await;
    app.wait_for(
        &format!("the {name} project page with Run enabled"),
        PAGE_TIMEOUT,
        &format!(
            "const run = document.querySelector('[data-testid=run-project]');
             const name = document.querySelector('[data-testid=project-name]')?.textContent;
             return run !== null && !run.disabled && name === '{name}' ? true : `project: ${{name}}`;"
        ),
    )
    .await;
}

/// Stage 3: a run that breaks on its failing step; commands in the step's
/// environment show the file that makes it fail and fix it there (the job
/// runs in a copy of the project); retrying the step makes the job
/// succeed.
async fn break_retry_succeeds(app: &DesktopApp, sandbox: &Path) {
    let project = write_fixme_project(sandbox);
    open_runnable_project(app, &project, "fixme").await;
    app.click("[data-testid=break-options] summary").await;
    app.click("[data-testid=project-break-on-failure]").await;
    app.click("[data-testid=run-project]").await;

    app.wait_for(
        "the job to pause on its failing step",
        JOB_TIMEOUT,
        "return document.querySelector('[data-testid=debug-panel]') !== null
             && document.querySelector('[data-testid=debug-command]') !== null;",
    )
    .await;
    run_debug_command(app, "cat status.txt", "broken").await;
    app.screenshot("5-paused-on-failure").await;

    run_debug_command(app, "echo fixed > status.txt && cat status.txt", "fixed").await;
    app.click("[data-testid=debug-retry]").await;
    app.wait_for(
        "the job to succeed after the retry",
        JOB_TIMEOUT,
        "return document.querySelector('.job-title .state-success') !== null
             && document.querySelector('[data-testid=debug-panel]') === null;",
    )
    .await;
    let states = app
        .eval(
            "return [...document.querySelectorAll('[data-testid=dag-node]')]
                 .map(node => node.getAttribute('data-state'));",
        )
        .await;
    assert_eq!(
        states,
        serde_json::json!(["success"]),
        "the one task succeeded on the retry"
    );
    app.wait_for(
        "the step's log to say it is the second attempt",
        PAGE_TIMEOUT,
        "return document.body.textContent.includes('attempt 2 of this step');",
    )
    .await;
    app.screenshot("6-retried-success").await;
}

/// Runs `command` from the debug panel and waits for `expected` in its
/// output, which ends with `[exit 0]`.
async fn run_debug_command(app: &DesktopApp, command: &str, expected: &str) {
    app.type_text("[data-testid=debug-command]", command).await;
    app.click("[data-testid=debug-run]").await;
    let script = format!(
        "const output = document.querySelector('[data-testid=debug-output]')?.textContent ?? '';
         return output.includes({command}) && output.includes({expected}) && output.includes('[exit 0]')
             ? true : output;",
        command = serde_json::json!(format!("$ {command}")),
        expected = serde_json::json!(expected),
    );
    app.wait_for(
        &format!("the output of `{command}` to show `{expected}`"),
        PAGE_TIMEOUT,
        &script,
    )
    .await;
}
