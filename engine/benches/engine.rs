//! Benchmarks of the release `danube` binary against the plain commands it
//! wraps: the cost it adds to each step, how fast it stores a step's log, and
//! its peak memory. Results and how to read them are in `docs/benchmarks.md`.
//!
//! ```sh
//! cargo bench -p danube --bench engine                # 3 repeats, about 10 s each
//! cargo bench -p danube --bench engine -- --quick     # 100 steps, 64 MiB of log, once
//! cargo bench -p danube --bench engine -- --repeats 5
//! ```
//!
//! Every job is a real `danube run` of a pipeline generated in a temp dir,
//! with a data directory of its own and the venv named by
//! `DANUBE_PYTHON_VENV` (by default `target/bench-venv`, created with pip on
//! first use). The engine's stdout goes to `/dev/null`, so printing the live
//! log costs as little as it can; a terminal would cost more. The temp dir
//! is made under `TMPDIR` (default `/tmp`), and the log benchmark needs
//! 1 GiB free there.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

mod support;

use support::{bench_venv, load_average, machine_summary};

const DANUBE: &str = env!("CARGO_BIN_EXE_danube");

/// 79 characters, so that each line with its newline is 80 bytes. It must
/// contain no quote or backslash: it is pasted into shell and Python source.
const LOG_LINE: &str =
    "danube benchmark log line: the quick brown fox jumps over the lazy dog 01234567";

const MIB: f64 = 1024.0 * 1024.0;

/// How often the sampler reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

fn main() -> anyhow::Result<()> {
    let Some(settings) = Settings::from_args()? else {
        // `cargo test --all-targets` runs bench binaries too, without
        // `--bench`. A benchmark that writes 1 GiB is no test.
        println!("skipped: run the engine benchmark with `cargo bench -p danube --bench engine`");
        return Ok(());
    };
    let bench = Bench::set_up(&settings)?;
    println!("{}", machine_summary());
    println!(
        "danube: {DANUBE}\nsteps: {}, log: {} bytes, repeats: {}\n",
        settings.steps, settings.log_bytes, settings.repeats
    );

    // The first job creates the database and extracts the SDK; later jobs
    // find them ready, as a user's second run does.
    bench.run_job(&bench.one_step)?;

    let results = measure(&bench, &settings)?;

    println!();
    print_report(&settings, &results);
    Ok(())
}

/// Runs every measurement `settings.repeats` times.
fn measure(bench: &Bench, settings: &Settings) -> anyhow::Result<Results> {
    let mut results = Results::default();
    // The measurements are interleaved within each repeat, which spreads a
    // busy phase of the machine over Danube and its baselines.
    for repeat in 1..=settings.repeats {
        let load = load_average();
        let shells = spawn_shells(settings.steps)?;
        let one_step = bench.run_job(&bench.one_step)?;
        let many_steps = bench.run_job(&bench.many_steps)?;
        // Flushing dirty pages first keeps each of the two runs that write
        // the log from paying for the other's writeback.
        nix::unistd::sync();
        let cat = bench.cat_log()?;
        nix::unistd::sync();
        let (log, stored_bytes) = bench.run_log_job()?;

        let seconds = |duration: Duration| duration.as_secs_f64();
        println!(
            "repeat {repeat}/{} (load {load}): sh {:.2} s, 1 step {:.2} s, {} steps {:.2} s, cat {:.2} s, log job {:.2} s",
            settings.repeats,
            seconds(shells),
            seconds(one_step.wall),
            settings.steps,
            seconds(many_steps.wall),
            seconds(cat),
            seconds(log.wall),
        );
        results.shells.push(shells);
        results.one_step.push(one_step);
        results.many_steps.push(many_steps);
        results.cat.push(cat);
        results.log.push(log);
        results.stored_bytes.push(stored_bytes);
    }
    Ok(results)
}

/// Benchmark sizes, from the command line.
struct Settings {
    steps: usize,
    log_bytes: u64,
    repeats: usize,
}

impl Settings {
    /// Parses the arguments. Returns `None` without `--bench`, which
    /// `cargo bench` passes to every bench binary and `cargo test` does not.
    fn from_args() -> anyhow::Result<Option<Settings>> {
        let mut settings = Settings {
            steps: 1000,
            log_bytes: 1 << 30,
            repeats: 3,
        };
        let mut repeats = None;
        let mut benchmarking = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    settings.steps = 100;
                    settings.log_bytes = 64 << 20;
                    settings.repeats = 1;
                }
                "--repeats" => repeats = Some(parse_repeats(args.next())?),
                "--bench" => benchmarking = true,
                other => bail!("unknown argument `{other}`: expected --quick or --repeats N"),
            }
        }
        settings.repeats = repeats.unwrap_or(settings.repeats);
        Ok(benchmarking.then_some(settings))
    }
}

fn parse_repeats(value: Option<String>) -> anyhow::Result<usize> {
    let value = value.unwrap_or_default();
    match value.parse() {
        Ok(count) if count > 0 => Ok(count),
        _ => bail!("invalid --repeats value `{value}`: expected a positive integer"),
    }
}

/// The generated projects and the private data directory they run with.
struct Bench {
    root: tempfile::TempDir,
    data_dir: PathBuf,
    venv: PathBuf,
    log_bytes: u64,
    one_step: PathBuf,
    many_steps: PathBuf,
    log: PathBuf,
}

impl Bench {
    fn set_up(settings: &Settings) -> anyhow::Result<Bench> {
        let venv = bench_venv()?;
        let root = tempfile::Builder::new()
            .prefix("danube-bench-")
            .tempdir()
            .context("failed to create the benchmark's temp dir")?;
        let data_dir = root.path().join("data");
        let steps_body =
            |count: usize| format!("    for _ in range({count}):\n        step.run(\"true\")\n");
        let log_body = format!(
            "    step.run(\"{}\", name=\"print\")\n",
            log_generator(settings.log_bytes)
        );
        Ok(Bench {
            one_step: write_project(root.path(), "one-step", &steps_body(1))?,
            many_steps: write_project(root.path(), "many-steps", &steps_body(settings.steps))?,
            log: write_project(root.path(), "log", &log_body)?,
            root,
            data_dir,
            venv,
            log_bytes: settings.log_bytes,
        })
    }

    /// Runs `danube run project` to its end and fails unless the job
    /// succeeded.
    fn run_job(&self, project: &Path) -> anyhow::Result<JobRun> {
        let stderr_path = self.root.path().join("danube-stderr.txt");
        let stderr = File::create(&stderr_path).context("failed to create the stderr file")?;
        let started = Instant::now();
        let mut child = Command::new(DANUBE)
            .arg("run")
            .arg(project)
            .env("DANUBE_DATA_DIR", &self.data_dir)
            .env("DANUBE_PYTHON_VENV", &self.venv)
            .env_remove("DANUBE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start `{DANUBE}`"))?;
        let sampler = Sampler::start(child.id());
        let status = child.wait().context("failed to wait for danube")?;
        let wall = started.elapsed();
        let (engine, coordinator) = sampler.finish();

        if !status.success() {
            let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
            bail!(
                "`danube run {}` failed ({status}):\n{stderr}",
                project.display()
            );
        }
        Ok(JobRun {
            wall,
            engine,
            coordinator,
        })
    }

    /// Runs the log job and returns it with the size of the stored step
    /// log, which it then deletes to free the disk.
    fn run_log_job(&self) -> anyhow::Result<(JobRun, u64)> {
        let logs = self.data_dir.join("logs");
        let before = list_dir(&logs)?;
        let job = self.run_job(&self.log)?;
        let new_jobs: Vec<PathBuf> = list_dir(&logs)?.difference(&before).cloned().collect();
        let [job_logs] = new_jobs.as_slice() else {
            bail!(
                "expected one new job log directory in `{}`, found {new_jobs:?}",
                logs.display()
            );
        };

        let mut stored = 0;
        for path in list_dir(job_logs)? {
            let is_step_log = path.extension().is_some_and(|ext| ext == "log")
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("step-"));
            if is_step_log {
                stored += fs::metadata(&path)?.len();
            }
        }
        fs::remove_dir_all(job_logs)
            .with_context(|| format!("failed to remove `{}`", job_logs.display()))?;
        Ok((job, stored))
    }

    /// Times the same generator piped through `cat` into a file in the
    /// same temp dir.
    fn cat_log(&self) -> anyhow::Result<Duration> {
        let out = self.root.path().join("cat.out");
        let script = format!(
            "{} | cat > '{}'",
            log_generator(self.log_bytes),
            out.display()
        );
        let started = Instant::now();
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .status()
            .context("failed to run /bin/sh")?;
        let elapsed = started.elapsed();

        ensure!(status.success(), "`{script}` failed ({status})");
        let written = fs::metadata(&out)?.len();
        ensure!(
            written == self.log_bytes,
            "`cat` wrote {written} bytes, expected {}",
            self.log_bytes
        );
        fs::remove_file(&out)?;
        Ok(elapsed)
    }
}

/// One job's wall time, from spawning `danube` to reaping it, and what the
/// sampler read of its processes.
struct JobRun {
    wall: Duration,
    engine: ProcessSample,
    coordinator: ProcessSample,
}

/// The last values read of one process before it exited.
#[derive(Clone, Copy, Default)]
struct ProcessSample {
    /// `VmHWM`, the peak resident set, in KiB.
    peak_kib: Option<u64>,
    /// User plus system CPU time of all its threads, in clock ticks.
    cpu_ticks: Option<u64>,
}

impl ProcessSample {
    /// Reads `pid` again, keeping the earlier values of what can no longer
    /// be read. A zombie has no `VmHWM` line, but its CPU times are final.
    fn update(&mut self, pid: u32) {
        self.peak_kib = read_vm_hwm(pid).or(self.peak_kib);
        self.cpu_ticks = read_cpu_ticks(pid).or(self.cpu_ticks);
    }
}

/// Reads the engine and its coordinator child every `SAMPLE_INTERVAL`.
///
/// `VmHWM` is the kernel's high-water mark of a process's resident set, so
/// it only grows, and the last value read before the process exits is its
/// peak up to that read. What a process allocates, or the CPU time it uses,
/// in its last `SAMPLE_INTERVAL` can be missed.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(ProcessSample, ProcessSample)>,
}

impl Sampler {
    fn start(engine_pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut engine = ProcessSample::default();
            let mut coordinator = ProcessSample::default();
            let mut coordinator_pid = None;
            while !stopped.load(Ordering::Relaxed) {
                engine.update(engine_pid);
                coordinator_pid = coordinator_pid.or_else(|| find_coordinator(engine_pid));
                if let Some(pid) = coordinator_pid {
                    coordinator.update(pid);
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
            (engine, coordinator)
        });
        Sampler { stop, thread }
    }

    /// Stops sampling and returns the engine's and the coordinator's values.
    fn finish(self) -> (ProcessSample, ProcessSample) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("the sampler thread does not panic")
    }
}

/// Reads the `VmHWM` line of `/proc/<pid>/status` in KiB. Returns `None`
/// once the process has exited.
fn read_vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`. Returns
/// `None` once the process has been reaped.
fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces, so count from its `)`.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Finds the child of `engine_pid` that runs `python -m danube._coordinator`.
/// Children are listed per thread, and any engine thread may have spawned it.
fn find_coordinator(engine_pid: u32) -> Option<u32> {
    let tasks = fs::read_dir(format!("/proc/{engine_pid}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(children) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("danube._coordinator") {
                return Some(pid);
            }
        }
    }
    None
}

/// Runs `/bin/sh -c true` `count` times, one after the other.
fn spawn_shells(count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..count {
        let status = Command::new("/bin/sh")
            .args(["-c", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("failed to run /bin/sh")?;
        ensure!(status.success(), "`/bin/sh -c true` failed ({status})");
    }
    Ok(started.elapsed())
}

/// Returns a shell pipeline that prints exactly `bytes` bytes of 80-byte lines (the
/// last line cut short when `bytes` is not a multiple of 80).
fn log_generator(bytes: u64) -> String {
    format!("yes '{LOG_LINE}' | head -c {bytes}")
}

/// Writes `<root>/<name>/danubefile.py` with one pipeline whose body is
/// `body`, and returns the project folder.
fn write_project(root: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    fs::create_dir_all(&dir)?;
    let source = format!(
        "from danube import pipeline, step\n\n\n@pipeline(name=\"{name}\")\ndef bench() -> None:\n{body}"
    );
    fs::write(dir.join("danubefile.py"), source)
        .with_context(|| format!("failed to write the pipeline in `{}`", dir.display()))?;
    Ok(dir)
}

fn list_dir(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("failed to list `{}`", dir.display()))?;
    Ok(entries.flatten().map(|entry| entry.path()).collect())
}

/// Raw measurements, one entry per repeat.
#[derive(Default)]
struct Results {
    shells: Vec<Duration>,
    one_step: Vec<JobRun>,
    many_steps: Vec<JobRun>,
    cat: Vec<Duration>,
    log: Vec<JobRun>,
    stored_bytes: Vec<u64>,
}

/// One line of the report: a value per repeat, shown as median, min and max.
struct Row {
    label: String,
    unit: &'static str,
    values: Vec<f64>,
}

impl Row {
    fn new(label: impl Into<String>, unit: &'static str, values: &[f64]) -> Row {
        Row {
            label: label.into(),
            unit,
            values: values.to_vec(),
        }
    }

    fn median(&self) -> f64 {
        median(&self.values)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// Values computed from the raw times of each repeat.
struct Derived {
    one_step_ms: Vec<f64>,
    many_steps_ms: Vec<f64>,
    log_ms: Vec<f64>,
    shells_ms: Vec<f64>,
    cat_ms: Vec<f64>,
    /// (T(N steps) - T(1 step)) / (N - 1), so without the job's fixed cost.
    danube_step_ms: Vec<f64>,
    shell_step_ms: Vec<f64>,
    added_step_ms: Vec<f64>,
    step_ratio: Vec<f64>,
    /// Log bytes over (T(log job) - T(1 step)), so without the fixed cost.
    danube_mib_s: Vec<f64>,
    cat_mib_s: Vec<f64>,
    log_ratio: Vec<f64>,
    /// CPU time per step of each of `PROCESSES`, without the fixed cost.
    cpu_step_ms: [Vec<f64>; 2],
    /// CPU time of each of `PROCESSES` for the log, without the fixed cost.
    cpu_log_ms: [Vec<f64>; 2],
}

impl Derived {
    fn compute(settings: &Settings, results: &Results) -> Derived {
        let steps = settings.steps as f64;
        let log_mib = settings.log_bytes as f64 / MIB;
        let ms = |duration: &Duration| duration.as_secs_f64() * 1000.0;
        let wall_ms = |runs: &[JobRun]| runs.iter().map(|run| ms(&run.wall)).collect::<Vec<_>>();
        let per_repeat =
            |compute: &dyn Fn(usize) -> f64| (0..settings.repeats).map(compute).collect::<Vec<_>>();

        let one_step_ms = wall_ms(&results.one_step);
        let many_steps_ms = wall_ms(&results.many_steps);
        let log_ms = wall_ms(&results.log);
        let shells_ms: Vec<f64> = results.shells.iter().map(ms).collect();
        let cat_ms: Vec<f64> = results.cat.iter().map(ms).collect();

        let danube_step_ms = per_repeat(&|i| (many_steps_ms[i] - one_step_ms[i]) / (steps - 1.0));
        let shell_step_ms = per_repeat(&|i| shells_ms[i] / steps);
        let added_step_ms = per_repeat(&|i| danube_step_ms[i] - shell_step_ms[i]);
        let step_ratio = per_repeat(&|i| danube_step_ms[i] / shell_step_ms[i]);

        let danube_mib_s = per_repeat(&|i| log_mib / ((log_ms[i] - one_step_ms[i]) / 1000.0));
        let cat_mib_s = per_repeat(&|i| log_mib / (cat_ms[i] / 1000.0));
        let log_ratio = per_repeat(&|i| danube_mib_s[i] / cat_mib_s[i]);

        let ms_per_tick = 1000.0 / clock_ticks_per_second();
        let cpu_ms = |run: &JobRun, process: ProcessOf| {
            process(run)
                .cpu_ticks
                .map(|ticks| ticks as f64 * ms_per_tick)
        };
        // Repeats where a CPU time could not be read are left out.
        let cpu_above_one_step = |runs: &[JobRun], process: ProcessOf| {
            (0..settings.repeats)
                .filter_map(|i| {
                    Some(cpu_ms(&runs[i], process)? - cpu_ms(&results.one_step[i], process)?)
                })
                .collect::<Vec<_>>()
        };
        let cpu_step_ms = PROCESSES.map(|(_, process)| {
            let above = cpu_above_one_step(&results.many_steps, process);
            above.iter().map(|ms| ms / (steps - 1.0)).collect()
        });
        let cpu_log_ms = PROCESSES.map(|(_, process)| cpu_above_one_step(&results.log, process));

        Derived {
            one_step_ms,
            many_steps_ms,
            log_ms,
            shells_ms,
            cat_ms,
            danube_step_ms,
            shell_step_ms,
            added_step_ms,
            step_ratio,
            danube_mib_s,
            cat_mib_s,
            log_ratio,
            cpu_step_ms,
            cpu_log_ms,
        }
    }
}

/// Reads the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // USER_HZ, which is 100 on x86 and ARM Linux.
        _ => 100.0,
    }
}

fn print_report(settings: &Settings, results: &Results) {
    let derived = Derived::compute(settings, results);
    let sections = [
        step_section(settings, &derived),
        log_section(settings, results, &derived),
        memory_section(settings, results),
    ];
    print_table(settings, &sections);

    println!();
    let added = median(&derived.added_step_ms);
    println!(
        "target: added per step < 2 ms: {added:.2} ms, {}",
        verdict(added < 2.0)
    );
    let ratio = median(&derived.log_ratio);
    println!(
        "target: log throughput >= 0.5 x cat: {ratio:.2} x, {}",
        verdict(ratio >= 0.5)
    );
    let complete = results
        .stored_bytes
        .iter()
        .all(|bytes| *bytes == settings.log_bytes);
    println!(
        "check: stored step log is {} bytes in every repeat: {}",
        settings.log_bytes,
        verdict(complete)
    );
}

/// A titled group of rows in the report.
struct Section {
    title: String,
    rows: Vec<Row>,
}

fn step_section(settings: &Settings, derived: &Derived) -> Section {
    let n = settings.steps;
    Section {
        title: format!("(a) {n} steps of `true`"),
        rows: vec![
            Row::new(
                "danube job, 1 step (fixed cost)",
                "ms",
                &derived.one_step_ms,
            ),
            Row::new(
                format!("danube job, {n} steps"),
                "ms",
                &derived.many_steps_ms,
            ),
            Row::new(
                format!("/bin/sh -c true, {n} times"),
                "ms",
                &derived.shells_ms,
            ),
            Row::new("danube per step", "ms", &derived.danube_step_ms),
            Row::new("sh per spawn", "ms", &derived.shell_step_ms),
            Row::new("ratio danube / sh", "x", &derived.step_ratio),
            Row::new("added per step", "ms", &derived.added_step_ms),
            Row::new("danube CPU per step", "ms", &derived.cpu_step_ms[0]),
            Row::new("coordinator CPU per step", "ms", &derived.cpu_step_ms[1]),
        ],
    }
}

fn log_section(settings: &Settings, results: &Results, derived: &Derived) -> Section {
    let stored: Vec<f64> = results
        .stored_bytes
        .iter()
        .map(|bytes| *bytes as f64)
        .collect();
    Section {
        title: format!(
            "(b) {:.0} MiB of log lines",
            settings.log_bytes as f64 / MIB
        ),
        rows: vec![
            Row::new("generator | cat > file", "ms", &derived.cat_ms),
            Row::new("danube job with the generator step", "ms", &derived.log_ms),
            Row::new("cat throughput", "MiB/s", &derived.cat_mib_s),
            Row::new(
                "danube throughput (minus fixed cost)",
                "MiB/s",
                &derived.danube_mib_s,
            ),
            Row::new("ratio danube / cat", "x", &derived.log_ratio),
            Row::new("danube CPU for the log", "ms", &derived.cpu_log_ms[0]),
            Row::new("coordinator CPU for the log", "ms", &derived.cpu_log_ms[1]),
            Row::new("stored step log", "bytes", &stored),
        ],
    }
}

fn memory_section(settings: &Settings, results: &Results) -> Section {
    let n = settings.steps;
    let jobs = [
        ("1-step job".to_owned(), &results.one_step),
        (format!("{n}-step job"), &results.many_steps),
        ("log job".to_owned(), &results.log),
    ];
    let mut rows = Vec::new();
    for (process, pick) in PROCESSES {
        for (job, runs) in &jobs {
            let mib: Vec<f64> = runs
                .iter()
                .filter_map(|run| pick(run).peak_kib)
                .map(|kib| kib as f64 / 1024.0)
                .collect();
            rows.push(Row::new(format!("{process}, {job}"), "MiB", &mib));
        }
    }
    Section {
        title: "(c) peak RSS (VmHWM)".to_owned(),
        rows,
    }
}

type ProcessOf = fn(&JobRun) -> ProcessSample;

/// The two processes of a job, by name.
const PROCESSES: [(&str, ProcessOf); 2] = [
    ("danube", |run| run.engine),
    ("coordinator", |run| run.coordinator),
];

fn print_table(settings: &Settings, sections: &[Section]) {
    let label_width = sections
        .iter()
        .flat_map(|section| section.rows.iter().map(|row| row.label.len()))
        .max()
        .unwrap_or(0);
    println!(
        "{} repeats: median, min and max over the repeats",
        settings.repeats
    );
    println!(
        "  {:label_width$}  {:>12}  {:>12}  {:>12}  unit",
        "", "median", "min", "max"
    );
    for section in sections {
        println!("{}", section.title);
        for row in &section.rows {
            print_row(row, label_width);
        }
    }
}

fn print_row(row: &Row, label_width: usize) {
    if row.values.is_empty() {
        println!("  {:label_width$}  {:>12}", row.label, "not measured");
        return;
    }
    let min = row.values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = row.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let precision = if row.median().abs() >= 100.0 { 0 } else { 2 };
    println!(
        "  {:label_width$}  {:>12.precision$}  {:>12.precision$}  {:>12.precision$}  {}",
        row.label,
        row.median(),
        min,
        max,
        row.unit
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
