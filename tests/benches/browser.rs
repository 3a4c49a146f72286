//! Browser benchmark: how fast the web UI shows a 100 MB step log.
//!
//! One job runs a step that prints `--megabytes` MB of log lines (mixed
//! lengths, some ANSI colours, some stderr). Then, per repeat, a fresh
//! headless Chromium opens the step's page and the bench reads, from the
//! page's own clock (`performance.now()`, whose zero is the navigation
//! start):
//!
//! - when the app's frame (`#main`) and the first `[data-testid=log-line]`
//!   entered the DOM, from a `MutationObserver` that DevTools
//!   (`Page.addScriptToEvaluateOnNewDocument`) installs before any of the
//!   page's scripts run;
//! - when `[data-testid=log-status]` first contained `ended` (the whole log
//!   is in the viewer);
//! - the JS heap after the load (`performance.memory.usedJSHeapSize`, made
//!   precise by `--enable-precise-memory-info`; the WebAssembly memory is
//!   not part of it), the app's WebAssembly memory and the renderer process's resident set;
//! - the time from setting the viewer's `scrollTop` to the middle until
//!   the lines there are in the DOM and a frame has passed, and the longest
//!   frame while scrolling one page per frame for 60 frames.
//!
//! The baselines fetch the same log with `curl`: as JSON pages from
//! `GET .../logs` and as the Server-Sent Events stream the viewer reads.
//!
//! Run it with `cargo build --release --bin danube && cargo bench -p
//! danube-tests --bench browser -- --repeats 5`. `cargo test --all-targets`
//! runs this binary without `--bench`, and it then only prints that it
//! skipped.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use danube_tests::browser::{Browser, LaunchOptions, wait_until};
use danube_tests::{Sandbox, Server};
use serde_json::{Value, json};

/// Writes about `argv[1]` bytes of log lines to stdout and stderr, from a
/// fixed seed so every run prints the same log.
const GENERATOR: &str = r#"
import random, sys

target = int(sys.argv[1])
rng = random.Random(7)
words = ("request handled cache miss retry connection pool worker started finished "
         "compiling linking testing package module error warning info debug trace").split()
out, err = sys.stdout.buffer, sys.stderr.buffer
written = 0
n = 0
while written < target:
    n += 1
    kind = rng.random()
    stamp = "2026-01-01T00:%02d:%02d.%03dZ" % (n // 60000 % 60, n // 1000 % 60, n % 1000)
    if kind < 0.60:
        text = "%s INFO  app::worker: %s" % (stamp, " ".join(rng.choice(words) for _ in range(rng.randint(3, 25))))
        line, stream = text, out
    elif kind < 0.75:
        crate = rng.choice(words)
        line = "\x1b[1m\x1b[32m   Compiling\x1b[0m %s v0.%d.%d (/src/%s)" % (crate, rng.randint(0, 9), rng.randint(0, 30), crate)
        stream = out
    elif kind < 0.82:
        line = "\x1b[33mwarning\x1b[0m: unused variable `%s` at src/%s.rs:%d" % (rng.choice(words), rng.choice(words), rng.randint(1, 900))
        stream = err
    elif kind < 0.87:
        line = '{"event":"sample","values":[%s]}' % ",".join(str(rng.randint(0, 99999)) for _ in range(rng.randint(80, 300)))
        stream = out
    elif kind < 0.92:
        line, stream = "", out
    else:
        line = "test %s::%s ... \x1b[32mok\x1b[0m" % (rng.choice(words), rng.choice(words))
        stream = out
    data = (line + "\n").encode()
    stream.write(data)
    written += len(data)
out.flush()
err.flush()
"#;

struct Args {
    repeats: usize,
    megabytes: u64,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut bench = false;
    let mut parsed = Args {
        repeats: 3,
        megabytes: 100,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--repeats" => {
                parsed.repeats = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|&repeats| repeats > 0)
                    .expect("--repeats takes a count above 0");
            }
            "--megabytes" => {
                parsed.megabytes = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|&megabytes| megabytes > 0)
                    .expect("--megabytes takes a size above 0, in MB (10^6 bytes)");
            }
            // Flags that cargo passes to every bench binary.
            _ => {}
        }
    }
    bench.then_some(parsed)
}

fn main() {
    let Some(args) = parse_args() else {
        println!(
            "skipped: run `cargo bench -p danube-tests --bench browser` to measure the web UI"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args));
}

/// What one repeat measured. Times are milliseconds since navigation
/// start unless named otherwise.
#[derive(Debug, Default)]
struct Sample {
    curl_pages_ms: f64,
    curl_stream_ms: f64,
    app_ms: f64,
    first_line_ms: f64,
    ended_ms: f64,
    js_heap_mib: f64,
    /// The app's WebAssembly memory, where the viewer keeps the log text.
    wasm_memory_mib: f64,
    renderer_rss_mib: f64,
    renderer_peak_rss_mib: f64,
    dom_nodes: f64,
    lines_shown: f64,
    jump_to_middle_ms: f64,
    longest_scroll_frame_ms: f64,
    median_scroll_frame_ms: f64,
}

/// The bench's job: where its log is and how big.
struct LogJob {
    id: String,
    step_id: i64,
    bytes: u64,
    lines: u64,
}

async fn run(args: Args) {
    let sandbox = Sandbox::new();
    let bytes = args.megabytes * 1_000_000;
    sandbox.file("generate_log.py", GENERATOR);
    sandbox.pipeline(&format!(
        r#"
from danube import pipeline, step

@pipeline(name="big-log")
def big_log():
    step.run("python3 generate_log.py {bytes}", name="flood")
"#
    ));
    let server = sandbox.serve();
    println!("machine: {}", machine());
    println!("danube: {}", danube_tests::danube_bin().display());
    let job = create_log_job(&sandbox, &server).await;
    println!(
        "log: job {}, step {}, {} bytes, {} lines",
        job.id, job.step_id, job.bytes, job.lines
    );

    let mut samples = Vec::new();
    for repeat in 1..=args.repeats {
        let sample = measure(&sandbox, &server, &job, repeat).await;
        println!(
            "repeat {repeat}/{} (load {}): first line {:.0} ms, ended {:.0} ms, \
             curl pages {:.0} ms, curl stream {:.0} ms, middle {:.0} ms, longest scroll frame {:.1} ms",
            args.repeats,
            load_average(),
            sample.first_line_ms,
            sample.ended_ms,
            sample.curl_pages_ms,
            sample.curl_stream_ms,
            sample.jump_to_middle_ms,
            sample.longest_scroll_frame_ms,
        );
        samples.push(sample);
    }
    report(&samples, &job);
}

/// Runs the job that writes the log and waits for it.
async fn create_log_job(sandbox: &Sandbox, server: &Server) -> LogJob {
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.token)
        .json(&json!({"project": sandbox.project()}))
        .send()
        .await
        .expect("POST /api/v1/jobs");
    assert!(response.status().is_success(), "{}", response.status());
    let id = response.json::<Value>().await.expect("a job")["id"]
        .as_str()
        .expect("a job id")
        .to_owned();
    let job = wait_until("the log job to end", Duration::from_secs(600), async || {
        let job: Value = client
            .get(server.url(&format!("/api/v1/jobs/{id}")))
            .bearer_auth(&server.token)
            .send()
            .await
            .expect("GET the job")
            .json()
            .await
            .expect("a job");
        match job["state"].as_str() {
            Some("success") => Ok(job),
            Some(state @ ("failure" | "timeout" | "cancelled")) => {
                panic!("the log job ended in {state}: {job:#}")
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let step_id = job["tasks"][0]["steps"][0]["id"]
        .as_i64()
        .expect("the job has one step");
    let log = sandbox
        .data_dir()
        .join(format!("logs/{id}/step-{step_id}.log"));
    let contents = fs::read(&log).expect("read the stored step log");
    let lines = contents.iter().filter(|&&byte| byte == b'\n').count() as u64;
    LogJob {
        id,
        step_id,
        bytes: contents.len() as u64,
        lines,
    }
}

/// Installed before the page's own scripts: records when the app's frame,
/// the first log line and the ended status appear, on the page's clock.
const OBSERVER: &str = r#"
window.danubeBench = {};
// Keeps the app's WebAssembly instance, to read the size of its memory.
for (const name of ['instantiate', 'instantiateStreaming']) {
    const original = WebAssembly[name];
    WebAssembly[name] = async (...args) => {
        const result = await original.apply(WebAssembly, args);
        window.danubeBench.wasm = result.instance ?? result;
        return result;
    };
}
new MutationObserver((_, observer) => {
    const bench = window.danubeBench;
    if (bench.app === undefined && document.querySelector('#main')) {
        bench.app = performance.now();
    }
    if (bench.firstLine === undefined && document.querySelector('[data-testid=log-line]')) {
        bench.firstLine = performance.now();
    }
    const status = document.querySelector('[data-testid=log-status]');
    if (bench.ended === undefined && status && status.textContent.includes('ended')) {
        bench.ended = performance.now();
        bench.status = status.textContent;
        observer.disconnect();
    }
}).observe(document, {childList: true, subtree: true, characterData: true});
"#;

/// Sets the viewer's `scrollTop` to the middle and calls back once rows
/// within a page of the expected line are in view and a frame has passed,
/// with the elapsed time.
const JUMP_TO_MIDDLE: &str = r#"
const done = arguments[arguments.length - 1];
const view = document.querySelector('[data-testid=log-view]');
const total = arguments[0];
const start = performance.now();
view.scrollTop = (view.scrollHeight - view.clientHeight) / 2;
// The expected first line, from the average row height; padding and
// rounding make it approximate, so a page of rows either way counts.
const rowHeight = view.scrollHeight / total;
const expected = Math.floor(view.scrollTop / rowHeight) + 1;
const tolerance = Math.max(2, Math.ceil(view.clientHeight / rowHeight));
const check = () => {
    const box = view.getBoundingClientRect();
    const shown = [...view.querySelectorAll('[data-testid=log-line]')]
        .filter(line => {
            const rect = line.getBoundingClientRect();
            return rect.bottom > box.top && rect.top < box.bottom;
        })
        .map(line => Number(line.getAttribute('data-line')));
    if (shown.some(line => Math.abs(line - expected) <= tolerance)) {
        requestAnimationFrame(() => done({ms: performance.now() - start, expected, first: shown[0]}));
    } else if (performance.now() - start > 10000) {
        done({ms: null, expected, first: shown[0] ?? null});
    } else {
        requestAnimationFrame(check);
    }
};
requestAnimationFrame(check);
"#;

/// Scrolls one page per frame for 60 frames and calls back with the frame
/// intervals.
const SCROLL_PAGES: &str = r#"
const done = arguments[arguments.length - 1];
const view = document.querySelector('[data-testid=log-view]');
const intervals = [];
let last = performance.now();
let frames = 0;
const step = now => {
    intervals.push(now - last);
    last = now;
    if (++frames >= 60) {
        done(intervals);
        return;
    }
    view.scrollTop += view.clientHeight;
    requestAnimationFrame(step);
};
view.scrollTop += view.clientHeight;
requestAnimationFrame(step);
"#;

async fn measure(sandbox: &Sandbox, server: &Server, job: &LogJob, repeat: usize) -> Sample {
    let mut sample = Sample {
        curl_pages_ms: curl_pages(server, job),
        curl_stream_ms: curl_stream(server, job),
        ..Sample::default()
    };

    let options = LaunchOptions {
        extra_args: vec!["--enable-precise-memory-info".to_owned()],
    };
    let name = format!("bench-{repeat}");
    let browser = Browser::launch(sandbox, server, &name, options).await;
    browser.sign_in().await;
    browser
        .devtools(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": OBSERVER}),
        )
        .await;
    let page = format!("/jobs/{}?task=main&step=flood", job.id);
    let renderer_peak = PeakRss::watch(&browser);
    browser.goto(&page).await;

    let marks = wait_until(
        "the log view to end",
        Duration::from_secs(900),
        async || {
            let marks = browser.eval("return window.danubeBench ?? null;").await;
            if marks["ended"].is_number() {
                Ok(marks)
            } else {
                Err(format!("{marks}"))
            }
        },
    )
    .await;
    sample.app_ms = number(&marks["app"]);
    sample.first_line_ms = number(&marks["firstLine"]);
    sample.ended_ms = number(&marks["ended"]);
    let status = marks["status"].as_str().unwrap_or_default().to_owned();
    sample.lines_shown = status
        .split('·')
        .find_map(|part| part.trim().strip_suffix(" lines"))
        .and_then(|count| count.replace(',', "").parse().ok())
        .unwrap_or(f64::NAN);
    if repeat == 1 {
        browser.screenshot("loaded").await;
        println!("status after the load: {status}");
    }

    // After a collection, the heap contains what the page keeps, not garbage
    // the collector has not reached yet.
    browser
        .devtools("HeapProfiler.collectGarbage", json!({}))
        .await;
    let memory = browser
        .eval(
            "return {heap: performance.memory.usedJSHeapSize, \
             wasm: window.danubeBench.wasm?.exports?.memory?.buffer?.byteLength ?? null, \
             nodes: document.getElementsByTagName('*').length};",
        )
        .await;
    sample.js_heap_mib = number(&memory["heap"]) / f64::from(1 << 20);
    sample.wasm_memory_mib = number(&memory["wasm"]) / f64::from(1 << 20);
    sample.dom_nodes = number(&memory["nodes"]);
    sample.renderer_rss_mib = renderer_rss_kib(&browser, "VmRSS") / 1024.0;
    sample.renderer_peak_rss_mib = renderer_peak.stop() / 1024.0;

    let jump = browser
        .eval_async(JUMP_TO_MIDDLE, vec![json!(job.lines)])
        .await;
    sample.jump_to_middle_ms = jump["ms"].as_f64().unwrap_or_else(|| {
        panic!("the middle of the log never rendered: {jump}");
    });
    if repeat == 1 {
        browser.screenshot("middle").await;
    }
    let intervals = browser.eval_async(SCROLL_PAGES, Vec::new()).await;
    let mut intervals: Vec<f64> = intervals
        .as_array()
        .expect("frame intervals")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    intervals.sort_by(f64::total_cmp);
    sample.longest_scroll_frame_ms = intervals.last().copied().unwrap_or(f64::NAN);
    sample.median_scroll_frame_ms = median(&intervals);
    sample
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// Times `curl` fetching the whole step log as `GET .../logs` JSON pages of
/// 16 MiB (the largest `limit`), over one connection.
fn curl_pages(server: &Server, job: &LogJob) -> f64 {
    let page: u64 = 16 << 20;
    let urls: Vec<String> = (0..job.bytes.div_ceil(page))
        .map(|index| {
            server.url(&format!(
                "/api/v1/jobs/{}/logs?step_id={}&offset={}&limit={page}",
                job.id,
                job.step_id,
                index * page
            ))
        })
        .collect();
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--fail", "--max-time", "600"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", server.token));
    for url in &urls {
        command.args(["--output", "/dev/null", url]);
    }
    time_command(&mut command)
}

/// Times `curl` reading the step's Server-Sent Events stream to its end.
fn curl_stream(server: &Server, job: &LogJob) -> f64 {
    let url = server.url(&format!(
        "/api/v1/jobs/{}/logs/stream?step_id={}",
        job.id, job.step_id
    ));
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--fail", "--no-buffer", "--max-time", "600"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", server.token))
        .args(["--output", "/dev/null"])
        .arg(url);
    time_command(&mut command)
}

fn time_command(command: &mut Command) -> f64 {
    let start = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("failed to run curl ({err}); install curl"));
    let elapsed = start.elapsed();
    assert!(status.success(), "{command:?} failed: {status}");
    elapsed.as_secs_f64() * 1000.0
}

/// Returns the process ids of the browser's renderers (`--type=renderer`,
/// which run the pages).
fn renderers(browser: &Browser) -> Vec<i32> {
    browser
        .process_ids()
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| contains(&cmdline, b"--type=renderer"))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Returns the largest value of `field` (`VmRSS`, `VmHWM`) in kB over the
/// browser's renderers.
fn renderer_rss_kib(browser: &Browser, field: &str) -> f64 {
    renderers(browser)
        .into_iter()
        .filter_map(|pid| status_kib(pid, field))
        .fold(f64::NAN, f64::max)
}

fn status_kib(pid: i32, field: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples the renderers' `VmHWM` every 100 ms from a thread. Chromium may
/// replace the renderer when the page is loaded again, so the high-water
/// mark of any renderer seen counts.
struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl PeakRss {
    fn watch(browser: &Browser) -> PeakRss {
        let root = browser.process_ids();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let driver = root[0];
        let thread = std::thread::spawn(move || {
            let mut peak = f64::NAN;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for pid in danube_tests::browser::descendants(driver) {
                    let renderer = fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|cmdline| contains(&cmdline, b"--type=renderer"));
                    if renderer && let Some(kib) = status_kib(pid, "VmHWM") {
                        peak = peak.max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        PeakRss { stop, thread }
    }

    /// Stops sampling and returns the peak in kB.
    fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .expect("the sampling thread does not panic")
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// One line of the report: label, the value of a sample, unit.
type Row = (&'static str, fn(&Sample) -> f64, &'static str);

fn report(samples: &[Sample], job: &LogJob) {
    let rows: [Row; 14] = [
        (
            "curl: JSON pages of GET .../logs",
            |s| s.curl_pages_ms,
            "ms",
        ),
        (
            "curl: SSE stream .../logs/stream",
            |s| s.curl_stream_ms,
            "ms",
        ),
        ("browser: app frame in the DOM", |s| s.app_ms, "ms"),
        (
            "browser: first log line in the DOM",
            |s| s.first_line_ms,
            "ms",
        ),
        ("browser: whole log loaded (ended)", |s| s.ended_ms, "ms"),
        (
            "browser: lines the viewer counted",
            |s| s.lines_shown,
            "lines",
        ),
        ("browser: JS heap after the load", |s| s.js_heap_mib, "MiB"),
        (
            "browser: WebAssembly memory after the load",
            |s| s.wasm_memory_mib,
            "MiB",
        ),
        (
            "browser: renderer RSS after the load",
            |s| s.renderer_rss_mib,
            "MiB",
        ),
        (
            "browser: renderer peak RSS (VmHWM)",
            |s| s.renderer_peak_rss_mib,
            "MiB",
        ),
        (
            "browser: DOM elements after the load",
            |s| s.dom_nodes,
            "elements",
        ),
        (
            "browser: jump to the middle, rendered",
            |s| s.jump_to_middle_ms,
            "ms",
        ),
        (
            "browser: scroll 60 pages, median frame",
            |s| s.median_scroll_frame_ms,
            "ms",
        ),
        (
            "browser: scroll 60 pages, longest frame",
            |s| s.longest_scroll_frame_ms,
            "ms",
        ),
    ];
    println!();
    println!(
        "{} repeats, {} bytes in {} lines: median, min and max over the repeats",
        samples.len(),
        job.bytes,
        job.lines
    );
    println!("{:<44}{:>12}{:>12}{:>12}  unit", "", "median", "min", "max");
    for (label, value, unit) in rows {
        let mut values: Vec<f64> = samples.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        println!(
            "{label:<44}{:>12.1}{:>12.1}{:>12.1}  {unit}",
            median(&values),
            values.first().copied().unwrap_or(f64::NAN),
            values.last().copied().unwrap_or(f64::NAN),
        );
    }
    let counted_all = samples
        .iter()
        .all(|sample| sample.lines_shown as u64 == job.lines);
    println!(
        "check: the viewer counted the log's {} lines in every repeat: {}",
        job.lines,
        if counted_all { "met" } else { "NOT met" }
    );
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let chromium = danube_tests::browser::browser_programs().0;
    let version = Command::new(&chromium)
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores available; {version}")
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}
