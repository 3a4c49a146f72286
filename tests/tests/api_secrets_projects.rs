//! The secrets and project routes of a real `danube serve`: secrets set
//! over HTTP are the CLI's secrets (same vault, same key) and jobs read
//! them; a project's pipelines are listed from its real `danubefile.py`.

use std::time::{Duration, Instant};

use danube_tests::http::client;
use danube_tests::{Sandbox, Server};
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{Value, json};

fn request(server: &Server, method: reqwest::Method, path: &str) -> RequestBuilder {
    client()
        .request(method, server.url(path))
        .bearer_auth(&server.token)
}

fn put_secret(server: &Server, key: &str, body: Value) -> Response {
    request(
        server,
        reqwest::Method::PUT,
        &format!("/api/v1/secrets/{key}"),
    )
    .json(&body)
    .send()
    .unwrap()
}

fn delete_secret(server: &Server, path: &str) -> Response {
    request(server, reqwest::Method::DELETE, path)
        .header("Content-Type", "application/json")
        .send()
        .unwrap()
}

fn list_secrets(server: &Server) -> Value {
    request(server, reqwest::Method::GET, "/api/v1/secrets")
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn error_message(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().unwrap();
    body["error"]["message"].as_str().unwrap().to_owned()
}

const READS_A_SECRET: &str = r#"
from danube import pipeline, secrets, step

@pipeline(name="deploy")
def deploy():
    token = secrets.get("DEPLOY_TOKEN")
    step.run("test \"$TOKEN\" = s3cret-value-1 && echo token matches", env={"TOKEN": token}, name="check")
"#;

#[test]
fn http_secrets_reach_cli_and_jobs() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(READS_A_SECRET);
    let server = sandbox.serve();

    let stored = put_secret(
        &server,
        "DEPLOY_TOKEN",
        json!({"value": "s3cret-value-1", "pipeline": "deploy"}),
    );
    assert_eq!(stored.status(), StatusCode::OK);
    let stored = stored.text().unwrap();
    assert!(
        !stored.contains("s3cret"),
        "a response holds the value: {stored}"
    );

    let listed = list_secrets(&server);
    assert_eq!(listed["secrets"][0]["key"], "DEPLOY_TOKEN");
    assert_eq!(listed["secrets"][0]["scope"], "pipeline:deploy");
    assert_eq!(listed["secrets"][0]["pipeline"], "deploy");
    assert!(!listed.to_string().contains("s3cret"), "{listed}");

    // The CLI sees the same secret, from the same database and key.
    let cli = sandbox.danube(&["secret", "list"]);
    assert!(
        cli.text().contains("DEPLOY_TOKEN\tpipeline:deploy"),
        "{}",
        cli.text()
    );

    let job: Value = request(&server, reqwest::Method::POST, "/api/v1/jobs")
        .json(&json!({"project": sandbox.project()}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let job: Value = request(&server, reqwest::Method::GET, &format!("/api/v1/jobs/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let state = job["state"].as_str().unwrap().to_owned();
        if ["success", "failure", "timeout", "cancelled"].contains(&state.as_str()) {
            break state;
        }
        assert!(Instant::now() < deadline, "job never ended: {job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "success");
}

#[test]
fn secret_removal_and_invalid_input() {
    let sandbox = Sandbox::new();
    let server = sandbox.serve();
    assert_eq!(
        put_secret(&server, "API_KEY", json!({"value": "global-value-123"})).status(),
        StatusCode::OK
    );

    let missing = delete_secret(&server, "/api/v1/secrets/API_KEY?pipeline=web");
    let message = error_message(missing, StatusCode::NOT_FOUND);
    assert!(message.contains("pipeline:web"), "{message}");

    let removed = delete_secret(&server, "/api/v1/secrets/API_KEY");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(list_secrets(&server)["secrets"], json!([]));

    let invalid = put_secret(&server, "1BAD", json!({"value": "x"}));
    let message = error_message(invalid, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("not starting with a digit"), "{message}");

    let empty = put_secret(&server, "EMPTY", json!({"value": ""}));
    let message = error_message(empty, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("empty"), "{message}");

    let plain = request(&server, reqwest::Method::PUT, "/api/v1/secrets/PLAIN")
        .body("value")
        .send()
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let anonymous = client().get(server.url("/api/v1/secrets")).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

const TWO_PIPELINES: &str = r#"
from danube import pipeline, step, task

@task()
def build():
    step.run("true")

@task(needs=[build])
def test():
    step.run("true")

pipeline(name="ci", tasks=[test])

@pipeline(name="release")
def release():
    step.run("true")
"#;

#[test]
fn project_pipelines_listed_with_tasks() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(TWO_PIPELINES);
    let server = sandbox.serve();
    let project = sandbox.project().display().to_string();

    let listed: Value = request(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/projects/pipelines?project={project}"),
    )
    .send()
    .unwrap()
    .json()
    .unwrap();

    assert_eq!(
        listed["pipelines"],
        json!([
            {"name": "ci", "tasks": ["build", "test"], "error": null},
            {"name": "release", "tasks": ["main"], "error": null},
        ])
    );
}

#[test]
fn failing_project_file_shows_traceback() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("import missing_module_for_the_test\n");
    let server = sandbox.serve();
    let project = sandbox.project().display().to_string();

    let response = request(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/projects/pipelines?project={project}"),
    )
    .send()
    .unwrap();

    let message = error_message(response, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("missing_module_for_the_test"), "{message}");
    let relative = request(
        &server,
        reqwest::Method::GET,
        "/api/v1/projects/pipelines?project=relative/dir",
    )
    .send()
    .unwrap();
    let message = error_message(relative, StatusCode::BAD_REQUEST);
    assert!(message.contains("absolute path"), "{message}");
}
