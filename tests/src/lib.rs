//! Helpers for the end-to-end tests: find the real `danube` binary, give
//! each test its own data directory and project folder, and share one Python
//! venv between tests so that pip runs once per build, not once per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub mod browser;
pub mod desktop;
pub mod engine;
pub mod http;
pub mod kube;
pub mod terminal;

/// The workspace root (the folder with the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_owned()
}

/// The `danube` binary built next to this test binary (`target/<profile>/`),
/// or `DANUBE_BIN` when set.
pub fn danube_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("DANUBE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join("danube");
    assert!(
        bin.exists(),
        "`{}` does not exist: build it first with `cargo build --bin danube`",
        bin.display()
    );
    bin
}

/// A venv with the SDK's pinned packages, made once under `target/` and
/// shared by every test through `DANUBE_PYTHON_VENV`.
pub fn shared_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let target = danube_bin()
            .parent()
            .and_then(Path::parent)
            .expect("the binary lives in target/<profile>")
            .to_owned();
        let venv = target.join("test-python-venv");
        let requirements = workspace_root().join("sdk/python/danube/_requirements.txt");
        let ready = venv.join(".ready");
        let wanted = fs::read_to_string(&requirements).expect("the SDK pins its requirements");
        if fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
            return venv;
        }

        // Several test binaries may start at once; one builds, the others wait.
        fs::create_dir_all(&target).expect("target dir is writable");
        let lock = fs::File::create(target.join("test-python-venv.lock")).expect("lock file");
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .expect("lock the venv");
        if fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
            return venv;
        }
        let _ = fs::remove_dir_all(&venv);
        run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run_ok(
            Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
        );
        fs::write(&ready, wanted).expect("mark the venv ready");
        venv
    })
    .clone()
}

fn run_ok(command: &mut Command) {
    let output = command.output().expect("start a setup command");
    assert!(
        output.status.success(),
        "setup command {command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One test's private data directory and project folder.
pub struct Sandbox {
    root: tempfile::TempDir,
}

/// What a `danube` invocation printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Both outputs, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("danube-e2e-")
            .tempdir()
            .expect("create a temp dir");
        fs::create_dir_all(root.path().join("project")).expect("create the project dir");
        Sandbox { root }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn project(&self) -> PathBuf {
        self.root.path().join("project")
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Writes `danubefile.py` into the project.
    pub fn pipeline(&self, source: &str) -> &Sandbox {
        self.file("danubefile.py", source)
    }

    /// Writes a pipeline `hang` whose step `wait` in task `main` runs
    /// `sleep SECONDS` in the background and waits for it. Returns the file
    /// where the step records the sleep's pid and then the shell's.
    pub fn hanging_pipeline(&self, seconds: u32) -> PathBuf {
        let pids = self.path().join("pids");
        self.pipeline(&format!(
            r#"
from danube import pipeline, step

@pipeline(name="hang")
def hang():
    step.run("sleep {seconds} & echo $! >> {pids}; echo $$ >> {pids}; wait", name="wait")
"#,
            pids = pids.display()
        ));
        pids
    }

    /// Writes a file under the project, creating folders.
    pub fn file(&self, relative: &str, contents: &str) -> &Sandbox {
        let path = self.project().join(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create dirs");
        fs::write(path, contents).expect("write a project file");
        self
    }

    /// A `danube` command with this sandbox's data dir and the shared venv.
    pub fn command(&self) -> Command {
        let mut command = Command::new(danube_bin());
        command
            .env("DANUBE_DATA_DIR", self.data_dir())
            .env("DANUBE_PYTHON_VENV", shared_venv())
            .env_remove("DANUBE_LOG")
            .stdin(Stdio::null());
        command
    }

    pub fn danube(&self, args: &[&str]) -> Run {
        Run::from_output(self.command().args(args).output().expect("run danube"))
    }

    /// `danube run` on the project folder with extra arguments.
    pub fn run(&self, extra: &[&str]) -> Run {
        let project = self.project();
        let mut args = vec!["run", project.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(extra);
        self.danube(&args)
    }

    /// `danube show --json` of the most recent job.
    pub fn last_job(&self) -> Value {
        let jobs = self.danube(&["jobs", "--json", "--limit", "1"]);
        assert_eq!(jobs.code, 0, "{}", jobs.text());
        let list: Value = serde_json::from_str(&jobs.stdout).expect("jobs --json is JSON");
        let id = list[0]["id"]
            .as_str()
            .expect("a job was recorded")
            .to_owned();
        self.show(&id)
    }

    pub fn show(&self, job: &str) -> Value {
        let shown = self.danube(&["show", job, "--json"]);
        assert_eq!(shown.code, 0, "{}", shown.text());
        serde_json::from_str(&shown.stdout).expect("show --json is JSON")
    }

    /// The stored log of one step, as `danube logs --task --step` prints it.
    pub fn step_log(&self, job: &str, task: &str, step: &str) -> String {
        let logs = self.danube(&["logs", job, "--task", task, "--step", step]);
        assert_eq!(logs.code, 0, "{}", logs.text());
        logs.stdout
    }
}

/// The step object named `name` of task `task` in a `show --json` document.
pub fn step<'a>(job: &'a Value, task: &str, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .expect("steps is an array")
        .iter()
        .find(|step| step["task"] == task && step["name"] == name)
        .unwrap_or_else(|| panic!("no step {task}/{name} in {job:#}"))
}

/// The task object named `name` in a `show --json` document.
pub fn task<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .find(|task| task["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {job:#}"))
}

/// Whether a process with this pid still exists (zombies count as gone).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// A `danube serve` process on a free loopback port, stopped with SIGTERM
/// when dropped.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    /// The local token, read from the data directory.
    pub token: String,
    /// Where the server's stderr goes.
    pub log: PathBuf,
}

impl Sandbox {
    /// Starts `danube serve --bind 127.0.0.1:0` on this sandbox's data dir
    /// and waits until it prints its address.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// [`Sandbox::serve`] with extra arguments for `danube serve`.
    pub fn serve_with(&self, extra: &[&str]) -> Server {
        use std::io::BufRead;

        let log = self.path().join("serve.log");
        let mut child = self
            .command()
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("start danube serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let base = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "danube serve exited before printing its address:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(url) = line.strip_prefix("Danube is serving on ") {
                break url.trim_end_matches('/').to_owned();
            }
        };
        // Keep reading, so the server never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        // The server prints the login address only to a terminal, so the
        // token comes from its file, written before the address is printed.
        let token_path = self.data_dir().join("keys").join("local-token");
        let token = fs::read_to_string(&token_path)
            .unwrap_or_else(|err| panic!("read {}: {err}", token_path.display()))
            .trim()
            .to_owned();
        Server {
            child,
            base,
            token,
            log,
        }
    }
}

impl Server {
    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the server.
    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Returns the port the server listens on.
    pub fn port(&self) -> u16 {
        let (_, port) = self.host().rsplit_once(':').expect("host:port");
        port.parse().expect("the port is a number")
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    /// Sends SIGTERM without waiting for the process to exit.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for danube serve")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
