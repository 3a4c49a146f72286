//! Danube's web UI.
//!
//! The pure parts (API shapes, input checks, formatting, log text, DAG
//! layout) build on every target and are tested natively. The engine uses
//! the input checks too. The Leptos app in [`app`] builds only for
//! `wasm32`. `engine/build.rs` compiles it and embeds the result into the
//! `danube` binary.

pub mod api;
pub mod checks;
pub mod dag;
pub mod failure;
pub mod format;
pub mod logtext;

#[cfg(target_arch = "wasm32")]
mod app;

/// Entry point called by the generated JavaScript once the module loads.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    if let Some(boot) = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.get_element_by_id("boot"))
    {
        boot.remove();
    }
    leptos::mount::mount_to_body(app::App);
}
