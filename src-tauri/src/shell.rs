//! The Tauri side: the window, the embedded engine's lifetime, and the
//! native dialog.
//!
//! The window opens at once on a local loading page (`static/`), which
//! shows progress while the engine starts (the first start creates the
//! SDK's Python environment, which takes a while). Once the engine serves,
//! the window navigates to its sign-in address and shows the web UI. When
//! the app quits (its window closes, or SIGTERM, SIGINT or SIGHUP arrives),
//! the engine cancels its running jobs and waits for them to stop before
//! the process exits.
//!
//! The window never loads the sign-in address (`/?token=`): WebKit would
//! keep it in its disk cache, where other local programs could read the
//! per-launch token. The app sets the token cookie in the webview itself
//! and then opens `/`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use danube::api::token_cookie_name;
use danube::backend::targets::TargetSettings;
use danube::config::DataDir;
use tauri::webview::cookie::{Cookie, SameSite};
use tauri::{AppHandle, Manager, RunEvent, Runtime, WebviewUrl, WebviewWindowBuilder};

use crate::args::Args;
use crate::embedded::{EmbeddedEngine, EngineOptions};
use crate::picker::DialogPicker;

/// The label of the one window.
pub const MAIN_WINDOW: &str = "main";

/// The engine, once started; taken out when the app exits.
type EngineSlot = Arc<Mutex<Option<EmbeddedEngine>>>;

/// Runs the app until its window closes.
///
/// # Errors
///
/// A `--project` that is no project folder, or a window system that
/// cannot be used. Errors of the engine's start are shown in the window.
pub fn run(args: Args) -> anyhow::Result<()> {
    let project = match &args.project {
        Some(dir) => Some(
            danube::orchestrator::check_project(dir)
                .with_context(|| format!("cannot open --project `{}`", dir.display()))?,
        ),
        None => None,
    };
    let data_root = DataDir::resolve(args.data_dir.clone());
    let targets = args.cluster.settings();
    let engine: EngineSlot = Arc::new(Mutex::new(None));

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_dialog::init())
        .setup({
            let engine = engine.clone();
            move |app| {
                exit_on_signals(app.handle().clone());
                open_window(app.handle())?;
                start_engine(app.handle().clone(), data_root, project, targets, engine);
                Ok(())
            }
        })
        .build(tauri::generate_context!())
        .context("failed to start the desktop app")?;

    app.run(move |_, event| {
        if let RunEvent::Exit = event {
            // Dropping the engine cancels running jobs and waits for them.
            let running = engine.lock().map(|mut slot| slot.take());
            if let Ok(Some(running)) = running {
                tracing::info!("the app is quitting: stopping the engine");
                running.stop();
            }
        }
    });
    Ok(())
}

fn open_window<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    WebviewWindowBuilder::new(app, MAIN_WINDOW, WebviewUrl::App("index.html".into()))
        .title("Danube")
        .inner_size(1280.0, 860.0)
        .min_inner_size(720.0, 480.0)
        .build()?;
    Ok(())
}

/// Quits the app on SIGTERM, SIGINT or SIGHUP the way closing its window
/// does, so that the engine stops its jobs instead of leaving their
/// processes behind.
fn exit_on_signals<R: Runtime>(app: AppHandle<R>) {
    use tokio::signal::unix::{SignalKind, signal};

    tauri::async_runtime::spawn(async move {
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = signals else {
            tracing::warn!(
                "failed to install the signal handlers; SIGTERM ends the app without stopping its jobs"
            );
            return;
        };
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            _ = hangup.recv() => "SIGHUP",
        };
        tracing::info!(signal = name, "quitting the app on a signal");
        app.exit(0);
    });
}

/// Starts the engine on a thread of its own, then shows the web UI in the
/// window, or the reason it did not start.
fn start_engine<R: Runtime>(
    app: AppHandle<R>,
    data_root: PathBuf,
    project: Option<PathBuf>,
    targets: TargetSettings,
    slot: EngineSlot,
) {
    let progress_app = app.clone();
    let progress = move |line: &str| {
        tracing::info!(line, "engine setup");
        show_in_loading_page(&progress_app, "showProgress", line);
    };
    let options = EngineOptions {
        data_root,
        project,
        picker: Arc::new(DialogPicker::new(app.clone())),
        targets,
    };

    let spawned = std::thread::Builder::new()
        .name("danube-engine-start".to_owned())
        .spawn(move || match EmbeddedEngine::start(options, progress) {
            Ok(engine) => {
                let addr = engine.addr();
                let token = engine.token().to_owned();
                if let Ok(mut guard) = slot.lock() {
                    *guard = Some(engine);
                }
                let shown = show_web_ui(&app, addr, &token);
                if let Err(err) = shown {
                    tracing::error!(error = %format!("{err:#}"), "failed to show the web UI");
                    show_in_loading_page(&app, "showStartError", &format!("{err:#}"));
                }
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "the embedded engine did not start");
                show_in_loading_page(&app, "showStartError", &format!("{err:#}"));
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "failed to start the engine's start thread");
    }
}

/// Signs the webview in with the token cookie and opens the web UI.
fn show_web_ui<R: Runtime>(
    app: &AppHandle<R>,
    addr: std::net::SocketAddr,
    token: &str,
) -> anyhow::Result<()> {
    let window = app
        .get_webview_window(MAIN_WINDOW)
        .context("the main window is gone")?;
    let cookie = Cookie::build((token_cookie_name(addr.port()), token.to_owned()))
        .domain(addr.ip().to_string())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .build();
    window
        .set_cookie(cookie)
        .context("failed to give the web UI its token")?;
    let url = format!("http://{addr}/")
        .parse::<tauri::Url>()
        .context("failed to build the web UI's address")?;
    window.navigate(url).context("failed to open the web UI")
}

/// Calls `function(text)` in the loading page, which defines both
/// `showProgress` and `showStartError`.
fn show_in_loading_page<R: Runtime>(app: &AppHandle<R>, function: &str, text: &str) {
    let Some(window) = app.get_webview_window(MAIN_WINDOW) else {
        return;
    };
    let argument = serde_json::Value::String(text.to_owned()).to_string();
    if let Err(err) = window.eval(format!("{function}({argument})")) {
        tracing::debug!(error = %err, "failed to update the loading page");
    }
}
