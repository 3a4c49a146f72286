//! A pipeline that cannot be loaded stops `danube run` with exit status 2
//! before any step runs, with a message that names the problem.

use danube_tests::Sandbox;

fn assert_no_step_ran(sandbox: &Sandbox) {
    let jobs = sandbox.danube(&["jobs", "--json"]);
    if jobs.code != 0 {
        return;
    }
    let list: serde_json::Value = serde_json::from_str(&jobs.stdout).unwrap();
    for job in list.as_array().unwrap() {
        let shown = sandbox.show(job["id"].as_str().unwrap());
        assert_eq!(shown["steps"].as_array().unwrap().len(), 0, "{shown:#}");
    }
}

#[test]
fn missing_pipeline_file_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("no danubefile.py in"), "{}", run.text());
    assert!(
        !sandbox.data_dir().join("danube.db").exists(),
        "nothing was written"
    );
}

#[test]
fn syntax_error_shows_traceback() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline\n\ndef broken(:\n    pass\n");
    let run = sandbox.run(&[]);
    let file = sandbox
        .project()
        .canonicalize()
        .unwrap()
        .join("danubefile.py");
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("SyntaxError"), "{}", run.text());
    assert!(
        run.stderr
            .contains(&format!("File \"{}\", line 3", file.display())),
        "{}",
        run.text()
    );
    assert!(!run.stderr.contains("workspaces"), "{}", run.text());
    assert_no_step_ran(&sandbox);
}

#[test]
fn several_pipelines_error_names_project_file() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="failing")
def failing():
    step.run("false")

@pipeline(name="second")
def second():
    step.run("true")
"#,
    );

    let run = sandbox.run(&[]);

    let file = sandbox
        .project()
        .canonicalize()
        .unwrap()
        .join("danubefile.py");
    let expected = format!(
        "`{}` defines several pipelines (`failing`, `second`), so name the one to run: \
         pass `--pipeline NAME` to `danube run`, the Pipeline field of the web UI's Run form, or `pipeline` in `POST /api/v1/jobs`",
        file.display()
    );
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains(&expected), "{}", run.text());
    assert!(!run.stderr.contains("workspaces"), "{}", run.text());
    assert_no_step_ran(&sandbox);
}

#[test]
fn unknown_pipeline_lists_available_ones() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step

@pipeline(name="build")
def build():
    step.run("true")

@pipeline(name="deploy")
def deploy():
    step.run("true")
"#,
    );
    let run = sandbox.run(&["--pipeline", "relase"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("relase"), "{}", run.text());
    assert!(
        run.stderr.contains("build") && run.stderr.contains("deploy"),
        "{}",
        run.text()
    );
    assert_no_step_ran(&sandbox);

    let chosen = sandbox.run(&["--pipeline", "deploy"]);
    assert_eq!(chosen.code, 0, "{}", chosen.text());
    assert_eq!(sandbox.last_job()["job"]["pipeline"], "deploy");
}

#[test]
fn dependency_cycle_is_rejected() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task(needs=["c"])
def a():
    step.run("true")

@task(needs=[a])
def b():
    step.run("true")

@task(needs=[b])
def c():
    step.run("true")

pipeline(name="cyclic", tasks=[c])
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("cycle"), "{}", run.text());
    assert_no_step_ran(&sandbox);
}

#[test]
fn unknown_need_is_rejected() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        r#"
from danube import pipeline, step, task

@task(needs=["instal"])
def test():
    step.run("true")

pipeline(name="typo", tasks=[test])
"#,
    );
    let run = sandbox.run(&[]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("instal"), "{}", run.text());
    assert_no_step_ran(&sandbox);
}

#[test]
fn data_dir_that_is_a_file_is_a_configuration_error() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline\n");
    let blocker = sandbox.path().join("not-a-dir");
    std::fs::write(&blocker, "file").unwrap();

    let project = sandbox.project();
    let data_dir = blocker.join("data");
    let run = sandbox.danube(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "run",
        project.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains(data_dir.to_str().unwrap()),
        "names the path: {}",
        run.text()
    );
}

#[test]
fn bad_arguments_exit_with_two() {
    let sandbox = Sandbox::new();
    let run = sandbox.danube(&["run", "--max-parallel", "0"]);
    assert_eq!(run.code, 2, "{}", run.text());
    let run = sandbox.danube(&["show", "nonexistent-job"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("nonexistent-job"), "{}", run.text());
}

#[test]
fn run_accepts_path_of_pipeline_file() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline, step\n\n@pipeline(name='file-arg')\ndef f():\n    step.run('true')\n");
    let file = sandbox.project().join("danubefile.py");
    let run = sandbox.danube(&["run", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.text());
}

#[test]
fn run_on_missing_folder_says_it_does_not_exist() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("nope");
    let run = sandbox.danube(&["run", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains(&format!(
            "project folder `{}` does not exist: pass the folder that contains danubefile.py",
            missing.display()
        )),
        "{}",
        run.text()
    );
}

#[test]
fn run_on_other_file_suggests_its_project_folder() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("from danube import pipeline\n");
    sandbox.file("README.md", "");
    let readme = sandbox.project().join("README.md");

    let run = sandbox.danube(&["run", readme.to_str().unwrap()]);

    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains(&format!(
            "`{}` is a file; pass the folder that contains danubefile.py: `{}`",
            readme.display(),
            sandbox.project().display()
        )),
        "{}",
        run.text()
    );
}
