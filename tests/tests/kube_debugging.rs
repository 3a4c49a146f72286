//! Debugging a paused step on the kubernetes backend, through the engine
//! library against the API-server emulator: ad-hoc commands in the pod with
//! the step's environment, browsing the workspace, continue, retry and
//! abort.

use std::sync::Arc;
use std::time::Duration;

use danube::backend::WorkspaceEntry;
use danube::backend::kubernetes::{
    ClusterOptions, KubeSettings, KubernetesBackend, POD_START_LIMIT, PodSettings,
};
use danube::config::DataDir;
use danube::model::{JobState, RunState};
use danube::orchestrator::debug::{Decision, Pause};
use danube::orchestrator::{Breakpoints, Engine, EngineParts, JobHandle, JobRequest};
use danube::secrets::{Scope, SecretVault};
use danube::store::Store;
use danube_tests::engine::on_failure;
use danube_tests::kube::{Emulator, EmulatorOptions, JOBS_NAMESPACE};
use danube_tests::{Sandbox, danube_bin, shared_venv};

/// Upper bound for waiting on a pause or a job's end, so that a broken
/// engine fails the test instead of hanging it.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Starts the emulator, whose containers find `danube-supervisor` next to
/// the `danube` binary, and an engine whose backend is the emulator.
async fn kube_engine(sandbox: &Sandbox) -> (Emulator, Engine) {
    let bin_dir = danube_bin().parent().unwrap().to_owned();
    let emulator = Emulator::start(EmulatorOptions::default().path_prepend(&bin_dir))
        .await
        .expect("the emulator starts");
    let cluster = ClusterOptions {
        context: None,
        kubeconfig: Some(emulator.kubeconfig_path().to_owned()),
        namespace: None,
    }
    .resolve()
    .await
    .unwrap();

    let data = DataDir::open(&sandbox.data_dir()).unwrap();
    let mut pod = PodSettings::new(cluster.namespace.clone(), "etest".into());
    pod.tools_image = "danube-coordinator:test".into();
    let backend = KubernetesBackend::connect(
        cluster,
        KubeSettings {
            pod,
            workspaces_root: data.workspaces_dir(),
            pod_start_limit: POD_START_LIMIT,
            max_download_bytes: 1 << 20,
            egress: Default::default(),
            coordinator: None,
        },
    )
    .unwrap();

    let store = Store::open(&data.database_path()).await.unwrap();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("DANUBE_PYTHON_VENV", shared_venv()) };
    let python = danube::python::ensure_env(&data, &|_| {}).await.unwrap();
    let engine = Engine::start(EngineParts {
        backend: Arc::new(backend),
        data,
        store,
        python,
        max_artifact_bytes: 1 << 20,
    })
    .await
    .unwrap();
    (emulator, engine)
}

fn request(sandbox: &Sandbox, breakpoints: Breakpoints) -> JobRequest {
    JobRequest {
        project: sandbox.project(),
        repository: None,
        pipeline: None,
        in_place: false,
        max_parallel: 4,
        trigger: danube::model::TriggerType::Local,
        trigger_ref: None,
        breakpoints,
        backend: None,
    }
}

async fn next_pause(handle: &mut JobHandle) -> Pause {
    danube_tests::engine::next_pause(handle, WAIT_LIMIT).await
}

async fn finish(handle: JobHandle) -> danube::orchestrator::JobOutcome {
    tokio::time::timeout(WAIT_LIMIT, handle.wait())
        .await
        .expect("the job ends")
}

/// Names of the job pods that are not being deleted.
async fn live_pods(emulator: &Emulator) -> Vec<String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
    let pods = api.list(&Default::default()).await.unwrap();
    pods.items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.metadata.name)
        .collect()
}

fn entry_names(entry: &WorkspaceEntry) -> Vec<String> {
    match entry {
        WorkspaceEntry::Directory { entries, .. } => {
            entries.iter().map(|entry| entry.name.clone()).collect()
        }
        WorkspaceEntry::File { path, .. } => panic!("`{path}` is a file, not a folder"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn command_in_pod_sees_step_env() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, secrets, step, task

@task()
def deploy():
    step.run("echo prepared > prepared.txt", name="prepare")
    step.run("echo deploying", name="push", env={"TOKEN": secrets.get("DEPLOY_TOKEN")})

pipeline(name="app", tasks=[deploy])
"#,
    );
    let (emulator, engine) = kube_engine(&sandbox).await;
    let data = DataDir::open(&sandbox.data_dir()).unwrap();
    let vault = SecretVault::open(engine.store().clone(), &data.encryption_key_path())
        .await
        .unwrap();
    vault
        .set(&Scope::Global, "DEPLOY_TOKEN", b"hunter2-very-secret")
        .await
        .unwrap();
    let mut handle = engine
        .submit(request(
            &sandbox,
            Breakpoints {
                before: vec!["push".into()],
                on_failure: false,
            },
        ))
        .await
        .unwrap();
    let pause = next_pause(&mut handle).await;
    let debugger = handle.debugger();

    let output = debugger
        .run_command(
            "echo token=$TOKEN; pwd; echo made > made.txt; echo oops >&2; exit 4",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let second = debugger
        .run_command("cat made.txt", Duration::from_secs(30))
        .await
        .unwrap();
    let root = debugger.browse("").await.unwrap();
    let made = debugger.browse("made.txt").await.unwrap();
    let escape = debugger.browse("../").await;

    assert_eq!(pause.workdir, std::path::Path::new("/workspace"));
    assert_eq!(output.exit_code, Some(4), "{output:?}");
    assert!(output.stdout.contains("token=***"), "{output:?}");
    assert!(!output.stdout.contains("hunter2"), "{output:?}");
    assert!(output.stdout.contains("/workspace\n"), "{output:?}");
    assert_eq!(output.stderr, "oops\n");
    assert_eq!(
        second.stdout, "made\n",
        "a second command runs in the same pod"
    );
    let names = entry_names(&root);
    assert!(names.contains(&"prepared.txt".to_owned()), "{names:?}");
    assert!(names.contains(&"made.txt".to_owned()), "{names:?}");
    let WorkspaceEntry::File { content, .. } = made else {
        panic!("made.txt is a file: {made:?}");
    };
    assert_eq!(content, b"made\n");
    assert!(escape.is_err(), "browsing left the workspace: {escape:?}");

    debugger.resume(Decision::Continue).unwrap();
    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    assert!(
        live_pods(&emulator).await.is_empty(),
        "the pod outlived the job"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_fix_in_pod_succeeds() {
    let sandbox = Sandbox::new();
    sandbox.file("status.txt", "broken\n").pipeline(
        r#"
from danube import pipeline, step, task

@task()
def test():
    step.run("cat status.txt; grep -q fixed status.txt", name="check")

pipeline(name="app", tasks=[test])
"#,
    );
    let (_emulator, engine) = kube_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, on_failure()))
        .await
        .unwrap();
    let id = handle.id.clone();
    next_pause(&mut handle).await;

    let debugger = handle.debugger();
    let fix = debugger
        .run_command("echo fixed > status.txt", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fix.exit_code, Some(0), "{fix:?}");
    debugger.resume(Decision::Retry).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Success, "{outcome:?}");
    let steps = engine.store().list_steps(&id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state, RunState::Success);
    assert_eq!(steps[0].attempt, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_cancels_job_and_deletes_pod() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task()
def test():
    step.run("exit 3", name="check")

pipeline(name="app", tasks=[test])
"#,
    );
    let (emulator, engine) = kube_engine(&sandbox).await;
    let mut handle = engine
        .submit(request(&sandbox, on_failure()))
        .await
        .unwrap();
    next_pause(&mut handle).await;
    assert_eq!(
        live_pods(&emulator).await.len(),
        1,
        "the paused job keeps its pod"
    );

    handle.debugger().resume(Decision::Abort).unwrap();

    let outcome = finish(handle).await;
    assert_eq!(outcome.state, JobState::Cancelled, "{outcome:?}");
    assert!(
        live_pods(&emulator).await.is_empty(),
        "the pod outlived the job"
    );
}
