//! The web UI reads the API through the types in `danube_ui::api`. These
//! tests decode a real server's answers with them, so that a change to the
//! API that the UI would no longer understand fails here rather than as an
//! empty page in a browser.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use danube_tests::{Sandbox, Server};
use danube_ui::api::{ChangeEvent, Chunk, JobDetail, JobPage, State};
use reqwest::blocking::Client;
use serde::de::DeserializeOwned;
use serde_json::json;

const PIPELINE: &str = r#"
from danube import artifacts, pipeline, step, task

@task()
def build() -> None:
    step.run("printf 'built\n'; printf 'payload' > out.bin", name="compile")
    artifacts.upload("out.bin", name="out.bin")

@task(needs=[build])
def test() -> None:
    step.run("echo testing; exit 3", name="unit")

pipeline(name="typed", tasks=[build, test])
"#;

fn get<T: DeserializeOwned>(server: &Server, path: &str) -> T {
    let response = Client::new()
        .get(server.url(path))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let text = response.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}\n{text}"))
}

#[test]
fn the_ui_types_read_a_real_job() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PIPELINE);
    let server = sandbox.serve();

    // Follow the change feed from before the job starts.
    let events = Client::builder().timeout(None).build().unwrap();
    let feed = events
        .get(server.url("/api/v1/events"))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    let created = Client::new()
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project()}))
        .send()
        .unwrap();
    let id = created.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let changes = read_changes_until_final(feed, &id);
    assert!(
        changes
            .iter()
            .any(|change| matches!(change, ChangeEvent::Plan { tasks, .. } if tasks.len() == 2)),
        "{changes:?}"
    );
    assert!(changes.iter().any(|change| matches!(
        change,
        ChangeEvent::Step { name, state: State::Failure, exit_code: Some(3), .. } if name == "unit"
    )));

    let detail: JobDetail = get(&server, &format!("/api/v1/jobs/{id}"));
    assert_eq!(detail.job.state, State::Failure);
    assert_eq!(detail.job.pipeline, "typed");
    let names: Vec<&str> = detail.tasks.iter().map(|task| task.name.as_str()).collect();
    assert_eq!(names, ["build", "test"]);
    assert_eq!(detail.tasks[1].steps[0].exit_code, Some(3));
    assert_eq!(detail.edges.len(), 1);
    assert_eq!(
        (detail.edges[0].from.as_str(), detail.edges[0].to.as_str()),
        ("build", "test")
    );
    assert_eq!(detail.artifacts[0].size_bytes, 7);

    let page: JobPage = get(&server, "/api/v1/jobs?state=failure");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, id);

    #[derive(serde::Deserialize)]
    struct LogPage {
        chunks: Vec<Chunk>,
    }
    let log: LogPage = get(
        &server,
        &format!("/api/v1/jobs/{id}/logs?task=build&step=compile"),
    );
    let text: String = log.chunks.iter().map(|chunk| chunk.data.as_str()).collect();
    assert_eq!(text, "built\n");
    assert_eq!(log.chunks[0].stream, "stdout");
}

/// Decodes `/events` until the job reaches a final state.
fn read_changes_until_final(feed: reqwest::blocking::Response, id: &str) -> Vec<ChangeEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut changes = Vec::new();
    for line in BufReader::new(feed).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let change: ChangeEvent = serde_json::from_str(data.trim())
            .unwrap_or_else(|err| panic!("the UI cannot read the event {data}: {err}"));
        let done = matches!(&change, ChangeEvent::Job { job_id, state, .. } if job_id == id && state.is_final());
        changes.push(change);
        if done {
            return changes;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never ended: {changes:?}"
        );
    }
    panic!("the event stream ended before job {id} did: {changes:?}");
}
