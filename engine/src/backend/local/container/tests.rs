//! Argument building and runtime lookup, plus steps in real podman
//! containers. The podman tests build a busybox image with
//! `tests/support/build-test-image.sh` and are skipped, with a printed
//! reason, when podman is not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, StepOutcome, StepSpec};
use crate::model::{JobId, Stream};

const TEST_IMAGE: &str = "danube-test-busybox";

/// Settings this machine's podman needs: the default `crun` fails on its
/// hybrid cgroups, and its default ulimits cannot be applied.
const TEST_CONTAINERS_CONF: &str =
    "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n";

fn spec(workdir: &Path, command: &str) -> StepSpec {
    StepSpec {
        job_id: JobId::new(),
        step_id: 7,
        task: "main".to_owned(),
        step: "in-image".to_owned(),
        command: command.to_owned(),
        workdir: workdir.to_path_buf(),
        env: BTreeMap::new(),
        image: Some(TEST_IMAGE.to_owned()),
        timeout: None,
        on_spawn: None,
    }
}

fn write_executable(path: &Path) {
    std::fs::write(path, "#!/bin/sh\nexit 0\n").expect("write fake runtime");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod fake runtime");
}

#[test]
fn run_arguments_name_env_variables_without_values() {
    let mut step = spec(Path::new("/tmp"), "echo \"$API_TOKEN\" | wc -c");
    step.env
        .insert("API_TOKEN".to_owned(), "s3cret-value".to_owned());
    step.env.insert("CI".to_owned(), "true".to_owned());
    let request = RunRequest {
        name: "danube-job-7",
        spec: &step,
        image: "alpine:3",
        mount: Path::new("/data/workspaces/job"),
        workdir: Path::new("/workspace/sub"),
        interactive: false,
    };

    let arguments: Vec<String> = run_arguments(&request)
        .into_iter()
        .map(|argument| argument.into_string().expect("test arguments are UTF-8"))
        .collect();

    assert!(
        arguments
            .iter()
            .all(|argument| !argument.contains("s3cret-value")),
        "{arguments:?}"
    );
    let env_names: Vec<&str> = arguments
        .windows(2)
        .filter(|pair| pair[0] == "--env")
        .map(|pair| pair[1].as_str())
        .collect();
    assert_eq!(env_names, ["API_TOKEN", "CI"]);
    assert_eq!(arguments[0], "run");
    assert!(arguments.contains(&"--rm".to_owned()));
    assert!(arguments.contains(&"--entrypoint=/bin/sh".to_owned()));
    let volume = arguments
        .iter()
        .position(|argument| argument == "--volume")
        .unwrap();
    assert_eq!(arguments[volume + 1], "/data/workspaces/job:/workspace");
    let workdir = arguments
        .iter()
        .position(|argument| argument == "--workdir")
        .unwrap();
    assert_eq!(arguments[workdir + 1], "/workspace/sub");
    assert_eq!(
        arguments[arguments.len() - 3..],
        ["alpine:3", "-c", "echo \"$API_TOKEN\" | wc -c"]
    );
}

#[test]
fn interactive_arguments_open_shell_on_tty() {
    let mut step = spec(Path::new("/tmp"), "make test");
    step.env
        .insert("API_TOKEN".to_owned(), "s3cret-value".to_owned());
    let request = RunRequest {
        name: "danube-job-7-shell",
        spec: &step,
        image: "alpine:3",
        mount: Path::new("/data/workspaces/job"),
        workdir: Path::new("/workspace"),
        interactive: true,
    };

    let arguments: Vec<String> = run_arguments(&request)
        .into_iter()
        .map(|argument| argument.into_string().expect("test arguments are UTF-8"))
        .collect();

    assert!(arguments.contains(&"--interactive=true".to_owned()));
    assert!(!arguments.contains(&"--interactive=false".to_owned()));
    assert!(
        !arguments
            .iter()
            .any(|argument| argument.contains("s3cret-value"))
    );
    assert!(
        !arguments.contains(&"make test".to_owned()),
        "{arguments:?}"
    );
    assert_eq!(arguments[arguments.len() - 2..], ["--tty", "alpine:3"]);
}

#[test]
fn container_name_has_job_and_step_ids() {
    let mut step = spec(Path::new("/tmp"), "true");
    step.job_id = JobId("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned());
    assert_eq!(
        container_name(&step),
        "danube-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-7"
    );

    step.job_id = JobId("odd id/with:chars".to_owned());
    assert_eq!(container_name(&step), "danube-odd-id-with-chars-7");
}

#[test]
fn workdir_below_the_workspace_maps_below_slash_workspace() {
    let temp = TempDir::new().unwrap();
    let workspace = std::fs::canonicalize(temp.path()).unwrap();
    std::fs::create_dir_all(workspace.join("app/src")).unwrap();

    let (mount, workdir) = mount_and_workdir(Some(&workspace), &workspace.join("app/src"));
    assert_eq!(mount, workspace);
    assert_eq!(workdir, Path::new("/workspace/app/src"));

    let (mount, workdir) = mount_and_workdir(None, &workspace.join("app"));
    assert_eq!(mount, workspace.join("app"));
    assert_eq!(workdir, Path::new("/workspace"));
}

#[test]
fn podman_is_preferred_over_docker() {
    let temp = TempDir::new().unwrap();
    let only_docker = temp.path().join("only-docker");
    let both = temp.path().join("both");
    std::fs::create_dir_all(&only_docker).unwrap();
    std::fs::create_dir_all(&both).unwrap();
    write_executable(&only_docker.join("docker"));
    write_executable(&both.join("docker"));
    write_executable(&both.join("podman"));
    let search = |dirs: &[&Path]| ContainerConfig {
        search_path: Some(std::env::join_paths(dirs).unwrap()),
        ..ContainerConfig::default()
    };

    assert_eq!(
        search(&[&only_docker]).find_runtime().unwrap(),
        Some(only_docker.join("docker"))
    );
    assert_eq!(
        search(&[&only_docker, &both]).find_runtime().unwrap(),
        Some(both.join("podman"))
    );
    assert_eq!(search(&[temp.path()]).find_runtime().unwrap(), None);
}

#[test]
fn configured_runtime_is_found_by_name_or_path() {
    let temp = TempDir::new().unwrap();
    let custom = temp.path().join("my-runtime");
    write_executable(&custom);
    std::fs::write(temp.path().join("not-executable"), "").unwrap();
    let configured = |runtime: &str| ContainerConfig {
        runtime: Some(runtime.into()),
        search_path: Some(temp.path().into()),
        ..ContainerConfig::default()
    };

    assert_eq!(
        configured("my-runtime").find_runtime().unwrap(),
        Some(custom.clone())
    );
    assert_eq!(
        configured(custom.to_str().unwrap()).find_runtime().unwrap(),
        Some(custom)
    );
    let err = configured("not-executable").find_runtime().unwrap_err();
    assert!(
        matches!(err, BackendError::ContainerRuntimeNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not-executable"), "{err}");
}

#[tokio::test]
async fn missing_runtime_error_names_step_and_image() {
    let temp = TempDir::new().unwrap();
    let backend =
        LocalBackend::new(temp.path().join("workspaces")).with_container_config(ContainerConfig {
            search_path: Some(temp.path().into()),
            ..ContainerConfig::default()
        });
    let (sender, _receiver) = mpsc::channel(4);

    let err = backend
        .run_step(spec(temp.path(), "true"), sender, CancellationToken::new())
        .await
        .unwrap_err();

    assert!(
        matches!(err, BackendError::NoContainerRuntime { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("`in-image`"), "{message}");
    assert!(message.contains(TEST_IMAGE), "{message}");
    assert!(
        message.contains("install podman or docker, or remove `image=`"),
        "{message}"
    );
}

/// A backend that runs `image=` steps with podman, or `None` (after printing
/// why) when podman is not installed.
struct Podman {
    temp: TempDir,
    backend: LocalBackend,
    config: ContainerConfig,
}

fn podman() -> Option<Podman> {
    let temp = TempDir::new().expect("temp dir");
    let conf = temp.path().join("containers.conf");
    std::fs::write(&conf, TEST_CONTAINERS_CONF).expect("write containers.conf");
    let config = ContainerConfig {
        runtime: Some("podman".into()),
        client_env: BTreeMap::from([("CONTAINERS_CONF".to_owned(), conf.display().to_string())]),
        ..ContainerConfig::default()
    };
    if config.find_runtime().is_err() {
        eprintln!("skipping: podman is not installed");
        return None;
    }
    build_test_image(&conf);
    let backend =
        LocalBackend::new(temp.path().join("workspaces")).with_container_config(config.clone());
    Some(Podman {
        temp,
        backend,
        config,
    })
}

/// Builds the test image once per test process.
fn build_test_image(conf: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/build-test-image.sh");
        let output = std::process::Command::new(&script)
            .arg(TEST_IMAGE)
            .env("CONTAINERS_CONF", conf)
            .env("DANUBE_CONTAINER_RUNTIME", "podman")
            .output()
            .expect("run build-test-image.sh");
        assert!(
            output.status.success(),
            "build-test-image.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

impl Podman {
    async fn project_workspace(&self) -> (JobId, PathBuf) {
        let project = self.temp.path().join("project");
        std::fs::create_dir_all(project.join("sub")).unwrap();
        std::fs::write(project.join("input.txt"), "from the host\n").unwrap();
        std::fs::write(project.join("sub/nested.txt"), "nested\n").unwrap();
        let job = JobId::new();
        let workspace = self
            .backend
            .prepare_workspace(&job, &project, false)
            .await
            .unwrap();
        (job, workspace.path)
    }

    async fn run(&self, spec: StepSpec) -> (StepOutcome, Collected) {
        let (sender, receiver) = mpsc::channel(16);
        let collector = tokio::spawn(collect(receiver));
        let outcome = self
            .backend
            .run_step(spec, sender, CancellationToken::new())
            .await
            .expect("run_step");
        (outcome, collector.await.unwrap())
    }

    async fn container_exists(&self, name: &str) -> bool {
        let runtime = self.config.find_runtime().unwrap().unwrap();
        call_runtime(
            &runtime,
            &["container", "inspect", name],
            &self.config.client_env,
        )
        .await
        .is_ok()
    }
}

#[derive(Debug, Default)]
struct Collected {
    stdout: String,
    stderr: String,
    engine: String,
}

async fn collect(mut receiver: mpsc::Receiver<crate::backend::OutputChunk>) -> Collected {
    let mut collected = Collected::default();
    while let Some(chunk) = receiver.recv().await {
        let text = String::from_utf8_lossy(&chunk.data);
        match chunk.stream {
            Stream::Stdout => collected.stdout.push_str(&text),
            Stream::Stderr => collected.stderr.push_str(&text),
            Stream::Engine => collected.engine.push_str(&text),
        }
    }
    collected
}

#[tokio::test]
async fn step_in_image_reads_and_writes_the_workspace() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(&workspace, "cat input.txt; echo written > output.txt; pwd");
    step.job_id = job.clone();

    let (outcome, collected) = podman.run(step).await;

    assert_eq!(
        outcome,
        StepOutcome::Exited(0),
        "stderr: {}",
        collected.stderr
    );
    assert_eq!(collected.stdout, "from the host\n/workspace\n");
    assert_eq!(
        std::fs::read_to_string(workspace.join("output.txt")).unwrap(),
        "written\n"
    );

    let mut nested = spec(&workspace.join("sub"), "pwd; cat nested.txt");
    nested.job_id = job;
    let (outcome, collected) = podman.run(nested).await;
    assert_eq!(
        outcome,
        StepOutcome::Exited(0),
        "stderr: {}",
        collected.stderr
    );
    assert_eq!(collected.stdout, "/workspace/sub\nnested\n");
}

#[tokio::test]
async fn image_step_reports_exit_and_streams() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(&workspace, "echo out; echo err >&2; exit 7");
    step.job_id = job;

    let (outcome, collected) = podman.run(step).await;

    assert_eq!(outcome, StepOutcome::Exited(7));
    assert_eq!(collected.stdout, "out\n");
    assert_eq!(collected.stderr, "err\n");
    assert_eq!(collected.engine, "");
}

#[tokio::test]
async fn only_step_env_reaches_container() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(
        &workspace,
        "echo \"$DANUBE_TEST_VALUE|${CARGO_PKG_NAME:-absent}\"",
    );
    step.job_id = job;
    step.env.insert(
        "DANUBE_TEST_VALUE".to_owned(),
        "value with spaces".to_owned(),
    );

    let (outcome, collected) = podman.run(step).await;

    assert_eq!(
        outcome,
        StepOutcome::Exited(0),
        "stderr: {}",
        collected.stderr
    );
    assert!(
        std::env::var("CARGO_PKG_NAME").is_ok(),
        "cargo sets CARGO_PKG_NAME for tests"
    );
    assert_eq!(collected.stdout, "value with spaces|absent\n");
}

#[tokio::test]
async fn runtime_argv_has_no_env_values() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(&workspace, "echo started; sleep 2");
    step.job_id = job;
    step.env
        .insert("DEPLOY_TOKEN".to_owned(), "tok-4242-secret".to_owned());
    let name = container_name(&step);
    let (sender, mut receiver) = mpsc::channel::<crate::backend::OutputChunk>(16);

    let (command_lines, outcome) = tokio::join!(
        async {
            let first = receiver
                .recv()
                .await
                .expect("the step prints before sleeping");
            assert_eq!(&first.data[..], b"started\n");
            let lines = command_lines_containing(&name);
            while receiver.recv().await.is_some() {}
            lines
        },
        podman
            .backend
            .run_step(step, sender, CancellationToken::new()),
    );

    assert_eq!(outcome.unwrap(), StepOutcome::Exited(0));
    assert!(
        !command_lines.is_empty(),
        "no process mentions container {name}"
    );
    for line in command_lines {
        assert!(!line.contains("tok-4242-secret"), "{line}");
    }
}

/// Returns the command lines of all processes that mention `needle`.
fn command_lines_containing(needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            lines.push(line);
        }
    }
    lines
}

#[tokio::test]
async fn timeout_removes_the_container() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(
        &workspace,
        "trap '' TERM; echo started; while :; do sleep 1; done",
    );
    step.job_id = job;
    step.timeout = Some(Duration::from_secs(2));
    let name = container_name(&step);
    let started = Instant::now();

    let (outcome, collected) = podman.run(step).await;

    assert_eq!(outcome, StepOutcome::TimedOut);
    assert_eq!(collected.stdout, "started\n");
    assert!(
        collected.engine.contains("step timed out after 2s"),
        "{}",
        collected.engine
    );
    assert!(
        !podman.container_exists(&name).await,
        "container {name} still exists"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cancel_removes_the_container() {
    let Some(podman) = podman() else { return };
    let (job, workspace) = podman.project_workspace().await;
    let mut step = spec(&workspace, "echo started; sleep 100");
    step.job_id = job;
    let name = container_name(&step);
    let cancel = CancellationToken::new();
    let (sender, mut receiver) = mpsc::channel::<crate::backend::OutputChunk>(16);

    let (engine, outcome) = tokio::join!(
        async {
            let mut engine = String::new();
            while let Some(chunk) = receiver.recv().await {
                match chunk.stream {
                    Stream::Stdout => cancel.cancel(),
                    Stream::Engine => engine.push_str(&String::from_utf8_lossy(&chunk.data)),
                    Stream::Stderr => {}
                }
            }
            engine
        },
        podman.backend.run_step(step, sender, cancel.clone()),
    );

    assert_eq!(outcome.unwrap(), StepOutcome::Cancelled);
    assert_eq!(engine, "danube: step cancelled; killed its container\n");
    assert!(
        !podman.container_exists(&name).await,
        "container {name} still exists"
    );
}
