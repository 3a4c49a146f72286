//! Secrets reach steps but never logs; artifacts keep their bytes and stay
//! inside the workspace.

use std::io::Write;
use std::process::Stdio;

use danube_tests::{Sandbox, step};

const SECRET: &str = "hunter2-Zq8sVx31Lm";

fn set_secret(sandbox: &Sandbox, key: &str, value: &str, extra: &[&str]) {
    let mut child = sandbox
        .command()
        .args(["secret", "set", key])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn all_stored_logs(sandbox: &Sandbox) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in walk(&sandbox.data_dir().join("logs")) {
        bytes.extend(std::fs::read(entry).unwrap());
    }
    bytes
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn secret_never_appears_in_stored_or_streamed_logs() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "API_TOKEN", SECRET, &[]);
    let (first, second) = SECRET.split_at(7);
    sandbox.pipeline(&format!(
        r#"
import base64
from danube import pipeline, secrets, step

@pipeline(name="leaky")
def leaky():
    token = secrets.get("API_TOKEN")
    assert token == "{SECRET}"
    print("script prints", token)
    step.run('echo "whole: $TOKEN"', name="whole", env={{"TOKEN": token}})
    step.run("printf '%s' '{first}'; sleep 0.3; printf '%s\\n' '{second}'", name="halves")
    step.run("printf '%s' '{first}' >&2; printf '%s\\n' '{second}' >&2", name="stderr-halves")
    step.run(f"echo {{base64.b64encode(token.encode()).decode()}}", name="encoded")
    step.run(f"echo {{token}}", name="in-command")
"#
    ));

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        !run.stdout.contains(SECRET),
        "streamed output leaks: {}",
        run.stdout
    );
    assert!(!run.stderr.contains(SECRET), "stderr leaks");
    assert!(run.stdout.contains("whole: ***"), "{}", run.stdout);

    let stored = all_stored_logs(&sandbox);
    assert!(!contains(&stored, SECRET), "a stored log leaks the secret");
    let encoded = "aHVudGVyMi1acThzVngzMUxt";
    assert!(
        !contains(&stored, encoded),
        "a stored log leaks the base64 form"
    );

    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(sandbox.step_log(id, "main", "halves"), "***\n");
    assert_eq!(sandbox.step_log(id, "main", "whole"), "whole: ***\n");
    assert!(
        !job.to_string().contains(SECRET),
        "the recorded command leaks: {job:#}"
    );
    assert_eq!(step(&job, "main", "in-command")["command"], "echo ***");

    let database = std::fs::read(sandbox.data_dir().join("danube.db")).unwrap();
    assert!(
        !contains(&database, SECRET),
        "the database holds the plaintext"
    );
}

#[test]
fn secret_list_and_remove() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "GLOBAL_ONE", "value-1", &[]);
    set_secret(&sandbox, "SCOPED", "value-2", &["--pipeline", "web"]);
    let list = sandbox.danube(&["secret", "list"]);
    assert_eq!(list.code, 0, "{}", list.text());
    assert!(
        list.stdout.contains("GLOBAL_ONE\tglobal"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("SCOPED\tpipeline:web"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("value-"), "values are never listed");

    let removed = sandbox.danube(&["secret", "rm", "GLOBAL_ONE"]);
    assert_eq!(removed.code, 0, "{}", removed.text());
    let again = sandbox.danube(&["secret", "rm", "GLOBAL_ONE"]);
    assert_eq!(again.code, 2, "{}", again.text());

    let bad = sandbox.danube(&["secret", "set", "1-bad key"]);
    assert_eq!(bad.code, 2, "{}", bad.text());
    assert!(bad.stderr.contains("1-bad key"), "{}", bad.text());
}

#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "K", "v-value", &[]);
    let mode = std::fs::metadata(sandbox.data_dir().join("keys/encryption.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn secret_pipeline(sandbox: &Sandbox) {
    sandbox.pipeline(
        r#"
from danube import pipeline, secrets, step

@pipeline(name="needs-secret")
def needs_secret():
    step.run("echo before")
    secrets.get("DEPLOY_KEY")
    step.run("echo after", name="after")
"#,
    );
}

#[test]
fn missing_secret_fails_job_with_reason() {
    let sandbox = Sandbox::new();
    secret_pipeline(&sandbox);
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "failure");
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(reason.contains("DEPLOY_KEY"), "{reason}");
    assert!(
        reason.contains("danube secret set"),
        "says how to fix it: {reason}"
    );
}

#[test]
fn corrupted_secret_blob_fails_job() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "DEPLOY_KEY", "deploy-value-123", &[]);
    secret_pipeline(&sandbox);

    // Flip one byte of the stored ciphertext.
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             (blob,) = db.execute(\"SELECT blob FROM secrets WHERE key='DEPLOY_KEY'\").fetchone()\n\
             blob = bytearray(blob); blob[15] ^= 0xFF\n\
             db.execute(\"UPDATE secrets SET blob=? WHERE key='DEPLOY_KEY'\", (bytes(blob),))\n\
             db.commit()\n",
        )
        .arg(sandbox.data_dir().join("danube.db"))
        .status()
        .unwrap();
    assert!(status.success());

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let reason = sandbox.last_job()["job"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("DEPLOY_KEY"), "{reason}");
    assert!(
        reason.contains("corrupt") || reason.contains("another key"),
        "{reason}"
    );
}

#[test]
fn secret_under_another_key_fails_job() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "DEPLOY_KEY", "deploy-value-123", &[]);
    secret_pipeline(&sandbox);
    let key_path = sandbox.data_dir().join("keys/encryption.key");
    std::fs::write(&key_path, [7u8; 32]).unwrap();

    let run = sandbox.run(&[]);
    assert_eq!(run.code, 1, "{}", run.text());
    let reason = sandbox.last_job()["job"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("DEPLOY_KEY"), "{reason}");
}

#[test]
fn artifacts_keep_their_bytes() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import artifacts, pipeline, step

@pipeline(name="artifacts")
def produce():
    step.run("mkdir -p out/sub && head -c 3000000 /dev/urandom > out/blob.bin && echo nested > out/sub/n.txt")
    artifacts.upload("out/blob.bin")
    artifacts.upload("out", name="out-dir")
"#,
    );
    // Keep the produced file to compare bytes: run in place.
    let run = sandbox.run(&["--in-place"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let job = sandbox.last_job();
    let id = job["job"]["id"].as_str().unwrap();
    assert_eq!(job["artifacts"].as_array().unwrap().len(), 2, "{job:#}");

    let list = sandbox.danube(&["artifacts", id]);
    assert!(
        list.stdout.contains("blob.bin") && list.stdout.contains("out-dir"),
        "{}",
        list.text()
    );

    let out = sandbox.path().join("downloaded.bin");
    let get = sandbox.danube(&[
        "artifacts",
        id,
        "--get",
        "blob.bin",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(get.code, 0, "{}", get.text());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(sandbox.project().join("out/blob.bin")).unwrap()
    );

    let extracted = sandbox.path().join("extracted");
    let get = sandbox.danube(&[
        "artifacts",
        id,
        "--get",
        "out-dir",
        "--out",
        extracted.to_str().unwrap(),
    ]);
    assert_eq!(get.code, 0, "{}", get.text());
    assert_eq!(
        std::fs::read_to_string(extracted.join("sub/n.txt")).unwrap(),
        "nested\n"
    );
    assert_eq!(
        std::fs::read(extracted.join("blob.bin")).unwrap(),
        std::fs::read(sandbox.project().join("out/blob.bin")).unwrap()
    );
}

#[test]
fn artifact_outside_workspace_fails_job() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("outside.txt"), "private").unwrap();
    sandbox.pipeline(
        r#"
import os
from danube import artifacts, pipeline, step

@pipeline(name="escape")
def escape():
    os.symlink("../outside.txt", "link.txt")
    artifacts.upload("link.txt")
"#,
    );
    let run = sandbox.run(&["--in-place"]);
    assert_eq!(run.code, 1, "{}", run.text());
    let job = sandbox.last_job();
    let reason = job["job"]["reason"].as_str().unwrap();
    assert!(reason.contains("link.txt"), "{reason}");
    assert_eq!(job["artifacts"].as_array().unwrap().len(), 0);
}

#[test]
fn secret_in_step_name_is_masked() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "NAME_SECRET", SECRET, &[]);
    sandbox.pipeline(
        r#"
from danube import artifacts, pipeline, secrets, step, ArtifactError

@pipeline(name="names")
def names():
    token = secrets.get("NAME_SECRET")
    step.run(f"echo {token} > out.txt")
    step.run("true", name=f"deploy-{token}")
    try:
        artifacts.upload("out.txt", name=token)
    except ArtifactError as err:
        print("artifact rejected:", err)
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    assert!(run.stdout.contains("artifact rejected"), "{}", run.stdout);

    let job = sandbox.last_job();
    assert!(!job.to_string().contains(SECRET), "{job:#}");
    assert_eq!(step(&job, "main", "deploy-***")["state"], "success");
    let database = std::fs::read(sandbox.data_dir().join("danube.db")).unwrap();
    assert!(!contains(&database, SECRET));
}

#[test]
fn missing_key_file_with_stored_secrets_is_refused() {
    let sandbox = Sandbox::new();
    set_secret(&sandbox, "KEPT", "kept-value-1", &[]);
    let key_path = sandbox.data_dir().join("keys/encryption.key");
    std::fs::remove_file(&key_path).unwrap();

    // Storing under a new key would strand the old secrets: refused.
    let mut child = sandbox
        .command()
        .args(["secret", "set", "OTHER"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"other-value-1")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("encryption.key"), "{stderr}");
    assert!(stderr.contains("1 secret(s)"), "{stderr}");
    assert!(!key_path.exists(), "no new key was made");

    // Pipelines without secrets still run, and the way out works.
    sandbox.pipeline("from danube import pipeline, step\n\n@pipeline(name='plain')\ndef plain():\n    step.run('true')\n");
    assert_eq!(sandbox.run(&[]).code, 0);
    let list = sandbox.danube(&["secret", "list"]);
    assert!(list.stdout.contains("KEPT"), "{}", list.text());
    let removed = sandbox.danube(&["secret", "rm", "KEPT"]);
    assert_eq!(removed.code, 0, "{}", removed.text());
    set_secret(&sandbox, "OTHER", "other-value-1", &[]);
    assert!(
        key_path.exists(),
        "a key is made once no secret needs the old one"
    );
}

#[test]
fn removing_pipeline_secret_without_scope_hints_at_it() {
    let sandbox = Sandbox::new();
    set_secret(
        &sandbox,
        "SCOPED_ONLY",
        "scoped-value-1",
        &["--pipeline", "web"],
    );
    let removed = sandbox.danube(&["secret", "rm", "SCOPED_ONLY"]);
    assert_eq!(removed.code, 2, "{}", removed.text());
    assert!(
        removed.stderr.contains("pipeline:web"),
        "{}",
        removed.text()
    );
    assert!(removed.stderr.contains("--pipeline"), "{}", removed.text());
}
