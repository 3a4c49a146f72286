//! `danube watch`: run a pipeline, and rerun it whenever a file of the
//! project changes.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::model::TriggerType;
use crate::orchestrator::{JobOutcome, OrchestratorError, error_chain};
use crate::store::Store;
use crate::watch::{ChangeBatch, RunFollower, WatchRequest, WatchRun, WatchSession};

use super::Status;
use super::run::{ProjectArgs, exit_status, follow_job, set_up, show_result};

/// [`DEFAULT_DEBOUNCE`] as the command line spells it.
const DEFAULT_DEBOUNCE_TEXT: &str = "250ms";

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    project: ProjectArgs,

    /// Time without changes after the last change of a burst before the
    /// pipeline reruns, such as `250ms` or `1s` (10ms to 1m)
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_DEBOUNCE_TEXT, value_parser = humantime::parse_duration)]
    debounce: Duration,
}

pub async fn watch(data_root: &Path, args: WatchArgs) -> anyhow::Result<Status> {
    let mut project = args.project;
    project.check()?;
    let Some(setup) = set_up(data_root, project.target(), "nothing was run").await? else {
        return Ok(Status::JobFailed);
    };

    let session = WatchSession::start(
        setup.engine.clone(),
        WatchRequest {
            job: project.job_request(TriggerType::Local),
            debounce: args.debounce,
        },
    )?;
    let controls = session.controls();
    let project_dir = session.project.clone();
    let mut interrupts = setup.interrupts;
    tokio::spawn(async move {
        let name = interrupts.next().await;
        eprintln!("received {name}: stopping the watch (cancelling the job in flight)...");
        controls.stop();
    });

    let mut follower = LiveFollower {
        store: setup.store.clone(),
        project: project_dir.display().to_string(),
        announced: false,
    };
    let last = session.run(&mut follower).await?;
    println!("stopped watching {}", project_dir.display());
    Ok(last.as_ref().map_or(Status::JobFailed, exit_status))
}

/// Shows each job of the session as `danube run` does.
struct LiveFollower {
    store: Store,
    project: String,
    /// The restart of the next job was printed when its change cancelled
    /// the job before it.
    announced: bool,
}

#[async_trait::async_trait]
impl RunFollower for LiveFollower {
    async fn follow(&mut self, run: WatchRun) -> JobOutcome {
        if let Some(change) = &run.change
            && !std::mem::take(&mut self.announced)
        {
            println!("{}", restart_line(change));
        }
        let (view, outcome) = follow_job(run.handle, None).await;

        // A change cancelled the job. Print that before its result, so the
        // result reads as the end of this job rather than of the watch.
        let interrupted_by = run.interrupted_by.borrow().clone();
        if let Some(change) = interrupted_by {
            println!("{}", restart_line(&change));
            self.announced = true;
        }
        show_result(&self.store, &view, &outcome).await;
        if !self.announced {
            println!("watching {} for changes (Ctrl-C to stop)", self.project);
        }
        outcome
    }

    fn submit_failed(&mut self, change: &ChangeBatch, error: &OrchestratorError) {
        println!("{}", restart_line(change));
        eprintln!("error: {}", error_chain(error));
        println!("watching {} for changes (Ctrl-C to stop)", self.project);
    }
}

fn restart_line(change: &ChangeBatch) -> String {
    let others = change.paths.saturating_sub(1);
    match others {
        0 => format!("change in {}: restarting", change.trigger.display()),
        _ => format!(
            "change in {} and {others} other path{}: restarting",
            change.trigger.display(),
            if others == 1 { "" } else { "s" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::DEFAULT_DEBOUNCE;

    #[test]
    fn default_debounce_text_matches_engine_default() {
        let parsed = humantime::parse_duration(DEFAULT_DEBOUNCE_TEXT).unwrap();
        assert_eq!(parsed, DEFAULT_DEBOUNCE);
    }

    #[test]
    fn restart_line_names_trigger_and_other_paths() {
        let one = ChangeBatch {
            trigger: "src/x.py".into(),
            paths: 1,
        };
        let three = ChangeBatch {
            trigger: "src/x.py".into(),
            paths: 3,
        };

        assert_eq!(restart_line(&one), "change in src/x.py: restarting");
        assert_eq!(
            restart_line(&three),
            "change in src/x.py and 2 other paths: restarting"
        );
    }
}
