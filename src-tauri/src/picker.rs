//! Choosing a project folder with the system's native dialog.
//!
//! The web UI cannot open a native dialog itself, so it asks the app over
//! HTTP (`POST /api/v1/desktop/projects/pick`) and the app opens one
//! through [`FolderPicker`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tauri::{AppHandle, Runtime};
use tauri_plugin_dialog::DialogExt;

/// Opens a dialog in which the user picks one folder.
pub trait FolderPicker: Send + Sync {
    /// Resolves to the chosen folder, or `None` when the user cancelled.
    fn pick_folder(&self) -> Pin<Box<dyn Future<Output = Option<PathBuf>> + Send + '_>>;
}

/// The native dialog of the app's main window.
pub struct DialogPicker<R: Runtime> {
    app: AppHandle<R>,
}

impl<R: Runtime> DialogPicker<R> {
    pub fn new(app: AppHandle<R>) -> DialogPicker<R> {
        DialogPicker { app }
    }
}

impl<R: Runtime> FolderPicker for DialogPicker<R> {
    fn pick_folder(&self) -> Pin<Box<dyn Future<Output = Option<PathBuf>> + Send + '_>> {
        let (chosen_tx, chosen_rx) = tokio::sync::oneshot::channel();
        let mut dialog = self.app.dialog().file().set_title("Open a project folder");
        if let Some(window) =
            tauri::Manager::get_webview_window(&self.app, crate::shell::MAIN_WINDOW)
        {
            dialog = dialog.set_parent(&window);
        }
        dialog.pick_folder(move |chosen| {
            let path = chosen.and_then(|path| path.into_path().ok());
            let _ = chosen_tx.send(path);
        });
        // A dialog closed without an answer (the app quitting) counts as
        // cancelled.
        Box::pin(async move { chosen_rx.await.ok().flatten() })
    }
}
