//! `danube run`: run a pipeline on this machine and show it live.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::model::JobState;
use crate::orchestrator::{JobRequest, PIPELINE_FILE, check_project};

use super::Status;
use super::live::LiveView;
use super::signals::Interrupts;

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
    check_project(&args.dir)?;
    let (data, store) = super::open_data(data_root).await?;

    let mut interrupts = Interrupts::install();
    let Some(engine) =
        super::start_local_engine(&data, store.clone(), &mut interrupts, "nothing was run").await?
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

pub(super) use crate::server::default_parallelism;
