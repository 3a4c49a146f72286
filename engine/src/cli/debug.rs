//! `danube run` while a step is paused: print where and why, open a shell
//! in the step's environment on a terminal, then ask whether to continue,
//! retry or abort.
//!
//! Without a terminal no shell is opened and the answer is read from stdin
//! lines, so that scripts and tests can drive a pause. Ctrl-C (or SIGTERM,
//! SIGHUP) at the question aborts the job. While the shell runs, Ctrl-C
//! belongs to the shell, so that it can stop a command there; SIGTERM and
//! SIGHUP close the shell and abort.

use std::io::{BufRead, IsTerminal};

use tokio::sync::oneshot;

use crate::backend::ShellEnd;
use crate::orchestrator::Debugger;
use crate::orchestrator::debug::{DebugError, Decision, Pause, PauseReason};

use super::live::next_signal;
use super::signals::Interrupts;

/// Handles every pause of one `danube run`.
pub struct DebugPrompt {
    terminal: bool,
}

impl DebugPrompt {
    pub fn new() -> DebugPrompt {
        DebugPrompt {
            terminal: std::io::stdin().is_terminal(),
        }
    }

    /// Shows `pause`, lets the user look around, and resumes the job with
    /// the user's decision. `print` writes one line of the live view.
    pub async fn handle(
        &mut self,
        debugger: &Debugger,
        pause: &Pause,
        interrupts: &mut Option<&mut Interrupts>,
        print: &(dyn Fn(&str) + Sync),
    ) {
        print(&describe(pause));
        print(&format!("  workdir: {}", pause.workdir.display()));
        if let Some(image) = &pause.image {
            print(&format!("  image: {image}"));
        }

        let retry = matches!(pause.reason, PauseReason::Failure { .. });
        if self.terminal {
            let choices = if retry {
                "continue, retry or abort"
            } else {
                "continue or abort"
            };
            print(&format!(
                "opening a shell in the step's environment; exit it to {choices}"
            ));
            let outcome = {
                let _foreground = Foreground::keep();
                run_shell(debugger, interrupts, print).await
            };
            let ended = match outcome {
                ShellOutcome::Signal(decision) => {
                    resume(debugger, decision, print);
                    return;
                }
                ShellOutcome::Ended(ended) => ended,
            };
            if debugger.pause().is_none() {
                // A watch session's change or the job's timeout ended the
                // pause while the shell ran; there is nothing to decide.
                print("the pause ended while the shell was open (the job stopped)");
                return;
            }
            print(&shell_end_text(ended));
        }

        if let Some(decision) = ask(debugger, interrupts, print, retry).await {
            resume(debugger, decision, print);
        }
    }
}

/// Gives the terminal back to `danube`'s process group when dropped.
///
/// An interactive shell makes its own process group the terminal's
/// foreground. When the shell is killed (a watch session's change stops the
/// job, say), the terminal would stay with that dead group: Ctrl-C would no
/// longer reach `danube`, and reading the decision would stop it with SIGTTIN.
struct Foreground {
    group: Option<nix::unistd::Pid>,
}

impl Foreground {
    fn keep() -> Foreground {
        let group = nix::unistd::tcgetpgrp(std::io::stdin()).ok();
        Foreground { group }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        use nix::sys::signal::{SigHandler, Signal, signal};

        let Some(group) = self.group else {
            return;
        };
        // A background group that sets the foreground gets SIGTTOU, which
        // stops it unless ignored.
        // SAFETY: SIG_IGN runs no code, and the old handler is restored at once.
        let previous = unsafe { signal(Signal::SIGTTOU, SigHandler::SigIgn) };
        if let Err(err) = nix::unistd::tcsetpgrp(std::io::stdin(), group) {
            tracing::warn!(error = %err, "failed to give the terminal back to danube after the shell");
        }
        if let Ok(previous) = previous {
            // SAFETY: this puts back the handler that was installed before.
            let _ = unsafe { signal(Signal::SIGTTOU, previous) };
        }
    }
}

fn describe(pause: &Pause) -> String {
    let place = format!("{} › {}", pause.task, pause.step);
    let attempt = if pause.attempt > 1 {
        format!(", attempt {}", pause.attempt)
    } else {
        String::new()
    };
    match &pause.reason {
        PauseReason::Before { breakpoint } => {
            format!("⏸ paused before {place} (breakpoint `{breakpoint}`{attempt})")
        }
        PauseReason::Failure { state, exit_code } => {
            let exit = exit_code
                .map(|code| format!(", exit {code}"))
                .unwrap_or_default();
            format!("⏸ paused after {place} ended with {state}{exit}{attempt}")
        }
    }
}

/// The end of the debug shell of a pause.
enum ShellOutcome {
    /// A SIGTERM or SIGHUP arrived, which aborts the job.
    Signal(Decision),
    /// The shell ended, or could not open.
    Ended(Result<ShellEnd, DebugError>),
}

/// Runs the shell to its end or to a signal that aborts the job.
async fn run_shell(
    debugger: &Debugger,
    interrupts: &mut Option<&mut Interrupts>,
    print: &(dyn Fn(&str) + Sync),
) -> ShellOutcome {
    let shell = debugger.interactive_shell();
    tokio::pin!(shell);
    loop {
        tokio::select! {
            result = &mut shell => return ShellOutcome::Ended(result),
            name = next_signal(interrupts) => {
                if name == "SIGINT" {
                    // The terminal sent it to the shell too, which handles it.
                    continue;
                }
                // Dropping the shell's future ends it and restores the terminal.
                print(&format!("received {name}: closing the shell and aborting the job"));
                return ShellOutcome::Signal(Decision::Abort);
            }
        }
    }
}

/// Describes how a shell ended while its step stays paused.
fn shell_end_text(ended: Result<ShellEnd, DebugError>) -> String {
    match ended {
        Ok(ShellEnd::Exited(Some(code))) => {
            format!("the shell exited with code {code}; the step is still paused")
        }
        Ok(ShellEnd::Exited(None)) => "the shell exited; the step is still paused".to_owned(),
        Ok(ShellEnd::Lost(reason)) => {
            format!("the connection to the shell broke ({reason}); the step is still paused")
        }
        Err(err) => format!(
            "cannot open a shell: {}",
            crate::orchestrator::error_chain(&err)
        ),
    }
}

/// Asks for the decision until a valid one is typed; `retry` is offered
/// only after a failure, since a step paused before has not run. End of
/// input and a signal abort.
///
/// Returns `None` when the job stopped meanwhile (a watch session's change,
/// its timeout), which ends the pause without a decision.
async fn ask(
    debugger: &Debugger,
    interrupts: &mut Option<&mut Interrupts>,
    print: &(dyn Fn(&str) + Sync),
    retry: bool,
) -> Option<Decision> {
    loop {
        print(if retry {
            "[c]ontinue, [r]etry, [a]bort?"
        } else {
            "[c]ontinue, [a]bort?"
        });
        let read = read_line();
        tokio::pin!(read);
        let mut stopped = false;
        let line = loop {
            tokio::select! {
                line = &mut read => break line,
                name = next_signal(interrupts) => {
                    print(&format!("received {name}: aborting the job"));
                    return Some(Decision::Abort);
                }
                () = debugger.stopped(), if !stopped => {
                    // The line being read is left to this question, so
                    // that it cannot reach the next pause or shell.
                    print("the job stopped while paused (a change or its timeout ended it); press Enter to go on");
                    stopped = true;
                }
            }
        };
        if stopped {
            return None;
        }
        let Some(line) = line else {
            print("stdin closed without a decision: aborting the job");
            return Some(Decision::Abort);
        };
        match parse_answer(&line) {
            Some(Decision::Retry) if !retry => print(
                "there is nothing to retry: the step has not run yet; type c to run it or a to abort",
            ),
            Some(decision) => return Some(decision),
            None => print(&format!(
                "`{}` is not an answer: type {}",
                line.trim(),
                if retry { "c, r or a" } else { "c or a" }
            )),
        }
    }
}

fn parse_answer(line: &str) -> Option<Decision> {
    match line.trim().to_ascii_lowercase().as_str() {
        "c" | "continue" => Some(Decision::Continue),
        "r" | "retry" => Some(Decision::Retry),
        "a" | "abort" => Some(Decision::Abort),
        _ => None,
    }
}

/// Reads one line of stdin on a thread of its own; `None` at end of input.
///
/// A blocking read cannot be cancelled. Reading on a thread that is not the
/// runtime's lets `danube` exit after a signal even while the read waits,
/// and reading one line per question leaves the terminal to the shell in
/// between.
async fn read_line() -> Option<String> {
    let (sender, receiver) = oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let _ = sender.send(match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        });
    });
    receiver.await.ok().flatten()
}

fn resume(debugger: &Debugger, decision: Decision, print: &(dyn Fn(&str) + Sync)) {
    let text = match decision {
        Decision::Continue => "continuing",
        Decision::Retry => "retrying the step",
        Decision::Abort => "aborting the job (stopping its processes)...",
    };
    print(text);
    if let Err(err) = debugger.resume(decision) {
        // The job stopped while paused (a timeout, say); the job's end shows why.
        tracing::debug!(error = %err, "the pause ended before the decision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_accept_letters_and_words() {
        assert_eq!(parse_answer("c\n"), Some(Decision::Continue));
        assert_eq!(parse_answer(" Retry "), Some(Decision::Retry));
        assert_eq!(parse_answer("a"), Some(Decision::Abort));
        assert_eq!(parse_answer("x"), None);
        assert_eq!(parse_answer(""), None);
    }
}
