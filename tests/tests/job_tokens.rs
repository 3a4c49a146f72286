//! A job's token works only while the job runs, and a job stops at its
//! `max_duration`, through the engine library itself.

use std::time::Duration;

use danube::model::JobState;
use danube::orchestrator::JobRequest;
use danube::proto::GetSecretRequest;
use danube::proto::job_service_client::JobServiceClient;
use danube_tests::Sandbox;
use danube_tests::engine::local_engine;

fn request(sandbox: &Sandbox) -> JobRequest {
    JobRequest {
        project: sandbox.project(),
        repository: None,
        pipeline: None,
        in_place: true,
        max_parallel: 4,
        trigger: danube::model::TriggerType::Local,
        breakpoints: Default::default(),
        trigger_ref: None,
        backend: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_is_revoked_when_job_ends() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
import os
from danube import _client, pipeline, step

@pipeline(name="leak-token")
def leak():
    client = _client.get_client()
    header = dict(client._metadata)["authorization"]
    with open("token.txt", "w") as out:
        out.write(header.removeprefix("Bearer ") + "\n" + os.environ["DANUBE_ENGINE_ADDR"])
    step.run("true")
"#,
    );
    let engine = local_engine(&sandbox).await;
    let handle = engine.submit(request(&sandbox)).await.unwrap();
    let outcome = handle.wait().await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");

    let saved = std::fs::read_to_string(sandbox.project().join("token.txt")).unwrap();
    let (token, address) = saved.split_once('\n').unwrap();
    let mut client = JobServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut call = tonic::Request::new(GetSecretRequest { key: "ANY".into() });
    call.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let status = client.get_secret(call).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn job_past_max_duration_times_out_and_stops_steps() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="slow", max_duration=3)
def slow():
    step.run("sleep 60", name="sleep")
"#,
    );
    let engine = local_engine(&sandbox).await;
    let handle = engine.submit(request(&sandbox)).await.unwrap();
    let id = handle.id.clone();
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the job stops near its max_duration");
    assert_eq!(outcome.state, JobState::Timeout, "{outcome:?}");
    assert!(outcome.reason.unwrap().contains("max_duration of 3s"));

    let steps = engine.store().list_steps(&id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state, danube::model::RunState::Cancelled);
    let tasks = engine.store().list_tasks(&id).await.unwrap();
    assert_eq!(tasks[0].state, danube::model::RunState::Timeout);
    let job = engine.store().find_job(id.as_str()).await.unwrap();
    assert_eq!(job.state, JobState::Timeout);
}
