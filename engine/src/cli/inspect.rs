//! `danube jobs`, `show`, `logs` and `artifacts`: read recorded jobs back.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use comfy_table::{Table, presets};

use crate::artifacts;
use crate::config::DataDir;
use crate::logs::{self, LogKey};
use crate::model::{JobId, UnixMillis, now_millis};
use crate::store::{JobRecord, StepRecord, Store};

use super::{Status, format_duration};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Number of jobs to list, most recent first
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Job id, or a unique prefix of it
    job: String,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job id, or a unique prefix of it
    job: String,

    /// Only the steps of this task
    #[arg(long, value_name = "NAME")]
    task: Option<String>,

    /// Only the step with this name
    #[arg(long, value_name = "NAME")]
    step: Option<String>,

    /// Only this output of the steps
    #[arg(long, value_name = "STREAM", value_parser = ["stdout", "stderr"])]
    stream: Option<String>,
}

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// Job id, or a unique prefix of it
    job: String,

    /// Name of the artifact to download
    #[arg(long, value_name = "NAME", requires = "out")]
    get: Option<String>,

    /// Where to write it: a file path, or for a directory artifact the
    /// directory to extract into
    #[arg(long, value_name = "PATH", requires = "get")]
    out: Option<PathBuf>,
}

pub async fn jobs(store: &Store, args: JobsArgs) -> anyhow::Result<Status> {
    let jobs = store.list_jobs(args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(Status::Success);
    }
    if jobs.is_empty() {
        println!("No jobs yet. Start one with `danube run DIR`.");
        return Ok(Status::Success);
    }

    let mut table = new_table(&["ID", "PIPELINE", "TARGET", "STATE", "STARTED", "DURATION"]);
    for job in &jobs {
        table.add_row(vec![
            job.id.short().to_owned(),
            job.pipeline.clone(),
            job.target.clone().unwrap_or_else(|| "local".to_owned()),
            job.state.to_string(),
            format_time(job.started_at.unwrap_or(job.created_at)),
            job_duration(job),
        ]);
    }
    println!("{table}");
    Ok(Status::Success)
}

pub async fn show(store: &Store, args: ShowArgs) -> anyhow::Result<Status> {
    let job = store.find_job(&args.job).await?;
    if args.json {
        let tasks = store.list_tasks(&job.id).await?;
        let steps = store.list_steps(&job.id).await?;
        let artifacts = store.list_artifacts(&job.id).await?;
        let document = serde_json::json!({
            "job": job,
            "tasks": tasks,
            "steps": steps,
            "artifacts": artifacts,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(Status::Success);
    }

    println!("job       {}", job.id);
    println!("pipeline  {}", job.pipeline);
    println!("project   {}", job.project_dir);
    if !job.commit_sha.is_empty() {
        println!("commit    {} ({})", job.commit_sha, job.branch);
    }
    println!("target    {}", job.target.as_deref().unwrap_or("local"));
    println!("state     {}", job.state);
    if let Some(reason) = &job.reason {
        println!("reason    {reason}");
    }
    println!(
        "started   {}",
        format_time(job.started_at.unwrap_or(job.created_at))
    );
    println!("duration  {}", job_duration(&job));
    println!();
    print_summary(store, &job.id, false).await?;

    for task in store.list_tasks(&job.id).await? {
        if let Some(error) = &task.error {
            println!(
                "\ntask {} ({}):\n{}",
                task.name,
                task.state,
                error.trim_end()
            );
        }
    }
    let artifacts = store.list_artifacts(&job.id).await?;
    if !artifacts.is_empty() {
        println!("\nartifacts:");
        for artifact in artifacts {
            println!(
                "  {} ({}, {} bytes)",
                artifact.name, artifact.kind, artifact.size_bytes
            );
        }
    }
    Ok(Status::Success)
}

/// Prints the table of tasks and steps that `danube run` ends with.
pub async fn print_summary(store: &Store, job: &JobId, _interactive: bool) -> anyhow::Result<()> {
    let tasks = store.list_tasks(job).await?;
    let steps = store.list_steps(job).await?;
    if tasks.is_empty() {
        return Ok(());
    }

    let mut table = new_table(&["TASK", "STEP", "STATE", "EXIT", "DURATION"]);
    for task in &tasks {
        let paused = task.paused_ms;
        let task_duration = match (task.started_at, task.duration_ms()) {
            (_, Some(ran)) => with_pause(ran, paused),
            (Some(start), None) => with_pause((now_millis() - start - paused).max(0), paused),
            _ => String::new(),
        };
        table.add_row(vec![
            task.name.clone(),
            String::new(),
            task.state.to_string(),
            String::new(),
            task_duration,
        ]);
        for step in steps.iter().filter(|step| step.task == task.name) {
            table.add_row(vec![
                String::new(),
                step.name.clone(),
                step.state.to_string(),
                step.exit_code
                    .map(|code| code.to_string())
                    .unwrap_or_default(),
                step_duration(step),
            ]);
        }
    }
    // `danube run` keeps going when its output is closed, so ignore errors.
    let _ = writeln!(std::io::stdout().lock(), "{table}");
    Ok(())
}

/// Formats how long a step ran, without the time it spent paused in the
/// debugger, which follows when there was some.
fn step_duration(step: &StepRecord) -> String {
    let ran = step
        .duration_ms()
        .unwrap_or_else(|| (now_millis() - step.started_at - step.paused_ms).max(0));
    with_pause(ran, step.paused_ms)
}

/// Formats `ran` milliseconds, followed by the time paused when there was
/// some: `4.0s (+11.2s paused)`.
fn with_pause(ran: i64, paused: i64) -> String {
    match paused {
        0 => format_duration(ran),
        paused => format!(
            "{} (+{} paused)",
            format_duration(ran),
            format_duration(paused)
        ),
    }
}

pub async fn logs(data: &DataDir, store: &Store, args: LogsArgs) -> anyhow::Result<Status> {
    let job = store.find_job(&args.job).await?;
    let steps = store.list_steps(&job.id).await?;
    let dir = data.job_logs_dir(&job.id);

    let selected: Vec<&StepRecord> = steps
        .iter()
        .filter(|step| args.task.as_ref().is_none_or(|task| &step.task == task))
        .filter(|step| args.step.as_ref().is_none_or(|name| &step.name == name))
        .collect();
    if selected.is_empty() && (args.task.is_some() || args.step.is_some()) {
        let available: Vec<String> = steps
            .iter()
            .map(|step| format!("{} › {}", step.task, step.name))
            .collect();
        bail!(
            "no step of job {} matches{}{}; its steps are: {}",
            job.id.short(),
            args.task
                .map(|t| format!(" --task {t}"))
                .unwrap_or_default(),
            args.step
                .map(|s| format!(" --step {s}"))
                .unwrap_or_default(),
            if available.is_empty() {
                "(none)".to_owned()
            } else {
                available.join(", ")
            }
        );
    }

    let mut out = std::io::stdout().lock();
    let single = selected.len() == 1 && (args.task.is_some() || args.step.is_some());
    if !single && args.task.is_none() && args.step.is_none() && args.stream.is_none() {
        let coordinator = logs::read_log_bytes(&dir, LogKey::Coordinator).with_context(|| {
            format!("failed to read the coordinator log in `{}`", dir.display())
        })?;
        if !coordinator.is_empty() {
            writeln!(out, "==> coordinator <==")?;
            out.write_all(&coordinator)?;
            end_with_newline(&mut out, &coordinator)?;
        }
    }
    for step in selected {
        let bytes = read_step_log(&dir, step.id, args.stream.as_deref())
            .with_context(|| format!("failed to read the log of step `{}`", step.name))?;
        if !single {
            writeln!(
                out,
                "==> {} › {} ({}) <==",
                step.task, step.name, step.state
            )?;
        }
        out.write_all(&bytes)?;
        if !single {
            end_with_newline(&mut out, &bytes)?;
        }
    }
    Ok(Status::Success)
}

/// Reads a step's stored bytes, or only those of one stream.
fn read_step_log(
    dir: &std::path::Path,
    step_id: i64,
    stream: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    let Some(stream) = stream else {
        return logs::read_log_bytes(dir, LogKey::Step(step_id));
    };
    let chunks = logs::read_log(dir, LogKey::Step(step_id))?;
    Ok(chunks
        .iter()
        .filter(|chunk| chunk.stream.as_str() == stream)
        .flat_map(|chunk| chunk.data.iter().copied())
        .collect())
}

fn end_with_newline(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.last().is_some_and(|b| *b != b'\n') {
        writeln!(out)?;
    }
    Ok(())
}

pub async fn artifacts(
    data: &DataDir,
    store: &Store,
    args: ArtifactsArgs,
) -> anyhow::Result<Status> {
    let job = store.find_job(&args.job).await?;
    let records = store.list_artifacts(&job.id).await?;

    let (Some(name), Some(out)) = (args.get, args.out) else {
        if records.is_empty() {
            println!("Job {} has no artifacts.", job.id.short());
            return Ok(Status::Success);
        }
        let mut table = new_table(&["NAME", "KIND", "SIZE", "SHA256", "TASK"]);
        for artifact in &records {
            table.add_row(vec![
                artifact.name.clone(),
                artifact.kind.clone(),
                artifact.size_bytes.to_string(),
                artifact.sha256.chars().take(12).collect(),
                artifact.task.clone(),
            ]);
        }
        println!("{table}");
        return Ok(Status::Success);
    };

    let Some(artifact) = records.iter().find(|a| a.name == name) else {
        let names: Vec<&str> = records.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "job {} has no artifact `{name}`; its artifacts are: {}",
            job.id.short(),
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    let store_dir =
        artifacts::ArtifactStore::new(data.artifacts_dir(), artifacts::DEFAULT_MAX_ARTIFACT_BYTES);
    let kind: artifacts::ArtifactKind = artifact.kind.parse().with_context(|| {
        format!(
            "artifact `{}` has an unknown kind in the database",
            artifact.name
        )
    })?;
    let source = store_dir.path_of(&job.id, &artifact.name, kind);
    if kind == artifacts::ArtifactKind::Directory {
        artifacts::extract_directory(&source, &out)?;
        println!("extracted {} into {}", artifact.name, out.display());
    } else {
        let target = if out.is_dir() {
            out.join(&artifact.name)
        } else {
            out
        };
        std::fs::copy(&source, &target)
            .with_context(|| format!("failed to write `{}`", target.display()))?;
        println!("wrote {} ({} bytes)", target.display(), artifact.size_bytes);
    }
    Ok(Status::Success)
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    table
}

fn format_time(ms: UnixMillis) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn job_duration(job: &JobRecord) -> String {
    match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => format_duration(end - start),
        (Some(start), None) => format!("{} (running)", format_duration(now_millis() - start)),
        _ => String::new(),
    }
}
