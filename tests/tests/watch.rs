//! Watch mode on real files, real processes and a real SQLite database:
//! the engine's watch session, `danube watch`, and the HTTP watch routes.
//!
//! "No further run" is observed as the absence of a new job for
//! [`QUIET`], several debounce windows after the expected job ended.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use danube::model::{JobId, JobState, TriggerType};
use danube::orchestrator::{Engine, JobOutcome, JobRequest};
use danube::watch::{RunFollower, WatchRequest, WatchRun, WatchSession};
use danube_tests::engine::local_engine;
use danube_tests::{Sandbox, process_alive};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const DEBOUNCE: Duration = Duration::from_millis(200);

/// How long no new job may start for a burst to count as settled: five
/// debounce windows.
const QUIET: Duration = Duration::from_millis(1000);

/// Bound on waiting for a job that must come; a failing test ends here.
const LIMIT: Duration = Duration::from_secs(60);

const QUICK_PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="quick")
def quick():
    step.run("true", name="check")
"#;

/// What the session did, in order.
#[derive(Debug)]
enum Seen {
    Started { job: JobId, trigger: Option<String> },
    Ended { job: JobId, outcome: JobOutcome },
}

/// Reports every job of a session on a channel.
struct Recorder(mpsc::UnboundedSender<Seen>);

#[async_trait::async_trait]
impl RunFollower for Recorder {
    async fn follow(&mut self, run: WatchRun) -> JobOutcome {
        let job = run.handle.id.clone();
        let trigger = run
            .change
            .map(|change| change.trigger.display().to_string());
        let _ = self.0.send(Seen::Started {
            job: job.clone(),
            trigger,
        });
        let outcome = run.handle.wait().await;
        let _ = self.0.send(Seen::Ended {
            job,
            outcome: outcome.clone(),
        });
        outcome
    }
}

/// A running session and what it reports.
struct Watching {
    engine: Engine,
    seen: mpsc::UnboundedReceiver<Seen>,
    controls: danube::watch::SessionControls,
    task: JoinHandle<()>,
}

impl Watching {
    async fn start(sandbox: &Sandbox) -> Watching {
        let engine = local_engine(sandbox).await;
        let request = WatchRequest {
            job: JobRequest {
                project: sandbox.project(),
                repository: None,
                pipeline: None,
                in_place: false,
                max_parallel: 4,
                trigger: TriggerType::Local,
                trigger_ref: None,
                backend: None,
                breakpoints: Default::default(),
            },
            debounce: DEBOUNCE,
        };
        let session = WatchSession::start(engine.clone(), request).unwrap();
        let controls = session.controls();
        let (sender, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            session.run(&mut Recorder(sender)).await.unwrap();
        });
        Watching {
            engine,
            seen,
            controls,
            task,
        }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(LIMIT, self.seen.recv())
            .await
            .expect("the session reports within the limit")
            .expect("the session is running")
    }

    /// Waits for the next job to start and returns its id and trigger.
    async fn started(&mut self) -> (JobId, Option<String>) {
        match self.next().await {
            Seen::Started { job, trigger } => (job, trigger),
            other => panic!("expected a job to start, got {other:?}"),
        }
    }

    /// Waits for the job in flight to end and returns its outcome.
    async fn ended(&mut self, expected: &JobId) -> JobOutcome {
        match self.next().await {
            Seen::Ended { job, outcome } => {
                assert_eq!(&job, expected);
                outcome
            }
            other => panic!("expected job {expected} to end, got {other:?}"),
        }
    }

    /// Asserts that no job starts for [`QUIET`].
    async fn assert_quiet(&mut self) {
        if let Ok(seen) = tokio::time::timeout(QUIET, self.seen.recv()).await {
            panic!("expected no further job, got {seen:?}");
        }
    }

    async fn stop(self) {
        self.controls.stop();
        self.task.await.unwrap();
    }
}

/// Starts a session on `pipeline` and waits until its first job succeeded.
async fn watching_after_first_job(sandbox: &Sandbox) -> Watching {
    let mut watching = Watching::start(sandbox).await;
    let (first, trigger) = watching.started().await;
    assert_eq!(trigger, None);
    let outcome = watching.ended(&first).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let record = watching
        .engine
        .store()
        .find_job(first.as_str())
        .await
        .unwrap();
    assert_eq!(record.trigger_type, TriggerType::Local);
    watching
}

async fn assert_watch_job(engine: &Engine, job: &JobId, file: &str) {
    let record = engine.store().find_job(job.as_str()).await.unwrap();
    assert_eq!(record.trigger_type, TriggerType::Watch);
    assert_eq!(record.trigger_ref, file);
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_of_100_writes_starts_one_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    let mut watching = watching_after_first_job(&sandbox).await;

    for index in 0..100 {
        sandbox.file(
            &format!("src/file{}.py", index % 10),
            &format!("x = {index}\n"),
        );
    }

    let (job, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("src/file0.py"));
    assert_eq!(watching.ended(&job).await.state, JobState::Success);
    watching.assert_quiet().await;
    assert_watch_job(&watching.engine, &job, "src/file0.py").await;
    assert_eq!(
        watching.engine.store().list_jobs(10).await.unwrap().len(),
        2
    );
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_paths_start_no_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    sandbox.file(".gitignore", "*.log\nbuild/\n");
    sandbox.file("web/.gitignore", "dist/\n");
    git2::Repository::init(sandbox.project()).unwrap();
    let mut watching = watching_after_first_job(&sandbox).await;

    let ignored = [
        "debug.log",
        "build/out.o",
        "web/dist/app.js",
        ".git/objects/ab/cdef",
        ".danubefile.py.swp",
        "4913",
        "danubefile.py~",
        "#danubefile.py#",
        "danubefile.py___jb_tmp___",
        "src/__pycache__/x.cpython-312.pyc",
    ];
    for path in ignored {
        sandbox.file(path, "ignored\n");
    }
    watching.assert_quiet().await;

    // A change the session must see, to show it was watching all along.
    sandbox.file("marker.py", "seen = True\n");
    let (job, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("marker.py"));
    watching.ended(&job).await;
    watching.assert_quiet().await;
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_on_save_starts_exactly_one_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    sandbox.file("src/app.py", "version = 1\n");
    let mut watching = watching_after_first_job(&sandbox).await;

    // What vim does with `backupcopy=no`, and what atomic-save editors do
    // with a temporary name that no rule matches: write a new file, then rename it
    // over the original.
    let source = sandbox.project().join("src");
    std::fs::rename(source.join("app.py"), source.join("app.py~")).unwrap();
    std::fs::write(source.join(".app.py.k3x9q"), "version = 2\n").unwrap();
    std::fs::rename(source.join(".app.py.k3x9q"), source.join("app.py")).unwrap();
    std::fs::remove_file(source.join("app.py~")).unwrap();

    let (job, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("src/app.py"));
    watching.ended(&job).await;
    watching.assert_quiet().await;
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_rename_starts_exactly_one_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    sandbox.file("d/b.txt", "b\n");
    let mut watching = watching_after_first_job(&sandbox).await;

    std::fs::rename(sandbox.project().join("d"), sandbox.project().join("e")).unwrap();

    // The rename event names the folder, not the files it contains.
    let (job, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("e"));
    assert_eq!(watching.ended(&job).await.state, JobState::Success);
    watching.assert_quiet().await;

    // The renamed folder is still watched, under its new name.
    std::fs::rename(sandbox.project().join("e"), sandbox.project().join("f")).unwrap();
    let (job, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("f"));
    watching.ended(&job).await;
    watching.assert_quiet().await;
    watching.stop().await;
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect()
}

async fn wait_for_pids(path: &Path, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let pids = read_pids(path);
        if pids.len() >= count {
            return pids;
        }
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn change_during_step_cancels_job_and_reruns() {
    let sandbox = Sandbox::new();
    let pids_file = sandbox.hanging_pipeline(300);
    let mut watching = Watching::start(&sandbox).await;
    let (first, _) = watching.started().await;
    let first_pids = wait_for_pids(&pids_file, 2).await;

    sandbox.file("src/x.py", "changed = True\n");

    let outcome = watching.ended(&first).await;
    assert_eq!(outcome.state, JobState::Cancelled, "{outcome:?}");
    for pid in &first_pids {
        assert!(
            !process_alive(*pid),
            "process {pid} outlived the cancelled job"
        );
    }
    let record = watching
        .engine
        .store()
        .find_job(first.as_str())
        .await
        .unwrap();
    assert_eq!(record.state, JobState::Cancelled);

    let (second, trigger) = watching.started().await;
    assert_eq!(trigger.as_deref(), Some("src/x.py"));
    assert_watch_job(&watching.engine, &second, "src/x.py").await;

    // Stopping the session cancels its job in flight too.
    let second_pids = wait_for_pids(&pids_file, 4).await;
    watching.controls.stop();
    let outcome = watching.ended(&second).await;
    assert_eq!(outcome.state, JobState::Cancelled);
    for pid in &second_pids[2..] {
        assert!(
            !process_alive(*pid),
            "process {pid} outlived the stopped session"
        );
    }
    watching.task.await.unwrap();
}

/// Starts `danube watch` on the sandbox's project with a 100 ms debounce,
/// and returns it with a reader of its output lines.
fn start_cli_watch(sandbox: &Sandbox) -> (Child, std::sync::mpsc::Receiver<String>) {
    let project = sandbox.project();
    let mut child = sandbox
        .command()
        .args(["watch", project.to_str().unwrap(), "--debounce", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    (child, lines)
}

/// Reads `danube watch` output lines on a thread and hands them over.
fn line_reader(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Collects lines into `seen` until one satisfies `done`.
fn read_until(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    done: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no expected line; output so far:\n{}", seen.join("\n")));
        let finished = done(&line);
        seen.push(line);
        if finished {
            return;
        }
    }
}

#[test]
fn cli_watch_reruns_and_stops_on_sigint() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    let (mut child, lines) = start_cli_watch(&sandbox);
    let mut seen = Vec::new();

    read_until(&lines, &mut seen, |line| line.starts_with("watching "));
    sandbox.file("src/x.py", "changed = True\n");
    read_until(&lines, &mut seen, |line| line.starts_with("watching "));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();

    let text = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{status:?}\n{text}");
    let started = seen
        .iter()
        .filter(|line| line.ends_with(" started") && line.starts_with("job "))
        .count();
    assert_eq!(started, 2, "{text}");
    assert!(text.contains("change in src/x.py: restarting"), "{text}");
    let succeeded = seen
        .iter()
        .filter(|line| line.starts_with("job ") && line.contains(" success in "))
        .count();
    assert_eq!(succeeded, 2, "{text}");
    let jobs = sandbox.danube(&["jobs", "--json"]);
    let jobs: Value = serde_json::from_str(&jobs.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs:#}");
    assert_eq!(jobs[0]["trigger_type"], "watch", "{jobs:#}");
    assert_eq!(jobs[0]["trigger_ref"], "src/x.py", "{jobs:#}");
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(LIMIT)
        .build()
        .unwrap()
}

/// Polls the job list until a job other than `known` exists, and returns it.
fn wait_new_job(server: &danube_tests::Server, known: &[String]) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let page: Value = client()
            .get(server.url("/api/v1/jobs"))
            .bearer_auth(&server.token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let new = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| !known.iter().any(|id| job["id"] == id.as_str()));
        if let Some(job) = new {
            return job.clone();
        }
        assert!(Instant::now() < deadline, "no new job: {page:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn api_watch_routes_start_list_and_stop_sessions() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    let server = sandbox.serve();
    let watches = server.url("/api/v1/watches");

    let relative = client()
        .post(&watches)
        .bearer_auth(&server.token)
        .json(&json!({"project": "project"}))
        .send()
        .unwrap();
    assert_eq!(relative.status(), StatusCode::BAD_REQUEST);
    let unauthorized = client().get(&watches).send().unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let created = client()
        .post(&watches)
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project()}))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let watch: Value = created.json().unwrap();
    let id = watch["id"].as_str().unwrap().to_owned();
    let first = watch["current_job"].as_str().unwrap().to_owned();
    let canonical = sandbox.project().canonicalize().unwrap();
    assert_eq!(watch["project"], canonical.to_str().unwrap());
    assert_eq!(watch["pipeline"], Value::Null);

    let listed: Value = client()
        .get(&watches)
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["watches"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["watches"][0]["id"], id.as_str());

    sandbox.file("src/x.py", "changed = True\n");
    let rerun = wait_new_job(&server, std::slice::from_ref(&first));
    assert_eq!(rerun["trigger_type"], "watch", "{rerun:#}");
    assert_eq!(rerun["trigger_ref"], "src/x.py", "{rerun:#}");

    // A DELETE changes state, so like a POST it must declare JSON, which a
    // plain form or link on another site cannot send.
    let delete = || {
        client()
            .delete(server.url(&format!("/api/v1/watches/{id}")))
            .bearer_auth(&server.token)
    };
    let not_json = delete().send().unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let stopped = delete()
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(stopped.status(), StatusCode::OK);
    let stopped: Value = stopped.json().unwrap();
    assert_eq!(stopped["id"], id.as_str());
    let listed: Value = client()
        .get(&watches)
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["watches"].as_array().unwrap().len(), 0, "{listed:#}");
    let again = delete()
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    let document: Value = client()
        .get(server.url("/api/v1/openapi.json"))
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(document["paths"]["/api/v1/watches"]["post"].is_object());
    assert!(document["paths"]["/api/v1/watches/{id}"]["delete"].is_object());
}

const FAILING_PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="failing")
def failing():
    step.run("exit 3", name="check")
"#;

/// Polls `GET /debug` of `job` until it pauses and returns the pause.
fn wait_paused(server: &danube_tests::Server, job: &str) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let response = client()
            .get(server.url(&format!("/api/v1/jobs/{job}/debug")))
            .bearer_auth(&server.token)
            .send()
            .unwrap();
        if response.status() == StatusCode::OK {
            return response.json().unwrap();
        }
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(Instant::now() < deadline, "job {job} never paused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn api_watch_pauses_jobs_on_failure() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(FAILING_PIPELINE);
    let server = sandbox.serve();

    let created = client()
        .post(server.url("/api/v1/watches"))
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project(), "break_on_failure": true}))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let watch: Value = created.json().unwrap();
    let first = watch["current_job"].as_str().unwrap().to_owned();
    let pause = wait_paused(&server, &first);
    assert_eq!(pause["step"], "check");
    assert_eq!(pause["reason"], "failure");

    // The jobs that changes start pause too.
    sandbox.file("src/x.py", "changed = True\n");
    let rerun = wait_new_job(&server, std::slice::from_ref(&first));
    let rerun = rerun["id"].as_str().unwrap();
    let pause = wait_paused(&server, rerun);
    assert_eq!(pause["reason"], "failure");

    let id = watch["id"].as_str().unwrap();
    let stopped = client()
        .delete(server.url(&format!("/api/v1/watches/{id}")))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(stopped.status(), StatusCode::OK);
}

#[test]
fn api_watch_pauses_before_step() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(QUICK_PIPELINE);
    let server = sandbox.serve();

    let created = client()
        .post(server.url("/api/v1/watches"))
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project(), "break_before": ["check"]}))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let watch: Value = created.json().unwrap();
    let pause = wait_paused(&server, watch["current_job"].as_str().unwrap());
    assert_eq!(pause["step"], "check");
    assert_eq!(pause["reason"], "before");

    let id = watch["id"].as_str().unwrap();
    let stopped = client()
        .delete(server.url(&format!("/api/v1/watches/{id}")))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(stopped.status(), StatusCode::OK);
}

const SLOW_PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="slow")
def slow():
    step.run("sleep 30", name="wait")
"#;

#[test]
fn cli_watch_names_change_that_cancelled_job() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(SLOW_PIPELINE);
    let (mut child, lines) = start_cli_watch(&sandbox);
    let mut seen = Vec::new();

    read_until(&lines, &mut seen, |line| line.contains("main › wait"));
    sandbox.file("src/x.py", "changed = True\n");
    read_until(&lines, &mut seen, |line| {
        line.ends_with(" started") && line.starts_with("job ")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait().unwrap();
    seen.extend(lines.iter());

    let text = seen.join("\n");
    let restart = seen
        .iter()
        .position(|line| line == "change in src/x.py: restarting")
        .unwrap_or_else(|| panic!("no restart line:\n{text}"));
    let cancelled = seen
        .iter()
        .position(|line| line.starts_with("job ") && line.contains(" cancelled in "))
        .unwrap_or_else(|| panic!("no cancelled job:\n{text}"));
    assert!(restart < cancelled, "{text}");
    assert!(
        seen[cancelled].ends_with(": cancelled: src/x.py changed"),
        "{text}"
    );
    let restarts = seen
        .iter()
        .filter(|line| line.starts_with("change in "))
        .count();
    assert_eq!(restarts, 1, "{text}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some(
            format!(
                "stopped watching {}",
                sandbox.project().canonicalize().unwrap().display()
            )
            .as_str()
        ),
        "{text}"
    );
}
