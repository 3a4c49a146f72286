//! The Tauri side: the window, the embedded engine's lifetime, and the
//! native dialog.
//!
//! The window opens at once on a local loading page (`static/`), which
//! shows progress while the engine starts (the first start creates the
//! SDK's Python environment, which takes a while). Once the engine serves,
//! the window navigates to its sign-in address and shows the web UI. When
//! the app quits, the engine cancels its running jobs and waits for them to
//! stop before the process exits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use danube::backend::targets::TargetSettings;
use danube::config::DataDir;
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
                let url = engine.login_url().parse::<tauri::Url>();
                if let Ok(mut guard) = slot.lock() {
                    *guard = Some(engine);
                }
                let shown = url.map_err(anyhow::Error::new).and_then(|url| {
                    let window = app
                        .get_webview_window(MAIN_WINDOW)
                        .context("the main window is gone")?;
                    window.navigate(url).context("failed to open the web UI")
                });
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
