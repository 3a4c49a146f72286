//! The debug panel of the web UI in a real headless Chromium, against a
//! real `danube serve`: a job started from the run form pauses on its
//! failing step, a command runs in the step's environment with its secret
//! masked, and a retry after the fix makes the job succeed.
//!
//! Needs Chromium and chromedriver, as `browser.rs` does. Screenshots of
//! every stage go to `target/screenshots/`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use danube_tests::Sandbox;
use danube_tests::browser::{Browser, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the page gets to show what the API already reports.
const UI_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the test pipeline may take to pause or end.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

const SECRET: &str = "hunter2-Browser-5k";

async fn api_get(server: &danube_tests::Server, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {path} failed: {err}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("the API answers JSON")
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

/// Waits until the element matching `selector` contains `wanted`.
async fn wait_text(browser: &Browser, selector: &str, wanted: &str) -> String {
    wait_until(
        &format!("`{selector}` to show `{wanted}`"),
        UI_TIMEOUT,
        async || match text_of(browser, selector).await {
            Some(text) if text.contains(wanted) => Ok(text),
            other => Err(format!("{other:?}")),
        },
    )
    .await
}

fn set_secret(sandbox: &Sandbox, key: &str, value: &str) {
    let mut child = sandbox
        .command()
        .args(["secret", "set", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start danube secret set");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(value.as_bytes())
        .expect("write the secret");
    assert!(child.wait().expect("wait for danube secret set").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_panel_runs_command_and_retries() {
    let sandbox = Sandbox::new();
    sandbox.file("status.txt", "broken\n").pipeline(
        r#"
from danube import pipeline, secrets, step, task

@task()
def build():
    step.run("echo built", name="compile")

@task(needs=[build])
def test():
    step.run("seq 1 300; grep -q fixed status.txt", name="check", env={"API_KEY": secrets.get("API_KEY")})

pipeline(name="debuggable", tasks=[test])
"#,
    );
    set_secret(&sandbox, "API_KEY", SECRET);
    let server = sandbox.serve();
    let browser = Browser::open(&sandbox, &server, "debug_panel_runs_command_and_retries").await;

    browser.goto("/run").await;
    browser
        .type_into(
            "[data-testid=run-project]",
            sandbox.project().to_str().expect("utf-8 temp path"),
        )
        .await;
    browser.click("[data-testid=run-break-on-failure]").await;
    browser.screenshot("form").await;
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

    wait_until("the job to pause", JOB_TIMEOUT, async || {
        let job = api_get(&server, &format!("/api/v1/jobs/{id}")).await;
        if job["pause"].is_object() {
            Ok(())
        } else {
            Err(format!("state {} without a pause", job["state"]))
        }
    })
    .await;
    let summary = wait_text(
        &browser,
        "[data-testid=debug-panel] h2",
        "Paused after test › check ended with failure, exit 1",
    )
    .await;
    assert!(summary.contains("‖"), "{summary}");
    let node = browser
        .eval("return [...document.querySelectorAll('[data-testid=dag-node]')].map(node => [node.dataset.task, node.dataset.state, node.getAttribute('aria-label')]);")
        .await;
    let test_node = node
        .as_array()
        .expect("the script returns an array")
        .iter()
        .find(|node| node[0] == "test")
        .expect("the graph has the task test");
    assert_eq!(test_node[1], "paused", "{node}");
    assert!(
        test_node[2]
            .as_str()
            .unwrap_or_default()
            .contains("test: paused"),
        "{node}"
    );
    // The step panel shows the pause and its place, as the graph does.
    let heading = wait_text(&browser, "[data-testid=task-heading]", "paused").await;
    assert_eq!(heading.trim(), "‖paused test", "{heading}");
    let where_paused = text_of(&browser, "[data-testid=task-paused]").await;
    assert_eq!(
        where_paused.as_deref(),
        Some("Paused after test › check ended with failure, exit 1")
    );
    let step = browser
        .eval("return document.querySelector('[data-testid=step][data-step=check]').dataset.state;")
        .await;
    assert_eq!(step, "paused");
    wait_text(&browser, "[data-testid=debug-files]", "status.txt").await;
    // The failed step's 300-line log opens below the panel; the page
    // must still show the panel.
    wait_until("the debug panel to be in view", UI_TIMEOUT, async || {
        let place = browser
            .eval("return [document.querySelector('[data-testid=debug-panel]').getBoundingClientRect().top, window.innerHeight];")
            .await;
        let (top, height) = (place[0].as_f64().unwrap(), place[1].as_f64().unwrap());
        if (0.0..height).contains(&top) {
            Ok(())
        } else {
            Err(format!("panel top {top} outside the window height {height}"))
        }
    })
    .await;
    browser.screenshot("paused").await;

    browser
        .type_into(
            "[data-testid=debug-command]",
            r"printf '\033[31mred\033[0m plain\n'",
        )
        .await;
    browser.click("[data-testid=debug-run]").await;
    let output = wait_text(&browser, "[data-testid=debug-output]", "[exit 0]").await;
    assert!(output.lines().any(|line| line == "red plain"), "{output}");
    assert!(!output.contains('\u{1b}'), "{output}");
    let red = browser
        .eval("return [...document.querySelectorAll('[data-testid=debug-output] span')].filter(span => span.textContent === 'red').map(span => span.className);")
        .await;
    let classes = red.as_array().expect("the script returns an array");
    assert_eq!(classes.len(), 1, "{red}");
    assert_ne!(classes[0], "", "{red}");
    browser
        .eval("document.querySelector('[data-testid=debug-command]').value = ''; document.querySelector('[data-testid=debug-command]').dispatchEvent(new Event('input'));")
        .await;

    browser
        .type_into(
            "[data-testid=debug-command]",
            "echo key=$API_KEY; echo fixed > status.txt; cat status.txt",
        )
        .await;
    browser.click("[data-testid=debug-run]").await;
    let output = wait_text(&browser, "[data-testid=debug-output]", "key=").await;
    browser.screenshot("command").await;
    assert!(output.contains("[exit 0]"), "{output}");
    assert!(output.contains("key=***"), "{output}");
    assert!(!output.contains(SECRET), "{output}");
    assert!(output.contains("fixed"), "{output}");

    browser.click("[data-testid=debug-retry]").await;
    let job = wait_until("the job to end", JOB_TIMEOUT, async || {
        let job = api_get(&server, &format!("/api/v1/jobs/{id}")).await;
        match job["state"].as_str() {
            Some("running") | Some("pending") | Some("scheduling") => {
                Err(format!("state {}", job["state"]))
            }
            _ => Ok(job),
        }
    })
    .await;
    assert_eq!(job["state"], "success", "{job:#}");
    wait_text(&browser, "[data-testid=job-page] .state", "success").await;
    let panel = text_of(&browser, "[data-testid=debug-panel]").await;
    assert_eq!(panel, None, "the panel is gone once the job ends");
    let check = job["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .flat_map(|task| task["steps"].as_array().into_iter().flatten())
        .find(|step| step["name"] == "check")
        .expect("the step check ran")
        .clone();
    assert_eq!(check["attempt"], 2, "{job:#}");
    browser.screenshot("retried").await;
}

/// Sets the value of the input matching `selector` as typing would.
async fn set_value(browser: &Browser, selector: &str, value: &str) {
    browser
        .eval_with(
            "const input = document.querySelector(arguments[0]); input.value = arguments[1]; \
             input.dispatchEvent(new Event('input'));",
            vec![json!(selector), json!(value)],
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_pause_panel_hides_retry() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("true", name="go")

pipeline(name="stoppable", tasks=[build])
"#,
    );
    let server = sandbox.serve();
    let started = reqwest::Client::new()
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project(), "break_before": ["build/go"]}))
        .send()
        .await
        .expect("POST /api/v1/jobs");
    assert_eq!(started.status(), StatusCode::CREATED);
    let job: Value = started.json().await.expect("the API answers JSON");
    let id = job["id"].as_str().expect("the job has an id").to_owned();
    let browser = Browser::open(&sandbox, &server, "debug_panel_before_step").await;

    // The jobs list shows the pause and its place, not just running.
    browser.goto("/").await;
    let row = format!("[data-testid=job-row][data-job='{id}']");
    let paused = wait_until("the list to show the pause", UI_TIMEOUT, async || {
        let cell = browser
            .eval_with(
                "const row = document.querySelector(arguments[0]); \
                 return row && [row.dataset.state, row.cells[0].textContent, row.cells[0].title];",
                vec![json!(row)],
            )
            .await;
        match cell[0].as_str() {
            Some("paused") => Ok(cell),
            _ => Err(format!("{cell}")),
        }
    })
    .await;
    assert_eq!(paused[1], "‖paused", "{paused}");
    assert_eq!(
        paused[2], "Paused before build › go (breakpoint `build/go`)",
        "{paused}"
    );

    browser.goto(&format!("/jobs/{id}")).await;
    wait_text(
        &browser,
        "[data-testid=debug-panel] h2",
        "Paused before build › go",
    )
    .await;
    assert_eq!(text_of(&browser, "[data-testid=debug-retry]").await, None);
    assert!(
        text_of(&browser, "[data-testid=debug-continue]")
            .await
            .is_some()
    );
    let timeout = browser
        .eval("return document.querySelector('[data-testid=debug-timeout]').value;")
        .await;
    assert_eq!(timeout, "60", "the API's default");

    set_value(&browser, "[data-testid=debug-timeout]", "0").await;
    browser
        .type_into("[data-testid=debug-command]", "sleep 30")
        .await;
    browser.click("[data-testid=debug-run]").await;
    wait_text(
        &browser,
        "[data-testid=debug-output]",
        "a timeout of 0 seconds is out of range; give 1 to 3600 seconds",
    )
    .await;
    set_value(&browser, "[data-testid=debug-timeout]", "1").await;
    browser.click("[data-testid=debug-run]").await;
    let output = wait_text(&browser, "[data-testid=debug-output]", "[timed out]").await;
    assert!(output.starts_with("$ sleep 30"), "{output}");
    browser.screenshot("timed-out").await;

    browser.click("[data-testid=debug-abort]").await;
    let ended = wait_until("the job to end", JOB_TIMEOUT, async || {
        let job = api_get(&server, &format!("/api/v1/jobs/{id}")).await;
        match job["state"].as_str() {
            Some("cancelled") => Ok(job),
            other => Err(format!("state {other:?}")),
        }
    })
    .await;
    assert_eq!(ended["pause"], Value::Null);
}
