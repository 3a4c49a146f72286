//! The web UI in a real headless Chromium, against a real `danube serve`
//! running real pipelines.
//!
//! Needs Chromium and chromedriver (`apt-get install chromium
//! chromium-driver`); without them every test fails with that command.
//! Every test saves screenshots under `target/screenshots/`, named by test
//! and stage, whether it passes or fails.

use std::path::Path;
use std::time::Duration;

use danube_tests::browser::{Browser, LaunchOptions, wait_until};
use danube_tests::{Sandbox, Server, process_alive, workspace_root};
use fantoccini::key::Key;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the page gets to show what the API already reports.
const UI_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a test pipeline may run.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP API of the server under test, for setting up and for checking
/// what the page shows.
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build an HTTP client"),
            base: server.base.clone(),
            token: server.token.clone(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path} failed: {err}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("the API answers JSON")
    }

    async fn start_job(&self, project: &Path) -> String {
        let response = self
            .client
            .post(format!("{}/api/v1/jobs", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"project": project}))
            .send()
            .await
            .expect("POST /api/v1/jobs");
        assert_eq!(response.status(), StatusCode::CREATED);
        let job: Value = response.json().await.expect("the API answers JSON");
        job["id"].as_str().expect("a new job has an id").to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }

    async fn wait_final(&self, id: &str) -> Value {
        wait_until(&format!("job {id} to end"), JOB_TIMEOUT, async || {
            let job = self.job(id).await;
            let state = job["state"].as_str().unwrap_or_default();
            if ["success", "failure", "timeout", "cancelled"].contains(&state) {
                Ok(job)
            } else {
                Err(format!("state {state}"))
            }
        })
        .await
    }

    /// Returns the state of step `step` of task `task`, or `None` before it
    /// exists.
    async fn step_state(&self, id: &str, task: &str, step: &str) -> Option<String> {
        let job = self.job(id).await;
        job["tasks"]
            .as_array()?
            .iter()
            .filter(|candidate| candidate["name"] == task)
            .flat_map(|candidate| candidate["steps"].as_array().into_iter().flatten())
            .find(|candidate| candidate["name"] == step)
            .and_then(|found| found["state"].as_str())
            .map(str::to_owned)
    }

    async fn wait_step_running(&self, id: &str, task: &str, step: &str) {
        wait_until(
            &format!("step {task}/{step} to run"),
            JOB_TIMEOUT,
            async || match self.step_state(id, task, step).await {
                Some(state) if state == "running" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
}

/// A script that returns the log lines in the DOM, in order: number,
/// text, classes, whether the line lies inside the log view's scrolled
/// area, and whether it is also inside the window, that is on screen.
const LOG_LINES_SCRIPT: &str = r#"
    const view = document.querySelector('[data-testid=log-view]');
    const box = view ? view.getBoundingClientRect() : null;
    return [...document.querySelectorAll('[data-testid=log-line]')].map(line => {
        const rect = line.getBoundingClientRect();
        const text = (line.querySelector('.log-text') ?? line).textContent;
        const inView = !!box && rect.height > 0 && rect.top >= box.top - 1 && rect.bottom <= box.bottom + 1;
        return {
            line: Number(line.getAttribute('data-line')),
            text,
            classes: line.className,
            marks: [...line.querySelectorAll('mark, .match, .log-match')].map(mark => mark.textContent),
            in_view: inView,
            visible: inView && rect.top >= 0 && rect.bottom <= window.innerHeight,
        };
    });
"#;

/// One log line as [`LOG_LINES_SCRIPT`] reports it.
#[derive(Debug)]
struct LogLine {
    line: u64,
    text: String,
    classes: String,
    marks: Vec<String>,
    /// Inside the log view's scrolled area.
    in_view: bool,
    /// Inside the log view's scrolled area and inside the window.
    visible: bool,
}

impl LogLine {
    fn has_class(&self, class: &str) -> bool {
        self.classes.split_whitespace().any(|name| name == class)
    }
}

async fn log_lines(browser: &Browser) -> Vec<LogLine> {
    let lines = browser.eval(LOG_LINES_SCRIPT).await;
    lines
        .as_array()
        .expect("the script returns an array")
        .iter()
        .map(|line| LogLine {
            line: line["line"].as_u64().unwrap_or(0),
            text: line["text"].as_str().unwrap_or_default().to_owned(),
            classes: line["classes"].as_str().unwrap_or_default().to_owned(),
            marks: line["marks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|mark| mark.as_str().map(str::to_owned))
                .collect(),
            in_view: line["in_view"] == true,
            visible: line["visible"] == true,
        })
        .collect()
}

/// Returns the text of the first element matching `selector`, or `None`.
async fn text_of(browser: &Browser, selector: &str) -> Option<String> {
    let text = browser
        .eval_with(
            "return document.querySelector(arguments[0])?.textContent ?? null;",
            vec![json!(selector)],
        )
        .await;
    text.as_str().map(str::to_owned)
}

/// Waits until the log view's status shows that the stream ended.
async fn wait_log_ended(browser: &Browser) {
    wait_until(
        "the log view to end its stream",
        UI_TIMEOUT,
        async || match text_of(browser, "[data-testid=log-status]").await {
            Some(status) if status.contains("ended") => Ok(()),
            other => Err(format!("log-status {other:?}")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_follows_job_state_live() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="nap")
def nap():
    step.run("sleep 3", name="wait")
"#,
    );
    let server = sandbox.serve();
    let api = Api::new(&server);
    let browser = Browser::open(&sandbox, &server, "jobs_list_follows_job_state_live").await;
    wait_until("the empty jobs list", UI_TIMEOUT, async || {
        match text_of(&browser, "#main").await {
            Some(text) if text.contains("No jobs yet") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Survives only as long as the page is not loaded again.
    browser
        .eval("window.danubeTestMarker = 'same page'; return null;")
        .await;
    browser.screenshot("empty").await;

    let id = api.start_job(&sandbox.project()).await;
    let row_state = async |wanted: &str| {
        wait_until(
            &format!("job {id} to show as {wanted}"),
            JOB_TIMEOUT,
            async || {
                let state = browser
                    .eval_with(
                        "return [...document.querySelectorAll('[data-testid=job-row]')]
                        .find(row => row.getAttribute('data-job') === arguments[0])
                        ?.getAttribute('data-state') ?? null;",
                        vec![json!(id)],
                    )
                    .await;
                if state == wanted {
                    Ok(())
                } else {
                    Err(format!("data-state {state}"))
                }
            },
        )
        .await;
    };
    row_state("running").await;
    browser.screenshot("running").await;
    row_state("success").await;
    browser.screenshot("success").await;

    let target = browser
        .eval_with(
            "return document.querySelector(`[data-testid=job-row][data-job='${arguments[0]}'] \
             [data-testid=job-row-target]`)?.textContent ?? null;",
            vec![json!(id)],
        )
        .await;
    assert_eq!(target, "local", "the row names the job's target");
    let marker = browser
        .eval("return window.danubeTestMarker ?? null;")
        .await;
    assert_eq!(marker, "same page", "the page was loaded again");
    assert_eq!(api.job(&id).await["state"], "success");
    let rows = browser
        .eval("return document.querySelectorAll('[data-testid=job-row]').length;")
        .await;
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_shows_final_task_states() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let api = Api::new(&server);
    let id = api.start_job(&workspace_root().join("examples/dag")).await;
    let job = api.wait_final(&id).await;
    assert_eq!(job["state"], "success", "{job:#}");
    let mut expected: Vec<(String, String)> = job["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .map(|task| {
            (
                task["name"].as_str().unwrap_or_default().to_owned(),
                task["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 5, "{job:#}");

    let browser = Browser::open(&sandbox, &server, "dag_shows_final_task_states").await;
    browser.goto(&format!("/jobs/{id}")).await;
    let shown = wait_until("the DAG to match the API", UI_TIMEOUT, async || {
        let nodes = browser
            .eval(
                "return [...document.querySelectorAll('[data-testid=dag-node]')]
                    .map(node => [node.getAttribute('data-task'), node.getAttribute('data-state')]);",
            )
            .await;
        let mut shown: Vec<(String, String)> =
            serde_json::from_value(nodes).expect("pairs of strings");
        shown.sort();
        if shown == expected {
            Ok(shown)
        } else {
            Err(format!("{shown:?}, expected {expected:?}"))
        }
    })
    .await;
    browser.screenshot("dag").await;

    assert!(
        shown.iter().all(|(_, state)| state == "success"),
        "{shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_appear_while_step_runs() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="slow")
def slow():
    step.run("for i in $(seq 1 16); do echo line $i; sleep 0.3; done", name="count")
"#,
    );
    let server = sandbox.serve();
    let api = Api::new(&server);
    let id = api.start_job(&sandbox.project()).await;
    api.wait_step_running(&id, "main", "count").await;
    let browser = Browser::open(&sandbox, &server, "log_lines_appear_while_step_runs").await;
    browser
        .goto(&format!("/jobs/{id}?task=main&step=count"))
        .await;

    // Line counts seen in the page while the API still reported the step
    // running, checked after each look at the page.
    let mut counts_while_running = Vec::new();
    wait_until("the step to end", JOB_TIMEOUT, async || {
        let count = log_lines(&browser).await.len();
        let state = api.step_state(&id, "main", "count").await;
        if state.as_deref() != Some("running") {
            return Ok(());
        }
        if count > 0 && counts_while_running.last() != Some(&count) {
            if counts_while_running.is_empty() {
                browser.screenshot("streaming").await;
            }
            counts_while_running.push(count);
        }
        Err(format!("{count} lines while running"))
    })
    .await;
    wait_log_ended(&browser).await;
    let lines = log_lines(&browser).await;
    wait_until(
        "the page to show the step's success",
        UI_TIMEOUT,
        async || {
            let state = browser
                .eval(
                    "return document.querySelector('[data-testid=step][data-step=count]')
                    ?.getAttribute('data-state') ?? null;",
                )
                .await;
            if state == "success" {
                Ok(())
            } else {
                Err(format!("step data-state {state}"))
            }
        },
    )
    .await;
    browser.screenshot("ended").await;

    assert!(
        counts_while_running.len() >= 3,
        "the page showed too few distinct line counts while the step ran: {counts_while_running:?}"
    );
    assert!(
        counts_while_running
            .windows(2)
            .all(|pair| pair[0] < pair[1]),
        "the line count went down: {counts_while_running:?}"
    );
    assert!(
        counts_while_running[0] < 16,
        "the whole log came at once: {counts_while_running:?}"
    );
    let numbers: Vec<u64> = lines.iter().map(|line| line.line).collect();
    assert_eq!(numbers, (1..=16).collect::<Vec<u64>>());
    for line in &lines {
        let expected = format!("line {}", line.line);
        assert_eq!(line.text.trim_end(), expected, "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_search_finds_and_highlights_line() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="long")
def long():
    step.run("seq 1 600 | sed -e '150s/$/ needle/' -e '420s/$/ needle/' -e '555s/$/ needle/'", name="print")
"#,
    );
    let server = sandbox.serve();
    let api = Api::new(&server);
    let id = api.start_job(&sandbox.project()).await;
    let job = api.wait_final(&id).await;
    assert_eq!(job["state"], "success", "{job:#}");
    let browser = Browser::open(&sandbox, &server, "log_search_finds_and_highlights_line").await;
    browser
        .goto(&format!("/jobs/{id}?task=main&step=print"))
        .await;
    wait_log_ended(&browser).await;
    let needles = [150, 420, 555];

    browser
        .type_into("[data-testid=log-search]", "needle")
        .await;
    browser
        .type_into(
            "[data-testid=log-search]",
            &char::from(Key::Enter).to_string(),
        )
        .await;
    let first = wait_until("the search to select a match", UI_TIMEOUT, async || {
        current_match(&browser).await
    })
    .await;
    browser.screenshot("first-match").await;
    browser
        .type_into(
            "[data-testid=log-search]",
            &char::from(Key::Enter).to_string(),
        )
        .await;
    let second =
        wait_until(
            "Enter to select the next match",
            UI_TIMEOUT,
            async || match current_match(&browser).await {
                Ok(found) if found.0 != first.0 => Ok(found),
                Ok(found) => Err(format!("still match {}", found.0)),
                Err(seen) => Err(seen),
            },
        )
        .await;
    browser.screenshot("next-match").await;

    assert_eq!(second.0, first.0 % 3 + 1);
    for (index, line) in [first, second] {
        assert_eq!(
            line.line,
            needles[index - 1],
            "match {index} of 3: {line:?}"
        );
        assert!(line.has_class("current-match"), "{line:?}");
        assert!(
            line.visible,
            "the current match is scrolled out of view: {line:?}"
        );
        assert_eq!(line.marks, ["needle"], "{line:?}");
        assert_eq!(line.text.trim_end(), format!("{} needle", line.line));
    }
}

/// Returns the match counter's position (`k` of "k of 3") and the line
/// marked as the current match, once both are shown.
async fn current_match(browser: &Browser) -> Result<(usize, LogLine), String> {
    let counter = text_of(browser, "[data-testid=log-matches]")
        .await
        .unwrap_or_default();
    let Some(position) = counter
        .trim()
        .strip_suffix(" of 3")
        .and_then(|position| position.parse::<usize>().ok())
    else {
        return Err(format!("match counter {counter:?}"));
    };
    let lines = log_lines(browser).await;
    let mut current = lines
        .into_iter()
        .filter(|line| line.has_class("current-match"));
    match (current.next(), current.next()) {
        (Some(line), None) => Ok((position, line)),
        (first, second) => Err(format!(
            "counter {counter:?} but current-match lines {first:?} {second:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_button_cancels_running_job() {
    let sandbox = Sandbox::new();
    let pids = sandbox.hanging_pipeline(60);
    let server = sandbox.serve();
    let api = Api::new(&server);
    let id = api.start_job(&sandbox.project()).await;
    wait_until(
        "the step to record its processes",
        JOB_TIMEOUT,
        async || {
            let recorded = std::fs::read_to_string(&pids).unwrap_or_default();
            if recorded.lines().count() >= 2 {
                Ok(())
            } else {
                Err(format!("pids {recorded:?}"))
            }
        },
    )
    .await;
    let browser = Browser::open(&sandbox, &server, "cancel_button_cancels_running_job").await;
    browser.goto(&format!("/jobs/{id}")).await;
    wait_until("an enabled cancel button", UI_TIMEOUT, async || {
        let button = browser
            .eval("return document.querySelector('[data-testid=cancel]')?.disabled ?? null;")
            .await;
        if button == false {
            Ok(())
        } else {
            Err(format!("disabled: {button}"))
        }
    })
    .await;
    browser.screenshot("running").await;

    browser.click("[data-testid=cancel]").await;
    let job = api.wait_final(&id).await;
    let badge = wait_until(
        "the page to show the job cancelled",
        UI_TIMEOUT,
        async || {
            let badge = text_of(&browser, "[data-testid=job-page] .state")
                .await
                .unwrap_or_default();
            let rerun = browser
                .eval("return !!document.querySelector('[data-testid=rerun]');")
                .await;
            if badge.contains("cancelled") && rerun == true {
                Ok(badge)
            } else {
                Err(format!("badge {badge:?}, rerun button {rerun}"))
            }
        },
    )
    .await;
    browser.screenshot("cancelled").await;

    assert_eq!(job["state"], "cancelled", "{job:#}");
    assert!(badge.contains("cancelled"), "{badge}");
    for pid in std::fs::read_to_string(&pids)
        .expect("read the pids")
        .lines()
    {
        let pid: i32 = pid.trim().parse().expect("a pid");
        assert!(
            !process_alive(pid),
            "process {pid} outlived the cancelled job"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_opens_failed_step_log_end() {
    let sandbox = Sandbox::new();
    // The pause lets the engine read stdout before the error arrives on
    // stderr: across the two pipes, lines keep the order they are read in.
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="broken")
def broken():
    step.run("echo ready", name="setup")
    step.run("echo fine", name="checks")
    step.run("seq 1 300; sleep 0.3; echo 'build broke' >&2; exit 3", name="build")
"#,
    );
    let server = sandbox.serve();
    let api = Api::new(&server);
    let id = api.start_job(&sandbox.project()).await;
    let job = api.wait_final(&id).await;
    assert_eq!(job["state"], "failure", "{job:#}");
    let browser = Browser::open(&sandbox, &server, "failed_job_opens_failed_step_log_end").await;

    browser.goto(&format!("/jobs/{id}")).await;
    let open_steps = wait_until("the failed step to open", UI_TIMEOUT, async || {
        let steps = browser
            .eval(
                "return [...document.querySelectorAll('[data-testid=step]')].map(step => ({
                    step: step.getAttribute('data-step'),
                    state: step.getAttribute('data-state'),
                    open: step.classList.contains('open'),
                }));",
            )
            .await;
        let open: Vec<Value> = steps
            .as_array()
            .into_iter()
            .flatten()
            .filter(|step| step["open"] == true)
            .cloned()
            .collect();
        if open.iter().any(|step| step["state"] == "failure") {
            Ok(open)
        } else {
            Err(format!("{steps}"))
        }
    })
    .await;
    wait_log_ended(&browser).await;
    let last = wait_until("the log view scrolled to its end", UI_TIMEOUT, async || {
        let lines = log_lines(&browser).await;
        match lines.last() {
            Some(last) if last.line == 301 && last.in_view => Ok(lines),
            other => Err(format!("last line in the DOM: {other:?}")),
        }
    })
    .await;
    browser.screenshot("failed-step").await;

    assert_eq!(open_steps.len(), 1, "{open_steps:?}");
    assert_eq!(open_steps[0]["step"], "build", "{open_steps:?}");
    let last = last.last().expect("the wait returned lines");
    assert_eq!(last.text.trim_end(), "build broke");
    assert!(last.has_class("stderr"), "{last:?}");
    assert!(
        last.visible,
        "the log view is scrolled to its end, but its last line lies below the window: {last:?}"
    );
    let before = log_lines(&browser).await;
    assert!(
        before
            .iter()
            .any(|line| line.line == 300 && line.text.trim_end() == "300"),
        "line 300 is not rendered next to the end: {before:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_form_starts_job() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="hello")
def hello():
    step.run("echo hello", name="greet")
"#,
    );
    let server = sandbox.serve();
    let api = Api::new(&server);
    let browser = Browser::open(&sandbox, &server, "run_form_starts_job").await;
    let project = sandbox.project();

    browser.goto("/run").await;
    browser
        .type_into(
            "[data-testid=run-project]",
            project.to_str().expect("utf-8 temp path"),
        )
        .await;
    browser.screenshot("filled").await;
    browser.click("[data-testid=run-submit]").await;
    let jobs_prefix = browser.page_url("/jobs/");
    let id = wait_until("the form to open the new job", UI_TIMEOUT, async || {
        let url = browser.url().await;
        match url.strip_prefix(&jobs_prefix) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(url),
        }
    })
    .await;
    let job = api.wait_final(&id).await;
    wait_until(
        "the job page to show the job's end",
        UI_TIMEOUT,
        async || {
            let badge = text_of(&browser, "[data-testid=job-page] .state")
                .await
                .unwrap_or_default();
            if badge.contains("success") {
                Ok(())
            } else {
                Err(format!("badge {badge:?}"))
            }
        },
    )
    .await;
    browser.screenshot("job").await;

    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["pipeline"], "hello");
    let canonical = project.canonicalize().expect("the project exists");
    assert_eq!(job["project"], canonical.to_str().expect("utf-8 temp path"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_form_reports_bad_folder() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let api = Api::new(&server);
    let browser = Browser::open(&sandbox, &server, "run_form_reports_bad_folder").await;
    let missing = sandbox.path().join("no-such-folder");

    browser.goto("/run").await;
    browser
        .type_into(
            "[data-testid=run-project]",
            missing.to_str().expect("utf-8 temp path"),
        )
        .await;
    browser.click("[data-testid=run-submit]").await;
    let error = wait_until(
        "the form to show the error",
        UI_TIMEOUT,
        async || match text_of(&browser, "[data-testid=error]").await {
            Some(text) => Ok(text),
            None => Err("no error shown".to_owned()),
        },
    )
    .await;
    browser.screenshot("bad-folder").await;

    assert!(
        error.contains(missing.to_str().expect("utf-8 temp path")),
        "the error does not name the folder: {error}"
    );
    assert_eq!(browser.url().await, browser.page_url("/run"));
    let jobs = api.get("/api/v1/jobs").await;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_without_token_shows_not_signed_in() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let browser = Browser::launch(
        &sandbox,
        &server,
        "page_without_token_shows_not_signed_in",
        LaunchOptions::default(),
    )
    .await;

    browser.goto("/").await;
    let error = wait_until("the signed-out error", UI_TIMEOUT, async || match text_of(
        &browser,
        "[data-testid=error]",
    )
    .await
    {
        Some(text) => Ok(text),
        None => Err("no error shown".to_owned()),
    })
    .await;
    browser.screenshot("signed-out").await;

    assert!(error.contains("Not signed in"), "{error}");
    assert!(
        error.contains("?token="),
        "the error does not say how to sign in: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_page_checks_scope_and_confirms() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let api = Api::new(&server);
    let browser = Browser::open(&sandbox, &server, "secrets_page").await;
    browser.goto("/secrets").await;
    wait_until("the secrets page", UI_TIMEOUT, async || {
        match text_of(&browser, "[data-testid=no-secrets]").await {
            Some(text) => Ok(text),
            None => Err("no empty state yet".to_owned()),
        }
    })
    .await;

    browser
        .type_into("[data-testid=secret-key]", "API_TOKEN")
        .await;
    browser
        .type_into("[data-testid=secret-pipeline]", "pipeline:web")
        .await;
    browser
        .type_into("[data-testid=secret-value]", "value-for-web-1")
        .await;
    browser.click("[data-testid=secret-save]").await;
    let rejected = wait_until(
        "the scope to be rejected",
        UI_TIMEOUT,
        async || match text_of(&browser, "[data-testid=error]").await {
            Some(text) => Ok(text),
            None => Err("no error shown".to_owned()),
        },
    )
    .await;
    assert!(
        rejected.contains("give the pipeline's name alone: `web`"),
        "{rejected}"
    );
    assert_eq!(api.get("/api/v1/secrets").await["secrets"], json!([]));

    browser
        .eval(
            "const input = document.querySelector('[data-testid=secret-pipeline]'); \
             input.value = 'web'; input.dispatchEvent(new Event('input'));",
        )
        .await;
    browser.click("[data-testid=secret-save]").await;
    let stored = wait_until(
        "the secret to be stored",
        UI_TIMEOUT,
        async || match text_of(&browser, "[data-testid=secret-notice]").await {
            Some(text) if text.contains("Stored") => Ok(text),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(stored, "Stored API_TOKEN (pipeline:web).");

    browser.click("[data-testid=secret-remove]").await;
    wait_until("the removal to ask", UI_TIMEOUT, async || {
        match text_of(&browser, "[data-testid=secret-remove-confirm]").await {
            Some(text) => Ok(text),
            None => Err("no confirmation shown".to_owned()),
        }
    })
    .await;
    browser.screenshot("confirm").await;
    let secrets = api.get("/api/v1/secrets").await["secrets"].clone();
    assert_eq!(secrets.as_array().map(Vec::len), Some(1), "{secrets}");
    browser.click("[data-testid=secret-remove-cancel]").await;
    browser.click("[data-testid=secret-remove]").await;
    browser.click("[data-testid=secret-remove-confirm]").await;
    wait_until(
        "the secret to be removed",
        UI_TIMEOUT,
        async || match text_of(&browser, "[data-testid=secret-notice]").await {
            Some(text) if text.starts_with("Removed") => Ok(text),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(api.get("/api/v1/secrets").await["secrets"], json!([]));
}
