//! Light and dark themes: the system's choice until the user picks one,
//! which is kept in local storage.

use leptos::prelude::*;

const STORAGE_KEY: &str = "danube-theme";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn set_attribute(theme: &str) {
    if let Some(root) = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.document_element())
    {
        let _ = root.set_attribute("data-theme", theme);
    }
}

fn system_prefers_dark() -> bool {
    web_sys::window()
        .and_then(|window| {
            window
                .match_media("(prefers-color-scheme: dark)")
                .ok()
                .flatten()
        })
        .is_some_and(|query| query.matches())
}

fn current() -> String {
    storage()
        .and_then(|storage| storage.get_item(STORAGE_KEY).ok().flatten())
        .unwrap_or_else(|| {
            if system_prefers_dark() {
                "dark"
            } else {
                "light"
            }
            .to_owned()
        })
}

pub fn apply_saved() {
    set_attribute(&current());
}

#[component]
pub fn ThemeToggle() -> impl IntoView {
    let (theme, set_theme) = signal(current());
    let toggle = move |_| {
        let next = if theme.get() == "dark" {
            "light"
        } else {
            "dark"
        };
        if let Some(storage) = storage() {
            let _ = storage.set_item(STORAGE_KEY, next);
        }
        set_attribute(next);
        set_theme.set(next.to_owned());
    };
    view! {
        <button
            class="icon-button"
            on:click=toggle
            title="Switch between light and dark (t)"
            data-testid="theme-toggle"
            aria-label=move || format!("Theme: {}. Switch theme", theme.get())
        >
            {move || if theme.get() == "dark" { "☾" } else { "☀" }}
        </button>
    }
}
