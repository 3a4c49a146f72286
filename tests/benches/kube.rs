//! Kubernetes backend benchmark: API requests per job and per step, and
//! the per-step overhead of the kubernetes backend (through the API-server
//! emulator) beside the local backend's, in one run.
//!
//! Each repeat runs the `danube` binary on two pipelines per backend: one
//! with a single `true` step and one with `--steps` of them. The emulator
//! counts the requests it serves by verb and resource. The difference
//! between the two kube jobs, divided by the extra steps, is the cost of a
//! step, and what remains of the one-step job is the cost of the job
//! itself. Wall times include starting `danube` and the coordinator, so
//! only their difference per extra step is reported as overhead.
//!
//! The emulator runs each container as processes on this machine, so its
//! times leave out image pulls, scheduling and the network of a real
//! cluster; the request counts are the engine's own.
//!
//! With `--coordinator-python PATH` it also runs the kube jobs with the
//! coordinator in the job pod (`--coordinator pod`), run by that Python,
//! which must import the SDK and be executable by the pod's user (65532).
//!
//! Run it with `cargo build -p danube -p danube-supervisor && cargo bench
//! -p danube-tests --bench kube -- --repeats 3 --steps 20`. `cargo test
//! --all-targets` runs this binary without `--bench`, and it then only
//! prints that it skipped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use danube_tests::kube::{Emulator, EmulatorOptions};
use danube_tests::{Sandbox, danube_bin};

struct Args {
    repeats: usize,
    steps: usize,
    /// Also measure the coordinator in the pod, run by this Python.
    coordinator_python: Option<String>,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut bench = false;
    let mut parsed = Args {
        repeats: 3,
        steps: 20,
        coordinator_python: None,
    };
    while let Some(arg) = args.next() {
        let mut count = |name: &str| -> usize {
            args.next()
                .and_then(|value| value.parse().ok())
                .filter(|count| *count > 0)
                .unwrap_or_else(|| panic!("{name} takes a positive number"))
        };
        match arg.as_str() {
            "--bench" => bench = true,
            "--repeats" => parsed.repeats = count("--repeats"),
            "--steps" => parsed.steps = count("--steps").max(2),
            "--coordinator-python" => {
                parsed.coordinator_python = Some(
                    args.next()
                        .expect("--coordinator-python takes the path of a Python"),
                );
            }
            _ => {}
        }
    }
    bench.then_some(parsed)
}

type Counts = BTreeMap<(String, String), u64>;

/// One job's wall time and, on the kubernetes backend, its requests.
struct JobRun {
    wall: Duration,
    requests: Counts,
}

fn pipeline(steps: usize) -> String {
    format!(
        "from danube import pipeline, step\n\n\
         @pipeline(name=\"bench\")\n\
         def main():\n    \
         for index in range({steps}):\n        \
         step.run(\"true\", name=f\"step {{index}}\")\n"
    )
}

/// Where a bench job runs.
#[derive(Clone, Copy)]
enum Placement<'a> {
    Local,
    /// On the emulator, with the coordinator beside the engine.
    Kube(&'a Emulator),
    /// On the emulator, with the coordinator in the pod run by this Python.
    KubePod(&'a Emulator, &'a str),
}

/// Runs a pipeline of `steps` steps on `placement`.
fn run_job(steps: usize, placement: Placement<'_>) -> JobRun {
    let (kube, coordinator_python) = match placement {
        Placement::Local => (None, None),
        Placement::Kube(emulator) => (Some(emulator), None),
        Placement::KubePod(emulator, python) => (Some(emulator), Some(python)),
    };
    let sandbox = Sandbox::new();
    sandbox.pipeline(&pipeline(steps));
    let mut args = vec!["run".to_owned(), sandbox.project().display().to_string()];
    if let Some(emulator) = kube {
        emulator.reset_request_counts();
        args.extend([
            "--target".to_owned(),
            "kube".to_owned(),
            "--kubeconfig".to_owned(),
            emulator.kubeconfig_path().display().to_string(),
            "--tools-image".to_owned(),
            "danube-coordinator:bench".to_owned(),
        ]);
    }
    if let Some(python) = coordinator_python {
        args.extend([
            "--coordinator".to_owned(),
            "pod".to_owned(),
            "--coordinator-python".to_owned(),
            python.to_owned(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let started = Instant::now();
    let run = sandbox.danube(&args);
    let wall = started.elapsed();

    assert_eq!(run.code, 0, "the bench job failed: {}", run.text());
    let requests = kube.map(Emulator::request_counts).unwrap_or_default();
    JobRun { wall, requests }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let Some(args) = parse_args() else {
        println!("kube bench: skipped (run with `cargo bench`)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let bin_dir = danube_bin().parent().unwrap().to_owned();
    let emulator = runtime
        .block_on(Emulator::start(
            EmulatorOptions::default().path_prepend(&bin_dir),
        ))
        .expect("the emulator starts");

    let extra = (args.steps - 1) as f64;
    let mut local_overhead = Vec::new();
    let mut kube_overhead = Vec::new();
    let mut pod_overhead = Vec::new();
    let mut per_step = Counts::new();
    let mut per_job = Counts::new();
    let mut pod_per_step = Counts::new();
    let mut pod_per_job = Counts::new();
    for repeat in 1..=args.repeats {
        let local_one = run_job(1, Placement::Local);
        let local_many = run_job(args.steps, Placement::Local);
        let kube_one = run_job(1, Placement::Kube(&emulator));
        let kube_many = run_job(args.steps, Placement::Kube(&emulator));

        // Signed, since noise can make the longer job finish first.
        let per_extra_step = |many: &JobRun, one: &JobRun| {
            (many.wall.as_secs_f64() - one.wall.as_secs_f64()) * 1000.0 / extra
        };
        let local_ms = per_extra_step(&local_many, &local_one);
        let kube_ms = per_extra_step(&kube_many, &kube_one);
        println!(
            "repeat {repeat}: per extra step local {local_ms:.1} ms, kube {kube_ms:.1} ms; \
             one-step job local {:.2} s, kube {:.2} s",
            local_one.wall.as_secs_f64(),
            kube_one.wall.as_secs_f64(),
        );
        local_overhead.push(local_ms);
        kube_overhead.push(kube_ms);
        // Request counts do not vary between repeats, so the last is kept.
        (per_job, per_step) = split_counts(&kube_one, &kube_many, args.steps);

        if let Some(python) = &args.coordinator_python {
            let pod_one = run_job(1, Placement::KubePod(&emulator, python));
            let pod_many = run_job(args.steps, Placement::KubePod(&emulator, python));
            let pod_ms = per_extra_step(&pod_many, &pod_one);
            println!(
                "repeat {repeat}: coordinator in the pod: per extra step {pod_ms:.1} ms; \
                 one-step job {:.2} s",
                pod_one.wall.as_secs_f64(),
            );
            pod_overhead.push(pod_ms);
            (pod_per_job, pod_per_step) = split_counts(&pod_one, &pod_many, args.steps);
        }
    }

    println!();
    println!(
        "| backend | per-step overhead, median of {} (ms) |",
        args.repeats
    );
    println!("|---|---|");
    println!("| local | {:.1} |", median(&mut local_overhead));
    println!(
        "| kubernetes (emulator) | {:.1} |",
        median(&mut kube_overhead)
    );
    if !pod_overhead.is_empty() {
        println!(
            "| kubernetes (emulator), coordinator in the pod | {:.1} |",
            median(&mut pod_overhead)
        );
    }
    print_counts("coordinator beside the engine", &per_job, &per_step);
    if args.coordinator_python.is_some() {
        print_counts("coordinator in the pod", &pod_per_job, &pod_per_step);
    }
}

/// Splits the requests of a one-step and a many-step job into those of the
/// job and those of each step.
fn split_counts(one: &JobRun, many: &JobRun, steps: usize) -> (Counts, Counts) {
    let mut per_job = Counts::new();
    let mut per_step = Counts::new();
    for (key, total) in &many.requests {
        let single = one.requests.get(key).copied().unwrap_or(0);
        let step_count = (total - single) / (steps as u64 - 1);
        per_step.insert(key.clone(), step_count);
        per_job.insert(key.clone(), single.saturating_sub(step_count));
    }
    (per_job, per_step)
}

fn print_counts(title: &str, per_job: &Counts, per_step: &Counts) {
    println!();
    println!("{title}:");
    println!();
    println!("| verb | resource | requests per job | requests per step |");
    println!("|---|---|---|---|");
    for ((verb, resource), job) in per_job {
        let step = per_step
            .get(&(verb.clone(), resource.clone()))
            .copied()
            .unwrap_or(0);
        println!("| {verb} | {resource} | {job} | {step} |");
    }
    let total_job: u64 = per_job.values().sum();
    let total_step: u64 = per_step.values().sum();
    println!("| all | | {total_job} | {total_step} |");
}
