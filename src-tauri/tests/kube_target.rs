//! The desktop app's engine runs a job on a cluster context of the
//! kubeconfig: the embedded engine and its desktop routes, as the window
//! uses them, against the Kubernetes API-server emulator. The emulator
//! needs root, as it runs containers as processes in their own namespaces.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use danube::backend::targets::TargetSettings;
use danube_desktop::picker::FolderPicker;
use danube_desktop::{EmbeddedEngine, EngineOptions};
use danube_tests::kube::{CONTEXT, Emulator, EmulatorOptions, JOBS_NAMESPACE};
use danube_tests::{danube_bin, shared_venv, workspace_root};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

/// How long a job on the emulator may take, pod start and Python included.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// The context of the test kubeconfig whose server refuses connections.
const DEAD_CONTEXT: &str = "dead-cluster";

/// A dialog that the tests never open.
struct NoDialog;

impl FolderPicker for NoDialog {
    fn pick_folder(&self) -> Pin<Box<dyn Future<Output = Option<PathBuf>> + Send + '_>> {
        Box::pin(async { None })
    }
}

/// The embedded engine of a desktop app whose kubeconfig lists the
/// emulator's context and one that cannot be reached.
struct DesktopEngine {
    engine: EmbeddedEngine,
    token: String,
    client: Client,
}

impl DesktopEngine {
    fn start(data_root: &Path, kubeconfig: &Path) -> DesktopEngine {
        static VENV: Once = Once::new();
        // SAFETY: set once, before the first engine starts; the other
        // threads of this binary (the emulators') do not read it.
        VENV.call_once(|| unsafe { std::env::set_var("DANUBE_PYTHON_VENV", shared_venv()) });
        let engine = EmbeddedEngine::start(
            EngineOptions {
                data_root: data_root.to_owned(),
                project: None,
                picker: Arc::new(NoDialog),
                targets: TargetSettings {
                    kubeconfig: Some(kubeconfig.to_owned()),
                    tools_image: Some("danube-coordinator:test".to_owned()),
                    ..TargetSettings::default()
                },
            },
            |_| {},
        )
        .expect("the embedded engine starts");
        let token = engine
            .login_url()
            .split_once("token=")
            .map(|(_, token)| token.to_owned())
            .expect("the login address carries the token");
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        DesktopEngine {
            engine,
            token,
            client,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("http://{}{path}", self.engine.addr()))
            .bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> Value {
        let response = self.request(reqwest::Method::GET, path).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().unwrap()
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

/// Writes the emulator's kubeconfig with a second context whose server is
/// a loopback port that nothing listens on.
fn kubeconfig_with_dead_context(emulator: &Emulator, into: &Path) -> PathBuf {
    let text = std::fs::read_to_string(emulator.kubeconfig_path()).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    config["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": DEAD_CONTEXT, "cluster": {"server": server}}));
    config["contexts"].as_array_mut().unwrap().push(json!({
        "name": DEAD_CONTEXT,
        "context": {"cluster": DEAD_CONTEXT, "user": CONTEXT},
    }));
    let path = into.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
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
    let kubeconfig = kubeconfig_with_dead_context(&emulator, sandbox.path());
    let desktop = DesktopEngine::start(&sandbox.path().join("data"), &kubeconfig);

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
        ["local", emulator_target.as_str(), "kube:dead-cluster"]
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
    assert!(
        pods_left(&runtime, &emulator).is_empty(),
        "the job's pod outlived the job"
    );

    desktop.engine.stop();
}

#[test]
fn unreachable_context_fails_job_start() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorOptions::default()))
        .expect("the emulator starts");
    let sandbox = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_with_dead_context(&emulator, sandbox.path());
    let desktop = DesktopEngine::start(&sandbox.path().join("data"), &kubeconfig);

    let (status, body) = desktop.start_job(&format!("kube:{DEAD_CONTEXT}"));

    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "target_unreachable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(DEAD_CONTEXT), "{message}");
    assert!(message.contains("failed to reach the cluster"), "{message}");
    let jobs = desktop.get("/api/v1/jobs");
    assert_eq!(jobs["jobs"], json!([]), "no job was recorded");

    let (status, body) = desktop.start_job("kube:no-such-context");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no-such-context"), "{message}");
    assert!(
        message.contains(DEAD_CONTEXT),
        "the known contexts are listed: {message}"
    );

    desktop.engine.stop();
}
