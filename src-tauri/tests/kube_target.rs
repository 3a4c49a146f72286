//! The desktop app's engine runs a job on a cluster context of the
//! kubeconfig: the embedded engine and its desktop routes, as the window
//! uses them, against the Kubernetes API-server emulator. The emulator
//! needs root, as it runs containers as processes in their own namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use danube::backend::targets::TargetSettings;
use danube_tests::kube::{CONTEXT, Emulator, EmulatorOptions, JOBS_NAMESPACE};
use danube_tests::{danube_bin, workspace_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a job on the emulator may take, pod start and Python included.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// The context of the test kubeconfig whose server refuses connections.
const DEAD_CONTEXT: &str = "dead-cluster";

/// The context of the test kubeconfig whose server never responds.
const SILENT_CONTEXT: &str = "silent-cluster";

mod common;

use common::TestApp;

/// The embedded engine of a desktop app whose kubeconfig lists the
/// emulator's context and ones that cannot be reached.
struct DesktopEngine {
    app: TestApp,
}

impl std::ops::Deref for DesktopEngine {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl DesktopEngine {
    fn start(data_root: &Path, kubeconfig: &Path) -> DesktopEngine {
        let targets = TargetSettings {
            kubeconfig: Some(kubeconfig.to_owned()),
            tools_image: Some("danube-coordinator:test".to_owned()),
            ..TargetSettings::default()
        };
        DesktopEngine {
            app: TestApp::start(data_root, targets, Duration::from_secs(120)),
        }
    }

    fn start_job(&self, target: &str) -> (StatusCode, Value) {
        let project = workspace_root().join("examples/quickstart");
        let response = self
            .request(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({"project": project, "target": target}))
            .send()
            .unwrap();
        (response.status(), response.json().unwrap())
    }

    /// Polls the job until it is final and returns it.
    fn wait_until_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let job = self.get(&format!("/api/v1/jobs/{id}"));
            let state = job["state"].as_str().unwrap_or_default();
            if ["success", "failure", "timeout", "cancelled"].contains(&state) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is still `{state}` after {JOB_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Writes the emulator's kubeconfig with two more contexts: one whose
/// server is a loopback port that nothing listens on, and one whose server
/// is `silent`, which accepts connections and never responds.
fn kubeconfig_with_dead_contexts(
    emulator: &Emulator,
    silent: &std::net::TcpListener,
    into: &Path,
) -> PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let path = into.join("kubeconfig");
    std::fs::copy(emulator.kubeconfig_path(), &path).unwrap();
    add_context(&path, DEAD_CONTEXT, &server);
    let silent_server = format!("https://{}", silent.local_addr().unwrap());
    add_context(&path, SILENT_CONTEXT, &silent_server);
    path
}

/// Adds context `name` for a cluster at `server` to the kubeconfig at
/// `path`, with the emulator's user.
fn add_context(path: &Path, name: &str, server: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": name, "cluster": {"server": server}}));
    config["contexts"].as_array_mut().unwrap().push(json!({
        "name": name,
        "context": {"cluster": name, "user": CONTEXT},
    }));
    std::fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// The emulator, and a desktop engine whose kubeconfig lists it and a dead
/// context, with its data in a temporary folder.
struct Setup {
    runtime: tokio::runtime::Runtime,
    emulator: Emulator,
    sandbox: tempfile::TempDir,
    desktop: DesktopEngine,
    /// The server of [`SILENT_CONTEXT`]: its backlog completes connections
    /// that nothing reads.
    _silent: std::net::TcpListener,
}

impl Setup {
    fn start() -> Setup {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Containers find danube-supervisor next to the danube binary.
        let bin_dir = danube_bin().parent().unwrap().to_owned();
        let emulator = runtime
            .block_on(Emulator::start(
                EmulatorOptions::default().path_prepend(&bin_dir),
            ))
            .expect("the emulator starts");
        let sandbox = tempfile::tempdir().unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let kubeconfig = kubeconfig_with_dead_contexts(&emulator, &silent, sandbox.path());
        let desktop = DesktopEngine::start(&sandbox.path().join("data"), &kubeconfig);
        Setup {
            runtime,
            emulator,
            sandbox,
            desktop,
            _silent: silent,
        }
    }
}

fn pods_left(runtime: &tokio::runtime::Runtime, emulator: &Emulator) -> Vec<String> {
    runtime.block_on(async {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
        let pods = api.list(&Default::default()).await.unwrap();
        pods.items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| pod.metadata.name)
            .collect()
    })
}

#[test]
fn job_runs_on_kubeconfig_context() {
    let Setup {
        runtime,
        emulator,
        sandbox: _sandbox,
        desktop,
        _silent,
    } = Setup::start();

    // The picker lists both contexts as targets a job can start on.
    let listed = desktop.get("/api/v1/desktop/targets");
    let ids: Vec<&str> = listed["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|target| target["id"].as_str().unwrap())
        .collect();
    let emulator_target = format!("kube:{CONTEXT}");
    assert_eq!(
        ids,
        [
            "local",
            emulator_target.as_str(),
            "kube:dead-cluster",
            "kube:silent-cluster"
        ]
    );
    assert_eq!(listed["targets"][1]["available"], true);

    let (status, job) = desktop.start_job(&emulator_target);

    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = desktop.wait_until_final(id);
    assert_eq!(job["state"], "success", "{job}");
    let steps = job["tasks"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "{job}");
    assert!(
        emulator.request_count("create", "pods") >= 1,
        "the job ran in a pod of the emulator, not as local processes"
    );
    assert_eq!(job["target"], emulator_target.as_str(), "{job}");
    assert!(
        pods_left(&runtime, &emulator).is_empty(),
        "the job's pod outlived the job"
    );

    // A rerun with an empty body runs where the job ran, not as local processes.
    let pods_before = emulator.request_count("create", "pods");
    let response = desktop
        .request(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/rerun"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let rerun: Value = response.json().unwrap();
    assert_eq!(rerun["target"], emulator_target.as_str(), "{rerun}");
    let rerun = desktop.wait_until_final(rerun["id"].as_str().unwrap());
    assert_eq!(rerun["state"], "success", "{rerun}");
    assert_eq!(emulator.request_count("create", "pods"), pods_before + 1);

    // A rerun may choose another target.
    let response = desktop
        .request(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/rerun"))
        .json(&json!({"target": "local"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let local: Value = response.json().unwrap();
    assert_eq!(local["target"], "local", "{local}");
    let local = desktop.wait_until_final(local["id"].as_str().unwrap());
    assert_eq!(local["state"], "success", "{local}");
    assert_eq!(emulator.request_count("create", "pods"), pods_before + 1);

    desktop.app.engine.stop();
}

#[test]
fn watch_reruns_on_kubeconfig_context() {
    let Setup {
        runtime,
        emulator,
        sandbox,
        desktop,
        _silent,
    } = Setup::start();
    let project = sandbox.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::copy(
        workspace_root().join("examples/quickstart/danubefile.py"),
        project.join("danubefile.py"),
    )
    .unwrap();
    let target = format!("kube:{CONTEXT}");

    let response = desktop
        .request(reqwest::Method::POST, "/api/v1/watches")
        .json(&json!({"project": project, "target": target}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let watch: Value = response.json().unwrap();
    let watch_id = watch["id"].as_str().unwrap();
    let first = watch["current_job"].as_str().unwrap().to_owned();
    let first = desktop.wait_until_final(&first);
    assert_eq!(first["state"], "success", "{first}");
    assert_eq!(first["target"], target.as_str(), "{first}");

    std::fs::write(project.join("notes.txt"), "changed\n").unwrap();
    let second = wait_for_next_job(&desktop, watch_id, first["id"].as_str().unwrap());
    let second = desktop.wait_until_final(&second);

    assert_eq!(second["state"], "success", "{second}");
    assert_eq!(second["trigger_type"], "watch", "{second}");
    assert_eq!(second["trigger_ref"], "notes.txt", "{second}");
    assert_eq!(second["target"], target.as_str(), "{second}");
    assert_eq!(emulator.request_count("create", "pods"), 2);
    let response = desktop
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/watches/{watch_id}"),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        pods_left(&runtime, &emulator).is_empty(),
        "a pod outlived its job"
    );

    desktop.app.engine.stop();
}

/// Waits until the watch session `watch_id` has a job other than
/// `previous` and returns its id.
fn wait_for_next_job(desktop: &DesktopEngine, watch_id: &str, previous: &str) -> String {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let watches = desktop.get("/api/v1/watches");
        let watch = watches["watches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|watch| watch["id"] == watch_id)
            .expect("the session still runs")
            .clone();
        if let Some(current) = watch["current_job"].as_str().filter(|id| *id != previous) {
            return current.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no job followed the change within {JOB_TIMEOUT:?}: {watch}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unreachable_context_fails_job_start() {
    let Setup {
        runtime: _runtime,
        emulator: _emulator,
        sandbox: _sandbox,
        desktop,
        _silent,
    } = Setup::start();

    let (status, body) = desktop.start_job(&format!("kube:{DEAD_CONTEXT}"));

    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "target_unreachable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(DEAD_CONTEXT), "{message}");
    assert!(message.contains("failed to reach the cluster"), "{message}");
    assert!(message.contains(" at https://127.0.0.1:"), "{message}");
    assert!(
        message.contains("; check that it runs and that the kubeconfig's server address is right"),
        "{message}"
    );
    let jobs = desktop.get("/api/v1/jobs");
    assert_eq!(jobs["jobs"], json!([]), "no job was recorded");

    let (status, body) = desktop.start_job(&format!("kube:{SILENT_CONTEXT}"));
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(SILENT_CONTEXT), "{message}");
    assert!(message.contains("did not respond within 20s"), "{message}");

    let (status, body) = desktop.start_job("kube:no-such-context");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no-such-context"), "{message}");
    assert!(
        message.contains(DEAD_CONTEXT),
        "the known contexts are listed: {message}"
    );

    desktop.app.engine.stop();
}
