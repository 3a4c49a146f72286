//! What the benchmarks share: the SDK's venv and a description of the
//! machine they ran on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

const DANUBE: &str = env!("CARGO_BIN_EXE_danube");
const REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sdk/python/danube/_requirements.txt"
);

/// Returns the venv with the SDK's pinned packages: `DANUBE_PYTHON_VENV`, or
/// `target/bench-venv`, made with `python3 -m venv` and pip when missing.
pub fn bench_venv() -> anyhow::Result<PathBuf> {
    if let Some(venv) = std::env::var_os("DANUBE_PYTHON_VENV") {
        return Ok(PathBuf::from(venv));
    }
    let target = Path::new(DANUBE)
        .ancestors()
        .nth(2)
        .context("the danube binary is not under <target>/<profile>/")?;
    let venv = target.join("bench-venv");
    let ready = venv.join(".bench-ready");
    if ready.exists() {
        return Ok(venv);
    }

    println!(
        "creating {} with the SDK's pinned packages (once)",
        venv.display()
    );
    run_checked(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run_checked(Command::new(venv.join("bin").join("python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "-r",
        REQUIREMENTS,
    ]))?;
    fs::write(&ready, "")?;
    Ok(venv)
}

fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to run {command:?}"))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

/// Returns the 1-minute load average from `/proc/loadavg`, which shows how
/// busy the machine was with other work before a repeat.
pub fn load_average() -> String {
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg.split_whitespace().next().unwrap_or("?").to_owned()
}

/// CPU model, core count and kernel, for the report.
pub fn machine_summary() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("machine: {model}, {cores} cores, Linux {}", kernel.trim())
}
