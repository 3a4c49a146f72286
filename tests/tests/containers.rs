//! `image=` on the local backend with a real container runtime (podman), on
//! an image built locally from busybox because no registry is reachable.

use std::process::Command;

use danube_tests::{Sandbox, step, workspace_root};

const IMAGE: &str = "localhost/danube-test-busybox:latest";

/// Builds the test image, or returns `None` (outside CI) when podman is
/// missing. In CI a missing runtime fails the test.
fn image_ready(sandbox: &Sandbox) -> Option<std::path::PathBuf> {
    let have_podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_podman {
        assert!(
            std::env::var_os("CI").is_none(),
            "podman must be installed in CI (.ci/run installs it)"
        );
        eprintln!("skipping: podman is not installed");
        return None;
    }
    // This machine's podman needs runc (crun fails on hybrid cgroups) and no
    // default ulimits; the engine takes such settings from the environment.
    let conf = sandbox.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let script = workspace_root().join("tests/support/build-test-image.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(IMAGE)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(conf)
}

#[test]
fn step_with_image_runs_in_container_with_workspace() {
    let sandbox = Sandbox::new();
    let Some(conf) = image_ready(&sandbox) else {
        return;
    };
    sandbox.file("input.txt", "from the host\n").pipeline(&format!(
        r#"
from danube import pipeline, step, task

@task(image="{IMAGE}")
def boxed():
    step.run("cat input.txt; echo written-in-container > output.txt; echo to-stderr >&2", name="inside")
    step.run('test "$GREETING" = hello', name="env", env={{"GREETING": "hello"}})
    step.run("exit 5", name="code", check=False)

@task(needs=[boxed])
def host():
    step.run("cat output.txt", name="read")
    step.run("cat /etc/hostname >/dev/null; echo host-step", name="override", image="{IMAGE}")

pipeline(name="containers", tasks=[host])
"#
    ));
    let run = sandbox
        .command()
        .env("CONTAINERS_CONF", &conf)
        .args(["run", sandbox.project().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(step(&job, "boxed", "inside")["image"], IMAGE);
    assert_eq!(step(&job, "boxed", "code")["exit_code"], 5);
    let inside = sandbox.danube(&[
        "logs", id, "--task", "boxed", "--step", "inside", "--stream", "stdout",
    ]);
    assert_eq!(inside.stdout, "from the host\n");
    let errors = sandbox.danube(&[
        "logs", id, "--task", "boxed", "--step", "inside", "--stream", "stderr",
    ]);
    assert_eq!(errors.stdout, "to-stderr\n");
    assert_eq!(
        sandbox.step_log(id, "host", "read"),
        "written-in-container\n"
    );
    assert_eq!(step(&job, "host", "override")["state"], "success");
}

#[test]
fn missing_container_runtime_names_step_and_image() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="no-runtime")
def no_runtime():
    step.run("true", name="boxed", image="alpine:3")
"#,
    );
    // A PATH with neither podman nor docker on it.
    let bin = sandbox.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
    let run = sandbox
        .command()
        .env("PATH", &bin)
        .env_remove("DANUBE_CONTAINER_RUNTIME")
        .args(["run", sandbox.project().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let job = sandbox.last_job();
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(reason.contains("alpine:3"), "{reason}");
    assert!(reason.contains("boxed"), "{reason}");
    assert!(reason.contains("podman"), "says what to install: {reason}");
    assert_eq!(step(&job, "main", "boxed")["state"], "failure");
}
