//! The examples in `examples/` run as they are.

use danube_tests::{Sandbox, step, task, workspace_root};

fn run_example(sandbox: &Sandbox, name: &str) -> danube_tests::Run {
    let dir = workspace_root().join("examples").join(name);
    sandbox.danube(&["run", dir.to_str().unwrap()])
}

#[test]
fn quickstart_example_succeeds() {
    let sandbox = Sandbox::new();
    let run = run_example(&sandbox, "quickstart");
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success");
    assert_eq!(job["steps"].as_array().unwrap().len(), 5);
    assert!(run.stdout.contains("hello from a step"), "{}", run.text());
}

#[test]
fn dag_example_builds_tests_and_packages() {
    let sandbox = Sandbox::new();
    let run = run_example(&sandbox, "dag");
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    for name in ["prepare", "lint", "unit_tests", "docs", "package"] {
        assert_eq!(task(&job, name)["state"], "success", "{name}");
    }
    let id = job["job"]["id"].as_str().unwrap();
    let tests = sandbox.step_log(id, "unit_tests", "unittest");
    assert!(tests.contains("Ran 5 tests"), "{tests}");
    assert!(tests.contains("OK"), "{tests}");
    let names: Vec<&str> = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc.zip", "build-dir"]);
    assert!(
        !workspace_root().join("examples/dag/build").exists(),
        "the example folder stays clean"
    );
}

#[test]
fn release_example_runs_with_and_without_secret() {
    let sandbox = Sandbox::new();
    let run = run_example(&sandbox, "release");
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("danube secret set DEMO_TOKEN"),
        "explains the missing secret: {}",
        run.text()
    );
    let job = sandbox.last_job();
    assert_eq!(step(&job, "main", "slow mirror")["state"], "timeout");
    assert_eq!(step(&job, "main", "slow mirror")["exit_code"], 124);

    let mut child = sandbox
        .command()
        .args(["secret", "set", "DEMO_TOKEN"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"demo-token-value-42")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let run = run_example(&sandbox, "release");
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("signing with ***"), "{}", run.text());
    assert!(!run.stdout.contains("demo-token-value-42"));
    let job = sandbox.last_job();
    let names: Vec<&str> = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-1.4.0.tar.gz", "dist"]);
}
