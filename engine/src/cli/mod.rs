//! The `danube` command line: argument parsing, exit codes and the
//! subcommands.
//!
//! Exit status: 0 on success, 1 when a job failed, was cancelled or timed
//! out, 2 for usage and configuration errors (including a pipeline that
//! cannot be loaded).

mod debug;
mod inspect;
mod live;
mod run;
mod secret;
mod serve;
mod signals;
pub mod target;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::DataDir;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "danube",
    version,
    about = "Run CI/CD pipelines written in Python",
    long_about = "Run CI/CD pipelines written in Python.\n\nA pipeline is a `danubefile.py` that imports the `danube` SDK. `danube run` runs it on this machine and records the job; `danube jobs`, `show`, `logs` and `artifacts` read the records back."
)]
pub struct Cli {
    /// Directory for the database, logs, artifacts, workspaces and keys
    /// [default: the platform's user data directory, such as ~/.local/share/danube]
    #[arg(long, global = true, env = "DANUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print the engine's own log (-v for info, -vv for debug); DANUBE_LOG
    /// takes a full tracing filter instead
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline in DIR/danubefile.py and show its progress
    Run(run::RunArgs),
    /// Run the pipeline, and rerun it whenever a file of DIR changes
    Watch(watch::WatchArgs),
    /// List recent jobs
    Jobs(inspect::JobsArgs),
    /// Show a job's tasks and steps
    Show(inspect::ShowArgs),
    /// Print a job's stored logs
    Logs(inspect::LogsArgs),
    /// List a job's artifacts, or download one
    Artifacts(inspect::ArtifactsArgs),
    /// Manage secrets for pipelines
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Serve the HTTP API on loopback and run the jobs it starts
    Serve(serve::ServeArgs),
}

/// Exit status of the `danube` process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    JobFailed = 1,
    Usage = 2,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Status::Usage.into()
            } else {
                Status::Success.into()
            };
        }
    };
    init_tracing(cli.verbose);

    // Rust ignores SIGPIPE, so printing to a closed pipe (`danube logs | head`)
    // would fail with an error. Other commands die quietly as Unix tools do;
    // `run`, `watch` and `serve` keep their jobs going and ignore failed writes
    // instead.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Watch(_) | Command::Serve(_)
    ) {
        // SAFETY: called before any thread starts; it only resets a signal disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return Status::Usage.into();
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("error: {}", crate::orchestrator::error_chain(err.as_ref()));
            Status::Usage.into()
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<Status> {
    let data_root = DataDir::resolve(cli.data_dir);
    match cli.command {
        Command::Run(args) => run::run(&data_root, args).await,
        Command::Watch(args) => watch::watch(&data_root, args).await,
        Command::Jobs(args) => inspect::jobs(&open_store(&data_root).await?, args).await,
        Command::Show(args) => inspect::show(&open_store(&data_root).await?, args).await,
        Command::Logs(args) => {
            let (data, store) = open_data(&data_root).await?;
            inspect::logs(&data, &store, args).await
        }
        Command::Artifacts(args) => {
            let (data, store) = open_data(&data_root).await?;
            inspect::artifacts(&data, &store, args).await
        }
        Command::Secret(command) => {
            let (data, store) = open_data(&data_root).await?;
            secret::run(&data, store, command).await
        }
        Command::Serve(args) => serve::serve(&data_root, args).await,
    }
}

async fn open_data(root: &std::path::Path) -> anyhow::Result<(DataDir, Store)> {
    Ok(crate::server::open_data(root, &|line| eprintln!("{line}")).await?)
}

async fn open_store(root: &std::path::Path) -> anyhow::Result<Store> {
    Ok(open_data(root).await?.1)
}

/// Starts an engine on the backend of `target` after setting up the SDK's
/// Python environment. Returns `None` when a signal arrives during the
/// setup, after printing which one and `consequence`.
async fn start_engine(
    data: &DataDir,
    store: Store,
    target: &target::TargetArgs,
    interrupts: &mut signals::Interrupts,
    consequence: &str,
) -> anyhow::Result<Option<crate::orchestrator::Engine>> {
    let backend = tokio::select! {
        backend = target.backend(data, &store) => backend?,
        name = interrupts.next() => {
            eprintln!("received {name} while connecting to the cluster: {consequence}");
            return Ok(None);
        }
    };

    tokio::select! {
        engine = crate::server::start_engine(data, store, backend, target.rpc_listen, &|line| eprintln!("{line}")) => Ok(Some(engine?)),
        name = interrupts.next() => {
            eprintln!("received {name} while preparing the Python environment: {consequence}");
            Ok(None)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "danube=warn",
        1 => "danube=info",
        _ => "danube=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DANUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Formats a duration in milliseconds the way the tables show it: `850ms`,
/// `12.3s`, `4m05s`.
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let seconds = ms / 1000;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_by_magnitude() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(850), "850ms");
        assert_eq!(format_duration(12_345), "12.3s");
        assert_eq!(format_duration(245_000), "4m05s");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
