//! Generates the Tauri context (configuration, icons, the loading page)
//! that `tauri::generate_context!` embeds.

fn main() {
    tauri_build::build();
}
