//! `danube run --break-on-failure` and `--break-before` driven through
//! stdin, as a script without a terminal drives them, and `danube watch`
//! with its debug shell on a pseudo-terminal.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use danube_tests::Sandbox;
use danube_tests::terminal::Terminal;

/// Upper bound for each line the test waits for.
const LINE_LIMIT: Duration = Duration::from_secs(60);

/// A `danube run` with piped stdin and stdout, read line by line.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Session {
    fn start(sandbox: &Sandbox, extra: &[&str]) -> Session {
        Session::spawn(sandbox, "run", extra)
    }

    /// Starts `danube COMMAND` on the sandbox's project.
    fn spawn(sandbox: &Sandbox, command: &str, extra: &[&str]) -> Session {
        let mut child = sandbox
            .command()
            .arg(command)
            .arg(sandbox.project())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start danube run");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout: ChildStdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text` and returns it.
    fn wait_for(&mut self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(LINE_LIMIT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(err) => panic!(
                    "no line with `{text}` ({err}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn answer(&mut self, text: &str) {
        writeln!(self.stdin, "{text}").expect("write the answer");
    }

    /// Waits for the exit and returns its code and the whole output.
    fn finish(mut self) -> (i32, String) {
        drop(self.stdin);
        while let Ok(line) = self.lines.recv_timeout(LINE_LIMIT) {
            self.seen.push(line);
        }
        let status = self.child.wait().expect("wait for danube run");
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

fn failing_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.file("status.txt", "broken\n").pipeline(
        r#"
from danube import pipeline, step, task

@task()
def test():
    step.run("grep -q fixed status.txt", name="check")

pipeline(name="fixable", tasks=[test])
"#,
    );
    sandbox
}

#[test]
fn break_on_failure_retries_after_fix() {
    let sandbox = failing_sandbox();
    let mut session = Session::start(&sandbox, &["--break-on-failure"]);

    let paused = session.wait_for("⏸ paused");
    assert!(
        paused.contains("paused after test › check ended with failure, exit 1"),
        "{paused}"
    );
    let workdir = session.wait_for("workdir: ");
    let workdir = PathBuf::from(workdir.trim().trim_start_matches("workdir: "));
    assert_ne!(workdir, sandbox.project(), "the job runs in a copy");
    session.wait_for("[c]ontinue, [r]etry, [a]bort?");
    std::fs::write(workdir.join("status.txt"), "fixed\n").unwrap();
    session.answer("maybe");
    session.wait_for("`maybe` is not an answer");
    session.answer("r");

    let (code, output) = session.finish();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("retrying the step"), "{output}");
    assert!(output.contains("success"), "{output}");
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "success", "{job:#}");
    let check = danube_tests::step(&job, "test", "check");
    assert_eq!(check["attempt"], 2, "{job:#}");
}

#[test]
fn abort_answer_cancels_the_job() {
    let sandbox = failing_sandbox();
    let mut session = Session::start(&sandbox, &["--break-before", "test/check"]);

    let paused = session.wait_for("⏸ paused");
    assert!(
        paused.contains("paused before test › check (breakpoint `test/check`)"),
        "{paused}"
    );
    // Nothing ran before the breakpoint, so retry is neither offered nor taken.
    session.wait_for("[c]ontinue, [a]bort?");
    session.answer("r");
    session.wait_for("there is nothing to retry: the step has not run yet");
    session.answer("a");

    let (code, output) = session.finish();
    assert_eq!(code, 1, "{output}");
    assert!(output.contains(" cancelled in "), "{output}");
    let job = sandbox.last_job();
    assert_eq!(job["job"]["state"], "cancelled");
    assert_eq!(
        job["job"]["reason"],
        "aborted in the debugger, paused before test › check"
    );
}

/// A change that a watch session detects while the debugger waits for a
/// decision ends the pause at once. Enter then lets the next run start.
#[test]
fn watch_change_at_the_question_ends_the_pause() {
    let sandbox = failing_sandbox();
    let mut session = Session::spawn(&sandbox, "watch", &["--break-before", "test/check"]);
    session.wait_for("[c]ontinue, [a]bort?");

    std::fs::write(sandbox.project().join("status.txt"), "still broken\n").unwrap();
    session.wait_for("the job stopped while paused (a change or its timeout ended it)");
    session.answer("");
    session.wait_for("[c]ontinue, [a]bort?");
    session.answer("a");
    session.wait_for(" cancelled in ");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(session.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();

    let (_, output) = session.finish();
    let first_end = output
        .find("cancelled: status.txt changed")
        .unwrap_or_else(|| panic!("the change did not end the first job:\n{output}"));
    let second_pause = output.rfind("⏸ paused").unwrap();
    assert!(first_end < second_pause, "{output}");
    assert!(output.contains("stopped watching"), "{output}");
}

#[test]
fn closed_stdin_aborts_a_pause() {
    let sandbox = failing_sandbox();

    let run = sandbox.run(&["--break-on-failure"]);

    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout
            .contains("stdin closed without a decision: aborting the job"),
        "{}",
        run.text()
    );
    assert_eq!(sandbox.last_job()["job"]["state"], "cancelled");
}

#[test]
fn unknown_task_in_breakpoint_is_a_usage_error() {
    let sandbox = failing_sandbox();

    let run = sandbox.run(&["--break-before", "deploy/push"]);

    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("`deploy`"), "{}", run.text());
    assert!(run.stderr.contains("its tasks are: test"), "{}", run.text());
}

/// A change that a watch session detects while the debug shell is open stops
/// the job and its shell. The terminal must come back to `danube`: the next
/// pause opens a shell again, and Ctrl-C then ends the session.
#[test]
fn watch_change_during_shell_keeps_terminal() {
    let sandbox = failing_sandbox();
    let mut command = sandbox.command();
    command
        .arg("watch")
        .arg(sandbox.project())
        .arg("--break-on-failure")
        .env("SHELL", "/bin/sh")
        .env("PS1", "dbg$ ");
    let (mut terminal, mut danube) = Terminal::spawn_session(&mut command);

    let opened = terminal.wait_for("opening a shell in the step's environment", 0);
    let prompt = terminal.wait_for("dbg$ ", opened);
    std::fs::write(sandbox.project().join("notes.txt"), "changed\n").unwrap();
    let ended = terminal.wait_for("the pause ended while the shell was open", prompt);
    let reopened = terminal.wait_for("opening a shell in the step's environment", ended);
    let prompt = terminal.wait_for("dbg$ ", reopened);
    terminal.type_text("exit\n");
    let asked = terminal.wait_for("[c]ontinue, [r]etry, [a]bort?", prompt);
    terminal.type_text("c\n");
    terminal.wait_for("(Ctrl-C to stop)", asked);
    terminal.type_text("\x03");

    let deadline = std::time::Instant::now() + LINE_LIMIT;
    let status = loop {
        if let Some(status) = danube.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = danube.kill();
            panic!("Ctrl-C did not end `danube watch`:\n{}", terminal.text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status:?}\n{}", terminal.text());
    assert!(
        !terminal.text().contains("stdin closed without a decision"),
        "{}",
        terminal.text()
    );
}
