//! Server jobs from a Git repository at a commit. A real `danube serve`
//! clones real repositories made in temp dirs through `file://` URLs, which
//! each server here allows with `--allow-repository-path`. Jobs run on the
//! local backend and, through the API-server emulator, on the kubernetes
//! backend.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use danube_tests::http::{get, json_of, post};
use danube_tests::kube::{Emulator, EmulatorOptions};
use danube_tests::{Sandbox, Server, danube_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PIPELINE: &str = r#"
from danube import ctx, pipeline, step

@pipeline(name="from-git")
def main():
    print(f"ctx repo={ctx.repo} branch={ctx.branch} sha={ctx.commit_sha}")
    step.run("cat version.txt", name="version")
    step.run('echo "step sees $DANUBE_COMMIT_SHA"', name="env")
"#;

/// A repository with `danubefile.py` and `version.txt` on `main`, a second
/// commit on `next` that changes `version.txt`, and a commit on `bare`
/// without `danubefile.py`. Returns the SHAs of the three commits.
struct Origin {
    dir: PathBuf,
    main: String,
    next: String,
    bare: String,
}

impl Origin {
    fn create(dir: &Path) -> Origin {
        let repository = git2::Repository::init(dir).unwrap();
        let signature = git2::Signature::now("Test", "test@example.com").unwrap();
        let commit = |files: &[(&str, &str)], parents: &[git2::Oid]| -> git2::Oid {
            let mut index = repository.index().unwrap();
            index.clear().unwrap();
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
                index.add_path(Path::new(name)).unwrap();
            }
            let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parents
                .iter()
                .map(|oid| repository.find_commit(*oid).unwrap())
                .collect();
            let parents: Vec<&git2::Commit> = parents.iter().collect();
            repository
                .commit(None, &signature, &signature, "commit", &tree, &parents)
                .unwrap()
        };
        let main = commit(
            &[
                ("danubefile.py", PIPELINE),
                ("version.txt", "version one\n"),
            ],
            &[],
        );
        let next = commit(
            &[
                ("danubefile.py", PIPELINE),
                ("version.txt", "version two\n"),
            ],
            &[main],
        );
        let bare = commit(&[("README.md", "no pipeline here\n")], &[main]);
        for (branch, oid) in [("main", main), ("next", next), ("bare", bare)] {
            repository
                .reference(&format!("refs/heads/{branch}"), oid, true, branch)
                .unwrap();
        }
        repository.set_head("refs/heads/main").unwrap();
        repository
            .tag_lightweight("v1", &repository.find_object(main, None).unwrap(), false)
            .unwrap();
        Origin {
            dir: dir.to_owned(),
            main: main.to_string(),
            next: next.to_string(),
            bare: bare.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

/// Makes a sandbox with a repository under `<sandbox>/repos/origin`.
fn sandbox_with_origin() -> (Sandbox, Origin) {
    let sandbox = Sandbox::new();
    let origin = Origin::create(&sandbox.path().join("repos/origin"));
    (sandbox, origin)
}

fn allow_repos(sandbox: &Sandbox) -> String {
    format!(
        "--allow-repository-path={}",
        sandbox.path().join("repos").display()
    )
}

fn start(server: &Server, body: Value) -> (StatusCode, Value) {
    let response = post(server, "/api/v1/jobs", body).send().unwrap();
    let status = response.status();
    (status, json_of(response))
}

fn wait_final(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = json_of(get(server, &format!("/api/v1/jobs/{id}")).send().unwrap());
        let state = job["state"].as_str().unwrap();
        if ["success", "failure", "timeout", "cancelled"].contains(&state) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads the job's whole log, as `danube logs` prints it from the data dir.
fn job_logs(sandbox: &Sandbox, id: &str) -> String {
    let logs = sandbox.danube(&["logs", id]);
    assert_eq!(logs.code, 0, "{}", logs.text());
    logs.stdout
}

/// Runs `next` of `origin` on `server` and checks what the job saw.
fn assert_runs_the_commit(server: &Server, sandbox: &Sandbox, origin: &Origin) {
    let (status, created) = start(
        server,
        json!({"repository": origin.url(), "commit": "next"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let job = wait_final(server, &id);

    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["repo"], origin.url());
    assert_eq!(job["branch"], "next");
    assert_eq!(job["trigger_ref"], "next");
    assert_eq!(job["commit_sha"], origin.next.as_str());
    assert_eq!(job["project"], origin.url());
    let logs = job_logs(sandbox, &id);
    assert!(logs.contains("version two"), "{logs}");
    assert!(!logs.contains("version one"), "{logs}");
    assert!(
        logs.contains(&format!(
            "ctx repo={} branch=next sha={}",
            origin.url(),
            origin.next
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("step sees {}", origin.next)),
        "{logs}"
    );
    let checkouts = sandbox.data_dir().join("checkouts");
    let left: Vec<_> = std::fs::read_dir(&checkouts)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the clone outlived the job: {left:?}");
}

#[test]
fn repository_job_runs_the_commit_locally() {
    let (sandbox, origin) = sandbox_with_origin();
    let server = sandbox.serve_with(&[&allow_repos(&sandbox)]);

    assert_runs_the_commit(&server, &sandbox, &origin);

    let (status, created) = start(
        &server,
        json!({"repository": origin.url(), "commit": &origin.main[..12]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let job = wait_final(&server, created["id"].as_str().unwrap());
    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["commit_sha"], origin.main.as_str());
    assert_eq!(job["branch"], "", "a SHA names no branch");
    assert_eq!(job["trigger_ref"], "");

    let (status, created) = start(&server, json!({"repository": origin.url(), "commit": "v1"}));
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let job = wait_final(&server, created["id"].as_str().unwrap());
    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["commit_sha"], origin.main.as_str());
    assert_eq!(job["branch"], "", "a tag names no branch");
    assert_eq!(job["trigger_ref"], "v1");
}

#[test]
fn repository_job_runs_the_commit_in_a_pod() {
    let (sandbox, origin) = sandbox_with_origin();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bin_dir = danube_bin().parent().unwrap().to_owned();
    let emulator: Emulator = runtime
        .block_on(Emulator::start(
            EmulatorOptions::default().path_prepend(&bin_dir),
        ))
        .expect("the emulator starts");
    let kubeconfig = format!("--kubeconfig={}", emulator.kubeconfig_path().display());
    let server = sandbox.serve_with(&[
        &allow_repos(&sandbox),
        "--target=kube",
        &kubeconfig,
        "--tools-image=danube-coordinator:test",
    ]);

    assert_runs_the_commit(&server, &sandbox, &origin);
}

#[test]
fn repository_errors_name_the_value_and_fix() {
    let (sandbox, origin) = sandbox_with_origin();
    let server = sandbox.serve_with(&[
        &allow_repos(&sandbox),
        "--allow-repository-host=127.0.0.1,git.example",
    ]);
    let missing = format!("file://{}", sandbox.path().join("repos/missing").display());
    let cases = [
        (
            json!({"repository": origin.url(), "commit": "no-such-branch"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "commit `no-such-branch` was not found".to_owned(),
        ),
        (
            json!({"repository": origin.url(), "commit": "bare"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "no danubefile.py at the root of repository `{}` at commit `bare` ({})",
                origin.url(),
                origin.bare
            ),
        ),
        (
            json!({"repository": missing, "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "no such folder on the server".to_owned(),
        ),
        (
            // Port 9 (discard) on loopback: nothing listens there.
            json!({"repository": "http://127.0.0.1:9/app.git", "commit": "main"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "failed to clone repository `http://127.0.0.1:9/app.git`".to_owned(),
        ),
        (
            json!({"repository": "ssh://git@git.example/app.git", "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "scheme `ssh` is not supported".to_owned(),
        ),
        (
            json!({"repository": "https://me:s3cret@git.example/app.git", "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "contains a user name or password".to_owned(),
        ),
        (
            json!({"repository": "http://s3cret@127.0.0.1:9/app.git", "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "repository `http://***@127.0.0.1:9/app.git` is invalid: it contains a user name"
                .to_owned(),
        ),
        (
            json!({"repository": "http://127.0.0.1:9/app.git?access_token=s3cret", "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "repository `http://127.0.0.1:9/app.git?***` is invalid: it has a query".to_owned(),
        ),
        (
            json!({"repository": "http://git.other.example/app.git", "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "repository host `git.other.example` is not allowed on this server; start the \
             server with --allow-repository-host git.other.example"
                .to_owned(),
        ),
        (
            json!({"repository": origin.url()}),
            StatusCode::BAD_REQUEST,
            "`commit` is missing".to_owned(),
        ),
        (
            json!({"project": sandbox.project(), "repository": origin.url(), "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "not both".to_owned(),
        ),
        (
            json!({"project": sandbox.project(), "commit": "main"}),
            StatusCode::BAD_REQUEST,
            "`commit` goes with `repository`".to_owned(),
        ),
        (
            json!({}),
            StatusCode::BAD_REQUEST,
            "the job has no source".to_owned(),
        ),
    ];

    for (body, status, expected) in cases {
        let (actual, response) = start(&server, body.clone());
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(actual, status, "{body}: {response}");
        assert!(message.contains(&expected), "{body}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
    let checkouts = sandbox.data_dir().join("checkouts");
    let left: Vec<_> = std::fs::read_dir(&checkouts)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed clone was kept: {left:?}");
}

#[test]
fn local_repositories_are_refused_by_default() {
    let (sandbox, origin) = sandbox_with_origin();
    let server = sandbox.serve();

    for url in [origin.url(), origin.dir.display().to_string()] {
        let (status, response) = start(&server, json!({"repository": url, "commit": "main"}));
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert!(message.contains("--allow-repository-path"), "{message}");
    }
}

/// Reruns `job` with an empty body and returns the new job once it ends.
fn rerun_and_wait(server: &Server, job: &Value) -> Value {
    let response = post(
        server,
        &format!("/api/v1/jobs/{}/rerun", job["id"].as_str().unwrap()),
        json!({}),
    )
    .send()
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    wait_final(server, json_of(response)["id"].as_str().unwrap())
}

#[test]
fn repository_rerun_clones_the_same_commit() {
    let (sandbox, origin) = sandbox_with_origin();
    let server = sandbox.serve_with(&[&allow_repos(&sandbox)]);
    let (_, created) = start(
        &server,
        json!({"repository": origin.url(), "commit": "next"}),
    );
    let first = wait_final(&server, created["id"].as_str().unwrap());
    assert_eq!(first["state"], "success", "{first:#}");

    let rerun = rerun_and_wait(&server, &first);

    assert_eq!(rerun["state"], "success", "{rerun:#}");
    assert_eq!(rerun["commit_sha"], origin.next.as_str());
    assert_eq!(rerun["repo"], origin.url());
    assert_eq!(rerun["branch"], "next", "a rerun keeps the branch");
    assert_eq!(rerun["trigger_ref"], "next");

    let (_, created) = start(&server, json!({"repository": origin.url(), "commit": "v1"}));
    let tagged = wait_final(&server, created["id"].as_str().unwrap());
    let rerun = rerun_and_wait(&server, &tagged);
    assert_eq!(rerun["commit_sha"], origin.main.as_str());
    assert_eq!(rerun["branch"], "");
    assert_eq!(rerun["trigger_ref"], "v1", "a rerun keeps the tag");
}

#[test]
fn repository_path_rerun_clones_not_working_copy() {
    let (sandbox, origin) = sandbox_with_origin();
    let server = sandbox.serve_with(&[&allow_repos(&sandbox)]);
    let path = origin.dir.display().to_string();
    let (_, created) = start(&server, json!({"repository": path, "commit": "next"}));
    let first = wait_final(&server, created["id"].as_str().unwrap());
    assert_eq!(first["state"], "success", "{first:#}");
    assert_eq!(first["project"], origin.url());

    let rerun = rerun_and_wait(&server, &first);

    assert_eq!(rerun["state"], "success", "{rerun:#}");
    assert_eq!(rerun["commit_sha"], origin.next.as_str());
    assert_eq!(rerun["project"], origin.url());
}
