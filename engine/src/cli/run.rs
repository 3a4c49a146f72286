//! `danube run`: run a pipeline on this machine and show it live.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::model::JobState;
use crate::orchestrator::{Breakpoints, JobRequest, PIPELINE_FILE, check_project};

use super::Status;
use super::live::LiveView;
use super::signals::Interrupts;
use super::target::TargetArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
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

    /// Print the pod a job would get on a kube target, as YAML, and exit
    /// without contacting the cluster
    #[arg(long)]
    dry_run: bool,

    /// Pause before STEP to look around in its environment: `task/step`, a
    /// step name, or a task name (its first step); repeatable
    #[arg(long, value_name = "STEP")]
    break_before: Vec<String>,

    /// Pause after a failing step, before its task is marked failed
    #[arg(long)]
    break_on_failure: bool,
}

pub async fn run(data_root: &Path, args: RunArgs) -> anyhow::Result<Status> {
    // Check the cheap things first, so a typo fails before any setup work.
    let mut args = args;
    if args.dir.is_file()
        && args
            .dir
            .file_name()
            .is_some_and(|name| name == PIPELINE_FILE)
    {
        // `danube run path/danubefile.py` means its folder.
        args.dir = args.dir.parent().map(ToOwned::to_owned).unwrap_or_default();
        if args.dir.as_os_str().is_empty() {
            args.dir = ".".into();
        }
    }
    if args.dry_run && !args.target.is_kube() {
        anyhow::bail!(
            "--dry-run prints the pod of a kube target; add --target kube or --target kube:CONTEXT"
        );
    }
    if args.in_place && args.target.is_kube() {
        anyhow::bail!(
            "--in-place does not work with --target {}: steps run in the pod's own workspace (drop --in-place)",
            args.target.target
        );
    }
    check_project(&args.dir)?;
    if args.dry_run {
        let data = crate::config::DataDir::open(data_root)?;
        args.target
            .print_dry_run(&data, args.pipeline.as_deref())
            .await?;
        return Ok(Status::Success);
    }
    let (data, store) = super::open_data(data_root).await?;

    let mut interrupts = Interrupts::install();
    let Some(engine) = super::start_engine(
        &data,
        store.clone(),
        &args.target,
        &mut interrupts,
        "nothing was run",
    )
    .await?
    else {
        return Ok(Status::JobFailed);
    };

    let max_parallel = args
        .max_parallel
        .map(usize::from)
        .unwrap_or_else(default_parallelism);
    let handle = engine
        .submit(JobRequest {
            project: args.dir.clone(),
            pipeline: args.pipeline.clone(),
            in_place: args.in_place,
            max_parallel,
            trigger: crate::model::TriggerType::Local,
            breakpoints: Breakpoints {
                before: args.break_before.clone(),
                on_failure: args.break_on_failure,
            },
        })
        .await?;

    let interactive = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let mut view = LiveView::new(handle.id.clone(), interactive);
    let outcome = view.follow(handle, &mut interrupts).await;

    super::inspect::print_summary(&store, &view.job_id, interactive).await?;
    view.print_result(&outcome);

    Ok(match outcome.state {
        JobState::Success => Status::Success,
        _ if outcome.load_error => Status::Usage,
        _ => Status::JobFailed,
    })
}

pub(super) fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .max(4)
}
