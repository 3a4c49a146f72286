//! The debugging routes of a real `danube serve`: the pause, ad-hoc
//! commands, workspace files, continue, retry and abort, and their errors.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use danube_tests::http::{assert_error, get, json_of, post};
use danube_tests::{Sandbox, Server};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::{Value, json};

const SECRET: &str = "hunter2-Debug-77xq";

/// A pipeline whose step `check` of task `test` fails until `status.txt`
/// says `fixed`, with a secret in the step's env.
const FIXABLE: &str = r#"
from danube import pipeline, secrets, step, task

@task()
def test():
    step.run("echo starting", name="prepare")
    step.run("cat status.txt; grep -q fixed status.txt", name="check",
             env={"API_KEY": secrets.get("API_KEY")})

pipeline(name="fixable", tasks=[test])
"#;

fn set_secret(sandbox: &Sandbox, key: &str, value: &str) {
    let mut child = sandbox
        .command()
        .args(["secret", "set", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn fixable_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.file("status.txt", "broken\n").pipeline(FIXABLE);
    set_secret(&sandbox, "API_KEY", SECRET);
    sandbox
}

fn start(server: &Server, body: Value) -> String {
    let response = post(server, "/api/v1/jobs", body).send().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response)["id"].as_str().unwrap().to_owned()
}

/// Polls `GET /debug` until the job pauses and returns the pause.
fn wait_paused(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = get(server, &format!("/api/v1/jobs/{id}/debug"))
            .send()
            .unwrap();
        if response.status() == StatusCode::OK {
            return json_of(response);
        }
        assert_eq!(assert_error(response, StatusCode::NOT_FOUND), "not_paused");
        assert!(Instant::now() < deadline, "job {id} never paused");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_final(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = json_of(get(server, &format!("/api/v1/jobs/{id}")).send().unwrap());
        let state = job["state"].as_str().unwrap();
        if ["success", "failure", "timeout", "cancelled"].contains(&state) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exec(server: &Server, id: &str, body: Value) -> Response {
    post(server, &format!("/api/v1/jobs/{id}/debug/exec"), body)
        .send()
        .unwrap()
}

fn files(server: &Server, id: &str, path: &str) -> Response {
    get(server, &format!("/api/v1/jobs/{id}/debug/files"))
        .query(&[("path", path)])
        .send()
        .unwrap()
}

/// Returns the step `name` of the job's first task.
fn first_task_step(job: &Value, name: &str) -> Value {
    job["tasks"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {job:#}"))
        .clone()
}

#[test]
fn paused_job_runs_commands_shows_files_and_retries() {
    let sandbox = fixable_sandbox();
    let server = sandbox.serve();
    let id = start(
        &server,
        json!({"project": sandbox.project(), "break_on_failure": true}),
    );

    let pause = wait_paused(&server, &id);
    assert_eq!(pause["task"], "test");
    assert_eq!(pause["step"], "check");
    assert_eq!(pause["reason"], "failure");
    assert_eq!(pause["step_state"], "failure");
    assert_eq!(pause["exit_code"], 1);
    assert_eq!(pause["attempt"], 1);
    let job = json_of(get(&server, &format!("/api/v1/jobs/{id}")).send().unwrap());
    assert_eq!(job["state"], "running");
    assert_eq!(job["pause"]["step_id"], pause["step_id"]);
    assert_eq!(job["tasks"][0]["state"], "running");

    let masked = json_of(exec(
        &server,
        &id,
        json!({"command": "echo key=$API_KEY; echo warn >&2; exit 3"}),
    ));
    assert_eq!(masked["exit_code"], 3, "{masked}");
    assert_eq!(masked["stdout"], "key=***\n", "{masked}");
    assert_eq!(masked["stderr"], "warn\n", "{masked}");
    assert_eq!(masked["timed_out"], false);
    let typed = json_of(exec(
        &server,
        &id,
        json!({"command": format!("test -n '{SECRET}'")}),
    ));
    assert_eq!(typed["command"], "test -n '***'", "{typed}");
    let slow = json_of(exec(
        &server,
        &id,
        json!({"command": "sleep 30", "timeout_seconds": 1}),
    ));
    assert_eq!(slow["timed_out"], true, "{slow}");
    assert_eq!(slow["exit_code"], Value::Null);
    let stderr = slow["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("danube: command timed out after 1s"),
        "{slow}"
    );
    assert!(!stderr.contains("step"), "{slow}");

    let root = json_of(files(&server, &id, ""));
    assert_eq!(root["kind"], "directory");
    let names: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"status.txt"), "{root}");
    let status = json_of(files(&server, &id, "status.txt"));
    assert_eq!(status["kind"], "file");
    assert_eq!(status["content"], "broken\n");
    assert_eq!(status["size_bytes"], 7);

    let fix = json_of(exec(
        &server,
        &id,
        json!({"command": "echo fixed > status.txt"}),
    ));
    assert_eq!(fix["exit_code"], 0, "{fix}");
    let retried = post(
        &server,
        &format!("/api/v1/jobs/{id}/debug/retry"),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(json_of(retried)["decision"], "retry");

    let job = wait_final(&server, &id);
    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["pause"], Value::Null);
    let check = first_task_step(&job, "check");
    assert_eq!(check["attempt"], 2);
    assert_eq!(check["state"], "success");
    let log = get(&server, &format!("/api/v1/jobs/{id}/logs/raw"))
        .query(&[("task", "test"), ("step", "check")])
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!log.contains(SECRET), "{log}");
    assert!(
        !log.contains("key="),
        "ad-hoc output reached the step log: {log}"
    );
}

#[test]
fn debug_routes_reject_bad_requests() {
    let sandbox = fixable_sandbox();
    let outside = sandbox.path().join("outside.txt");
    std::fs::write(&outside, "not yours").unwrap();
    let server = sandbox.serve();
    let id = start(
        &server,
        json!({"project": sandbox.project(), "break_before": ["test/check"]}),
    );
    let pause = wait_paused(&server, &id);
    assert_eq!(pause["reason"], "before");
    assert_eq!(pause["breakpoint"], "test/check");

    let empty = exec(&server, &id, json!({"command": "  "}));
    assert_eq!(assert_error(empty, StatusCode::BAD_REQUEST), "bad_request");
    let long = exec(
        &server,
        &id,
        json!({"command": "true", "timeout_seconds": 0}),
    );
    assert_eq!(assert_error(long, StatusCode::BAD_REQUEST), "bad_request");
    let unknown = exec(&server, &id, json!({"cmd": "true"}));
    assert_eq!(
        assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );
    for path in ["../outside.txt", outside.to_str().unwrap()] {
        let rejected = files(&server, &id, path);
        assert_eq!(
            assert_error(rejected, StatusCode::BAD_REQUEST),
            "bad_request",
            "{path}"
        );
    }
    let missing = files(&server, &id, "nope/missing.txt");
    assert_eq!(assert_error(missing, StatusCode::NOT_FOUND), "not_found");
    let nothing_to_retry = post(
        &server,
        &format!("/api/v1/jobs/{id}/debug/retry"),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(nothing_to_retry.status(), StatusCode::CONFLICT);
    let body = json_of(nothing_to_retry);
    assert_eq!(body["error"]["code"], "nothing_to_retry", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("before step `test/check`, which has not run yet"),
        "{message}"
    );
    assert_eq!(wait_paused(&server, &id)["step_id"], pause["step_id"]);
    let other = get(
        &server,
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000/debug",
    )
    .send()
    .unwrap();
    assert_eq!(assert_error(other, StatusCode::NOT_FOUND), "not_found");

    let aborted = post(
        &server,
        &format!("/api/v1/jobs/{id}/debug/abort"),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(aborted.status(), StatusCode::OK);
    let job = wait_final(&server, &id);
    assert_eq!(job["state"], "cancelled", "{job:#}");
    // The time paused before `check` is shown apart from its duration.
    let check = first_task_step(&job, "check");
    let paused_ms = check["paused_ms"].as_i64().unwrap();
    let wall = check["finished_at"].as_i64().unwrap() - check["started_at"].as_i64().unwrap();
    assert!(paused_ms > 0, "{check:#}");
    assert_eq!(
        check["duration_ms"].as_i64(),
        Some(wall - paused_ms),
        "{check:#}"
    );
    let task = &job["tasks"][0];
    assert_eq!(task["paused_ms"].as_i64(), Some(paused_ms), "{task:#}");
    let task_wall = task["finished_at"].as_i64().unwrap() - task["started_at"].as_i64().unwrap();
    assert_eq!(
        task["duration_ms"].as_i64(),
        Some(task_wall - paused_ms),
        "{task:#}"
    );

    for route in ["continue", "retry", "abort"] {
        let late = post(
            &server,
            &format!("/api/v1/jobs/{id}/debug/{route}"),
            json!({}),
        )
        .send()
        .unwrap();
        assert_eq!(
            assert_error(late, StatusCode::CONFLICT),
            "conflict",
            "{route}"
        );
    }
    let late = get(&server, &format!("/api/v1/jobs/{id}/debug"))
        .send()
        .unwrap();
    assert_eq!(assert_error(late, StatusCode::CONFLICT), "conflict");
}

#[test]
fn running_job_without_pause_is_not_paused() {
    let sandbox = Sandbox::new();
    let pids = sandbox.hanging_pipeline(300);
    let server = sandbox.serve();
    let id = start(&server, json!({"project": sandbox.project()}));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    let shown = get(&server, &format!("/api/v1/jobs/{id}/debug"))
        .send()
        .unwrap();
    assert_eq!(assert_error(shown, StatusCode::NOT_FOUND), "not_paused");
    let command = exec(&server, &id, json!({"command": "true"}));
    assert_eq!(assert_error(command, StatusCode::CONFLICT), "not_paused");
    let listed = files(&server, &id, "");
    assert_eq!(assert_error(listed, StatusCode::CONFLICT), "not_paused");
    let resumed = post(
        &server,
        &format!("/api/v1/jobs/{id}/debug/continue"),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(assert_error(resumed, StatusCode::CONFLICT), "not_paused");

    post(&server, &format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .send()
        .unwrap();
    assert_eq!(wait_final(&server, &id)["state"], "cancelled");
}

#[test]
fn events_report_pause_and_decision() {
    let sandbox = fixable_sandbox();
    let server = sandbox.serve();
    let events = get(&server, "/api/v1/events").send().unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut lines = BufReader::new(events).lines();
    let id = start(
        &server,
        json!({"project": sandbox.project(), "break_before": ["prepare"]}),
    );

    let mut next_data = |wanted: &str| -> Value {
        let mut event = String::new();
        loop {
            let line = lines.next().expect("the stream goes on").unwrap();
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ")
                && event == wanted
            {
                let data: Value = serde_json::from_str(data).unwrap();
                if data["job_id"] == id.as_str() {
                    return data;
                }
            }
        }
    };
    let paused = next_data("paused");
    assert_eq!(paused["pause"]["step"], "prepare");
    assert_eq!(paused["pause"]["reason"], "before");
    post(
        &server,
        &format!("/api/v1/jobs/{id}/debug/continue"),
        json!({}),
    )
    .send()
    .unwrap();
    let resumed = next_data("resumed");
    assert_eq!(resumed["decision"], "continue");
    assert_eq!(resumed["step"], "prepare");
}

#[test]
fn rerun_and_create_take_breakpoints() {
    let sandbox = fixable_sandbox();
    let server = sandbox.serve();

    let malformed = post(
        &server,
        "/api/v1/jobs",
        json!({"project": sandbox.project(), "break_before": ["test/"]}),
    )
    .send()
    .unwrap();
    assert_eq!(
        assert_error(malformed, StatusCode::UNPROCESSABLE_ENTITY),
        "unprocessable"
    );

    let first = start(&server, json!({"project": sandbox.project()}));
    assert_eq!(wait_final(&server, &first)["state"], "failure");
    let bad_body = post(
        &server,
        &format!("/api/v1/jobs/{first}/rerun"),
        json!({"break_after": ["x"]}),
    )
    .send()
    .unwrap();
    assert_eq!(
        assert_error(bad_body, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );

    let rerun = post(
        &server,
        &format!("/api/v1/jobs/{first}/rerun"),
        json!({"break_before": ["check"]}),
    )
    .send()
    .unwrap();
    assert_eq!(rerun.status(), StatusCode::CREATED);
    let second = json_of(rerun)["id"].as_str().unwrap().to_owned();
    let pause = wait_paused(&server, &second);
    assert_eq!(pause["step"], "check");
    post(
        &server,
        &format!("/api/v1/jobs/{second}/debug/abort"),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(wait_final(&server, &second)["state"], "cancelled");
}

#[test]
fn unknown_resume_action_names_the_valid_ones() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();

    let response = post(&server, "/api/v1/jobs/0123/debug/pause", json!({}))
        .send()
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let message = json_of(response)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("`pause`"), "{message}");
    assert!(message.contains("`continue`"), "{message}");
}

#[test]
fn openapi_documents_debug_routes() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();

    let openapi = json_of(get(&server, "/api/v1/openapi.json").send().unwrap());

    let paths = openapi["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/jobs/{id}/debug", "get"),
        ("/api/v1/jobs/{id}/debug/exec", "post"),
        ("/api/v1/jobs/{id}/debug/files", "get"),
        ("/api/v1/jobs/{id}/debug/{action}", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    let schemas = &openapi["components"]["schemas"];
    assert!(schemas["DebugPause"].is_object());
    let action = paths["/api/v1/jobs/{id}/debug/{action}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "action")
        .expect("the action parameter is documented")
        .clone();
    assert_eq!(
        schemas["ResumeAction"]["enum"],
        json!(["continue", "retry", "abort"]),
        "{action}"
    );
    assert!(schemas["CreateJob"]["properties"]["break_on_failure"].is_object());
}
