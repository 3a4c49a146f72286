//! The kubernetes backend end to end: the real `danube` binary runs
//! pipelines with `--target kube`, against the API-server emulator, or
//! against a real cluster when `DANUBE_TEST_KUBECONFIG` names a kubeconfig
//! (its current context is used; fault-injection tests then skip).

use std::path::{Path, PathBuf};
use std::time::Duration;

use danube_tests::kube::{Emulator, EmulatorOptions, ExecFault, JOBS_NAMESPACE, PolicyResource};
use danube_tests::terminal::Terminal;
use danube_tests::{Run, Sandbox, danube_bin, step, task, workspace_root};
use serde_json::Value;

/// Where the tests' pods run.
struct Cluster {
    runtime: tokio::runtime::Runtime,
    emulator: Option<Emulator>,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// The emulator with `options`, or the real cluster of
    /// `DANUBE_TEST_KUBECONFIG`.
    fn start(options: EmulatorOptions) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if let Some(kubeconfig) = std::env::var_os("DANUBE_TEST_KUBECONFIG") {
            return Cluster {
                runtime,
                emulator: None,
                kubeconfig: PathBuf::from(kubeconfig),
            };
        }
        // Containers find danube-supervisor (the tools container's
        // `danube-supervisor install`) next to the danube binary.
        let bin_dir = danube_bin().parent().unwrap().to_owned();
        let emulator = runtime
            .block_on(Emulator::start(options.path_prepend(&bin_dir)))
            .expect("the emulator starts");
        let kubeconfig = emulator.kubeconfig_path().to_owned();
        Cluster {
            runtime,
            emulator: Some(emulator),
            kubeconfig,
        }
    }

    fn emulated() -> Cluster {
        Cluster::start(EmulatorOptions::default())
    }

    /// Starts the emulator with `options` for a test that injects faults, or
    /// returns `None` (after printing why) when the tests run on a real
    /// cluster.
    fn for_faults(test: &str, options: EmulatorOptions) -> Option<Cluster> {
        if std::env::var_os("DANUBE_TEST_KUBECONFIG").is_some() {
            eprintln!("skipped {test}: it injects faults, which only the emulator can");
            return None;
        }
        Some(Cluster::start(options))
    }

    /// Returns the emulator of a cluster made by [`Cluster::for_faults`].
    fn emulator(&self) -> &Emulator {
        self.emulator
            .as_ref()
            .expect("fault tests run on the emulator")
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--target".into(),
            "kube".into(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--tools-image".into(),
            "danube-coordinator:test".into(),
        ]
    }

    /// Arguments that put the coordinator in the job pod, run by a Python
    /// that the pod's user may execute.
    fn pod_coordinator_args(&self) -> Vec<String> {
        vec![
            "--coordinator".into(),
            "pod".into(),
            "--coordinator-image".into(),
            "danube-coordinator:test".into(),
            "--coordinator-python".into(),
            coordinator_venv().join("bin/python").display().to_string(),
        ]
    }

    fn run(&self, sandbox: &Sandbox, project: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["run".to_owned(), project.display().to_string()];
        args.extend(self.args());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sandbox.danube(&args)
    }

    /// Names of every pod in the jobs namespace, `Terminating` ones included.
    fn all_pods(&self) -> Vec<String> {
        let Some(emulator) = &self.emulator else {
            return Vec::new();
        };
        self.runtime.block_on(async {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
            let pods = api.list(&Default::default()).await.unwrap();
            pods.items
                .into_iter()
                .filter_map(|pod| pod.metadata.name)
                .collect()
        })
    }

    /// Names of the pods left in the jobs namespace.
    fn pods(&self) -> Vec<String> {
        let Some(emulator) = &self.emulator else {
            return Vec::new();
        };
        self.runtime.block_on(async {
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
}

/// Returns a venv for coordinators in job pods, as the coordinator image
/// has one. It is made from the system's `/usr/bin/python3`, which the
/// pod's user (65532) may run, unlike an interpreter under `/root`. It has
/// the SDK's pinned packages and finds the SDK in the repository through a
/// `.pth` file.
fn coordinator_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let target = danube_bin().parent().unwrap().to_owned();
        let venv = target.join("test-coordinator-venv");
        let requirements = workspace_root().join("sdk/python/danube/_requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).unwrap();
        let ready = venv.join(".ready");
        if std::fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
            return venv;
        }

        let _ = std::fs::remove_dir_all(&venv);
        let made = std::process::Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let installed = std::process::Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .output()
            .unwrap();
        assert!(installed.status.success(), "{installed:?}");
        let site = std::process::Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap();
        let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
        let sdk = workspace_root().join("sdk/python");
        std::fs::write(site.join("danube-sdk.pth"), format!("{}\n", sdk.display())).unwrap();
        std::fs::write(&ready, wanted).unwrap();
        venv
    })
    .clone()
}

fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// Replaces the job id, date-times (as `zipfile -l` prints them) and
/// durations (as `unittest` prints them) in a step log with placeholders.
fn comparable_log(log: &str, job_id: &str) -> String {
    let date_time = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").unwrap();
    let duration = regex::Regex::new(r"\b\d+\.\d+s\b").unwrap();
    let log = log.replace(job_id, "JOB");
    let log = date_time.replace_all(&log, "DATE");
    duration.replace_all(&log, "DURATION").into_owned()
}

/// Steps as `(task, step, state, exit code)`, sorted.
fn step_states(job: &Value) -> Vec<(String, String, String, String)> {
    let mut steps: Vec<(String, String, String, String)> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["task"].as_str().unwrap_or_default().to_owned(),
                step["name"].as_str().unwrap_or_default().to_owned(),
                step["state"].as_str().unwrap_or_default().to_owned(),
                step["exit_code"].to_string(),
            )
        })
        .collect();
    steps.sort();
    steps
}

#[test]
fn quickstart_runs_in_a_pod() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();

    let run = cluster.run(&sandbox, &example("quickstart"), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success");
    assert_eq!(job["steps"].as_array().unwrap().len(), 5);
    let target = job["job"]["target"].as_str().unwrap_or_default();
    if cluster.emulator.is_some() {
        assert_eq!(target, format!("kube:{}", danube_tests::kube::CONTEXT));
    } else {
        assert!(target.starts_with("kube:"), "{target}");
    }
    assert!(run.stdout.contains("hello from a step"), "{}", run.text());
    assert!(cluster.pods().is_empty(), "the pod outlived the job");
}

/// `PATH` of the steps on both backends when they are compared: system
/// folders only, because the pod's user (65532) cannot enter a folder such
/// as `/root/.pyenv`, and steps on both sides must find the same programs.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn examples_end_the_same_as_on_the_local_backend() {
    let cluster = Cluster::start(EmulatorOptions {
        path: SYSTEM_PATH.into(),
        ..EmulatorOptions::default()
    });
    compare_examples_with_local_backend(&cluster, &[]);
}

#[test]
fn examples_with_the_coordinator_in_the_pod_end_as_on_the_local_backend() {
    let cluster = Cluster::start(EmulatorOptions {
        path: SYSTEM_PATH.into(),
        ..EmulatorOptions::default()
    });
    compare_examples_with_local_backend(&cluster, &cluster.pod_coordinator_args());
}

/// Runs each example on the local backend and on `cluster` with `extra`
/// arguments, and compares states, step logs and artifacts.
fn compare_examples_with_local_backend(cluster: &Cluster, extra: &[String]) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    for name in ["quickstart", "dag", "release"] {
        let local = Sandbox::new();
        let local_run = Run::from_output(
            local
                .command()
                .env("PATH", SYSTEM_PATH)
                .args(["run", example(name).to_str().unwrap()])
                .output()
                .unwrap(),
        );
        let kube = Sandbox::new();
        let kube_run = cluster.run(&kube, &example(name), &extra);
        assert_eq!(kube_run.code, local_run.code, "{name}: {}", kube_run.text());
        let local_job = local.last_job();
        let kube_job = kube.last_job();
        assert_eq!(
            kube_job["job"]["state"], local_job["job"]["state"],
            "{name}"
        );
        assert_eq!(step_states(&kube_job), step_states(&local_job), "{name}");

        let local_id = local_job["job"]["id"].as_str().unwrap();
        let kube_id = kube_job["job"]["id"].as_str().unwrap();
        for (task_name, step_name, _, _) in step_states(&local_job) {
            // `ls -la` prints owners and dates, which differ by nature.
            if step_name == "list workspace" {
                continue;
            }
            // Job ids and the times files were written differ between the
            // two runs, and nothing else may.
            assert_eq!(
                comparable_log(&kube.step_log(kube_id, &task_name, &step_name), kube_id),
                comparable_log(&local.step_log(local_id, &task_name, &step_name), local_id),
                "{name}: log of {task_name} › {step_name}"
            );
        }
        let artifacts = |job: &Value| -> Vec<(Value, Value)> {
            job["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|artifact| (artifact["name"].clone(), artifact["size"].clone()))
                .collect()
        };
        assert_eq!(
            artifacts(&kube_job),
            artifacts(&local_job),
            "{name}: artifacts"
        );
    }
}

#[test]
fn files_steps_change_reach_the_pipeline_script() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.file("gone.txt", "deleted by a step\n");
    sandbox.file("kept.txt", "left alone\n");
    sandbox.pipeline(
        r#"
import os
from danube import artifacts, pipeline, step

@pipeline(name="sync")
def main():
    step.run("echo made > made.txt && rm gone.txt && mkdir -p out/deep && echo x > out/deep/x.txt && ln -s made.txt link", name="change")
    assert open("made.txt").read() == "made\n"
    assert not os.path.exists("gone.txt"), "a deleted file is still in the local copy"
    assert open("kept.txt").read() == "left alone\n"
    assert os.readlink("link") == "made.txt"
    artifacts.upload("out")
    step.run("rm -r out", name="remove")
    assert not os.path.exists("out")
"#,
    );

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let names: Vec<&str> = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|artifact| artifact["name"].as_str())
        .collect();
    assert_eq!(names, ["out"]);
}

#[test]
fn step_output_exit_code_env_and_timeout() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="checks")
def checks():
    out = step.run("printf 'to stdout'; printf 'to stderr' >&2", name="streams", capture=True)
    assert out == "to stdout", out
    assert step.run("exit 3", name="three", check=False) == 3
    assert step.run('test "$GREETING" = hi && test "$PWD" = /workspace && test "$DANUBE_WORKSPACE" = /workspace', name="env", env={"GREETING": "hi"}) == 0
    assert step.run("sleep 30 & sleep 30", name="slow", timeout=1, check=False) == 124
    step.run("seq 1 200000", name="big")
"#,
    );

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(step(&job, "main", "three")["exit_code"], 3);
    assert_eq!(step(&job, "main", "slow")["state"], "timeout");
    let big = sandbox.step_log(&id, "main", "big");
    assert!(
        big.contains("200000"),
        "the last line of large output is missing"
    );
    assert_eq!(big.lines().count(), 200000, "lines were lost");
}

#[test]
fn step_emptying_the_workspace_keeps_the_supervisor_records() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.project().join(".danube")).unwrap();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="clean")
def clean():
    step.run("rm -rf .danube ./* && test -z \"$(ls -A)\"", name="clean")
    step.run("echo after > after.txt", name="after")
"#,
    );

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "clean")["exit_code"], 0);
    assert_eq!(step(&job, "main", "after")["state"], "success");
}

#[test]
fn steps_have_a_writable_home_outside_the_workspace() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="home")
def home():
    step.run('touch ~/x && test -f "$HOME/x" && test "$HOME" = /home/danube && test ! -e x', name="touch")
"#,
    );

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "touch")["exit_code"], 0);
}

#[test]
fn declared_plan_labels_and_bounds_pod() {
    // It reads the pod while the step runs, which only the emulator shows.
    let Some(cluster) = Cluster::for_faults(
        "declared_plan_labels_and_bounds_pod",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();
    let release = sandbox.path().join("release");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="Web build/main", max_duration=300)
def main():
    step.run("echo started; while [ ! -e {} ]; do sleep 0.05; done", name="wait")
"#,
        release.display()
    ));
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();

    let pod = wait_for_running_step(&cluster);
    let emulator = cluster.emulator();
    let object = cluster.runtime.block_on(async {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
        api.get(&pod).await.unwrap()
    });
    std::fs::write(&release, "").unwrap();
    let run = Run::from_output(child.wait_with_output().unwrap());

    assert_eq!(run.code, 0, "{}", run.text());
    let labels = object.metadata.labels.unwrap_or_default();
    assert_eq!(labels["danube.dev/pipeline"], "Web_build_main");
    let annotations = object.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["danube.dev/pipeline"], "Web build/main");
    // max_duration, plus the 10-minute margin, plus the seconds the pod
    // lived before the plan was declared.
    let deadline = object.spec.unwrap().active_deadline_seconds.unwrap();
    assert!((900..960).contains(&deadline), "{deadline}");
}

/// Starts the emulator for fault test `test` and a sandbox holding
/// `pipeline`; `None` on a real cluster, where faults cannot be injected.
fn fault_sandbox(test: &str, pipeline: &str) -> Option<(Cluster, Sandbox)> {
    let cluster = Cluster::for_faults(test, EmulatorOptions::default())?;
    let sandbox = Sandbox::new();
    sandbox.pipeline(pipeline);
    Some((cluster, sandbox))
}

#[test]
fn cluster_errors_are_printed_once_with_their_fix() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "cluster_errors_are_printed_once_with_their_fix",
        r#"
from danube import pipeline, step

@pipeline(name="errors")
def main():
    step.run("true", name="t")
"#,
    ) else {
        return;
    };
    // A port nothing listens on: connections are refused.
    let refused = sandbox.path().join("refused-kubeconfig");
    std::fs::write(
        &refused,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  \
         context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: \
         \"https://127.0.0.1:1\"}\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let project = sandbox.project();
    let project = project.to_str().unwrap();

    let no_namespace = cluster.run(&sandbox, &sandbox.project(), &["--namespace", "nosuchns"]);
    let no_file = sandbox.danube(&[
        "run",
        project,
        "--target",
        "kube",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    let no_server = sandbox.danube(&[
        "run",
        project,
        "--target",
        "kube",
        "--kubeconfig",
        refused.to_str().unwrap(),
    ]);

    let text = no_namespace.text();
    assert_ne!(no_namespace.code, 0, "{text}");
    assert_eq!(text.matches("\"nosuchns\" not found").count(), 1, "{text}");
    assert!(text.contains("deploy/kubernetes/namespaces.yaml"), "{text}");
    assert!(!text.contains("Status {"), "{text}");
    let text = no_file.text();
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    let text = no_server.text();
    assert_ne!(no_server.code, 0, "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(text.contains("at https://127.0.0.1:1"), "{text}");
    assert!(
        text.contains("check that it runs and that the kubeconfig's server address is right"),
        "{text}"
    );
    assert!(
        !text.contains("kube_client"),
        "kube-rs's log leaked: {text}"
    );
}

#[test]
fn secrets_reach_steps_only_over_stdin() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, secrets

@pipeline(name="secret")
def main():
    step.run('test "$TOKEN" = s3cr3t-value-77 && echo "token is $TOKEN"', name="use", env={"TOKEN": secrets.get("TOKEN")})
"#,
    );
    let mut child = sandbox
        .command()
        .args(["secret", "set", "TOKEN"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cr3t-value-77").unwrap();
    assert!(child.wait().unwrap().success());

    let run = cluster.run(&sandbox, &sandbox.project(), &["-vv"]);

    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("token is ***"), "{}", run.text());
    assert!(
        !run.text().contains("s3cr3t-value-77"),
        "the secret leaked: {}",
        run.text()
    );
}

#[test]
fn image_without_shell_runs_in_its_own_container() {
    let cluster = Cluster::start(EmulatorOptions::default().image_without_shell("kaniko-like:1"));
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="images")
def main():
    step.run("echo made-by-worker > shared.txt", name="write")
    step.run("cat shared.txt", name="read", image="kaniko-like:1")
    code = step.run("echo $HOME | cat", name="shell", image="kaniko-like:1", check=False)
    assert code == 127, code
"#,
    );

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap().to_owned();
    assert!(
        sandbox
            .step_log(&id, "main", "read")
            .contains("made-by-worker")
    );
    let shell = sandbox.step_log(&id, "main", "shell");
    assert!(shell.contains("shell syntax"), "{shell}");
}

#[test]
fn image_pull_error_fails_the_job_with_the_reason() {
    let Some(cluster) = Cluster::for_faults(
        "image_pull_error_fails_the_job_with_the_reason",
        EmulatorOptions::default().failing_image("no-such-image:1"),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline, step\n@pipeline(name='p')\ndef main():\n    step.run('true')\n");

    let run = cluster.run(
        &sandbox,
        &sandbox.project(),
        &["--worker-image", "no-such-image:1"],
    );

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("ErrImagePull") || reason.contains("ImagePullBackOff"),
        "{reason}"
    );
    assert!(reason.contains("no-such-image:1"), "{reason}");
    assert!(cluster.pods().is_empty());
}

#[test]
fn unschedulable_pod_fails_the_job_with_the_reason() {
    let Some(cluster) = Cluster::for_faults(
        "unschedulable_pod_fails_the_job_with_the_reason",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    cluster.emulator().cordon(true);
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline, step\n@pipeline(name='p')\ndef main():\n    step.run('true')\n");

    let run = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(run.code, 1, "{}", run.text());
    let reason = sandbox.last_job()["job"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("Unschedulable"), "{reason}");
}

/// Starts a pipeline whose step signals readiness through a file, runs
/// `fault` once the step runs, and returns the finished run.
fn run_with_fault(
    cluster: &Cluster,
    sandbox: &Sandbox,
    fault: impl FnOnce(&Emulator, &str, i32),
) -> Run {
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="faulty")
def main():
    step.run("echo started; sleep 60", name="long")
"#,
    );
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args());
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();

    let emulator = cluster.emulator();
    let pod = wait_for_running_step(cluster);
    fault(emulator, &pod, child.id() as i32);
    Run::from_output(child.wait_with_output().unwrap())
}

/// Waits until a job pod has a step running and returns the pod's name.
fn wait_for_running_step(cluster: &Cluster) -> String {
    let emulator = cluster.emulator();
    for _ in 0..600 {
        for pod in cluster.pods() {
            let state = emulator.volume_dir(JOBS_NAMESPACE, &pod, "state");
            let started = state.is_some_and(|dir| {
                std::fs::read_dir(dir.join("steps"))
                    .map(|entries| entries.count() > 0)
                    .unwrap_or(false)
            });
            if started {
                return pod;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no step started within 30 seconds");
}

#[test]
fn oom_kill_fails_the_job_quickly() {
    let Some(cluster) =
        Cluster::for_faults("oom_kill_fails_the_job_quickly", EmulatorOptions::default())
    else {
        return;
    };
    let sandbox = Sandbox::new();

    let run = run_with_fault(&cluster, &sandbox, |emulator, pod, _| {
        emulator.oom_kill(JOBS_NAMESPACE, pod, "worker").unwrap();
    });

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(reason.contains("OOMKilled"), "{reason}");
    assert_eq!(task(&job, "main")["state"], "failure");
    let long = step(&job, "main", "long");
    assert_eq!(long["state"], "failure");
    assert_eq!(long["exit_code"], 137, "{long}");
}

#[test]
fn eviction_and_lost_node_fail_the_job() {
    for fault in ["evict", "lose_node"] {
        let Some(cluster) = Cluster::for_faults(
            "eviction_and_lost_node_fail_the_job",
            EmulatorOptions::default(),
        ) else {
            return;
        };
        let sandbox = Sandbox::new();

        let run = run_with_fault(&cluster, &sandbox, |emulator, pod, _| match fault {
            "evict" => emulator.evict(JOBS_NAMESPACE, pod).unwrap(),
            _ => emulator.lose_node(),
        });

        assert_eq!(run.code, 1, "{fault}: {}", run.text());
        let reason = sandbox.last_job()["job"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        let expected = if fault == "evict" {
            "Evicted"
        } else {
            "NodeLost"
        };
        assert!(reason.contains(expected), "{fault}: {reason}");
        // A pod on a lost node stays `Terminating` unless deleted with a
        // grace period of 0.
        assert_eq!(cluster.all_pods(), Vec::<String>::new(), "{fault}");
    }
}

/// Runs a step that prints `before`, waits until `release` exists, prints
/// `after` and exits with 5. While it waits, ends its exec connections with
/// `fault`, calls `then` and creates `release`. Returns the finished run.
fn run_with_exec_fault(
    cluster: &Cluster,
    sandbox: &Sandbox,
    fault: ExecFault,
    then: impl FnOnce(&Emulator),
) -> Run {
    let release = sandbox.path().join("release");
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="drop")
def main():
    step.run("echo before; while [ ! -e {} ]; do sleep 0.05; done; echo after; exit 5", name="long", check=False)
"#,
        release.display()
    ));
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args());
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();

    let emulator = cluster.emulator();
    let pod = wait_for_running_step(cluster);
    let stdout = emulator
        .volume_dir(JOBS_NAMESPACE, &pod, "state")
        .unwrap()
        .join("steps");
    wait_for_output(&stdout, "before");
    assert!(
        emulator.fail_exec_connections(fault) > 0,
        "no exec was open"
    );
    then(emulator);
    std::fs::write(&release, "").unwrap();
    Run::from_output(child.wait_with_output().unwrap())
}

/// Waits until a step's recorded stdout under `steps` contains `text`.
fn wait_for_output(steps: &Path, text: &str) {
    for _ in 0..600 {
        let found = std::fs::read_dir(steps)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                std::fs::read_to_string(entry.path().join("stdout"))
                    .is_ok_and(|stdout| stdout.contains(text))
            });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no step printed `{text}` within 30 seconds");
}

/// Asserts that the step `long` of `run_with_exec_fault` ended with its own
/// exit code and each line once, after a reattach.
fn assert_reattached(run: &Run, sandbox: &Sandbox, how: &str) {
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(step(&job, "main", "long")["exit_code"], 5);
    let log = sandbox.step_log(&id, "main", "long");
    assert_eq!(log.matches("before").count(), 1, "{log}");
    assert_eq!(log.matches("after").count(), 1, "{log}");
    let note = format!("the connection to this step {how}; reattaching");
    assert!(log.contains(&note), "{log}");
}

#[test]
fn dropped_exec_connection_is_reattached() {
    for fault in [ExecFault::Reset, ExecFault::Close] {
        let Some(cluster) = Cluster::for_faults(
            "dropped_exec_connection_is_reattached",
            EmulatorOptions::default(),
        ) else {
            return;
        };
        let sandbox = Sandbox::new();

        let run = run_with_exec_fault(&cluster, &sandbox, fault, |_| {});

        assert_reattached(&run, &sandbox, "dropped");
    }
}

#[test]
fn stalled_exec_connection_is_reattached() {
    let Some(cluster) = Cluster::for_faults(
        "stalled_exec_connection_is_reattached",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();

    let run = run_with_exec_fault(&cluster, &sandbox, ExecFault::Stall, |_| {});

    assert_reattached(&run, &sandbox, "stalled");
}

#[test]
fn unreachable_supervisor_fails_the_step() {
    let Some(cluster) = Cluster::for_faults(
        "unreachable_supervisor_fails_the_step",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();

    let run = run_with_exec_fault(&cluster, &sandbox, ExecFault::Reset, |emulator| {
        emulator.refuse_execs(true);
    });

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    assert_eq!(step(&job, "main", "long")["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("lost"), "{reason}");
    assert!(reason.contains("connection refused"), "{reason}");
}

#[test]
fn cancel_kills_the_step_and_deletes_the_pod() {
    let Some(cluster) = Cluster::for_faults(
        "cancel_kills_the_step_and_deletes_the_pod",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();

    // SIGINT is what Ctrl-C sends to the danube process.
    let run = run_with_fault(&cluster, &sandbox, |_, _, pid| unsafe {
        libc::kill(pid, libc::SIGINT);
    });

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "cancelled");
    assert_eq!(step(&job, "main", "long")["state"], "cancelled");
    assert!(
        cluster.pods().is_empty(),
        "the pod outlived the cancelled job"
    );
}

#[test]
fn orphaned_pod_is_deleted_at_the_next_start() {
    let Some(cluster) = Cluster::for_faults(
        "orphaned_pod_is_deleted_at_the_next_start",
        EmulatorOptions::default(),
    ) else {
        return;
    };
    let sandbox = Sandbox::new();
    let run = run_with_fault(&cluster, &sandbox, |_, _, pid| unsafe {
        libc::kill(pid, libc::SIGKILL);
    });
    assert_ne!(run.code, 0);
    assert_eq!(cluster.pods().len(), 1, "the killed engine left its pod");

    sandbox.pipeline("from danube import pipeline, step\n@pipeline(name='p')\ndef main():\n    step.run('true')\n");
    let next = cluster.run(&sandbox, &sandbox.project(), &[]);

    assert_eq!(next.code, 0, "{}", next.text());
    assert!(next.stderr.contains("deleted 1 pod(s)"), "{}", next.text());
    assert!(cluster.pods().is_empty());
    let jobs = sandbox.danube(&["jobs", "--json", "--limit", "2"]);
    let list: Value = serde_json::from_str(&jobs.stdout).unwrap();
    assert_eq!(list[1]["state"], "failure");
}

/// A pipeline whose one step waits for the file `go` in the pod's
/// workspace and exits with the code it holds.
const EGRESS_PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="egress", egress_allowlist=["pypi.org", "10.0.0.0/8:5000"])
def main():
    step.run("echo started; while [ ! -e go ]; do sleep 0.1; done; exit $(cat go)", name="wait")
"#;

/// What a job's egress policy looked like while its step ran, and how the
/// job ended.
struct EgressRun {
    run: Run,
    pod: String,
    pod_uid: String,
    policies: Vec<Value>,
}

/// Runs [`EGRESS_PIPELINE`] with `extra` arguments, reads the policies of
/// `resource` once its step runs, then lets `finish` end the step or the
/// job.
fn run_with_egress(
    cluster: &Cluster,
    sandbox: &Sandbox,
    resource: PolicyResource,
    extra: &[&str],
    finish: impl FnOnce(&Path, i32),
) -> EgressRun {
    sandbox.pipeline(EGRESS_PIPELINE);
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args())
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();

    let emulator = cluster.emulator();
    let pod = wait_for_running_step(cluster);
    let policies = emulator.policies(resource, JOBS_NAMESPACE);
    let pod_uid = cluster.runtime.block_on(async {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
        api.get(&pod).await.unwrap().metadata.uid.unwrap()
    });
    let workspace = emulator
        .volume_dir(JOBS_NAMESPACE, &pod, "workspace")
        .unwrap();
    finish(&workspace, child.id() as i32);
    EgressRun {
        run: Run::from_output(child.wait_with_output().unwrap()),
        pod,
        pod_uid,
        policies,
    }
}

/// Asserts that `policy` selects the pod of the run's job only and is
/// owned by that pod.
fn assert_selects_job_pod(policy: &Value, selector: &str, egress: &EgressRun) {
    let pod = egress.pod.as_str();
    let job_id = pod.strip_prefix("danube-job-").unwrap();
    assert_eq!(policy["metadata"]["name"], format!("{pod}-egress"));
    assert_eq!(
        policy["spec"][selector]["matchLabels"]["danube.dev/job"],
        job_id
    );
    let owner = &policy["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Pod");
    assert_eq!(owner["name"], pod);
    assert_eq!(owner["uid"], egress.pod_uid.as_str());
}

/// Writes the step's exit code where it waits for it.
fn exit_step(code: u8) -> impl FnOnce(&Path, i32) {
    move |workspace, _| std::fs::write(workspace.join("go"), format!("{code}\n")).unwrap()
}

#[test]
fn cilium_policy_lives_with_job() {
    let cluster = Cluster::start(EmulatorOptions::default().with_cilium());
    let sandbox = Sandbox::new();

    let egress = run_with_egress(
        &cluster,
        &sandbox,
        PolicyResource::Cilium,
        &["--egress-allow", "*.github.com"],
        exit_step(0),
    );

    assert_eq!(egress.run.code, 0, "{}", egress.run.text());
    let [policy] = egress.policies.as_slice() else {
        panic!("expected one policy, got {:?}", egress.policies);
    };
    assert_selects_job_pod(policy, "endpointSelector", &egress);
    let rules = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert_eq!(rules[0]["toPorts"][0]["ports"][0]["port"], "53");
    assert_eq!(rules[1]["toCIDR"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(rules[1]["toPorts"][0]["ports"][0]["port"], "5000");
    assert_eq!(
        rules[2]["toFQDNs"],
        serde_json::json!([{"matchPattern": "*.github.com"}, {"matchName": "pypi.org"}])
    );
    assert_eq!(rules[2]["toPorts"][0]["ports"][0]["port"], "443");
    let emulator = cluster.emulator();
    assert!(
        emulator
            .policies(PolicyResource::Plain, JOBS_NAMESPACE)
            .is_empty()
    );
    assert!(
        emulator
            .policies(PolicyResource::Cilium, JOBS_NAMESPACE)
            .is_empty(),
        "the policy outlived the job"
    );
    assert_eq!(emulator.request_count("get", "/apis/cilium.io/v2"), 1);
    assert_eq!(emulator.request_count("create", "ciliumnetworkpolicies"), 1);
    assert_eq!(emulator.request_count("delete", "ciliumnetworkpolicies"), 1);
}

#[test]
fn plain_policy_keeps_only_cidrs() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();

    let egress = run_with_egress(&cluster, &sandbox, PolicyResource::Plain, &[], exit_step(3));

    assert_eq!(egress.run.code, 1, "{}", egress.run.text());
    assert_eq!(sandbox.last_job()["job"]["state"], "failure");
    let [policy] = egress.policies.as_slice() else {
        panic!("expected one policy, got {:?}", egress.policies);
    };
    assert_selects_job_pod(policy, "podSelector", &egress);
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    let rules = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.0/8");
    assert_eq!(rules[1]["ports"][0]["port"], 5000);
    let text = egress.run.text();
    assert!(
        text.contains("were dropped from it, so their hosts stay unreachable: pypi.org:443"),
        "{text}"
    );
    let emulator = cluster.emulator();
    assert!(
        emulator
            .policies(PolicyResource::Plain, JOBS_NAMESPACE)
            .is_empty(),
        "the policy outlived the failed job"
    );
    assert_eq!(emulator.request_count("delete", "networkpolicies"), 1);
}

#[test]
fn cancelled_job_deletes_its_policy() {
    let cluster = Cluster::start(EmulatorOptions::default().with_cilium());
    let sandbox = Sandbox::new();

    let egress = run_with_egress(
        &cluster,
        &sandbox,
        PolicyResource::Cilium,
        &[],
        |_, pid| unsafe {
            libc::kill(pid, libc::SIGINT);
        },
    );

    assert_eq!(egress.run.code, 1, "{}", egress.run.text());
    assert_eq!(sandbox.last_job()["job"]["state"], "cancelled");
    assert_eq!(egress.policies.len(), 1);
    let emulator = cluster.emulator();
    assert!(
        emulator
            .policies(PolicyResource::Cilium, JOBS_NAMESPACE)
            .is_empty(),
        "the policy outlived the cancelled job"
    );
    assert!(cluster.pods().is_empty());
}

#[test]
fn fixed_egress_rejects_widening_pipeline() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(EGRESS_PIPELINE);

    let run = cluster.run(
        &sandbox,
        &sandbox.project(),
        &["--egress-allow", "pypi.org", "--egress-fixed"],
    );

    // 2: the pipeline could not be loaded, so nothing ran.
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains(
            "error: the pipeline could not be loaded, so nothing ran:\n\
             the engine rejected the plan of pipeline `egress`: this engine does not let \
             pipelines widen egress (`--egress-fixed`), but the pipeline's egress_allowlist \
             adds `10.0.0.0/8:5000`"
        ),
        "{}",
        run.text()
    );
    assert!(!run.text().contains("WARN"), "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("adds `10.0.0.0/8:5000`"), "{reason}");
    assert!(job["steps"].as_array().unwrap().is_empty(), "a step ran");
    let emulator = cluster.emulator();
    assert_eq!(emulator.request_count("create", "networkpolicies"), 0);
    assert!(cluster.pods().is_empty());
}

#[test]
fn pod_coordinator_on_any_address_needs_engine_address() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();

    let run = cluster.run(
        &sandbox,
        &example("quickstart"),
        &["--coordinator", "pod", "--rpc-listen", "0.0.0.0:0"],
    );

    assert_ne!(run.code, 0, "{}", run.text());
    assert!(
        run.stderr.contains(
            "--coordinator pod with --rpc-listen 0.0.0.0:0 needs --engine-address \
             (DANUBE_ENGINE_ADDRESS)"
        ),
        "{}",
        run.text()
    );
    assert!(cluster.pods().is_empty(), "a pod was created");
}

#[test]
fn dry_run_needs_no_kubeconfig() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(EGRESS_PIPELINE);
    let home = sandbox.path().join("home-without-kube");
    std::fs::create_dir_all(&home).unwrap();

    let dry_run = |target: &str| {
        let output = sandbox
            .command()
            .args(["run", sandbox.project().to_str().unwrap()])
            .args(["--target", target, "--namespace", "ci-jobs", "--dry-run"])
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        Run::from_output(output)
    };

    for (target, context) in [("kube", "placeholder"), ("kube:kind-ci", "kind-ci")] {
        let run = dry_run(target);

        assert_eq!(run.code, 0, "{}", run.text());
        let first_line = run.stdout.lines().next().unwrap_or_default();
        assert_eq!(
            first_line,
            format!(
                "# No kubeconfig was found, so context `{context}` and namespace `ci-jobs` are \
                 placeholders; pass --kubeconfig or set KUBECONFIG for a real context."
            )
        );
        let pod: serde_json::Value =
            serde_saphyr::from_str(run.stdout.split("\n---\n").next().unwrap()).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["namespace"], "ci-jobs");
        assert!(
            run.stdout.contains("# No egress policy of the job's own"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn dry_run_prints_egress_policy() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(EGRESS_PIPELINE);

    let run = cluster.run(
        &sandbox,
        &sandbox.project(),
        &["--dry-run", "--egress-allow", "10.0.0.0/8"],
    );

    assert_eq!(run.code, 0, "{}", run.text());
    let documents: Vec<serde_json::Value> = run
        .stdout
        .split("\n---\n")
        .map(|document| serde_saphyr::from_str(document).unwrap())
        .collect();
    assert_eq!(documents.len(), 3, "{}", run.stdout);
    assert_eq!(documents[0]["kind"], "Pod");
    let job_label = &documents[0]["metadata"]["labels"]["danube.dev/job"];
    let cilium = &documents[1];
    assert_eq!(cilium["kind"], "CiliumNetworkPolicy");
    assert_eq!(
        &cilium["spec"]["endpointSelector"]["matchLabels"]["danube.dev/job"],
        job_label
    );
    assert_eq!(cilium["spec"]["egress"][1]["toCIDR"][0], "10.0.0.0/8");
    let plain = &documents[2];
    assert_eq!(plain["kind"], "NetworkPolicy");
    assert_eq!(
        &plain["spec"]["podSelector"]["matchLabels"]["danube.dev/job"],
        job_label
    );
    let cidrs: Vec<&Value> = plain["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["to"].as_array().into_iter().flatten())
        .map(|peer| &peer["ipBlock"]["cidr"])
        .collect();
    assert!(
        cidrs.contains(&&Value::from("10.0.0.0/8")),
        "{}",
        run.stdout
    );
    if let Some(emulator) = &cluster.emulator {
        assert!(
            emulator.request_counts().is_empty(),
            "the dry run reached the cluster"
        );
    }
}

/// Starts `danube run --break-on-failure` on a pseudo-terminal.
fn run_on_terminal(cluster: &Cluster, sandbox: &Sandbox) -> (Terminal, std::process::Child) {
    let (terminal, process_side) = Terminal::open();
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args())
        .arg("--break-on-failure")
        .stdin(process_side.try_clone().unwrap())
        .stdout(process_side.try_clone().unwrap())
        .stderr(process_side);
    let danube = command.spawn().unwrap();
    (terminal, danube)
}

#[test]
fn debug_shell_runs_in_the_pod_with_the_step_env() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, secrets

@pipeline(name="shell")
def main():
    step.run("test -e fixed", name="check", env={"GREETING": "hello", "TOKEN": secrets.get("TOKEN")})
    step.run("echo after the shell", name="after")
"#,
    );
    let secret = "s3cr3t-shell-value-91";
    let mut child = sandbox
        .command()
        .args(["secret", "set", "TOKEN"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), secret.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let (mut terminal, mut danube) = run_on_terminal(&cluster, &sandbox);

    let opened = terminal.wait_for("opening a shell in the step's environment", 0);
    let prompt = terminal.wait_for("$ ", opened);
    terminal.type_text("echo \"got-$GREETING-${#TOKEN}-$(pwd)-$(stty size)\"; touch fixed; exit\n");
    // The pod's terminal got the local one's size over the resize channel.
    let answered = terminal.wait_for("got-hello-21-/workspace-33 111", prompt);
    let exited = terminal.wait_for(
        "the shell exited with code 0; the step is still paused",
        answered,
    );
    terminal.wait_for("[c]ontinue, [r]etry, [a]bort?", exited);
    terminal.type_text("r\n");
    let status = danube.wait().unwrap();

    let text = terminal.text();
    assert_eq!(status.code(), Some(0), "{text}");
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success", "{text}");
    assert_eq!(step(&job, "main", "after")["state"], "success");
    assert!(!text.contains(secret), "the secret was echoed: {text}");
    let emulator = cluster.emulator();
    let uris = emulator.exec_uris();
    assert!(uris.iter().any(|uri| uri.contains("tty=true")), "{uris:?}");
    assert!(
        uris.iter()
            .all(|uri| !uri.contains(secret) && !uri.contains("GREETING")),
        "{uris:?}"
    );
}

#[test]
fn debug_shell_reports_a_broken_connection() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "debug_shell_reports_a_broken_connection",
        r#"
from danube import pipeline, step

@pipeline(name="reset")
def main():
    step.run("exit 3", name="fail")
"#,
    ) else {
        return;
    };

    let (mut terminal, mut danube) = run_on_terminal(&cluster, &sandbox);
    let opened = terminal.wait_for("opening a shell in the step's environment", 0);
    let prompt = terminal.wait_for("$ ", opened);
    assert!(cluster.emulator().fail_exec_connections(ExecFault::Reset) > 0);
    let broken = terminal.wait_for("the connection to the shell broke (", prompt);
    let still = terminal.wait_for("the step is still paused", broken);
    terminal.wait_for("[c]ontinue, [r]etry, [a]bort?", still);
    terminal.type_text("a\n");
    let status = danube.wait().unwrap();

    assert_eq!(status.code(), Some(1), "{}", terminal.text());
    assert_eq!(sandbox.last_job()["job"]["state"], "cancelled");
    assert!(cluster.pods().is_empty(), "the pod outlived the job");
}

#[test]
fn debug_shell_names_an_image_without_shell() {
    let cluster = Cluster::start(EmulatorOptions::default().image_without_shell("kaniko-like:1"));
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="no-shell")
def main():
    step.run("cat missing.txt", name="read", image="kaniko-like:1")
"#,
    );

    let (mut terminal, mut danube) = run_on_terminal(&cluster, &sandbox);
    let opened = terminal.wait_for("opening a shell in the step's environment", 0);
    let refused = terminal.wait_for("this image has no shell at `/bin/sh`", opened);
    terminal.wait_for("[c]ontinue, [r]etry, [a]bort?", refused);
    terminal.type_text("a\n");
    let status = danube.wait().unwrap();

    assert_eq!(status.code(), Some(1), "{}", terminal.text());
    assert_eq!(sandbox.last_job()["job"]["state"], "cancelled");
}

/// Starts `danube run` with the coordinator in the pod and returns the
/// child and the job pod's workspace folder on the host, once the
/// coordinator has written `marker` there.
fn start_with_pod_coordinator(
    cluster: &Cluster,
    sandbox: &Sandbox,
    marker: &str,
) -> (std::process::Child, String, PathBuf) {
    let mut command = sandbox.command();
    command
        .arg("run")
        .arg(sandbox.project())
        .args(cluster.args())
        .args(cluster.pod_coordinator_args())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();

    let emulator = cluster.emulator();
    for _ in 0..1200 {
        for pod in cluster.pods() {
            if let Some(workspace) = emulator.volume_dir(JOBS_NAMESPACE, &pod, "workspace")
                && workspace.join(marker).exists()
            {
                return (child, pod, workspace);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = Run::from_output(child.wait_with_output().unwrap());
    panic!("the coordinator never wrote `{marker}`: {}", run.text());
}

#[test]
fn coordinator_in_the_pod_gets_its_token_over_stdin_only() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "coordinator_in_the_pod_gets_its_token_over_stdin_only",
        r#"
import os, sys, time
from danube import artifacts, ctx, pipeline, step
from danube import _client

@pipeline(name="token")
def main():
    token = dict(_client.get_client()._metadata)["authorization"].split(" ", 1)[1]
    assert len(token) >= 20, "no token"
    assert all(token not in value for value in os.environ.values()), "the token is in the environment"
    for own in ("/proc/self/cmdline", "/proc/self/environ"):
        assert token.encode() not in open(own, "rb").read(), own
    assert sys.stdin.read() == "", "stdin still holds data"
    assert ctx.workspace == "/workspace", ctx.workspace
    print("coordinator runs in", os.getcwd())
    with open("token-seen", "w") as seen:
        seen.write(token)
    while not os.path.exists("release"):
        time.sleep(0.05)
    step.run("echo from the worker > out.txt", name="write")
    assert open("out.txt").read() == "from the worker\n"
    artifacts.upload("out.txt")
"#,
    ) else {
        return;
    };
    let emulator = cluster.emulator();

    let (child, pod, workspace) = start_with_pod_coordinator(&cluster, &sandbox, "token-seen");
    let token = std::fs::read_to_string(workspace.join("token-seen")).unwrap();
    let spec = cluster.runtime.block_on(async {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(emulator.client().await, JOBS_NAMESPACE);
        api.get(&pod).await.unwrap()
    });
    std::fs::write(workspace.join("release"), "").unwrap();
    let run = Run::from_output(child.wait_with_output().unwrap());

    assert_eq!(run.code, 0, "{}", run.text());
    let containers: Vec<&str> = spec
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    assert_eq!(containers, ["worker", "coordinator"]);
    let json = serde_json::to_string(&spec).unwrap();
    assert!(
        !json.contains(token.trim()),
        "the token is in the pod: {json}"
    );
    assert!(!run.text().contains(token.trim()), "the token was printed");
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success");
    let names: Vec<&str> = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|artifact| artifact["name"].as_str())
        .collect();
    assert_eq!(names, ["out.txt"]);
    let id = job["job"]["id"].as_str().unwrap();
    let logs = sandbox.danube(&["logs", id]);
    assert!(
        logs.stdout.contains("coordinator runs in /workspace"),
        "{}",
        logs.text()
    );
}

#[test]
fn cancel_stops_the_coordinator_in_the_pod() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "cancel_stops_the_coordinator_in_the_pod",
        r#"
import time
from danube import pipeline

@pipeline(name="wait")
def main():
    open("waiting", "w").close()
    time.sleep(600)
"#,
    ) else {
        return;
    };

    let (child, _, _) = start_with_pod_coordinator(&cluster, &sandbox, "waiting");
    // SIGINT is what Ctrl-C sends to the danube process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let run = Run::from_output(child.wait_with_output().unwrap());

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "cancelled");
    assert_eq!(task(&job, "main")["state"], "cancelled");
    assert!(
        cluster.pods().is_empty(),
        "the pod outlived the cancelled job"
    );
}

#[test]
fn dropped_coordinator_exec_is_reattached() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "dropped_coordinator_exec_is_reattached",
        r#"
import os, time
from danube import pipeline, step

@pipeline(name="drop")
def main():
    print("before the drop", flush=True)
    open("waiting", "w").close()
    while not os.path.exists("release"):
        time.sleep(0.05)
    print("script resumed", flush=True)
    step.run("echo step ran", name="after")
"#,
    ) else {
        return;
    };
    let emulator = cluster.emulator();

    let (child, _, workspace) = start_with_pod_coordinator(&cluster, &sandbox, "waiting");
    assert!(
        emulator.fail_exec_connections(ExecFault::Reset) > 0,
        "no exec was open"
    );
    std::fs::write(workspace.join("release"), "").unwrap();
    let run = Run::from_output(child.wait_with_output().unwrap());

    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success");
    let id = job["job"]["id"].as_str().unwrap();
    let logs = sandbox.danube(&["logs", id]).stdout;
    assert_eq!(logs.matches("before the drop").count(), 1, "{logs}");
    assert_eq!(logs.matches("script resumed").count(), 1, "{logs}");
    assert!(
        logs.contains("the connection to this step dropped; reattaching"),
        "{logs}"
    );
    assert!(logs.contains("step ran"), "{logs}");
}

#[test]
fn lost_coordinator_fails_the_job_with_the_reason() {
    let Some((cluster, sandbox)) = fault_sandbox(
        "lost_coordinator_fails_the_job_with_the_reason",
        r#"
import time
from danube import pipeline

@pipeline(name="lost")
def main():
    open("waiting", "w").close()
    time.sleep(600)
"#,
    ) else {
        return;
    };
    let emulator = cluster.emulator();

    let (child, _, _) = start_with_pod_coordinator(&cluster, &sandbox, "waiting");
    emulator.refuse_execs(true);
    assert!(emulator.fail_exec_connections(ExecFault::Reset) > 0);
    let run = Run::from_output(child.wait_with_output().unwrap());

    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("lost the connection to the coordinator"),
        "{reason}"
    );
    assert!(cluster.pods().is_empty(), "the pod outlived the job");
}

#[test]
fn dry_run_shows_the_coordinator_container() {
    let cluster = Cluster::emulated();
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline, step\n@pipeline(name='p')\ndef main():\n    step.run('true')\n");

    let run = cluster.run(
        &sandbox,
        &sandbox.project(),
        &[
            "--dry-run",
            "--coordinator",
            "pod",
            "--coordinator-image",
            "registry.test/coordinator:7",
        ],
    );

    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("name: coordinator"), "{}", run.stdout);
    assert!(
        run.stdout.contains("image: registry.test/coordinator:7"),
        "{}",
        run.stdout
    );
    let engine = cluster.run(&sandbox, &sandbox.project(), &["--dry-run"]);
    assert!(
        !engine.stdout.contains("name: coordinator"),
        "a kubeconfig context puts the coordinator beside the engine: {}",
        engine.stdout
    );
}
