//! Benchmark of watch mode: the time from saving a file of a watched
//! project to the first step of the new job starting, over 50 saves. The
//! debounce window is part of that time; the report shows it beside the
//! result.
//!
//! ```sh
//! cargo bench -p danube --bench watch                 # 50 saves
//! cargo bench -p danube --bench watch -- --saves 200
//! ```
//!
//! The engine runs in this process on the local backend, with a data
//! directory and project folder in a temp dir under `TMPDIR` and the venv
//! named by `DANUBE_PYTHON_VENV` (by default `target/bench-venv`, created
//! with pip on first use). The pipeline has one step, `true`. Each save
//! rewrites `src/app.py` once the previous job has ended and the watcher has
//! been quiet for two debounce windows.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use danube::backend::local::LocalBackend;
use danube::config::DataDir;
use danube::model::{JobId, TriggerType};
use danube::orchestrator::{Engine, EngineEvent, EngineParts, JobEvent, JobRequest};
use danube::store::Store;
use danube::watch::{DEFAULT_DEBOUNCE, WaitFollower, WatchRequest, WatchSession};
use tokio::sync::broadcast;

mod support;

use support::{bench_venv, load_average, machine_summary};

const DEFAULT_SAVES: usize = 50;

/// Bound on any one wait, so that a broken watcher fails the benchmark
/// instead of hanging it.
const LIMIT: Duration = Duration::from_secs(120);

const PIPELINE: &str = r#"
from danube import pipeline, step

@pipeline(name="watched")
def watched():
    step.run("true", name="check")
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|arg| arg == "--bench") {
        // `cargo test --all-targets` runs bench binaries too, without `--bench`.
        println!("skipped: run the watch benchmark with `cargo bench -p danube --bench watch`");
        return Ok(());
    }
    let saves = match args.iter().position(|arg| arg == "--saves") {
        Some(index) => args
            .get(index + 1)
            .and_then(|value| value.parse::<usize>().ok())
            .filter(|saves| *saves > 0)
            .context("--saves needs a positive number, such as `--saves 50`")?,
        None => DEFAULT_SAVES,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(saves))
}

/// Times of one save, from just before the write.
struct Save {
    recorded: Duration,
    first_step: Duration,
}

async fn bench(saves: usize) -> anyhow::Result<()> {
    let venv = bench_venv()?;
    // SAFETY: set before the runtime's threads read the environment; only
    // `ensure_env` below reads it.
    unsafe { std::env::set_var("DANUBE_PYTHON_VENV", &venv) };
    let root = tempfile::Builder::new()
        .prefix("danube-watch-bench-")
        .tempdir()?;
    let project = root.path().join("project");
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::write(project.join("danubefile.py"), PIPELINE)?;
    std::fs::write(project.join("src/app.py"), "version = 0\n")?;

    let engine = start_engine(&root.path().join("data")).await?;
    let mut events = engine.subscribe();
    let session = WatchSession::start(
        engine.clone(),
        WatchRequest {
            job: JobRequest {
                project: project.clone(),
                repository: None,
                pipeline: None,
                in_place: false,
                max_parallel: 4,
                trigger: TriggerType::Local,
                trigger_ref: None,
                backend: None,
                breakpoints: Default::default(),
            },
            debounce: DEFAULT_DEBOUNCE,
        },
    )?;
    let controls = session.controls();
    let running = tokio::spawn(async move { session.run(&mut WaitFollower).await });

    println!("{}", machine_summary());
    println!("load average before: {}", load_average());
    let first = next_job(&mut events).await?;
    wait_final(&mut events, &first).await?;

    let mut results = Vec::with_capacity(saves);
    for index in 1..=saves {
        tokio::time::sleep(DEFAULT_DEBOUNCE * 2).await;
        let saved = Instant::now();
        std::fs::write(project.join("src/app.py"), format!("version = {index}\n"))?;

        let job = next_job(&mut events).await?;
        let recorded = saved.elapsed();
        wait_first_step(&mut events, &job).await?;
        let first_step = saved.elapsed();
        wait_final(&mut events, &job).await?;
        let trigger = engine.store().find_job(job.as_str()).await?;
        if trigger.trigger_ref != "src/app.py" {
            bail!("job {job} names `{}`, not src/app.py", trigger.trigger_ref);
        }
        results.push(Save {
            recorded,
            first_step,
        });
    }

    controls.stop();
    running.await??;
    println!("load average after: {}", load_average());
    report(&results);
    Ok(())
}

async fn start_engine(data_root: &Path) -> anyhow::Result<Engine> {
    let data = DataDir::open(data_root)?;
    let store = Store::open(&data.database_path()).await?;
    let python = danube::python::ensure_env(&data, &|line| println!("{line}")).await?;
    Ok(Engine::start(EngineParts {
        backend: Arc::new(LocalBackend::new(data.workspaces_dir())),
        data,
        store,
        python,
        max_artifact_bytes: 1 << 20,
    })
    .await?)
}

/// Waits for the next event that matches `pick` and returns what it picked.
async fn wait_for<T>(
    events: &mut broadcast::Receiver<EngineEvent>,
    mut pick: impl FnMut(&EngineEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no expected engine event within the limit")??;
        if let Some(picked) = pick(&event) {
            return Ok(picked);
        }
    }
}

/// Waits for a job to be recorded and returns its id.
async fn next_job(events: &mut broadcast::Receiver<EngineEvent>) -> anyhow::Result<JobId> {
    wait_for(events, |event| match &event.event {
        JobEvent::JobState { state, .. } if *state == danube::model::JobState::Pending => {
            Some(event.job_id.clone())
        }
        _ => None,
    })
    .await
}

async fn wait_first_step(
    events: &mut broadcast::Receiver<EngineEvent>,
    job: &JobId,
) -> anyhow::Result<()> {
    wait_for(events, |event| {
        (event.job_id == *job && matches!(event.event, JobEvent::StepStarted { .. })).then_some(())
    })
    .await
}

async fn wait_final(
    events: &mut broadcast::Receiver<EngineEvent>,
    job: &JobId,
) -> anyhow::Result<()> {
    wait_for(events, |event| match &event.event {
        JobEvent::JobState { state, .. } if event.job_id == *job && state.is_final() => Some(()),
        _ => None,
    })
    .await
}

fn report(results: &[Save]) {
    let recorded: Vec<Duration> = results.iter().map(|save| save.recorded).collect();
    let first_step: Vec<Duration> = results.iter().map(|save| save.first_step).collect();
    println!(
        "\n{} saves, debounce window {} ms",
        results.len(),
        DEFAULT_DEBOUNCE.as_millis()
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}",
        "", "median", "p90", "min", "max"
    );
    print_row("save -> new job recorded", &recorded);
    print_row("save -> first step started", &first_step);
}

fn print_row(label: &str, values: &[Duration]) {
    let mut millis: Vec<f64> = values
        .iter()
        .map(|value| value.as_secs_f64() * 1000.0)
        .collect();
    millis.sort_by(f64::total_cmp);
    let percentile = |fraction: f64| {
        let rank = (fraction * millis.len() as f64).ceil() as usize;
        millis[rank.clamp(1, millis.len()) - 1]
    };
    println!(
        "{label:<34} {:>6.0}ms {:>6.0}ms {:>6.0}ms {:>6.0}ms",
        percentile(0.5),
        percentile(0.9),
        millis[0],
        millis[millis.len() - 1]
    );
}
