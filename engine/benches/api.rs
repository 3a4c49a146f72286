//! Benchmarks of `danube serve` against the real binary on loopback:
//!
//! - SSE fan-out: 100, 500 and 1,000 clients follow the log of one busy step
//!   that prints its wall-clock time in nanoseconds 200 times a second. Each
//!   client decodes the lines it gets; a line's delivery latency is its
//!   arrival time minus the time printed in it (same machine, same clock).
//!   The server's CPU time is the change of utime + stime in
//!   `/proc/<pid>/stat` while the step prints.
//! - `GET /api/v1/jobs` with 100,000 jobs inserted through `Store`: latency of
//!   the first page and of a page 99,000 jobs deep (through a cursor), one
//!   request per connection.
//!
//! Run: `cargo bench -p danube --bench api`. Needs `python3` and a venv with
//! the SDK's packages (`DANUBE_PYTHON_VENV`; defaults to the one the
//! end-to-end tests make, `target/test-python-venv`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use danube::config::DataDir;
use danube::model::{JobId, JobState, TriggerType};
use danube::store::{NewJob, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

/// Lines the busy step prints per second, and for how long.
const LINES_PER_SECOND: u32 = 200;
const EMIT_SECONDS: u32 = 4;
/// The step sleeps this long before printing, so every client is connected.
const WARMUP_SECONDS: u32 = 5;
const FAN_OUT: [usize; 3] = [100, 500, 1000];
const JOBS_IN_DATABASE: i64 = 100_000;
const LIST_REQUESTS: usize = 300;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("machine: {}", machine());
    runtime.block_on(fan_out());
    runtime.block_on(job_list());
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} cores available")
}

/// Where a server listens and its token.
#[derive(Clone)]
struct Endpoint {
    addr: String,
    token: String,
}

struct Server {
    child: Child,
    endpoint: Endpoint,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    std::env::var_os("DANUBE_PYTHON_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-python-venv"),
        PathBuf::from,
    )
}

fn serve(data: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_danube"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DANUBE_DATA_DIR", data)
        .env("DANUBE_PYTHON_VENV", venv())
        .env_remove("DANUBE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start danube serve");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("danube serve printed its address")
            .expect("read stdout");
        if let Some(url) = line.strip_prefix("Open this address to log in: ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let (base, token) = url.split_once("/?token=").expect("a token");
    Server {
        child,
        endpoint: Endpoint {
            addr: base.trim_start_matches("http://").to_owned(),
            token: token.to_owned(),
        },
    }
}

/// Sends one request and returns the status and the response's reader,
/// positioned at the body.
async fn request(
    server: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, AsyncBufReader<TcpStream>) {
    let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        server.addr, server.token
    );
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut reader = AsyncBufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.expect("status");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.expect("header");
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    (status, reader)
}

/// The body of a `Connection: close` response (chunked or not, decoded
/// only far enough to find the JSON).
async fn body_text(mut reader: AsyncBufReader<TcpStream>) -> String {
    let mut body = String::new();
    reader.read_to_string(&mut body).await.expect("body");
    body
}

fn json_in(body: &str) -> serde_json::Value {
    let start = body.find('{').expect("a JSON object");
    let end = body.rfind('}').expect("a JSON object");
    serde_json::from_str(&body[start..=end]).expect("JSON")
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; field 3 (state) is index 0 here.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// Follows one step's log and returns the latency of every line printed
/// after `from_nanos`, in milliseconds.
async fn follow(server: Endpoint, path: String, from_nanos: u128) -> Vec<f64> {
    let (status, mut reader) = request(&server, "GET", &path, None).await;
    assert_eq!(status, 200, "stream {path}");
    let mut latencies = Vec::new();
    let mut carry = String::new();
    let mut pending = Vec::new();
    // The body is chunked: a hex size line, that many bytes, CRLF.
    loop {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line).await.unwrap_or(0) == 0 {
            break;
        }
        let size = usize::from_str_radix(size_line.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        let mut piece = vec![0; size + 2];
        reader.read_exact(&mut piece).await.expect("a chunk");
        piece.truncate(size);
        pending.extend_from_slice(&piece);
        let arrived = now_nanos();
        let mut ended = false;
        while let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            let line = String::from_utf8_lossy(&line);
            if line.starts_with("event: end") {
                ended = true;
            }
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(chunk) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let Some(text) = chunk["data"].as_str() else {
                continue;
            };
            carry.push_str(text);
            while let Some(end) = carry.find('\n') {
                let printed: String = carry.drain(..=end).collect();
                if let Ok(stamp) = printed.trim().parse::<u128>()
                    && stamp >= from_nanos
                {
                    latencies.push(arrived.saturating_sub(stamp) as f64 / 1e6);
                }
            }
        }
        if ended {
            break;
        }
    }
    latencies
}

async fn fan_out() {
    let temp = tempfile::tempdir().expect("temp dir");
    let project = temp.path().join("project");
    std::fs::create_dir_all(&project).expect("project dir");
    let interval = 1.0 / f64::from(LINES_PER_SECOND);
    let count = LINES_PER_SECOND * EMIT_SECONDS;
    std::fs::write(
        project.join("emit.py"),
        format!(
            "import time\nfor _ in range({count}):\n    print(time.time_ns(), flush=True)\n    time.sleep({interval})\n"
        ),
    )
    .expect("emit.py");
    std::fs::write(
        project.join("danubefile.py"),
        format!(
            "from danube import pipeline, step\n\n@pipeline(name=\"busy\")\ndef busy():\n    step.run(\"sleep {WARMUP_SECONDS}; python3 emit.py\", name=\"emit\")\n"
        ),
    )
    .expect("danubefile.py");
    let server = serve(&temp.path().join("data"));
    let pid = server.child.id();
    let ticks_per_second = 100.0; // USER_HZ on Linux

    println!("\nSSE fan-out: one step printing {LINES_PER_SECOND} lines/s for {EMIT_SECONDS} s");
    println!(
        "| clients | lines received | p50 ms | p99 ms | max ms | server CPU s | CPU % of one core |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for clients in FAN_OUT {
        let body = format!("{{\"project\": \"{}\"}}", project.display());
        let (status, reader) = request(&server.endpoint, "POST", "/api/v1/jobs", Some(&body)).await;
        assert_eq!(status, 201);
        let id = json_in(&body_text(reader).await)["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        let path = format!("/api/v1/jobs/{id}/logs/stream?task=main&step=emit");
        // The step exists once it started.
        loop {
            let (status, _) =
                request(&server.endpoint, "GET", &format!("/api/v1/jobs/{id}"), None).await;
            assert_eq!(status, 200);
            let (status, reader) = request(&server.endpoint, "GET", &path, None).await;
            drop(reader);
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connecting = Instant::now();
        let from = now_nanos();
        let followers: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(follow(server.endpoint.clone(), path.clone(), from)))
            .collect();
        let connected = connecting.elapsed();
        assert!(
            connected < Duration::from_secs(u64::from(WARMUP_SECONDS) - 1),
            "connecting {clients} clients took {connected:?}"
        );
        let before = cpu_ticks(pid);
        let started = Instant::now();
        let mut latencies = Vec::new();
        for follower in followers {
            latencies.extend(follower.await.expect("a follower"));
        }
        let cpu = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
        let wall = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {clients} | {} | {:.2} | {:.2} | {:.2} | {cpu:.2} | {:.0}% over {wall:.1} s |",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            100.0 * cpu / wall,
        );
    }
}

async fn job_list() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let database = DataDir::open(&data)
        .expect("open the data dir")
        .database_path();
    let store = Store::open(&database).await.expect("open the store");
    let inserting = Instant::now();
    let base = 1_700_000_000_000_i64;
    let mut deep_cursor = String::new();
    for index in 0..JOBS_IN_DATABASE {
        let id = JobId::new();
        let job = NewJob {
            id: id.clone(),
            pipeline: if index % 2 == 0 { "build" } else { "test" }.to_owned(),
            project_dir: "/bench/project".to_owned(),
            trigger_type: TriggerType::Local,
            trigger_ref: String::new(),
            repo: "/bench/project".to_owned(),
            branch: String::new(),
            commit_sha: String::new(),
            created_at: base + index,
            target: None,
        };
        store.insert_job(&job).await.expect("insert a job");
        store
            .set_job_state(&id, JobState::Success, None)
            .await
            .expect("finish a job");
        // Newest first: 99,000 jobs come before this one.
        if index == JOBS_IN_DATABASE - 99_000 {
            deep_cursor = URL_SAFE_NO_PAD.encode(format!("{}.{}", job.created_at, id));
        }
    }
    println!(
        "\nGET /api/v1/jobs: {JOBS_IN_DATABASE} jobs inserted in {:.1} s",
        inserting.elapsed().as_secs_f64()
    );
    drop(store);
    let server = serve(&data);

    println!("| page | requests | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (label, path) in [
        ("first (limit 50)", "/api/v1/jobs?limit=50".to_owned()),
        (
            "99,000 deep (limit 50, cursor)",
            format!("/api/v1/jobs?limit=50&cursor={deep_cursor}"),
        ),
        (
            "first, state=success (limit 50)",
            "/api/v1/jobs?limit=50&state=success".to_owned(),
        ),
    ] {
        let mut samples = Vec::with_capacity(LIST_REQUESTS);
        for round in 0..LIST_REQUESTS + 20 {
            let started = Instant::now();
            let (status, reader) = request(&server.endpoint, "GET", &path, None).await;
            let body = body_text(reader).await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                json_in(&body)["jobs"].as_array().map(Vec::len),
                Some(50),
                "{path}"
            );
            // The first 20 warm the caches.
            if round >= 20 {
                samples.push(took);
            }
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "| {label} | {LIST_REQUESTS} | {:.2} | {:.2} |",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99)
        );
    }
}
