//! Desktop benchmark: how long the app takes from launch to a usable
//! window, and how much memory it holds while idle.
//!
//! Each repeat starts Xvfb and `tauri-driver`, and times from the WebDriver
//! request that launches `danube-desktop --project examples/dag` (a copy)
//! until the window shows the project page with Run enabled, which needs
//! the web UI rendered and the embedded API answering (the page reads the
//! project, its pipelines and the targets from it). Then the app sits idle
//! for 10 s and the bench sums the resident set (`VmRSS`) of the app and
//! every process under it: WebKit's web and network processes.
//!
//! The data directory is fresh per repeat, with the SDK's packages from the
//! shared test venv (`DANUBE_PYTHON_VENV`), so no repeat installs them.
//!
//! As the reference, each repeat also starts `danube serve` (the binary of
//! `DANUBE_BIN`, else the one next to this bench) on a fresh data directory
//! and reads its `VmRSS` after the same 10 s idle: the engine and HTTP
//! server without the window.
//!
//! Run it with `cargo build --release -p danube -p danube-desktop --bins &&
//! DANUBE_DESKTOP_BIN=target/release/danube-desktop cargo bench -p
//! danube-tests --bench desktop -- --repeats 5`. `cargo test
//! --all-targets` runs this binary without `--bench`, and it then only
//! prints that it skipped.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use danube_tests::desktop::{DesktopApp, DesktopLaunch};
use danube_tests::{danube_bin, shared_venv, workspace_root};

/// How long the app idles before its memory is read.
const IDLE: Duration = Duration::from_secs(10);

/// The check that the window is usable.
const USABLE: &str = "const run = document.querySelector('[data-testid=run-project]');
     return run !== null && !run.disabled;";

struct Args {
    repeats: usize,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut bench = false;
    let mut parsed = Args { repeats: 3 };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--repeats" => {
                parsed.repeats = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|repeats| *repeats > 0)
                    .expect("--repeats takes a positive number");
            }
            _ => {}
        }
    }
    bench.then_some(parsed)
}

struct Sample {
    usable: Duration,
    idle_rss_kib: u64,
    processes: usize,
    serve_rss_kib: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(args) = parse_args() else {
        println!("desktop bench: skipped (run with `cargo bench`)");
        return;
    };
    let venv = shared_venv();
    let mut samples = Vec::new();
    for repeat in 1..=args.repeats {
        let mut sample = measure(&venv).await;
        sample.serve_rss_kib = serve_idle_rss(&venv).await;
        println!(
            "repeat {repeat}: usable after {:.2} s, idle RSS {:.1} MiB in {} processes, danube serve {:.1} MiB, load {}",
            sample.usable.as_secs_f64(),
            sample.idle_rss_kib as f64 / 1024.0,
            sample.processes,
            sample.serve_rss_kib as f64 / 1024.0,
            load_average(),
        );
        samples.push(sample);
    }

    let mut usable: Vec<f64> = samples.iter().map(|s| s.usable.as_secs_f64()).collect();
    let mut rss: Vec<f64> = samples
        .iter()
        .map(|s| s.idle_rss_kib as f64 / 1024.0)
        .collect();
    println!();
    println!("| measure | median | min | max |");
    println!("|---|---|---|---|");
    print_row("launch to usable window (s)", &mut usable);
    let mut serve: Vec<f64> = samples
        .iter()
        .map(|s| s.serve_rss_kib as f64 / 1024.0)
        .collect();
    print_row("idle RSS after 10 s (MiB)", &mut rss);
    print_row("`danube serve` idle RSS after 10 s (MiB)", &mut serve);
}

fn print_row(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    println!(
        "| {name} | {median:.2} | {:.2} | {:.2} |",
        values[0],
        values[values.len() - 1]
    );
}

async fn measure(venv: &Path) -> Sample {
    let sandbox = tempfile::Builder::new()
        .prefix("danube-desktop-bench-")
        .tempdir()
        .expect("create a temp dir");
    let project = sandbox.path().join("dag");
    let copied = Command::new("cp")
        .arg("-R")
        .arg(workspace_root().join("examples/dag"))
        .arg(&project)
        .status()
        .expect("run cp");
    assert!(copied.success(), "copying examples/dag failed");

    let started = Instant::now();
    let app = DesktopApp::launch(DesktopLaunch {
        args: vec!["--project".to_owned(), project.display().to_string()],
        env: vec![
            ("DANUBE_DATA_DIR", sandbox.path().join("data")),
            ("DANUBE_PYTHON_VENV", venv.to_owned()),
        ],
        log_dir: sandbox.path(),
    })
    .await;
    // Polls every 50 ms: the figure is rounded up to that much.
    app.wait_for("a usable window", Duration::from_secs(120), USABLE)
        .await;
    let usable = started.elapsed();

    tokio::time::sleep(IDLE).await;
    let (idle_rss_kib, processes) = app_memory();
    app.close().await;
    Sample {
        usable,
        idle_rss_kib,
        processes,
        serve_rss_kib: 0,
    }
}

/// Starts `danube serve` on a fresh data directory and returns the
/// `VmRSS` of it and its children after [`IDLE`] from the moment its token
/// file exists, which it writes just before it listens.
async fn serve_idle_rss(venv: &Path) -> u64 {
    let sandbox = tempfile::Builder::new()
        .prefix("danube-serve-bench-")
        .tempdir()
        .expect("create a temp dir");
    let data = sandbox.path().join("data");
    let mut serve = Command::new(danube_bin())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DANUBE_DATA_DIR", &data)
        .env("DANUBE_PYTHON_VENV", venv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start danube serve");

    let token = data.join("keys").join("local-token");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !token.exists() {
        assert!(
            Instant::now() < deadline,
            "danube serve wrote no token file within 120 s"
        );
        if let Ok(Some(status)) = serve.try_wait() {
            panic!("danube serve exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(IDLE).await;

    let (rss, _) = tree_memory(&process_table(), vec![serve.id() as i32]);
    let _ = serve.kill();
    let _ = serve.wait();
    rss
}

/// Sums `VmRSS` of every `danube-desktop` process and its descendants.
fn app_memory() -> (u64, usize) {
    let table = process_table();
    let roots: Vec<i32> = table
        .iter()
        .filter(|process| process.name == "danube-desktop")
        .map(|process| process.pid)
        .collect();
    assert!(!roots.is_empty(), "no danube-desktop process is running");
    tree_memory(&table, roots)
}

/// Sums `VmRSS` of `roots` and their descendants, printing each process's
/// share; returns the sum with the number of processes.
fn tree_memory(table: &[Process], roots: Vec<i32>) -> (u64, usize) {
    let mut members = roots;
    let mut at = 0;
    while at < members.len() {
        let parent = members[at];
        members.extend(
            table
                .iter()
                .filter(|process| process.ppid == parent)
                .map(|process| process.pid),
        );
        at += 1;
    }
    let mut total = 0;
    for pid in &members {
        let rss = rss_kib(*pid).unwrap_or(0);
        let name = table
            .iter()
            .find(|process| process.pid == *pid)
            .map_or("?", |process| process.name.as_str());
        println!("  {name} ({pid}): {:.1} MiB", rss as f64 / 1024.0);
        total += rss;
    }
    (total, members.len())
}

struct Process {
    pid: i32,
    ppid: i32,
    name: String,
}

fn process_table() -> Vec<Process> {
    let mut table = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (name) state ppid ...`; the name may hold spaces and parens.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        table.push(Process { pid, ppid, name });
    }
    table
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}
