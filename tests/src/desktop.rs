//! The desktop app under a virtual display, driven over WebDriver: Xvfb,
//! `tauri-driver` and WebKitWebDriver, for the desktop end-to-end test and
//! benchmark.
//!
//! [`DesktopApp::launch`] starts Xvfb on a free display and `tauri-driver`
//! on a free loopback port; the WebDriver session then starts
//! `danube-desktop` with the given arguments. Dropping the [`DesktopApp`]
//! ends the session (which quits the app), then kills `tauri-driver` and
//! Xvfb with everything under them.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::browser::{command, find_program, free_port, read_tail, target_dir, wait_until};

/// How long `tauri-driver` and Xvfb get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the app gets to open its window and answer the first command.
/// The engine's first start in a fresh data directory makes the SDK's
/// Python environment, which the test shares through
/// `DANUBE_PYTHON_VENV` to keep this short.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

const INSTALL_HINT: &str = "install them with `apt-get install xvfb webkit2gtk-driver` and \
     `cargo install tauri-driver --locked` (CI does)";

/// The programs the desktop test needs: Xvfb, tauri-driver and
/// WebKitWebDriver. `Err` names the missing ones.
pub fn desktop_programs() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let xvfb = find_program("DANUBE_XVFB", &["Xvfb"]);
    let driver = find_program("DANUBE_TAURI_DRIVER", &["tauri-driver"]).or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(PathBuf::from(home).join(".cargo/bin/tauri-driver")).filter(|path| path.is_file())
    });
    let webkit = find_program("DANUBE_WEBKIT_DRIVER", &["WebKitWebDriver"]);
    match (xvfb, driver, webkit) {
        (Some(xvfb), Some(driver), Some(webkit)) => Ok((xvfb, driver, webkit)),
        (xvfb, driver, webkit) => {
            let missing: Vec<&str> = [
                (xvfb.is_none(), "Xvfb"),
                (driver.is_none(), "tauri-driver"),
                (webkit.is_none(), "WebKitWebDriver"),
            ]
            .into_iter()
            .filter_map(|(missing, name)| missing.then_some(name))
            .collect();
            Err(format!("missing {}: {INSTALL_HINT}", missing.join(", ")))
        }
    }
}

/// Whether a missing program must fail the test: in CI, and whenever
/// `DANUBE_DESKTOP_E2E` is set. Elsewhere the test may skip with a reason.
pub fn desktop_test_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("DANUBE_DESKTOP_E2E").is_some()
}

/// The `danube-desktop` binary built next to this test binary, or
/// `DANUBE_DESKTOP_BIN` when set.
pub fn desktop_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("DANUBE_DESKTOP_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .join("danube-desktop");
    assert!(
        bin.exists(),
        "`{}` does not exist: build it first with `cargo build -p danube-desktop`",
        bin.display()
    );
    bin
}

/// Returns `target/screenshots/desktop/`, emptied of an earlier run's
/// screenshots.
pub fn fresh_screenshot_dir() -> PathBuf {
    let dir = target_dir().join("screenshots").join("desktop");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create target/screenshots/desktop");
    dir
}

/// What to start the app with.
pub struct DesktopLaunch<'a> {
    /// Arguments of `danube-desktop`, such as `--project DIR`.
    pub args: Vec<String>,
    /// Environment of the app: its data directory and the shared venv.
    pub env: Vec<(&'a str, PathBuf)>,
    /// Where the logs of Xvfb, tauri-driver and the app go.
    pub log_dir: &'a Path,
}

/// A running app in its own virtual display.
pub struct DesktopApp {
    client: Option<Client>,
    /// The display, such as `:97`.
    pub display: String,
    xvfb: Child,
    driver: Child,
    driver_log: PathBuf,
    screenshots: PathBuf,
}

impl DesktopApp {
    /// Starts Xvfb, tauri-driver and the app, and returns once WebDriver
    /// answers for its window.
    pub async fn launch(launch: DesktopLaunch<'_>) -> DesktopApp {
        let (xvfb_program, driver_program, webkit) =
            desktop_programs().unwrap_or_else(|missing| panic!("the desktop test needs {missing}"));
        let (display, xvfb) = start_xvfb(&xvfb_program, launch.log_dir);

        let port = free_port();
        let native_port = free_port();
        let driver_log = launch.log_dir.join("tauri-driver.log");
        let log = fs::File::create(&driver_log).expect("create the tauri-driver log");
        let mut driver_command = Command::new(&driver_program);
        driver_command
            .args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .arg("--native-driver")
            .arg(&webkit)
            .env("DISPLAY", &display)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            // Its own process group, so that the drop can signal it, the
            // WebKit driver and the app as one.
            .process_group(0);
        for (name, value) in &launch.env {
            driver_command.env(name, value);
        }
        let driver = driver_command
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start tauri-driver: {err}; {INSTALL_HINT}"));
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut app = DesktopApp {
            client: None,
            display,
            xvfb,
            driver,
            driver_log: driver_log.clone(),
            screenshots: fresh_screenshot_dir(),
        };
        // tauri-driver forwards to WebKitWebDriver, which starts after it.
        wait_for_port(port, &driver_log).await;
        wait_for_port(native_port, &driver_log).await;

        let capabilities = json!({
            "browserName": "wry",
            "tauri:options": {
                "application": desktop_bin(),
                "args": launch.args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("the capabilities are a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            SESSION_TIMEOUT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&driver_url),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "tauri-driver took over {SESSION_TIMEOUT:?} to start the app\n{}",
                read_tail(&driver_log)
            )
        })
        .unwrap_or_else(|err| {
            panic!(
                "tauri-driver could not start the app: {err}\n{}",
                read_tail(&driver_log)
            )
        });
        app.client = Some(client);
        app
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session lives until the app is dropped")
    }

    /// Runs `script` (a function body that may `return` a value) in the
    /// window.
    pub async fn eval(&self, script: &str) -> Value {
        command(
            &format!("run script `{script}`"),
            self.client().execute(script, Vec::new()),
        )
        .await
    }

    /// Clicks the first element matching the CSS `selector`, after
    /// scrolling it to the middle of the window: WebDriver scrolls it only
    /// to the top edge, where the sticky header would take the click.
    pub async fn click(&self, selector: &str) {
        let element = command(
            &format!("find `{selector}`"),
            self.client().find(Locator::Css(selector)),
        )
        .await;
        let argument = serde_json::to_value(&element).expect("an element serialises");
        command(
            &format!("scroll to `{selector}`"),
            self.client().execute(
                "arguments[0].scrollIntoView({block: 'center'}); return true;",
                vec![argument],
            ),
        )
        .await;
        command(&format!("click `{selector}`"), element.click()).await;
    }

    /// Replaces the text of the input matching the CSS `selector` with
    /// `text`, as typing would.
    pub async fn type_text(&self, selector: &str, text: &str) {
        let element = command(
            &format!("find `{selector}`"),
            self.client().find(Locator::Css(selector)),
        )
        .await;
        command(&format!("clear `{selector}`"), element.clear()).await;
        command(&format!("type into `{selector}`"), element.send_keys(text)).await;
    }

    /// Returns the window's current address.
    pub async fn url(&self) -> String {
        command("read the address", self.client().current_url())
            .await
            .to_string()
    }

    /// Waits until `script` returns `true`, failing with `what` and the
    /// last value it returned after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str) {
        wait_until(what, timeout, async || {
            let seen = self.eval(script).await;
            if seen == Value::Bool(true) {
                Ok(())
            } else {
                Err(seen.to_string())
            }
        })
        .await;
    }

    /// Saves a screenshot of the window as
    /// `target/screenshots/desktop/<stage>.png` and returns its path.
    pub async fn screenshot(&self, stage: &str) -> PathBuf {
        // Two animation frames, so that the last DOM change is painted.
        command(
            "wait for two animation frames",
            self.client().execute_async(
                "const done = arguments[arguments.length - 1];
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                Vec::new(),
            ),
        )
        .await;
        let png = command("take a screenshot", self.client().screenshot()).await;
        let path = self.screenshots.join(format!("{stage}.png"));
        fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Returns the process id of the app, which runs in tauri-driver's
    /// process group.
    pub fn app_pid(&self) -> i32 {
        let group = self.driver.id() as i32;
        let app = fs::canonicalize(desktop_bin()).expect("resolve the app's path");
        let found = fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let in_group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid)))
                    .is_ok_and(|pgid| pgid.as_raw() == group);
                in_group && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == app)
            });
        found.expect("the app runs in tauri-driver's process group")
    }

    /// The tail of tauri-driver's log, which holds the app's own output.
    pub fn driver_log(&self) -> String {
        read_tail(&self.driver_log)
    }

    /// Ends the session, which quits the app.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), client.close()).await;
        }
    }
}

impl Drop for DesktopApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("tauri-driver and app log:\n{}", self.driver_log());
        }
        for child in [&mut self.driver, &mut self.xvfb] {
            // The children lead their own process groups.
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Starts Xvfb on the first free display from `:90` and returns the
/// display and the process.
fn start_xvfb(program: &Path, log_dir: &Path) -> (String, Child) {
    for number in 90..190 {
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let lock = PathBuf::from(format!("/tmp/.X{number}-lock"));
        if socket.exists() || lock.exists() {
            continue;
        }
        let display = format!(":{number}");
        let log = fs::File::create(log_dir.join("xvfb.log")).expect("create the Xvfb log");
        let mut child = Command::new(program)
            .arg(&display)
            .args(["-screen", "0", "1400x1000x24", "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start Xvfb: {err}; {INSTALL_HINT}"));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if socket.exists() {
                return (display, child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "Xvfb did not start on any display from :90 to :189\n{}",
        read_tail(&log_dir.join("xvfb.log"))
    );
}

async fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "tauri-driver or WebKitWebDriver did not listen on port {port} within {START_TIMEOUT:?}\n{}",
        read_tail(log)
    );
}
