//! `danube run`: run a pipeline on this machine and show it live. The
//! project arguments, the engine setup and the live view of one job are
//! shared with `danube watch`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::model::{JobState, TriggerType};
use crate::orchestrator::{
    Breakpoints, Engine, JobHandle, JobOutcome, JobRequest, PIPELINE_FILE, check_project,
};
use crate::store::Store;

use super::Status;
use super::live::LiveView;
use super::signals::Interrupts;
use super::target::TargetArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    project: ProjectArgs,

    /// Print the pod a job would get on a kube target, as YAML, and exit
    /// without contacting the cluster
    #[arg(long)]
    dry_run: bool,
}

/// The project and how to run it, as `danube run` and `danube watch` take
/// them.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Project folder that contains danubefile.py
    #[arg(default_value = ".", value_name = "DIR")]
    dir: PathBuf,

    /// Pipeline to run when the file defines several
    #[arg(long, short, value_name = "NAME")]
    pipeline: Option<String>,

    /// Run in the project folder itself instead of a fresh copy of it
    #[arg(long)]
    in_place: bool,

    /// Maximum number of tasks running at the same time [default: the number
    /// of CPUs, at least 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    max_parallel: Option<u16>,

    #[command(flatten)]
    target: TargetArgs,

    /// Pause before STEP to look around in its environment: `task/step`, a
    /// step name, or a task name (its first step); repeatable
    #[arg(long, value_name = "STEP")]
    break_before: Vec<String>,

    /// Pause after a failing step, before its task is marked failed
    #[arg(long)]
    break_on_failure: bool,
}

impl ProjectArgs {
    /// Checks the project folder, taking `DIR/danubefile.py` to mean `DIR`.
    /// The cheap checks go first, so a typo fails before any setup work.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if self.dir.is_file()
            && self
                .dir
                .file_name()
                .is_some_and(|name| name == PIPELINE_FILE)
        {
            self.dir = self.dir.parent().map(ToOwned::to_owned).unwrap_or_default();
            if self.dir.as_os_str().is_empty() {
                self.dir = ".".into();
            }
        }
        if self.in_place && self.target.is_kube() {
            anyhow::bail!(
                "--in-place does not work with --target {}: steps run in the pod's own workspace (drop --in-place)",
                self.target.target
            );
        }
        check_project(&self.dir)?;
        Ok(())
    }

    pub fn target(&self) -> &TargetArgs {
        &self.target
    }

    pub fn job_request(&self, trigger: TriggerType) -> JobRequest {
        JobRequest {
            project: self.dir.clone(),
            repository: None,
            pipeline: self.pipeline.clone(),
            in_place: self.in_place,
            max_parallel: self
                .max_parallel
                .map(usize::from)
                .unwrap_or_else(default_parallelism),
            trigger,
            trigger_ref: None,
            backend: None,
            breakpoints: Breakpoints {
                before: self.break_before.clone(),
                on_failure: self.break_on_failure,
            },
        }
    }
}

/// An engine on the chosen target, its store, and the signal handlers
/// installed before it started.
pub struct EngineSetup {
    pub store: Store,
    pub engine: Engine,
    pub interrupts: Interrupts,
}

/// Opens the data directory and starts an engine on `target`.
/// Returns `None` when a signal arrives during the setup, after printing
/// which one and `consequence`.
pub async fn set_up(
    data_root: &Path,
    target: &TargetArgs,
    consequence: &str,
) -> anyhow::Result<Option<EngineSetup>> {
    let (data, store) = super::open_data(data_root).await?;
    let mut interrupts = Interrupts::install();
    let Some(engine) =
        super::start_engine(&data, store.clone(), target, &mut interrupts, consequence).await?
    else {
        return Ok(None);
    };
    Ok(Some(EngineSetup {
        store,
        engine,
        interrupts,
    }))
}

pub async fn run(data_root: &Path, args: RunArgs) -> anyhow::Result<Status> {
    let mut project = args.project;
    if args.dry_run && !project.target.is_kube() {
        anyhow::bail!(
            "--dry-run prints the pod of a kube target; add --target kube or --target kube:CONTEXT"
        );
    }
    project.check()?;
    if args.dry_run {
        let data = crate::config::DataDir::open(data_root)?;
        project
            .target
            .print_dry_run(&data, project.pipeline.as_deref())
            .await?;
        return Ok(Status::Success);
    }

    let Some(mut setup) = set_up(data_root, &project.target, "nothing was run").await? else {
        return Ok(Status::JobFailed);
    };

    let handle = setup
        .engine
        .submit(project.job_request(TriggerType::Local))
        .await?;
    let outcome = show_job(&setup.store, handle, Some(&mut setup.interrupts)).await;
    Ok(exit_status(&outcome))
}

/// Shows a job live until it ends, then its table of tasks and steps and
/// its result. With `interrupts`, the first signal cancels the job.
pub async fn show_job(
    store: &Store,
    handle: JobHandle,
    interrupts: Option<&mut Interrupts>,
) -> JobOutcome {
    let (view, outcome) = follow_job(handle, interrupts).await;
    show_result(store, &view, &outcome).await;
    outcome
}

/// Shows a job live until it ends, without its table and result.
pub async fn follow_job(
    handle: JobHandle,
    interrupts: Option<&mut Interrupts>,
) -> (LiveView, JobOutcome) {
    let interactive = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let mut view = LiveView::new(handle.id.clone(), interactive);
    let outcome = view.follow(handle, interrupts).await;
    (view, outcome)
}

/// Prints the table of tasks and steps and the result of a job that ended.
pub async fn show_result(store: &Store, view: &LiveView, outcome: &JobOutcome) {
    let interactive = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();

    // The job has ended either way, so its outcome still sets the exit status.
    if let Err(err) = super::inspect::print_summary(store, &view.job_id, interactive).await {
        eprintln!(
            "error: failed to read the tasks and steps of job {}: {err:#}",
            view.job_id
        );
    }
    view.print_result(outcome);
}

pub fn exit_status(outcome: &JobOutcome) -> Status {
    match outcome.state {
        JobState::Success => Status::Success,
        _ if outcome.load_error => Status::Usage,
        _ => Status::JobFailed,
    }
}

pub(super) use crate::server::default_parallelism;
