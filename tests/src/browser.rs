//! A headless Chromium driven over WebDriver, for the browser tests and the
//! browser benchmark.
//!
//! [`Browser::open`] starts `chromedriver` on a free loopback port, which
//! starts Chromium with a fresh profile inside the test's sandbox. Dropping
//! the [`Browser`] kills chromedriver and every process under it, Chromium
//! included, so a failed test leaves nothing running. A test that panics
//! while a [`Browser`] is alive gets a last screenshot named `failed`.
//!
//! Chromium and chromedriver must be installed (Debian and Ubuntu:
//! `apt-get install chromium chromium-driver`); `DANUBE_CHROMIUM` and
//! `DANUBE_CHROMEDRIVER` point at other copies. Without them the tests
//! fail: they never skip.

use std::fs;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{Sandbox, Server};

/// How often [`wait_until`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a WebDriver command may take before the test gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long chromedriver gets to report `ready` on `/status` after it
/// starts.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Chromium switches for a quiet, reproducible headless browser: no GPU,
/// no network traffic of its own (updates, sync, QUIC probes), a fixed
/// window size so screenshots compare.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,1000",
];

const INSTALL_HINT: &str = "install them with `apt-get install chromium chromium-driver` \
     (CI does), or set DANUBE_CHROMIUM and DANUBE_CHROMEDRIVER to their paths";

/// Returns the `target/` folder this test binary was built into (the binary
/// lives in `target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .nth(3)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// Returns `target/screenshots/`, creating it on first use.
pub fn screenshot_dir() -> PathBuf {
    let dir = target_dir().join("screenshots");
    fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// Removes the screenshots an earlier run of test `name` left, so that the
/// folder shows only the last run (a `failed` one would otherwise stay).
fn remove_screenshots(name: &str) {
    let prefix = format!("{name}-");
    let Ok(entries) = fs::read_dir(screenshot_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".png") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Finds a program by the environment variable `variable`, else by the
/// first of `names` on `PATH`. Returns `None` when the file is missing.
pub(crate) fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Returns the paths of Chromium and chromedriver, and panics with the
/// install command when either is missing.
pub fn browser_programs() -> (PathBuf, PathBuf) {
    let chromium = find_program(
        "DANUBE_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_program("DANUBE_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        (chromium, driver) => panic!(
            "the browser tests need Chromium ({}) and chromedriver ({}): {INSTALL_HINT}",
            chromium.map_or("not found".to_owned(), |path| path.display().to_string()),
            driver.map_or("not found".to_owned(), |path| path.display().to_string()),
        ),
    }
}

/// Returns a loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a bound address").port()
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and returns
/// that value. `Err` carries what was seen, for the failure message.
///
/// # Panics
///
/// When `timeout` passes first, naming `what` and the last observation.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `future`, panicking with `what` when it takes over
/// [`COMMAND_TIMEOUT`] or fails.
pub(crate) async fn command<T, E: std::fmt::Debug>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("WebDriver command failed: {what}: {err:?}"),
        Err(_) => panic!("WebDriver command timed out after {COMMAND_TIMEOUT:?}: {what}"),
    }
}

/// Options for [`Browser::launch`].
#[derive(Clone, Debug, Default)]
pub struct LaunchOptions {
    /// Chromium switches added to [`CHROMIUM_ARGS`].
    pub extra_args: Vec<String>,
}

/// The address and token of the server a browser opens.
#[derive(Clone, Debug)]
pub struct Site {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    pub token: String,
}

/// A Chromium session pointed at one `danube serve`.
pub struct Browser {
    client: Client,
    driver: Child,
    /// `http://127.0.0.1:PORT` of chromedriver.
    driver_url: String,
    session_id: String,
    /// The Danube server's base address, without a trailing slash.
    base: String,
    token: String,
    /// Prefix of this test's screenshot names.
    name: String,
}

impl Browser {
    /// Starts Chromium and signs in to `server` through its `/?token=`
    /// address, which sets the token cookie. `name` names the screenshots.
    pub async fn open(sandbox: &Sandbox, server: &Server, name: &str) -> Browser {
        let browser = Browser::launch(sandbox, server, name, LaunchOptions::default()).await;
        browser.sign_in().await;
        browser
    }

    /// Starts Chromium without signing in.
    pub async fn launch(
        sandbox: &Sandbox,
        server: &Server,
        name: &str,
        options: LaunchOptions,
    ) -> Browser {
        let site = Site {
            base: server.base.clone(),
            token: server.token.clone(),
        };
        Browser::launch_at(sandbox, site, name, options).await
    }

    /// Starts Chromium and signs in to the server at `site`, which need not
    /// be a `danube serve` (the desktop app's embedded engine, say).
    pub async fn open_at(sandbox: &Sandbox, site: Site, name: &str) -> Browser {
        let browser = Browser::launch_at(sandbox, site, name, LaunchOptions::default()).await;
        browser.sign_in().await;
        browser
    }

    /// Starts Chromium for the server at `site` without signing in.
    pub async fn launch_at(
        sandbox: &Sandbox,
        site: Site,
        name: &str,
        options: LaunchOptions,
    ) -> Browser {
        let (chromium, driver_program) = browser_programs();
        remove_screenshots(name);
        let profile = sandbox.path().join(format!("chromium-{name}"));
        fs::create_dir_all(&profile).expect("create the Chromium profile dir");
        let driver_log = sandbox.path().join(format!("chromedriver-{name}.log"));

        let port = free_port();
        let log = fs::File::create(&driver_log).expect("create the chromedriver log");
        let driver = Command::new(&driver_program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            // Its own process group, so that the drop can signal it and
            // whatever it started as one.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "failed to start {}: {err}; {INSTALL_HINT}",
                    driver_program.display()
                )
            });
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut partial = DriverGuard {
            driver: Some(driver),
        };
        wait_for_driver(&driver_url, &driver_log).await;

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(options.extra_args);
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("the capabilities are a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match tokio::time::timeout(
            COMMAND_TIMEOUT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&driver_url),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => panic!(
                "chromedriver could not start Chromium ({}): {err}\n{}",
                chromium.display(),
                read_tail(&driver_log)
            ),
            Err(_) => panic!(
                "chromedriver took over {COMMAND_TIMEOUT:?} to start Chromium\n{}",
                read_tail(&driver_log)
            ),
        };
        let session_id = command("read the session id", client.session_id())
            .await
            .expect("a connected client has a session");

        Browser {
            client,
            driver: partial.driver.take().expect("the driver is still owned"),
            driver_url,
            session_id,
            base: site.base,
            token: site.token,
            name: name.to_owned(),
        }
    }

    /// Opens the login address and waits for the redirect to the jobs page.
    pub async fn sign_in(&self) {
        let login = format!("{}/?token={}", self.base, self.token);
        command("open the login address", self.client.goto(&login)).await;
        let home = self.page_url("/");
        wait_until(
            "the login to redirect to /",
            Duration::from_secs(10),
            async || {
                let url = self.url().await;
                if url == home { Ok(()) } else { Err(url) }
            },
        )
        .await;
        self.wait_for_app().await;
    }

    /// Returns the WebDriver client, for commands this type does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Returns the address of a page of the Danube server (`path` starts
    /// with `/`).
    pub fn page_url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Navigates to `path` on the Danube server and waits for the app to
    /// mount.
    pub async fn goto(&self, path: &str) {
        let url = self.page_url(path);
        command(&format!("open {url}"), self.client.goto(&url)).await;
        self.wait_for_app().await;
    }

    /// Waits until the app replaced the boot message with its frame.
    pub async fn wait_for_app(&self) {
        wait_until("the web UI to start", Duration::from_secs(20), async || {
            let state = self
                .eval(
                    "return {main: !!document.querySelector('#main'), \
                     boot: document.getElementById('boot')?.textContent ?? null};",
                )
                .await;
            if state["main"] == true {
                Ok(())
            } else {
                Err(format!("the page shows no app yet: {state}"))
            }
        })
        .await;
    }

    /// Returns the page's current address.
    pub async fn url(&self) -> String {
        command("read the address", self.client.current_url())
            .await
            .to_string()
    }

    /// Runs `script` (a function body that may `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.eval_with(script, Vec::new()).await
    }

    /// Runs `script` as [`Browser::eval`] does, with `args` as
    /// `arguments[0..]`.
    pub async fn eval_with(&self, script: &str, args: Vec<Value>) -> Value {
        command(
            &format!("run script `{script}`"),
            self.client.execute(script, args),
        )
        .await
    }

    /// Runs an asynchronous script: its last argument is a callback that
    /// ends it with a value.
    pub async fn eval_async(&self, script: &str, args: Vec<Value>) -> Value {
        command(
            &format!("run async script `{script}`"),
            self.client.execute_async(script, args),
        )
        .await
    }

    /// Clicks the first element matching the CSS `selector`.
    pub async fn click(&self, selector: &str) {
        let element = command(
            &format!("find `{selector}`"),
            self.client.find(Locator::Css(selector)),
        )
        .await;
        command(&format!("click `{selector}`"), element.click()).await;
    }

    /// Types `text` into the first element matching `selector`. Special keys
    /// come from [`fantoccini::key::Key`], as `char`s.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = command(
            &format!("find `{selector}`"),
            self.client.find(Locator::Css(selector)),
        )
        .await;
        command(&format!("type into `{selector}`"), element.send_keys(text)).await;
    }

    /// Saves a screenshot as `target/screenshots/<name>-<stage>.png` and
    /// returns its path.
    pub async fn screenshot(&self, stage: &str) -> PathBuf {
        let png = command("take a screenshot", self.client.screenshot()).await;
        let path = screenshot_dir().join(format!("{}-{stage}.png", self.name));
        fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver and
    /// returns its result.
    pub async fn devtools(&self, method: &str, params: Value) -> Value {
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            self.driver_url, self.session_id
        );
        let response = reqwest::Client::new()
            .post(&url)
            .timeout(COMMAND_TIMEOUT)
            .json(&json!({"cmd": method, "params": params}))
            .send()
            .await
            .unwrap_or_else(|err| panic!("DevTools command {method} failed: {err}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|err| panic!("DevTools command {method} sent no JSON: {err}"));
        assert!(
            status.is_success(),
            "DevTools command {method} failed: {body}"
        );
        body["value"].clone()
    }

    /// Returns the process ids of chromedriver and everything it started.
    pub fn process_ids(&self) -> Vec<i32> {
        let root = i32::try_from(self.driver.id()).expect("pids fit in i32");
        let mut tree = vec![root];
        tree.extend(descendants(root));
        tree
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A screenshot of the page as the failed assertion left it, and a
        // polite end of the session. Both need the runtime, which only a
        // multi-threaded one lends from inside a drop.
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if let Some(handle) = handle {
            let client = self.client.clone();
            let failed = std::thread::panicking();
            let shot = screenshot_dir().join(format!("{}-failed.png", self.name));
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    if failed
                        && let Ok(Ok(png)) =
                            tokio::time::timeout(Duration::from_secs(10), client.screenshot()).await
                    {
                        let _ = fs::write(&shot, png);
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
                });
            });
        }
        kill_tree(&mut self.driver);
    }
}

/// Kills a half-started chromedriver when [`Browser::launch`] panics.
struct DriverGuard {
    driver: Option<Child>,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(driver) = &mut self.driver {
            kill_tree(driver);
        }
    }
}

/// SIGKILLs `child`, its process group and every descendant, then reaps
/// `child`.
///
/// The descendants are listed before anything is killed: once chromedriver
/// is gone its children are reparented and no longer found under it, and
/// Chromium puts some of its helpers in process groups of their own.
fn kill_tree(child: &mut Child) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;

    let root = i32::try_from(child.id()).expect("pids fit in i32");
    let tree = descendants(root);
    let _ = killpg(Pid::from_raw(root), Signal::SIGKILL);
    for pid in tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Lists the processes below `root`, by their parent ids in `/proc`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`, where comm may contain spaces and
            // brackets.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Waits until chromedriver reports `ready` on `GET /status`.
async fn wait_for_driver(driver_url: &str, log: &Path) {
    let status = format!("{driver_url}/status");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + DRIVER_START_TIMEOUT;
    loop {
        let ready = match client.get(&status).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|body| body["value"]["ready"] == true),
            Err(_) => false,
        };
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer {status} within {DRIVER_START_TIMEOUT:?}:\n{}",
            read_tail(log)
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Returns the last 40 lines of a log file.
pub(crate) fn read_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
}
