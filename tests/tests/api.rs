//! The HTTP API of a real `danube serve` on loopback, running real pipelines,
//! driven by a real HTTP client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use danube_tests::http::{assert_error, client, get, json_of, post};
use danube_tests::{Sandbox, Server, process_alive};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

fn start_job(server: &Server, sandbox: &Sandbox) -> String {
    let project = sandbox.project();
    let response = post(server, "/api/v1/jobs", json!({"project": project}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response)["id"].as_str().unwrap().to_owned()
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

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads events from an open SSE response.
struct SseReader {
    lines: std::io::Lines<BufReader<Response>>,
}

impl SseReader {
    fn new(response: Response) -> SseReader {
        assert_eq!(response.status(), StatusCode::OK);
        SseReader {
            lines: BufReader::new(response).lines(),
        }
    }

    /// The next event, or `None` when the stream ended.
    fn next_event(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut seen = false;
        loop {
            let line = self.lines.next()?.expect("read the event stream");
            if line.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            seen = true;
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = value.to_owned(),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

fn chunk_bytes(chunk: &Value) -> Vec<u8> {
    let data = chunk["data"].as_str().unwrap();
    match chunk["encoding"].as_str().unwrap() {
        "utf8" => data.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        other => panic!("unknown encoding {other}"),
    }
}

const DAG_PIPELINE: &str = r#"
from danube import artifacts, pipeline, step, task

@task()
def build() -> None:
    step.run("printf 'built\n'; sleep 0.2; printf 'warn\n' >&2; printf 'payload \\377 bytes' > out.bin", name="compile")
    artifacts.upload("out.bin", name="out.bin")

@task(needs=[build])
def test() -> None:
    step.run("echo testing", name="unit")

@task(needs=[build])
def lint() -> None:
    step.run("echo linting", name="style")

print("declaring the dag")
pipeline(name="dag", tasks=[test, lint])
"#;

#[test]
fn health_and_metrics_need_no_token() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();

    let health = client().get(server.url("/health")).send().unwrap();
    let ready = client().get(server.url("/health/ready")).send().unwrap();
    let metrics = client().get(server.url("/metrics")).send().unwrap();

    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(json_of(health), json!({"status": "ok"}));
    assert_eq!(ready.status(), StatusCode::OK);
    let ready = json_of(ready);
    assert_eq!(ready["status"], "ok");
    let checks: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| check["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["database", "data_dir"]);
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().unwrap();
    for name in [
        "danube_jobs{state=\"success\"}",
        "danube_active_jobs",
        "danube_job_duration_seconds",
        "danube_log_bytes",
    ] {
        assert!(text.contains(name), "no {name} in:\n{text}");
    }
}

/// The value of the sample `name` (with its labels) in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sample {name} is not a number in:\n{text}"))
}

#[test]
fn step_dispatch_latency_counts_every_spawned_step() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(DAG_PIPELINE);
    let server = sandbox.serve();
    let scrape = || {
        client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let before = scrape();

    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);
    let after = scrape();

    assert_eq!(job["state"], "success", "{job:#}");
    let count = "danube_step_dispatch_latency_seconds_count";
    let sum = "danube_step_dispatch_latency_seconds_sum";
    let all = "danube_step_dispatch_latency_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(metric(&before, count), 0.0);
    assert_eq!(metric(&before, sum), 0.0);
    // compile, unit and style: three steps, each spawned once.
    assert_eq!(metric(&after, count), 3.0);
    assert_eq!(metric(&after, all), 3.0);
    let seconds = metric(&after, sum);
    assert!(seconds > 0.0 && seconds < 30.0, "latency sum {seconds} s");
}

#[test]
fn api_rejects_missing_and_wrong_tokens_foreign_origins_and_plain_text() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let jobs = server.url("/api/v1/jobs");

    let missing = client().get(&jobs).send().unwrap();
    let wrong = client()
        .get(&jobs)
        .bearer_auth("0".repeat(64))
        .send()
        .unwrap();
    let foreign_origin = get(&server, "/api/v1/jobs")
        .header("Origin", "http://evil.example")
        .send()
        .unwrap();
    let own_origin = get(&server, "/api/v1/jobs")
        .header("Origin", server.base.clone())
        .send()
        .unwrap();
    let rebinding = get(&server, "/api/v1/jobs")
        .header("Host", "evil.example")
        .send()
        .unwrap();
    let plain_text = client()
        .post(&jobs)
        .bearer_auth(&server.token)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .unwrap();

    assert_eq!(
        assert_error(missing, StatusCode::UNAUTHORIZED),
        "unauthorized"
    );
    assert_eq!(
        assert_error(wrong, StatusCode::UNAUTHORIZED),
        "unauthorized"
    );
    assert_eq!(
        assert_error(foreign_origin, StatusCode::FORBIDDEN),
        "forbidden"
    );
    assert_eq!(own_origin.status(), StatusCode::OK);
    assert_eq!(assert_error(rebinding, StatusCode::FORBIDDEN), "forbidden");
    assert_eq!(
        assert_error(plain_text, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "unsupported_media_type"
    );
}

#[test]
fn printed_address_sets_a_cookie_that_authorizes() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let no_redirects = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let login = no_redirects
        .get(server.url(&format!("/?token={}", server.token)))
        .send()
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let with_cookie = no_redirects
        .get(server.url("/api/v1/jobs"))
        .header("Cookie", cookie.split(';').next().unwrap())
        .send()
        .unwrap();
    let page = no_redirects.get(server.url("/")).send().unwrap();

    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/");
    assert_eq!(login.headers()["cache-control"], "no-store");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert_eq!(with_cookie.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(page.text().unwrap().contains("/assets/boot.js"));
}

#[test]
fn wrong_address_token_gets_signed_out_page() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let no_redirects = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = server.url(&format!("/?token={}", "0".repeat(64)));
    let browser_accept = "text/html,application/xhtml+xml,*/*;q=0.8";

    let page = no_redirects
        .get(server.url("/"))
        .header("Accept", browser_accept)
        .send()
        .unwrap();
    let etag = page.headers()["etag"].clone();
    let browser = no_redirects
        .get(&wrong)
        .header("Accept", browser_accept)
        .send()
        .unwrap();
    let revalidating = no_redirects
        .get(&wrong)
        .header("Accept", browser_accept)
        .header("If-None-Match", etag)
        .send()
        .unwrap();
    let api_client = no_redirects.get(&wrong).send().unwrap();

    assert_eq!(browser.status(), StatusCode::UNAUTHORIZED);
    assert!(browser.headers().get("set-cookie").is_none());
    assert_eq!(
        browser.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert!(browser.text().unwrap().contains("/assets/boot.js"));
    assert_eq!(revalidating.status(), StatusCode::UNAUTHORIZED);
    assert!(revalidating.text().unwrap().contains("/assets/boot.js"));
    assert!(api_client.headers().get("set-cookie").is_none());
    assert_eq!(api_client.headers()["content-type"], "application/json");
    assert_eq!(
        assert_error(api_client, StatusCode::UNAUTHORIZED),
        "unauthorized"
    );
}

#[test]
fn web_ui_is_served_with_client_routes() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let html = |path: &str| {
        client()
            .get(server.url(path))
            .header("Accept", "text/html,application/xhtml+xml")
            .send()
            .unwrap()
    };

    // A page address of the app gets the app's page.
    let job_page = html("/jobs/01a24355-a819-779f?task=build");
    assert_eq!(job_page.status(), StatusCode::OK);
    assert!(job_page.text().unwrap().contains("/assets/boot.js"));

    // An API client asking for a path that does not exist gets the JSON 404.
    let unknown = client().get(server.url("/no/such/page")).send().unwrap();
    assert_eq!(assert_error(unknown, StatusCode::NOT_FOUND), "not_found");
    let unknown_api = get(&server, "/api/v1/nothing")
        .header("Accept", "text/html")
        .send()
        .unwrap();
    assert_eq!(
        assert_error(unknown_api, StatusCode::NOT_FOUND),
        "not_found"
    );

    // The module is served compressed when the browser takes gzip, and a
    // repeated request with the tag gets 304.
    let wasm = client()
        .get(server.url("/assets/danube_ui_bg.wasm"))
        .header("Accept-Encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(wasm.status(), StatusCode::OK);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    assert_eq!(wasm.headers()["content-encoding"], "gzip");
    let etag = wasm.headers()["etag"].clone();
    let again = client()
        .get(server.url("/assets/danube_ui_bg.wasm"))
        .header("If-None-Match", etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let missing = client()
        .get(server.url("/assets/nothing.js"))
        .send()
        .unwrap();
    assert_eq!(assert_error(missing, StatusCode::NOT_FOUND), "not_found");
}

#[test]
fn serve_refuses_to_listen_beyond_loopback() {
    let sandbox = Sandbox::new();

    let run = sandbox.danube(&["serve", "--bind", "0.0.0.0:0"]);

    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("login is not implemented yet"),
        "{}",
        run.text()
    );
}

#[test]
fn bad_ids_and_bodies_get_the_error_shape() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    let empty = sandbox.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    let unknown = get(&server, "/api/v1/jobs/01ffffff-0000-0000-0000-000000000000")
        .send()
        .unwrap();
    let unknown_logs = get(&server, "/api/v1/jobs/zzzz/logs").send().unwrap();
    let relative = post(&server, "/api/v1/jobs", json!({"project": "project"}))
        .send()
        .unwrap();
    let missing = post(
        &server,
        "/api/v1/jobs",
        json!({"project": sandbox.path().join("nope")}),
    )
    .send()
    .unwrap();
    let no_pipeline = post(&server, "/api/v1/jobs", json!({"project": empty}))
        .send()
        .unwrap();
    let not_json = client()
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.token)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    let unknown_field = post(&server, "/api/v1/jobs", json!({"projekt": "/tmp"}))
        .send()
        .unwrap();
    let bad_state = get(&server, "/api/v1/jobs?state=done").send().unwrap();
    let bad_cursor = get(&server, "/api/v1/jobs?cursor=xyz").send().unwrap();
    let no_route = get(&server, "/api/v1/nothing").send().unwrap();

    assert_eq!(assert_error(unknown, StatusCode::NOT_FOUND), "not_found");
    assert_eq!(
        assert_error(unknown_logs, StatusCode::NOT_FOUND),
        "not_found"
    );
    assert_eq!(
        assert_error(relative, StatusCode::BAD_REQUEST),
        "bad_request"
    );
    assert_eq!(
        assert_error(missing, StatusCode::UNPROCESSABLE_ENTITY),
        "unprocessable"
    );
    assert_eq!(
        assert_error(no_pipeline, StatusCode::UNPROCESSABLE_ENTITY),
        "unprocessable"
    );
    assert_eq!(
        assert_error(not_json, StatusCode::BAD_REQUEST),
        "invalid_body"
    );
    assert_eq!(
        assert_error(unknown_field, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );
    assert_eq!(
        assert_error(bad_state, StatusCode::BAD_REQUEST),
        "bad_request"
    );
    assert_eq!(
        assert_error(bad_cursor, StatusCode::BAD_REQUEST),
        "bad_request"
    );
    assert_eq!(assert_error(no_route, StatusCode::NOT_FOUND), "not_found");
}

/// Sends `POST /api/v1/jobs` for `project` and returns the status and the
/// error message.
fn create_error(server: &Server, project: Value) -> (StatusCode, String) {
    let response = post(server, "/api/v1/jobs", json!({ "project": project }))
        .send()
        .unwrap();
    let status = response.status();
    let body = json_of(response);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    (status, message.to_owned())
}

#[test]
fn project_path_errors_name_path_and_fix() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline\n\n@pipeline\ndef build(): pass\n");
    sandbox.file("README.md", "");
    let server = sandbox.serve();
    let project = sandbox.project();
    let pipeline_file = project.join("danubefile.py");
    let readme = project.join("README.md");
    let missing = sandbox.path().join("nope");
    let empty = sandbox.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stray_file = sandbox.path().join("notes.txt");
    std::fs::write(&stray_file, "").unwrap();
    let fifo = sandbox.path().join("pipe");
    let made_fifo = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made_fifo.success());
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;

    assert_eq!(
        create_error(&server, json!(pipeline_file)),
        (
            unprocessable,
            format!(
                "`{}` is a file; pass the folder that contains danubefile.py: `{}`",
                pipeline_file.display(),
                project.display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!(readme)),
        (
            unprocessable,
            format!(
                "`{}` is a file; pass the folder that contains danubefile.py: `{}`",
                readme.display(),
                project.display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!(stray_file)),
        (
            unprocessable,
            format!(
                "`{}` is a file; pass the folder that contains danubefile.py",
                stray_file.display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!(missing)),
        (
            unprocessable,
            format!(
                "project folder `{}` does not exist: pass the folder that contains danubefile.py",
                missing.display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!(fifo)),
        (
            unprocessable,
            format!(
                "`{}` is not a folder: pass the folder that contains danubefile.py",
                fifo.display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!(empty)),
        (
            unprocessable,
            format!(
                "no danubefile.py in `{}`: create one (see the README for a first pipeline) or pass the folder that contains it",
                empty.canonicalize().unwrap().display()
            )
        )
    );
    assert_eq!(
        create_error(&server, json!("project")),
        (
            StatusCode::BAD_REQUEST,
            "project `project` is not an absolute path; pass the absolute path of the folder that contains danubefile.py".to_owned()
        )
    );
    let jobs = json_of(get(&server, "/api/v1/jobs").send().unwrap());
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs:#}");
}

const TWO_PIPELINES: &str = r#"
from danube import pipeline, step

@pipeline(name="failing")
def failing():
    step.run("false")

@pipeline(name="second")
def second():
    step.run("true")
"#;

#[test]
fn load_error_names_project_file() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(TWO_PIPELINES);
    let server = sandbox.serve();
    let project = sandbox.project().canonicalize().unwrap();

    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);
    let coordinator_log = String::from_utf8(
        stored_logs(&sandbox, &id)
            .remove("coordinator")
            .expect("the coordinator log is stored"),
    )
    .unwrap();

    let expected = format!(
        "`{}/danubefile.py` defines several pipelines (`failing`, `second`), so name the one to run: \
         pass `--pipeline NAME` to `danube run`, the Pipeline field of the web UI's Run form, or `pipeline` in `POST /api/v1/jobs`",
        project.display()
    );
    assert_eq!(job["state"], "failure", "{job:#}");
    assert_eq!(job["project"], project.to_str().unwrap());
    assert_eq!(job["reason"], expected.as_str());
    assert!(
        coordinator_log.contains(&expected),
        "the coordinator log does not show the error: {coordinator_log}"
    );
    assert!(
        !coordinator_log.contains("workspaces"),
        "the coordinator log names the workspace: {coordinator_log}"
    );
}

#[test]
fn job_shows_dag_logs_artifacts_and_events() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(DAG_PIPELINE);
    let server = sandbox.serve();
    let events = SseReader::new(get(&server, "/api/v1/events").send().unwrap());

    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);

    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["pipeline"], "dag");
    let tasks: Vec<&str> = job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["name"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["build", "test", "lint"]);
    assert_eq!(
        job["edges"],
        json!([{"from": "build", "to": "test"}, {"from": "build", "to": "lint"}])
    );
    let compile = &job["tasks"][0]["steps"][0];
    assert_eq!(compile["name"], "compile");
    assert_eq!(compile["state"], "success");
    assert_eq!(compile["exit_code"], 0);
    assert!(compile["duration_ms"].as_i64().unwrap() >= 0);

    // The job's own events, in order, up to its final state.
    let mut events = events;
    let mut seen = Vec::new();
    loop {
        let event = events.next_event().expect("the event stream stays open");
        let body: Value = serde_json::from_str(&event.data).unwrap();
        if body["job_id"] != id.as_str() {
            continue;
        }
        seen.push(format!(
            "{}:{}",
            event.event,
            body["state"].as_str().unwrap_or("")
        ));
        if event.event == "job" && body["state"] == "success" {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("job:pending"));
    assert!(seen.contains(&"step:running".to_owned()), "{seen:?}");
    assert!(seen.contains(&"task:success".to_owned()), "{seen:?}");

    // Logs of one step, by range, and of the whole job.
    let step_log = json_of(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs?task=build&step=compile"),
        )
        .send()
        .unwrap(),
    );
    let streams: Vec<(&str, &str)> = step_log["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chunk| {
            (
                chunk["stream"].as_str().unwrap(),
                chunk["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(streams, [("stdout", "built\n"), ("stderr", "warn\n")]);
    assert_eq!(step_log["next_offset"], 11);
    let ranged = json_of(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs?task=build&step=compile&offset=2&limit=6"),
        )
        .send()
        .unwrap(),
    );
    let ranged_bytes: Vec<u8> = ranged["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(chunk_bytes)
        .collect();
    assert_eq!(ranged_bytes, b"ilt\nwa");
    let whole = json_of(
        get(&server, &format!("/api/v1/jobs/{id}/logs"))
            .send()
            .unwrap(),
    );
    let logs: Vec<&str> = whole["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chunk| chunk["step"].as_str().unwrap_or("coordinator"))
        .collect();
    assert_eq!(logs.first(), Some(&"coordinator"));
    assert!(
        logs.contains(&"unit") && logs.contains(&"style"),
        "{logs:?}"
    );

    // Artifacts: listed, and downloaded byte for byte.
    let listed = json_of(
        get(&server, &format!("/api/v1/jobs/{id}/artifacts"))
            .send()
            .unwrap(),
    );
    assert_eq!(listed[0]["name"], "out.bin");
    let download = get(&server, &format!("/api/v1/jobs/{id}/artifacts/out.bin"))
        .send()
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()["content-length"], "15");
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"out.bin\"")
    );
    assert_eq!(download.bytes().unwrap().as_ref(), b"payload \xff bytes");
    let missing = get(&server, &format!("/api/v1/jobs/{id}/artifacts/other"))
        .send()
        .unwrap();
    assert_eq!(assert_error(missing, StatusCode::NOT_FOUND), "not_found");

    // A final job cannot be cancelled; a rerun is a new job of the same project.
    let cancel = post(&server, &format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .send()
        .unwrap();
    assert_eq!(assert_error(cancel, StatusCode::CONFLICT), "conflict");
    let rerun = post(&server, &format!("/api/v1/jobs/{id}/rerun"), json!({}))
        .send()
        .unwrap();
    assert_eq!(rerun.status(), StatusCode::CREATED);
    let rerun = json_of(rerun);
    assert_ne!(rerun["id"], id.as_str());
    assert_eq!(rerun["project"], job["project"]);
    let rerun_job = wait_final(&server, rerun["id"].as_str().unwrap());
    assert_eq!(rerun_job["pipeline"], "dag");
    assert_eq!(rerun_job["state"], "success");

    // The OpenAPI document lists the handlers.
    let openapi = json_of(get(&server, "/api/v1/openapi.json").send().unwrap());
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/logs/stream",
        "/api/v1/events",
        "/health/ready",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "no {path} in the OpenAPI document"
        );
    }
    let schemes = &openapi["components"]["securitySchemes"];
    assert_eq!(schemes["bearer_token"]["scheme"], "bearer");
    assert_eq!(schemes["token_cookie"]["in"], "cookie");
    assert_eq!(
        schemes["token_cookie"]["name"],
        format!("danube_token_{}", server.port())
    );
    assert!(openapi["security"].as_array().is_some_and(|s| s.len() == 2));
    assert_eq!(
        openapi["paths"]["/health"]["get"]["security"],
        serde_json::json!([{}])
    );
}

#[test]
fn job_list_filters_and_pages() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="ok")
def ok():
    step.run("true", name="pass")

@pipeline(name="bad")
def bad():
    step.run("false", name="fail")
"#,
    );
    let server = sandbox.serve();
    let project = sandbox.project();
    let mut ids = Vec::new();
    for pipeline in ["ok", "bad", "ok", "ok", "bad"] {
        let response = post(
            &server,
            "/api/v1/jobs",
            json!({"project": project, "pipeline": pipeline}),
        )
        .send()
        .unwrap();
        let id = json_of(response)["id"].as_str().unwrap().to_owned();
        wait_final(&server, &id);
        ids.push(id);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/jobs?limit=2&cursor={cursor}"),
            None => "/api/v1/jobs?limit=2".to_owned(),
        };
        let page = json_of(get(&server, &path).send().unwrap());
        pages += 1;
        for job in page["jobs"].as_array().unwrap() {
            paged.push(job["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, newest_first);

    let ids_of = |path: &str| -> Vec<String> {
        json_of(get(&server, path).send().unwrap())["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let failed = ids_of("/api/v1/jobs?state=failure");
    let bad = ids_of("/api/v1/jobs?pipeline=bad");
    let ok_successes = ids_of("/api/v1/jobs?pipeline=ok&state=success");
    let project_path = project.canonicalize().unwrap();
    let by_project = ids_of(&format!("/api/v1/jobs?project={}", project_path.display()));
    let other_project = ids_of("/api/v1/jobs?project=/nowhere");

    assert_eq!(failed, [ids[4].clone(), ids[1].clone()]);
    assert_eq!(bad, failed);
    assert_eq!(
        ok_successes,
        [ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(by_project, newest_first);
    assert!(other_project.is_empty());
}

/// A step that prints 60 numbered lines over about two seconds.
const CHATTY_PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="chatty")
def chatty():
    step.run("for i in $(seq 1 60); do echo line $i; sleep 0.03; done", name="count")
"#;

/// Opens the log stream at `path`, retrying until its step has started.
fn open_when_started(server: &Server, path: &str) -> SseReader {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = get(server, path).send().unwrap();
        if response.status() == StatusCode::OK {
            return SseReader::new(response);
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_stream_resumes_without_loss_or_duplicates() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(CHATTY_PIPELINE);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let stream = format!("/api/v1/jobs/{id}/logs/stream?task=main&step=count");

    let mut received = Vec::new();
    let mut last_id = String::new();
    let mut reader = open_when_started(&server, &stream);
    for _ in 0..5 {
        let event = reader.next_event().expect("the stream stays open");
        assert_eq!(event.event, "chunk");
        received.extend(chunk_bytes(&serde_json::from_str(&event.data).unwrap()));
        last_id = event.id.unwrap();
    }
    drop(reader);
    assert_eq!(last_id, received.len().to_string());

    let resumed = get(&server, &stream)
        .header("Last-Event-ID", &last_id)
        .send()
        .unwrap();
    let mut reader = SseReader::new(resumed);
    loop {
        let event = reader.next_event().expect("the stream ends with `end`");
        if event.event == "end" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(chunk["offset"].as_u64().unwrap(), received.len() as u64);
        received.extend(chunk_bytes(&chunk));
        assert_eq!(event.id.unwrap(), received.len().to_string());
    }

    let job = wait_final(&server, &id);
    let step_id = job["tasks"][0]["steps"][0]["id"].as_i64().unwrap();
    let stored = std::fs::read(
        sandbox
            .data_dir()
            .join(format!("logs/{id}/step-{step_id}.log")),
    )
    .unwrap();
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stored, expected.as_bytes());
    assert_eq!(received, stored);
}

#[test]
fn log_stream_resumes_from_offset_parameter() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(CHATTY_PIPELINE);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let stream = format!("/api/v1/jobs/{id}/logs/stream?task=main&step=count");

    let mut received = Vec::new();
    let mut reader = open_when_started(&server, &stream);
    for _ in 0..5 {
        let event = reader.next_event().expect("the stream stays open");
        assert_eq!(event.event, "chunk");
        received.extend(chunk_bytes(&serde_json::from_str(&event.data).unwrap()));
    }
    drop(reader);
    let offset = received.len();

    // A new EventSource cannot set Last-Event-ID, so it passes the offset in
    // the address.
    let resumed = get(&server, &format!("{stream}&offset={offset}"))
        .send()
        .unwrap();
    let mut reader = SseReader::new(resumed);
    loop {
        let event = reader.next_event().expect("the stream ends with `end`");
        if event.event == "end" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(chunk["offset"].as_u64().unwrap(), received.len() as u64);
        received.extend(chunk_bytes(&chunk));
        assert_eq!(event.id.unwrap(), received.len().to_string());
    }

    // A browser reconnecting on its own sends Last-Event-ID to the address
    // it first opened, offset included, so the header is the newer position.
    let both = get(&server, &format!("{stream}&offset=0"))
        .header("Last-Event-ID", offset.to_string())
        .send()
        .unwrap();
    let mut reader = SseReader::new(both);
    let first_event = reader
        .next_event()
        .expect("the log has bytes after the offset");
    let first_chunk: Value = serde_json::from_str(&first_event.data).unwrap();
    let not_a_number = get(&server, &format!("{stream}&offset=ten"))
        .send()
        .unwrap();

    let job = wait_final(&server, &id);
    let step_id = job["tasks"][0]["steps"][0]["id"].as_i64().unwrap();
    let stored = std::fs::read(
        sandbox
            .data_dir()
            .join(format!("logs/{id}/step-{step_id}.log")),
    )
    .unwrap();
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stored, expected.as_bytes());
    assert_eq!(received, stored);
    assert_eq!(first_event.event, "chunk");
    assert_eq!(first_chunk["offset"].as_u64().unwrap(), offset as u64);
    assert_eq!(
        assert_error(not_a_number, StatusCode::BAD_REQUEST),
        "bad_request"
    );
}

#[test]
fn cancel_stops_a_running_job_and_its_processes() {
    let sandbox = Sandbox::new();
    let pids = sandbox.hanging_pipeline(300);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    let cancel = post(&server, &format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .send()
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let job = wait_final(&server, &id);

    assert_eq!(job["state"], "cancelled", "{job:#}");
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        assert!(
            !process_alive(pid),
            "process {pid} outlived the cancelled job"
        );
    }
}

#[test]
fn sigterm_cancels_running_jobs_and_stops_the_server() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="hang")
def hang():
    step.run("sleep 300", name="wait")
"#,
    );
    let mut server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = json_of(get(&server, &format!("/api/v1/jobs/{id}")).send().unwrap());
        if job["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {job:#}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let status = server.stop();

    assert!(status.success(), "{status:?}");
    let shown = sandbox.show(&id);
    assert_eq!(shown["job"]["state"], "cancelled", "{shown:#}");
}

/// A field of `/proc/<pid>/status` in kB, such as `VmRSS` or `VmHWM`.
fn proc_status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Size of the log the slow-client test writes: 100 MiB.
const BIG_LOG_BYTES: u64 = 100 << 20;

/// Peak resident memory (VmHWM) allowed to the server while one client reads
/// nothing of a `BIG_LOG_BYTES` log: 64 MiB. The server then buffers 16 SSE
/// events of at most 64 KiB for the client, and the job's live channel
/// keeps up to 256 recent chunks of up to 128 KiB (32 MiB). With 1,024
/// chunks the peak reached 73 MiB on a loaded machine; holding the whole
/// log needs 100 MiB. Both fail here.
const SLOW_CLIENT_PEAK_RSS_KB: u64 = 64 << 10;

#[test]
fn slow_log_client_stalls_neither_the_job_nor_server_memory() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="loud")
def loud():
    step.run("yes 'a line of output that repeats until the log is big enough' | head -c {BIG_LOG_BYTES}", name="flood")
"#
    ));
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let stream = format!("/api/v1/jobs/{id}/logs/stream?task=main&step=flood");
    let patient = Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let response = loop {
        let response = patient
            .get(server.url(&stream))
            .bearer_auth(&server.token)
            .send()
            .unwrap();
        if response.status() == StatusCode::OK {
            break response;
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut reader = SseReader::new(response);
    let first = reader.next_event().expect("the stream stays open");
    assert_eq!(first.event, "chunk");
    let first: Value = serde_json::from_str(&first.data).unwrap();
    let mut received = chunk_bytes(&first);

    // The client now reads nothing until the job is over.
    let started = Instant::now();
    let job = wait_final(&server, &id);
    let took = started.elapsed();
    let peak_kb = proc_status_kb(server.pid(), "VmHWM");

    assert_eq!(job["state"], "success", "{job:#}");
    assert!(
        took < Duration::from_secs(60),
        "the job took {took:?} behind a client that reads nothing"
    );
    assert!(
        peak_kb < SLOW_CLIENT_PEAK_RSS_KB,
        "the server's peak RSS was {peak_kb} kB for a {BIG_LOG_BYTES}-byte log"
    );

    // Reading on now gets every byte, once, in order.
    loop {
        let event = reader.next_event().expect("the stream ends with `end`");
        if event.event == "end" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(chunk["offset"].as_u64().unwrap(), received.len() as u64);
        received.extend(chunk_bytes(&chunk));
    }
    let step_id = job["tasks"][0]["steps"][0]["id"].as_i64().unwrap();
    let stored = std::fs::read(
        sandbox
            .data_dir()
            .join(format!("logs/{id}/step-{step_id}.log")),
    )
    .unwrap();
    assert_eq!(stored.len() as u64, BIG_LOG_BYTES);
    assert!(
        received == stored,
        "the streamed bytes differ from the stored log"
    );
    eprintln!(
        "slow client: job took {took:?}, server peak RSS {peak_kb} kB, now {} kB",
        proc_status_kb(server.pid(), "VmRSS")
    );
}

#[test]
fn idle_connections_cannot_exhaust_server_descriptors() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve_with(&["--max-connections", "512"]);
    let fds = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds(server.pid());

    // Connections that start a request and never finish it.
    // Past the server's cap of 512 the kernel queues connections in the
    // listen backlog, and past that it stops accepting them.
    let addr: std::net::SocketAddr = server.host().parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..600 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream.write_all(b"GET /health HTTP/1.1\r\nHost: ").unwrap();
                idle.push(stream);
            }
            Err(_) => break,
        }
    }
    assert!(
        idle.len() > 512,
        "only {} connections were accepted or queued",
        idle.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(server.pid());
    assert!(
        during < before + 530,
        "the server holds {during} descriptors with {} idle connections (before: {before})",
        idle.len()
    );

    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = client().get(server.url("/health")).send();
        if health.is_ok_and(|response| response.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server answers again once they close"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads from `stream` until the server closes it. Returns what the server
/// sent and when it closed the connection.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (received, Instant::now()),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return (received, Instant::now());
            }
            Err(err) => panic!("the server kept the connection open: {err}"),
        }
    }
}

#[test]
fn idle_connections_close_but_streams_stay() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="quick")
def quick():
    step.run("true", name="nothing")
"#,
    );
    let server = sandbox.serve_with(&["--header-read-timeout", "1s"]);
    let addr: std::net::SocketAddr = server.host().parse().unwrap();
    let events = SseReader::new(get(&server, "/api/v1/events").send().unwrap());

    // A client that never finishes its request head.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: ").unwrap();
    let opened = Instant::now();
    let (_, closed) = read_until_closed(&mut slow);
    let slow_lifetime = closed - opened;

    // A keep-alive connection left idle after one request.
    let mut idle = TcpStream::connect(addr).unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.host());
    idle.write_all(request.as_bytes()).unwrap();
    let answered = Instant::now();
    let (response, closed) = read_until_closed(&mut idle);
    let idle_lifetime = closed - answered;

    // The event stream opened before both is still open and delivers.
    let id = start_job(&server, &sandbox);
    let mut events = events;
    let first = events.next_event().expect("the event stream is still open");
    let body: Value = serde_json::from_str(&first.data).unwrap();

    assert!(
        slow_lifetime >= Duration::from_millis(900) && slow_lifetime < Duration::from_secs(5),
        "a connection without a whole request head lived {slow_lifetime:?}"
    );
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        idle_lifetime >= Duration::from_millis(900) && idle_lifetime < Duration::from_secs(5),
        "an idle keep-alive connection lived {idle_lifetime:?}"
    );
    assert_eq!(first.event, "job");
    assert_eq!(body["job_id"], id.as_str());
    assert_eq!(body["state"], "pending");
}

/// Returns the name of a chunk's log in the tests' maps, `coordinator` or
/// `step-<id>` as its file is named.
fn log_name(chunk: &Value) -> String {
    match chunk["step_id"].as_i64() {
        Some(id) => format!("step-{id}"),
        None => "coordinator".to_owned(),
    }
}

/// Reads every stored log of a job, by [`log_name`].
fn stored_logs(sandbox: &Sandbox, id: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = sandbox.data_dir().join(format!("logs/{id}"));
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name()?.to_str()?.strip_suffix(".log")?.to_owned();
            Some((name, std::fs::read(&path).unwrap()))
        })
        .collect()
}

/// Appends a chunk's bytes to its log in `received`, checking that it starts
/// where the bytes received so far end.
fn receive_chunk(received: &mut BTreeMap<String, Vec<u8>>, chunk: &Value) {
    let log = received.entry(log_name(chunk)).or_default();
    assert_eq!(
        chunk["offset"].as_u64().unwrap(),
        log.len() as u64,
        "a gap or a repeat before {chunk}"
    );
    log.extend(chunk_bytes(chunk));
}

const PAGED_PIPELINE: &str = r#"
from danube import pipeline, step, task

@task()
def build() -> None:
    step.run("printf 'first run\n'; sleep 0.2; printf 'to stderr\n' >&2", name="compile")
    step.run("seq 1 200", name="compile")

@task(needs=[build])
def test() -> None:
    step.run("seq 1000 1100", name="unit")

print("coordinator says hello")
pipeline(name="paged", tasks=[test])
"#;

/// Reads every page of `path` (a `/logs` address with a `limit`), checking
/// each page's shape. Returns the bytes of each log and the number of pages.
fn read_all_pages(server: &Server, path: &str, limit: usize) -> (BTreeMap<String, Vec<u8>>, usize) {
    let mut received = BTreeMap::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let address = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_owned(),
        };
        let page = json_of(get(server, &address).send().unwrap());
        pages += 1;
        let size: usize = page["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|chunk| {
                receive_chunk(&mut received, chunk);
                chunk_bytes(chunk).len()
            })
            .sum();
        assert!(size <= limit, "a page of {size} bytes: {page}");
        assert_eq!(page["next_offset"], Value::Null);
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page["truncated"], true, "{page}");
                assert_eq!(size, limit, "a page cut short: {page}");
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(page["truncated"], false, "{page}");
                return (received, pages);
            }
        }
    }
}

#[test]
fn whole_job_logs_page_through_cursors_without_loss() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PAGED_PIPELINE);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);
    assert_eq!(job["state"], "success", "{job:#}");
    let stored = stored_logs(&sandbox, &id);

    let (whole, pages) = read_all_pages(&server, &format!("/api/v1/jobs/{id}/logs?limit=50"), 50);
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(whole, stored);
    assert_eq!(pages, total.div_ceil(50));

    let (build, _) = read_all_pages(
        &server,
        &format!("/api/v1/jobs/{id}/logs?task=build&limit=100"),
        100,
    );
    let build_steps: Vec<String> = job["tasks"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| format!("step-{}", step["id"]))
        .collect();
    assert_eq!(build.keys().cloned().collect::<Vec<_>>(), build_steps);
    for (name, bytes) in &build {
        assert_eq!(bytes, &stored[name], "{name}");
    }
}

#[test]
fn step_id_selects_step_log() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PAGED_PIPELINE);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);
    let steps = job["tasks"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{job:#}");
    assert_eq!(steps[0]["name"], "compile");
    // The SDK gives steps of one name in a task distinct names.
    assert_eq!(steps[1]["name"], "compile (2)");
    let (first, second) = (
        steps[0]["id"].as_i64().unwrap(),
        steps[1]["id"].as_i64().unwrap(),
    );
    let second_bytes: Vec<u8> = (1..=200)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes();

    let bytes_of = |page: &Value| -> Vec<u8> {
        page["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(chunk_bytes)
            .collect()
    };
    let by_name = json_of(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs?task=build&step=compile"),
        )
        .send()
        .unwrap(),
    );
    let by_id = json_of(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs?step_id={second}&offset=2&limit=1000"),
        )
        .send()
        .unwrap(),
    );
    let mut stream = SseReader::new(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs/stream?step_id={second}"),
        )
        .send()
        .unwrap(),
    );
    let mut streamed = BTreeMap::new();
    loop {
        let event = stream.next_event().expect("the stream ends with `end`");
        if event.event == "end" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(chunk["step_id"], second);
        assert_eq!(chunk["task"], "build");
        assert_eq!(chunk["step"], "compile (2)");
        receive_chunk(&mut streamed, &chunk);
    }

    assert_eq!(by_name["chunks"][0]["step_id"], first);
    assert_eq!(bytes_of(&by_name), b"first run\nto stderr\n");
    assert_eq!(by_id["chunks"][0]["step_id"], second);
    assert_eq!(bytes_of(&by_id), &second_bytes[2..]);
    assert_eq!(by_id["next_offset"], second_bytes.len());
    assert_eq!(streamed[&format!("step-{second}")], second_bytes);
}

#[test]
fn log_reads_reject_parameters_that_do_not_fit() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PAGED_PIPELINE);
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let job = wait_final(&server, &id);
    let step_id = job["tasks"][0]["steps"][0]["id"].as_i64().unwrap();
    let build_page = json_of(
        get(
            &server,
            &format!("/api/v1/jobs/{id}/logs?task=build&limit=5"),
        )
        .send()
        .unwrap(),
    );
    let build_cursor = build_page["next_cursor"].as_str().unwrap();
    let logs = format!("/api/v1/jobs/{id}/logs");
    let message = |response: Response, status: StatusCode| -> String {
        assert_eq!(response.status(), status);
        let body = json_of(response);
        assert_eq!(
            body["error"]["code"],
            if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "bad_request"
            }
        );
        body["error"]["message"].as_str().unwrap().to_owned()
    };

    let forged = message(
        get(&server, &format!("{logs}?cursor=garbage"))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let other_task = message(
        get(&server, &format!("{logs}?task=test&cursor={build_cursor}"))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let cursor_on_step = message(
        get(
            &server,
            &format!("{logs}?step_id={step_id}&cursor={build_cursor}"),
        )
        .send()
        .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let offset_on_job = message(
        get(&server, &format!("{logs}?offset=3")).send().unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let both_names = message(
        get(
            &server,
            &format!("{logs}?step_id={step_id}&task=build&step=compile"),
        )
        .send()
        .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let zero_limit = message(
        get(&server, &format!("{logs}?limit=0")).send().unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let huge_limit = message(
        get(&server, &format!("{logs}?limit={}", (16 << 20) + 1))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let unknown_step = message(
        get(&server, &format!("{logs}?step_id=999999"))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );
    let unknown_stream_step = message(
        get(&server, &format!("{logs}/stream?step_id=999999"))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );
    let bad_resume = message(
        get(&server, &format!("{logs}/stream/all"))
            .header("Last-Event-ID", "12:x")
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );

    assert!(
        forged.contains("`garbage`") && forged.contains("next_cursor"),
        "{forged}"
    );
    assert!(other_task.contains(build_cursor), "{other_task}");
    assert!(cursor_on_step.contains("offset"), "{cursor_on_step}");
    assert!(offset_on_job.contains("cursor"), "{offset_on_job}");
    assert!(both_names.contains("not both"), "{both_names}");
    assert!(zero_limit.contains("limit 0"), "{zero_limit}");
    assert!(huge_limit.contains("16777217"), "{huge_limit}");
    assert!(unknown_step.contains("999999"), "{unknown_step}");
    assert!(
        unknown_stream_step.contains("999999"),
        "{unknown_stream_step}"
    );
    assert!(bad_resume.contains("`12:x`"), "{bad_resume}");
}

#[test]
fn job_log_stream_resumes_without_loss() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def left() -> None:
    step.run("for i in $(seq 1 40); do echo left $i; sleep 0.03; done", name="count")

@task()
def right() -> None:
    step.run("for i in $(seq 1 40); do echo right $i >&2; sleep 0.03; done", name="count")
    step.run("echo after", name="tail")

@task(needs=[left, right])
def last() -> None:
    step.run("seq 1 5000", name="bulk")

print("planning")
pipeline(name="parallel", tasks=[last])
"#,
    );
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    let stream = format!("/api/v1/jobs/{id}/logs/stream/all");

    // Each connection reads a few events and drops; the next one resumes
    // from the last event id.
    let mut received = BTreeMap::new();
    let mut last_id: Option<String> = None;
    let mut connections = 0;
    let mut state_at_first_drop = None;
    'connections: loop {
        let mut request = get(&server, &stream);
        if let Some(last_id) = &last_id {
            request = request.header("Last-Event-ID", last_id);
        }
        let mut reader = SseReader::new(request.send().unwrap());
        connections += 1;
        for _ in 0..7 {
            let event = reader.next_event().expect("the stream ends with `end`");
            if event.event == "end" {
                break 'connections;
            }
            assert_eq!(event.event, "chunk");
            let chunk: Value = serde_json::from_str(&event.data).unwrap();
            if chunk["log"] == "step" {
                assert!(
                    chunk["task"].is_string() && chunk["step"].is_string(),
                    "{chunk}"
                );
            } else {
                assert_eq!(chunk["log"], "coordinator");
                assert_eq!(chunk["step_id"], Value::Null);
            }
            receive_chunk(&mut received, &chunk);
            last_id = Some(event.id.expect("chunk events have ids"));
        }
        drop(reader);
        if state_at_first_drop.is_none() {
            let job = json_of(get(&server, &format!("/api/v1/jobs/{id}")).send().unwrap());
            state_at_first_drop = Some(job["state"].as_str().unwrap().to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(connections < 500, "the stream never ended");
    }
    let job = wait_final(&server, &id);
    let stored = stored_logs(&sandbox, &id);

    assert_eq!(job["state"], "success", "{job:#}");
    assert!(
        ["pending", "scheduling", "running"].contains(&state_at_first_drop.as_deref().unwrap()),
        "the first connection was dropped only after the job ended: {state_at_first_drop:?}"
    );
    assert!(connections > 3, "only {connections} connections");
    assert_eq!(stored.len(), 5, "{:?}", stored.keys());
    assert_eq!(received, stored);
}

#[test]
fn sigterm_sends_final_events_before_streams_end() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="hang")
def hang():
    step.run("echo started; sleep 300", name="wait")
"#,
    );
    let mut server = sandbox.serve();
    let mut events = SseReader::new(get(&server, "/api/v1/events").send().unwrap());
    let id = start_job(&server, &sandbox);
    let step_stream = format!("/api/v1/jobs/{id}/logs/stream?task=main&step=wait");
    let mut step_log = open_when_started(&server, &step_stream);
    let first = step_log.next_event().expect("the step prints");
    assert_eq!(first.event, "chunk");
    let mut all_logs = SseReader::new(
        get(&server, &format!("/api/v1/jobs/{id}/logs/stream/all"))
            .send()
            .unwrap(),
    );

    server.terminate();

    let mut job_states = Vec::new();
    while let Some(event) = events.next_event() {
        let body: Value = serde_json::from_str(&event.data).unwrap();
        if event.event == "job" && body["job_id"] == id.as_str() {
            job_states.push(body["state"].as_str().unwrap().to_owned());
        }
    }
    let last_of = |reader: &mut SseReader| {
        let mut last = None;
        while let Some(event) = reader.next_event() {
            last = Some(event.event);
        }
        last
    };
    let step_log_last = last_of(&mut step_log);
    let all_logs_last = last_of(&mut all_logs);
    let status = server.wait();

    assert_eq!(
        job_states.last().map(String::as_str),
        Some("cancelled"),
        "{job_states:?}"
    );
    assert_eq!(step_log_last.as_deref(), Some("end"));
    assert_eq!(all_logs_last.as_deref(), Some("end"));
    assert!(status.success(), "{status:?}");
}

#[test]
fn openapi_lists_check_errors_on_every_operation() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();

    let openapi = json_of(get(&server, "/api/v1/openapi.json").send().unwrap());

    assert!(openapi["components"]["schemas"]["ErrorBody"].is_object());
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/jobs/{id}/logs/stream/all"));
    let mut operations = 0;
    for (path, item) in paths {
        let needs_token = path.starts_with("/api/v1/");
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let mut expected = vec!["403"];
            if needs_token {
                expected.push("401");
            } else {
                assert_eq!(
                    responses["401"],
                    Value::Null,
                    "{method} {path} needs no token"
                );
            }
            if method == "post" {
                expected.push("415");
            }
            for status in expected {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} does not list {status}"
                );
            }
            operations += 1;
        }
    }
    assert!(operations >= 15, "only {operations} operations");
}

/// Logs in to `server` through its printed address and returns the cookie
/// it sets as `(name, value)`.
fn log_in(server: &Server) -> (String, String) {
    let no_redirects = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirects
        .get(server.url(&format!("/?token={}", server.token)))
        .send()
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    (name.to_owned(), value.to_owned())
}

#[test]
fn token_cookies_differ_per_port() {
    let (first_sandbox, second_sandbox) = (Sandbox::new(), Sandbox::new());
    let first = first_sandbox.serve();
    let second = second_sandbox.serve();
    let jobs_of = |server: &Server, cookie: &str| {
        client()
            .get(server.url("/api/v1/jobs"))
            .header("Cookie", cookie)
            .send()
            .unwrap()
            .status()
    };

    let (first_name, first_value) = log_in(&first);
    let (second_name, second_value) = log_in(&second);
    // A browser sends the cookies of 127.0.0.1 to every port.
    let both = format!("{first_name}={first_value}; {second_name}={second_value}");

    assert_eq!(first_name, format!("danube_token_{}", first.port()));
    assert_eq!(second_name, format!("danube_token_{}", second.port()));
    assert_ne!(first.token, second.token);
    assert_eq!(jobs_of(&first, &both), StatusCode::OK);
    assert_eq!(jobs_of(&second, &both), StatusCode::OK);
    assert_eq!(
        jobs_of(&first, &format!("{second_name}={second_value}")),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        jobs_of(&first, &format!("danube_token={}", first.token)),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn raw_log_download_returns_stored_bytes() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="bytes")
def bytes_pipeline():
    step.run("printf 'a\\377b\\n'; seq 1 3", name="print")
"#,
    );
    let server = sandbox.serve();
    let id = start_job(&server, &sandbox);
    wait_final(&server, &id);

    let download = get(
        &server,
        &format!("/api/v1/jobs/{id}/logs/raw?task=main&step=print"),
    )
    .send()
    .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(
        download.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(disposition.ends_with("-main-print.log\""), "{disposition}");
    assert_eq!(download.bytes().unwrap().as_ref(), b"a\xffb\n1\n2\n3\n");

    let missing = get(
        &server,
        &format!("/api/v1/jobs/{id}/logs/raw?task=main&step=nope"),
    )
    .send()
    .unwrap();
    assert_eq!(assert_error(missing, StatusCode::NOT_FOUND), "not_found");
}
