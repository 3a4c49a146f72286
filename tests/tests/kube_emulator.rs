//! The Kubernetes API emulator, driven by kube-rs as the backend drives a
//! real cluster, and by raw HTTP and WebSocket clients where kube-rs hides
//! the protocol.

use std::time::Duration;

use danube_tests::kube::{Emulator, EmulatorOptions, ExecProtocol, JOBS_NAMESPACE};
use futures::{SinkExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for one wait, so that a broken emulator fails the test
/// instead of hanging it. No assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);

async fn emulator() -> (Emulator, Client) {
    emulator_with(EmulatorOptions::default()).await
}

async fn emulator_with(options: EmulatorOptions) -> (Emulator, Client) {
    let emulator = Emulator::start(options).await.expect("the emulator starts");
    let client = emulator.client().await;
    (emulator, client)
}

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), JOBS_NAMESPACE)
}

/// A pod with one container `main` running `sh -c SCRIPT`, a `workspace`
/// emptyDir mounted at `/workspace`, and restart policy `Never`.
fn shell_pod(name: &str, script: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "emulator-test", "pod": name}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "workspace", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "image": "debian:12",
                "command": ["sh", "-c", script],
                "workingDir": "/workspace",
                "env": [{"name": "GREETING", "value": "hello"}],
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            }],
        },
    }))
    .expect("a valid pod")
}

async fn create(client: &Client, pod: &Pod) -> Pod {
    pods(client)
        .create(&PostParams::default(), pod)
        .await
        .expect("the pod is created")
}

/// Waits until `condition` holds on pod `name` and returns the pod.
async fn wait_for(client: &Client, name: &str, condition: impl Fn(&Pod) -> bool) -> Pod {
    let waited = tokio::time::timeout(
        PATIENCE,
        await_condition(pods(client), name, move |pod: Option<&Pod>| {
            pod.is_some_and(&condition)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("pod {name} never reached the condition"))
    .expect("the wait's watch works");
    waited.expect("the pod exists")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn is_running(pod: &Pod) -> bool {
    phase(pod) == "Running"
}

/// `(reason, exit code)` of a terminated container.
fn terminated(pod: &Pod, container: &str) -> Option<(String, i32)> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten())
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| (t.reason.clone().unwrap_or_default(), t.exit_code))
}

/// The waiting reason of a container.
fn waiting_reason(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

async fn http_request(
    emulator: &Emulator,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, format!("{}{path}", emulator.url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the emulator answers");
    let code = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (code, body)
}

// --- REST core -----------------------------------------------------------

#[tokio::test]
async fn kubeconfig_context_reaches_emulator() {
    let (emulator, client) = emulator().await;

    let config = std::fs::read_to_string(emulator.kubeconfig_path()).expect("kubeconfig");
    assert!(config.contains(&emulator.url()), "{config}");
    assert_eq!(client.default_namespace(), JOBS_NAMESPACE);

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let groups = client.list_core_api_versions().await.expect("/api");
    assert_eq!(groups.versions, ["v1"]);
    let resources = client.list_core_api_resources("v1").await.expect("/api/v1");
    let names: Vec<&str> = resources
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.contains(&"pods/exec"), "{names:?}");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces.list(&ListParams::default()).await.expect("list");
    let names: Vec<String> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names, ["danube-jobs", "default"]);
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401() {
    let (emulator, client) = emulator().await;

    let (code, status) = http_request(
        &emulator,
        reqwest::Method::GET,
        "/api/v1/namespaces",
        "nope",
        None,
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");

    let missing = reqwest::get(format!("{}/api/v1/namespaces", emulator.url()))
        .await
        .expect("answer");
    assert_eq!(missing.status().as_u16(), 401);

    let (code, _) = http_request(
        &emulator,
        reqwest::Method::GET,
        "/api/v1/namespaces",
        emulator.token(),
        None,
    )
    .await;
    assert_eq!(code, 200);
    drop(client);
}

#[tokio::test]
async fn namespaces_outside_allowance_get_403() {
    let options = EmulatorOptions {
        allowed_namespaces: Some(vec![JOBS_NAMESPACE.to_owned()]),
        ..EmulatorOptions::default()
    };
    let (_emulator, client) = emulator_with(options).await;

    let other: Api<Pod> = Api::namespaced(client.clone(), "default");
    let error = other
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    let kube::Error::Api(status) = error else {
        panic!("expected a Status error, got {error:?}");
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status.message.contains("namespace \"default\""),
        "{}",
        status.message
    );

    pods(&client)
        .list(&ListParams::default())
        .await
        .expect("the allowed namespace lists");
}

#[tokio::test]
async fn create_rejects_unknown_and_missing_fields() {
    let (emulator, _client) = emulator().await;
    let path = format!("/api/v1/namespaces/{JOBS_NAMESPACE}/pods");
    let token = emulator.token().to_owned();

    let mut misspelt = serde_json::to_value(shell_pod("typo", "true")).expect("JSON");
    misspelt["spec"]["containers"][0]["comand"] = json!(["true"]);
    let (code, status) = http_request(
        &emulator,
        reqwest::Method::POST,
        &path,
        &token,
        Some(misspelt),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown field \"spec.containers[0].comand\""),
        "{message}"
    );

    let mut incomplete = serde_json::to_value(shell_pod("incomplete", "true")).expect("JSON");
    incomplete["spec"]["containers"][0]
        .as_object_mut()
        .expect("container object")
        .remove("image");
    incomplete["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!("cache");
    let (code, status) = http_request(
        &emulator,
        reqwest::Method::POST,
        &path,
        &token,
        Some(incomplete),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].image",
            "spec.containers[0].volumeMounts[0].name"
        ]
    );

    let (code, _) = http_request(&emulator, reqwest::Method::GET, &path, &token, None).await;
    assert_eq!(code, 200);
    let (code, list) = http_request(&emulator, reqwest::Method::GET, &path, &token, None).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"], json!([]), "rejected pods are not stored");
}

#[tokio::test]
async fn duplicate_pod_gets_409_and_missing_gets_404() {
    let (_emulator, client) = emulator().await;
    let pod = shell_pod("twice", "sleep 30");
    create(&client, &pod).await;

    let error = pods(&client)
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("the name is taken");
    let kube::Error::Api(status) = error else {
        panic!("expected a Status error, got {error:?}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let error = pods(&client).get("absent").await.expect_err("no such pod");
    let kube::Error::Api(status) = error else {
        panic!("expected a Status error, got {error:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "pods \"absent\" not found");
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let (_emulator, client) = emulator().await;
    create(&client, &shell_pod("first", "sleep 30")).await;
    create(&client, &shell_pod("second", "sleep 30")).await;

    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };
    let all = pods(&client)
        .list(&ListParams::default().labels("app=emulator-test"))
        .await
        .expect("list");
    assert_eq!(names(all), ["first", "second"]);
    let by_label = pods(&client)
        .list(&ListParams::default().labels("pod in (second)"))
        .await
        .expect("list");
    assert_eq!(names(by_label), ["second"]);
    let by_field = pods(&client)
        .list(&ListParams::default().fields("metadata.name=first"))
        .await
        .expect("list");
    assert_eq!(names(by_field), ["first"]);
    let none = pods(&client)
        .list(&ListParams::default().labels("app=other"))
        .await
        .expect("list");
    assert!(names(none).is_empty());
}

#[tokio::test]
async fn watcher_sees_pod_lifecycle_in_order() {
    let (_emulator, client) = emulator().await;
    let config = watcher::Config::default().labels("pod=watched");
    let mut events = watcher(pods(&client), config).boxed();
    // The initial (empty) list completes before the pod exists.
    loop {
        match events.try_next().await.expect("watch works") {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }

    let created = create(&client, &shell_pod("watched", "echo done")).await;
    let mut phases = Vec::new();
    let mut versions = Vec::new();
    let deleted = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.try_next().await.expect("watch works") {
                Some(watcher::Event::Apply(pod)) => {
                    versions.push(
                        pod.metadata
                            .resource_version
                            .clone()
                            .unwrap_or_default()
                            .parse::<u64>()
                            .expect("numeric version"),
                    );
                    if phases.last().map(String::as_str) != Some(phase(&pod)) {
                        phases.push(phase(&pod).to_owned());
                    }
                    if is_finished(&pod) {
                        pods(&client)
                            .delete("watched", &DeleteParams::default())
                            .await
                            .expect("delete");
                    }
                }
                Some(watcher::Event::Delete(pod)) => return pod,
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
    })
    .await
    .expect("the pod is deleted in time");

    assert_eq!(deleted.metadata.uid, created.metadata.uid);
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "versions rise: {versions:?}"
    );
}

/// Reads a raw watch stream line by line until `stop` returns true.
async fn read_watch(
    emulator: &Emulator,
    query: &str,
    mut stop: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let url = format!(
        "{}/api/v1/namespaces/{JOBS_NAMESPACE}/pods?watch=true&{query}",
        emulator.url()
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(emulator.token())
        .send()
        .await
        .expect("watch starts");
    assert_eq!(response.status().as_u16(), 200);
    let mut response = response;
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("watch bytes") {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).expect("one JSON event per line");
                let done = stop(&event);
                events.push(event);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the watch delivers in time");
    events
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410() {
    let (emulator, client) = emulator().await;
    let created = create(&client, &shell_pod("old", "sleep 30")).await;
    let version = created.metadata.resource_version.clone().expect("version");
    emulator.compact();

    let events = read_watch(&emulator, &format!("resourceVersion={version}"), |_| true).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");

    // kube-rs's watcher relists after a 410 and goes on.
    let mut watch = watcher(pods(&client), watcher::Config::default()).boxed();
    let first = tokio::time::timeout(PATIENCE, watch.try_next())
        .await
        .expect("in time")
        .expect("watch works");
    assert!(matches!(first, Some(watcher::Event::Init)));
}

#[tokio::test]
async fn watch_sends_backlog_and_bookmarks() {
    let options = EmulatorOptions {
        bookmark_interval: Duration::from_millis(100),
        ..EmulatorOptions::default()
    };
    let (emulator, client) = emulator_with(options).await;
    let first = create(&client, &shell_pod("a", "sleep 30")).await;
    create(&client, &shell_pod("b", "sleep 30")).await;
    let since = first.metadata.resource_version.clone().expect("version");

    let events = read_watch(
        &emulator,
        &format!("resourceVersion={since}&allowWatchBookmarks=true"),
        |event| event["type"] == "BOOKMARK",
    )
    .await;
    let added: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .filter_map(|e| e["object"]["metadata"]["name"].as_str())
        .collect();
    assert_eq!(added, ["b"], "only what came after the version: {events:?}");
    let bookmark = events.last().expect("a bookmark");
    let bookmarked: u64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .expect("version")
        .parse()
        .expect("numeric");
    let last_seen: u64 = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .filter_map(|e| e["object"]["metadata"]["resourceVersion"].as_str())
        .map(|v| v.parse::<u64>().expect("numeric"))
        .max()
        .expect("events before the bookmark");
    assert!(bookmarked >= last_seen, "{bookmarked} < {last_seen}");

    let initial = read_watch(
        &emulator,
        "sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        |event| event["type"] == "BOOKMARK",
    )
    .await;
    let end = initial.last().expect("bookmark");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(initial.iter().filter(|e| e["type"] == "ADDED").count(), 2);
}

// --- containers as processes --------------------------------------------

#[tokio::test]
async fn pod_runs_with_volume_env_and_working_dir() {
    let (emulator, client) = emulator().await;
    create(
        &client,
        &shell_pod(
            "runs",
            "pwd; echo $GREETING; echo data > /workspace/out; echo oops >&2",
        ),
    )
    .await;
    let running = wait_for(&client, "runs", |pod| {
        condition(pod, "PodScheduled").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(danube_tests::kube::NODE_NAME)
    );
    let volume = emulator
        .volume_dir(JOBS_NAMESPACE, "runs", "workspace")
        .expect("the pod has its folder");

    let done = wait_for(&client, "runs", is_finished).await;
    assert_eq!(phase(&done), "Succeeded");
    assert_eq!(terminated(&done, "main"), Some(("Completed".to_owned(), 0)));
    assert_eq!(
        std::fs::read_to_string(volume.join("out")).expect("the volume holds the file"),
        "data\n"
    );
    let log = pods(&client)
        .logs("runs", &LogParams::default())
        .await
        .expect("log");
    assert_eq!(log, "/workspace\nhello\noops\n");
}

#[tokio::test]
async fn failing_container_fails_pod_with_exit_code() {
    let (_emulator, client) = emulator().await;
    create(&client, &shell_pod("fails", "exit 7")).await;
    let done = wait_for(&client, "fails", is_finished).await;
    assert_eq!(phase(&done), "Failed");
    assert_eq!(terminated(&done, "main"), Some(("Error".to_owned(), 7)));
}

#[tokio::test]
async fn missing_command_is_start_error() {
    let (_emulator, client) = emulator().await;
    let mut pod = shell_pod("missing", "true");
    pod.spec.as_mut().expect("spec").containers[0].command =
        Some(vec!["no-such-command-here".to_owned()]);
    create(&client, &pod).await;
    let done = wait_for(&client, "missing", is_finished).await;
    assert_eq!(
        terminated(&done, "main"),
        Some(("StartError".to_owned(), 128))
    );
    let message = done
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref()?.terminated.as_ref()?.message.clone());
    assert!(
        message
            .unwrap_or_default()
            .contains("executable file not found in $PATH"),
        "{done:?}"
    );
}

#[tokio::test]
async fn init_containers_run_first_in_order() {
    let (_emulator, client) = emulator().await;
    let mut pod = shell_pod("ordered", "cat /workspace/order");
    let init = |name: &str| {
        serde_json::from_value(json!({
            "name": name,
            "image": "debian:12",
            "command": ["sh", "-c", format!("echo {name} >> /workspace/order")],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        }))
        .expect("container")
    };
    pod.spec.as_mut().expect("spec").init_containers = Some(vec![init("one"), init("two")]);
    create(&client, &pod).await;
    let done = wait_for(&client, "ordered", is_finished).await;
    assert_eq!(phase(&done), "Succeeded");
    let log = pods(&client)
        .logs("ordered", &LogParams::default())
        .await
        .expect("log");
    assert_eq!(log, "one\ntwo\n");
    assert!(condition(&done, "Initialized").is_some_and(|c| c.status == "True"));
}

#[tokio::test]
async fn failed_init_container_fails_pod_before_main() {
    let (_emulator, client) = emulator().await;
    let mut pod = shell_pod("init-fails", "echo never");
    pod.spec.as_mut().expect("spec").init_containers = Some(vec![
        serde_json::from_value(
            json!({"name": "setup", "image": "debian:12", "command": ["false"]}),
        )
        .expect("container"),
    ]);
    create(&client, &pod).await;
    let done = wait_for(&client, "init-fails", is_finished).await;
    assert_eq!(phase(&done), "Failed");
    assert_eq!(terminated(&done, "setup"), Some(("Error".to_owned(), 1)));
    assert_eq!(
        waiting_reason(&done, "main").as_deref(),
        Some("PodInitializing")
    );
}

/// Host pids of live processes whose command line starts with `prefix`
/// (arguments joined by spaces).
fn processes_starting(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let joined = String::from_utf8_lossy(&cmd).replace('\0', " ");
                joined.starts_with(prefix)
            })
        })
        .filter(|pid| danube_tests::process_alive(*pid))
        .collect()
}

#[tokio::test]
async fn delete_kills_every_process_of_the_pod() {
    let (_emulator, client) = emulator().await;
    // A background sleep in its own session, so killing the process group
    // alone would miss it.
    create(
        &client,
        &shell_pod("doomed", "setsid sleep 4711 & sleep 4712 & wait"),
    )
    .await;
    wait_for(&client, "doomed", is_running).await;
    let started = tokio::time::timeout(PATIENCE, async {
        loop {
            if processes_starting("sleep 471").len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "both sleeps start");

    let pod = pods(&client).get("doomed").await.expect("the pod exists");
    let uid = pod.metadata.uid.clone().expect("uid");
    pods(&client)
        .delete("doomed", &DeleteParams::default().grace_period(1))
        .await
        .expect("delete");
    tokio::time::timeout(
        PATIENCE,
        await_condition(
            pods(&client),
            "doomed",
            kube::runtime::conditions::is_deleted(&uid),
        ),
    )
    .await
    .expect("deleted in time")
    .expect("watch works");
    assert_eq!(processes_starting("sleep 471"), Vec::<i32>::new());
}

// --- exec -----------------------------------------------------------------

async fn running_pod(client: &Client, name: &str) {
    create(client, &shell_pod(name, "sleep 600")).await;
    wait_for(client, name, is_running).await;
}

struct ExecResult {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
}

async fn exec(client: &Client, pod: &str, command: &[&str], stdin: Option<&[u8]>) -> ExecResult {
    let params = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(1 << 20);
    let mut attached = pods(client)
        .exec(pod, command.to_vec(), &params)
        .await
        .expect("exec connects");
    let mut out = attached.stdout().expect("stdout");
    let mut err = attached.stderr().expect("stderr");
    let status = attached.take_status().expect("status");
    // Write while reading: `cat` echoes, so a writer that waits for the
    // whole input to go out first would fill every buffer and stall.
    let writer = attached.stdin();
    let write_in = async move {
        if let (Some(input), Some(mut writer)) = (stdin, writer) {
            writer.write_all(input).await.expect("write stdin");
            writer.shutdown().await.expect("close stdin");
        }
    };
    let read_out = async {
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).await.expect("read stdout");
        bytes
    };
    let read_err = async {
        let mut bytes = Vec::new();
        err.read_to_end(&mut bytes).await.expect("read stderr");
        bytes
    };
    let (stdout, stderr, status, ()) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(read_out, read_err, status, write_in)
    })
    .await
    .expect("exec finishes in time");
    ExecResult {
        stdout,
        stderr,
        status,
    }
}

#[tokio::test]
async fn exec_returns_streams_and_exit_code() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "target").await;

    let result = exec(
        &client,
        "target",
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; echo $GREETING; pwd; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(result.stdout, b"out\nhello\n/workspace\n");
    assert_eq!(result.stderr, b"err\n");
    let status = result.status.expect("a status");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status
        .details
        .and_then(|d| d.causes)
        .and_then(|c| {
            c.into_iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("3"));

    let ok = exec(&client, "target", &["true"], None).await;
    assert_eq!(ok.status.and_then(|s| s.status).as_deref(), Some("Success"));
}

#[tokio::test]
async fn exec_delivers_large_output_intact() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "loud").await;

    let result = exec(&client, "loud", &["seq", "1", "2000000"], None).await;
    let expected: String = (1..=2_000_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(result.stdout.len(), expected.len());
    assert!(result.stdout == expected.as_bytes(), "the output differs");
    assert_eq!(
        result.status.and_then(|s| s.status).as_deref(),
        Some("Success")
    );
}

#[tokio::test]
async fn exec_stdin_reaches_the_process() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "reader").await;

    let input: Vec<u8> = (0..300_000u32).flat_map(|n| n.to_le_bytes()).collect();
    let result = exec(&client, "reader", &["cat"], Some(&input)).await;
    assert_eq!(result.stdout.len(), input.len());
    assert!(result.stdout == input, "stdin came back changed");
    assert_eq!(
        result.status.and_then(|s| s.status).as_deref(),
        Some("Success")
    );
}

#[tokio::test]
async fn exec_unknown_command_is_internal_error() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "unknown").await;

    let result = exec(&client, "unknown", &["no-such-command-here"], None).await;
    let status = result.status.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("InternalError"));
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("\"no-such-command-here\": executable file not found in $PATH"),
    );
}

#[tokio::test]
async fn exec_over_v4_only_server() {
    let options = EmulatorOptions {
        exec_protocols: vec![ExecProtocol::V4],
        ..EmulatorOptions::default()
    };
    let (_emulator, client) = emulator_with(options).await;
    running_pod(&client, "old-server").await;

    let result = exec(
        &client,
        "old-server",
        &["sh", "-c", "echo v4; exit 5"],
        None,
    )
    .await;
    assert_eq!(result.stdout, b"v4\n");
    assert_eq!(
        result.status.and_then(|s| s.reason).as_deref(),
        Some("NonZeroExitCode")
    );
}

#[tokio::test]
async fn exec_into_missing_container_is_rejected() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "single").await;
    let params = AttachParams::default().container("nope");
    let error = pods(&client)
        .exec("single", vec!["true"], &params)
        .await
        .err()
        .expect("no such container");
    let kube::Error::Api(status) = error else {
        panic!("expected a Status error, got {error:?}");
    };
    assert_eq!(status.code, 400);
    assert!(status.message.contains("nope"), "{}", status.message);
}

/// A raw v5 session: the test sends stdin and then closes it on channel
/// 255, and reads every frame the server sends.
#[tokio::test]
async fn raw_v5_close_channel_ends_stdin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

    let (emulator, client) = emulator().await;
    running_pod(&client, "raw").await;

    let url = format!(
        "{}/api/v1/namespaces/{JOBS_NAMESPACE}/pods/raw/exec?command=sh&command=-c&command=cat%3Becho+end&stdin=true&stdout=true&stderr=true",
        emulator.url().replace("http://", "ws://")
    );
    let mut request = url.into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {}", emulator.token())).expect("header"),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );

    socket
        .send(Message::binary(b"\x00first ".to_vec()))
        .await
        .expect("send stdin");
    socket
        .send(Message::binary(b"\x00second\n".to_vec()))
        .await
        .expect("send stdin");
    socket
        .send(Message::binary(vec![255, 0]))
        .await
        .expect("close stdin");

    let mut stdout = Vec::new();
    let mut status = None;
    let mut closed = false;
    tokio::time::timeout(PATIENCE, async {
        while let Some(message) = socket.next().await {
            match message.expect("a frame") {
                Message::Binary(data) if data.len() > 1 => match data[0] {
                    1 => stdout.extend_from_slice(&data[1..]),
                    3 => status = Some(serde_json::from_slice::<Value>(&data[1..]).expect("JSON")),
                    _ => {}
                },
                Message::Close(_) => closed = true,
                _ => {}
            }
        }
    })
    .await
    .expect("the session ends in time");
    assert_eq!(stdout, b"first second\nend\n");
    assert_eq!(status.expect("a status")["status"], "Success");
    assert!(closed, "the server closes with a close frame");
}

#[tokio::test]
async fn shell_less_image_hides_shells() {
    let options = EmulatorOptions::default().image_without_shell("kaniko:latest");
    let (_emulator, client) = emulator_with(options).await;
    let mut pod = shell_pod("kaniko", "unused");
    pod.spec.as_mut().expect("spec").containers[0].image = Some("kaniko:latest".to_owned());
    pod.spec.as_mut().expect("spec").containers[0].command =
        Some(vec!["sleep".to_owned(), "600".to_owned()]);
    create(&client, &pod).await;
    wait_for(&client, "kaniko", is_running).await;

    for shell in ["sh", "/bin/sh", "/bin/bash", "bash"] {
        let result = exec(&client, "kaniko", &[shell, "-c", "true"], None).await;
        let status = result.status.expect("a status");
        assert_eq!(status.reason.as_deref(), Some("InternalError"), "{shell}");
    }
    let listed = exec(&client, "kaniko", &["ls", "/workspace"], None).await;
    assert_eq!(
        listed.status.and_then(|s| s.status).as_deref(),
        Some("Success"),
        "other tools still run"
    );
}

// --- faults ---------------------------------------------------------------

#[tokio::test]
async fn failing_image_pull_backs_off() {
    let options = EmulatorOptions {
        image_pull_backoff: Duration::from_millis(50),
        ..EmulatorOptions::default().failing_image("registry.invalid/nope:1")
    };
    let (_emulator, client) = emulator_with(options).await;
    let mut pod = shell_pod("pull", "true");
    pod.spec.as_mut().expect("spec").containers[0].image =
        Some("registry.invalid/nope:1".to_owned());
    create(&client, &pod).await;

    let first = wait_for(&client, "pull", |p| {
        waiting_reason(p, "main").as_deref() == Some("ErrImagePull")
    })
    .await;
    assert_eq!(phase(&first), "Pending");
    let later = wait_for(&client, "pull", |p| {
        waiting_reason(p, "main").as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&later), "Pending");
}

#[tokio::test]
async fn oversized_pod_is_unschedulable() {
    let options = EmulatorOptions {
        node_cpu_millis: 2000,
        ..EmulatorOptions::default()
    };
    let (_emulator, client) = emulator_with(options).await;
    let mut pod = shell_pod("huge", "true");
    pod.spec.as_mut().expect("spec").containers[0].resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "3"}})).expect("resources"));
    create(&client, &pod).await;
    let pending = wait_for(&client, "huge", |p| condition(p, "PodScheduled").is_some()).await;
    let scheduled = condition(&pending, "PodScheduled").expect("condition");
    assert_eq!(scheduled.status, "False");
    assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
    assert!(
        scheduled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("1 Insufficient cpu"),
        "{scheduled:?}"
    );
    assert_eq!(phase(&pending), "Pending");
}

#[tokio::test]
async fn cordoned_node_holds_pods_until_uncordoned() {
    let (emulator, client) = emulator().await;
    emulator.cordon(true);
    create(&client, &shell_pod("held", "true")).await;
    let held = wait_for(&client, "held", |p| condition(p, "PodScheduled").is_some()).await;
    let scheduled = condition(&held, "PodScheduled").expect("condition");
    assert!(
        scheduled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("were unschedulable"),
        "{scheduled:?}"
    );
    emulator.cordon(false);
    let done = wait_for(&client, "held", is_finished).await;
    assert_eq!(phase(&done), "Succeeded");
}

#[tokio::test]
async fn oom_kill_ends_container_with_137() {
    let (emulator, client) = emulator().await;
    running_pod(&client, "hungry").await;
    emulator
        .oom_kill(JOBS_NAMESPACE, "hungry", "main")
        .expect("the container runs");
    let done = wait_for(&client, "hungry", is_finished).await;
    assert_eq!(phase(&done), "Failed");
    assert_eq!(
        terminated(&done, "main"),
        Some(("OOMKilled".to_owned(), 137))
    );
}

#[tokio::test]
async fn eviction_fails_pod_with_reason() {
    let (emulator, client) = emulator().await;
    running_pod(&client, "evicted").await;
    emulator
        .evict(JOBS_NAMESPACE, "evicted")
        .expect("the pod runs");
    let done = wait_for(&client, "evicted", |p| {
        is_finished(p) && terminated(p, "main").is_some()
    })
    .await;
    let status = done.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(terminated(&done, "main").map(|t| t.1), Some(137));
}

#[tokio::test]
async fn lost_node_marks_pods_unknown_and_terminating() {
    let (emulator, client) = emulator().await;
    running_pod(&client, "stranded").await;
    emulator.lose_node();

    let lost = wait_for(&client, "stranded", |p| phase(p) == "Unknown").await;
    assert_eq!(
        lost.status.as_ref().and_then(|s| s.reason.as_deref()),
        Some("NodeLost")
    );
    assert!(lost.metadata.deletion_timestamp.is_some());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = nodes
        .get(danube_tests::kube::NODE_NAME)
        .await
        .expect("node");
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready.status, "Unknown");

    // Only a forced delete removes a pod whose node is gone.
    pods(&client)
        .delete("stranded", &DeleteParams::default().grace_period(0))
        .await
        .expect("force delete");
    let error = pods(&client).get("stranded").await.expect_err("gone");
    assert!(matches!(error, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn dropped_exec_connection_gives_no_status() {
    let (emulator, client) = emulator().await;
    running_pod(&client, "dropped").await;
    let params = AttachParams::default().stdout(true).stderr(false);
    let mut attached = pods(&client)
        .exec(
            "dropped",
            vec!["sh", "-c", "echo started; sleep 600"],
            &params,
        )
        .await
        .expect("exec connects");
    let mut out = attached.stdout().expect("stdout");
    let mut first = [0u8; 8];
    out.read_exact(&mut first).await.expect("output arrives");
    assert_eq!(&first, b"started\n");

    assert_eq!(emulator.drop_exec_connections(), 1);
    let status = attached.take_status().expect("status future");
    let joined = tokio::time::timeout(PATIENCE, async {
        let status = status.await;
        (status, attached.join().await)
    })
    .await
    .expect("the client notices in time");
    assert!(joined.0.is_none(), "no status after a drop: {:?}", joined.0);
    assert!(joined.1.is_err(), "the session ends with an error");
}

#[tokio::test]
async fn request_counts_by_verb_and_resource() {
    let (emulator, client) = emulator().await;
    emulator.reset_request_counts();
    create(&client, &shell_pod("counted", "true")).await;
    pods(&client).get("counted").await.expect("get");
    pods(&client).get("counted").await.expect("get");
    pods(&client)
        .list(&ListParams::default())
        .await
        .expect("list");

    assert_eq!(emulator.request_count("create", "pods"), 1);
    assert_eq!(emulator.request_count("get", "pods"), 2);
    assert_eq!(emulator.request_count("list", "pods"), 1);
    assert_eq!(emulator.request_count("delete", "pods"), 0);
}

// --- log and ephemeral containers -----------------------------------------

#[tokio::test]
async fn log_follow_streams_until_exit_and_tails() {
    let (_emulator, client) = emulator().await;
    create(
        &client,
        &shell_pod(
            "chatty",
            "for i in 1 2 3; do echo line $i; sleep 0.05; done",
        ),
    )
    .await;
    wait_for(&client, "chatty", |p| phase(p) != "Pending").await;

    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut stream = pods(&client)
        .log_stream("chatty", &params)
        .await
        .expect("log stream");
    let mut text = String::new();
    tokio::time::timeout(
        PATIENCE,
        futures::AsyncReadExt::read_to_string(&mut stream, &mut text),
    )
    .await
    .expect("the stream ends when the container exits")
    .expect("read");
    assert_eq!(text, "line 1\nline 2\nline 3\n");

    let tail = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    let last = pods(&client).logs("chatty", &tail).await.expect("log");
    assert_eq!(last, "line 3\n");
}

#[tokio::test]
async fn ephemeral_container_shares_the_volume() {
    let (emulator, client) = emulator().await;
    running_pod(&client, "debugged").await;

    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": "debugger",
        "image": "busybox:1",
        "command": ["sh", "-c", "echo from-debugger > /workspace/debug"],
        "targetContainerName": "main",
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
    }]}});
    let patched = pods(&client)
        .patch_ephemeral_containers(
            "debugged",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .expect("patch");
    let added = patched
        .spec
        .and_then(|s| s.ephemeral_containers)
        .expect("ephemeral containers");
    assert_eq!(added[0].name, "debugger");

    let done = wait_for(&client, "debugged", |p| terminated(p, "debugger").is_some()).await;
    assert_eq!(
        terminated(&done, "debugger"),
        Some(("Completed".to_owned(), 0))
    );
    let volume = emulator
        .volume_dir(JOBS_NAMESPACE, "debugged", "workspace")
        .expect("volume");
    assert_eq!(
        std::fs::read_to_string(volume.join("debug")).expect("file"),
        "from-debugger\n"
    );

    let changed = json!({"spec": {"ephemeralContainers": [{
        "name": "debugger",
        "image": "busybox:2",
        "command": ["true"],
    }]}});
    let error = pods(&client)
        .patch_ephemeral_containers(
            "debugged",
            &PatchParams::default(),
            &Patch::Strategic(changed),
        )
        .await
        .expect_err("existing ephemeral containers are immutable");
    assert!(matches!(error, kube::Error::Api(s) if s.code == 422));
}

// --- Network policies ----------------------------------------------------

fn plain_policy(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": JOBS_NAMESPACE},
        "spec": {"podSelector": {"matchLabels": {"danube.dev/job": "j1"}}, "policyTypes": ["Egress"]},
    })
}

#[tokio::test]
async fn network_policies_strict_cilium_optional() {
    let (emulator, _client) = emulator().await;
    let token = emulator.token().to_owned();
    let plain = format!("/apis/networking.k8s.io/v1/namespaces/{JOBS_NAMESPACE}/networkpolicies");
    let cilium = format!("/apis/cilium.io/v2/namespaces/{JOBS_NAMESPACE}/ciliumnetworkpolicies");

    let mut misspelt = plain_policy("typo");
    misspelt["spec"]["podSelecter"] = json!({"matchLabels": {"a": "b"}});
    let (code, status) = http_request(
        &emulator,
        reqwest::Method::POST,
        &plain,
        &token,
        Some(misspelt),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field \"spec.podSelecter\""),
        "{status}"
    );
    let (code, created) = http_request(
        &emulator,
        reqwest::Method::POST,
        &plain,
        &token,
        Some(plain_policy("p1")),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    let (code, _) = http_request(
        &emulator,
        reqwest::Method::POST,
        &plain,
        &token,
        Some(plain_policy("p1")),
    )
    .await;
    assert_eq!(code, 409);
    let (_, groups) = http_request(&emulator, reqwest::Method::GET, "/apis", &token, None).await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "{groups}");
    let (code, _) = http_request(
        &emulator,
        reqwest::Method::GET,
        "/apis/cilium.io/v2",
        &token,
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = http_request(&emulator, reqwest::Method::GET, &cilium, &token, None).await;
    assert_eq!(code, 404);
    let (code, _) = http_request(
        &emulator,
        reqwest::Method::DELETE,
        &format!("{plain}/p1"),
        &token,
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(emulator.request_count("delete", "networkpolicies"), 1);

    let (with_cilium, _client) = emulator_with(EmulatorOptions::default().with_cilium()).await;
    let token = with_cilium.token().to_owned();
    let (_, resources) = http_request(
        &with_cilium,
        reqwest::Method::GET,
        "/apis/cilium.io/v2",
        &token,
        None,
    )
    .await;
    assert_eq!(resources["resources"][0]["name"], "ciliumnetworkpolicies");
    let policy = json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c1", "namespace": JOBS_NAMESPACE},
        "spec": {"endpointSelecter": {"matchLabels": {"a": "b"}}, "endpointSelector": {"matchLabels": {}}, "egress": []},
    });
    let (code, status) = http_request(
        &with_cilium,
        reqwest::Method::POST,
        &cilium,
        &token,
        Some(policy),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field `endpointSelecter`"),
        "{status}"
    );
}

#[tokio::test]
async fn tty_exec_runs_on_a_resizable_terminal() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "terminal").await;

    let params = AttachParams::interactive_tty();
    let mut attached = pods(&client)
        .exec("terminal", vec!["sh"], &params)
        .await
        .expect("exec connects");
    let mut resize = attached
        .terminal_size()
        .expect("a tty exec has a resize channel");
    resize
        .send(kube::api::TerminalSize {
            width: 123,
            height: 45,
        })
        .await
        .expect("resize");
    let mut writer = attached.stdin().expect("stdin");
    let mut reader = attached.stdout().expect("stdout");
    let status = attached.take_status().expect("status");
    writer
        .write_all(b"stty size; test -t 0 && echo on-a-tty; exit 3\n")
        .await
        .expect("write stdin");

    let mut output = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut output))
        .await
        .expect("the shell ends in time")
        .expect("read stdout");
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("45 123"), "{output}");
    assert!(output.contains("on-a-tty"), "{output}");
    let status = status.await.expect("a status");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
}

#[tokio::test]
async fn patched_labels_and_deadline_end_the_pod() {
    let (_emulator, client) = emulator().await;
    running_pod(&client, "bounded").await;
    let patch = |body: Value| async {
        pods(&client)
            .patch("bounded", &PatchParams::default(), &Patch::Merge(body))
            .await
    };

    let patched = patch(json!({
        "metadata": {"labels": {"team": "web"}, "annotations": {"note": "a b"}},
        "spec": {"activeDeadlineSeconds": 1},
    }))
    .await
    .unwrap();
    let raised = patch(json!({"spec": {"activeDeadlineSeconds": 5}})).await;
    let other = patch(json!({"spec": {"restartPolicy": "Always"}})).await;
    let ended = wait_for(&client, "bounded", is_finished).await;

    assert_eq!(patched.metadata.labels.unwrap()["team"], "web");
    assert_eq!(patched.metadata.annotations.unwrap()["note"], "a b");
    for refused in [raised, other] {
        match refused {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
            other => panic!("expected 422, got {other:?}"),
        }
    }
    assert_eq!(phase(&ended), "Failed");
    let status = ended.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
}
