//! The engine provisions the SDK's Python environment by itself, and says
//! clearly when it cannot.

use danube_tests::Sandbox;

const PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="provision")
def provision():
    step.run("echo provisioned")
"#;

#[test]
fn first_run_creates_python_environment() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PIPELINE);
    let project = sandbox.project();
    let output = sandbox
        .command()
        .env_remove("DANUBE_PYTHON_VENV")
        .args(["run", project.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Setting up the Python environment"),
        "says what it does: {stderr}"
    );

    // The second run reuses it silently.
    let again = sandbox
        .command()
        .env_remove("DANUBE_PYTHON_VENV")
        .args(["run", project.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&again.stderr).contains("Setting up"));
}

#[test]
fn unreachable_package_index_is_explained() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PIPELINE);
    let project = sandbox.project();
    let output = sandbox
        .command()
        .env_remove("DANUBE_PYTHON_VENV")
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_FIND_LINKS", "")
        .args(["run", project.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("package index"), "{stderr}");
    assert!(stderr.contains("grpcio"), "{stderr}");
}

#[test]
fn missing_python_is_explained() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(PIPELINE);
    let project = sandbox.project();
    let output = sandbox
        .command()
        .env_remove("DANUBE_PYTHON_VENV")
        .env("DANUBE_PYTHON", "/nonexistent/python3")
        .args(["run", project.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/python3"), "{stderr}");
    assert!(stderr.contains("DANUBE_PYTHON"), "{stderr}");
}
