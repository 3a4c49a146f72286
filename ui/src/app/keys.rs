//! Keyboard shortcuts that work on every page, and the help that lists
//! them. Page-specific keys (list moves, log search) live with their pages.

use leptos::ev;
use leptos::prelude::*;
use leptos_router::hooks::use_navigate;
use wasm_bindgen::JsCast as _;

/// Whether a key press belongs to a text field rather than to a shortcut.
pub fn typing_in_field(event: &web_sys::KeyboardEvent) -> bool {
    if event.ctrl_key() || event.meta_key() || event.alt_key() {
        return true;
    }
    let Some(target) = event.target() else {
        return false;
    };
    let Ok(element) = target.dyn_into::<web_sys::Element>() else {
        return false;
    };
    matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
}

fn click(selector: &str) {
    let element = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.query_selector(selector).ok().flatten())
        .and_then(|element| element.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(element) = element {
        element.click();
    }
}

const SHORTCUTS: [(&str, &str); 13] = [
    ("?", "show or hide this help"),
    ("Escape", "close this help, or leave the log's search box"),
    (
        "g then j",
        "go to the jobs list (outside a log, where g goes to its top)",
    ),
    ("n", "run a project"),
    ("t", "switch between light and dark"),
    ("j / k or ↓ / ↑", "next or previous job in the list"),
    (
        "Enter",
        "open the selected job, or the focused task in the graph",
    ),
    ("Tab", "move into the graph"),
    ("← → ↑ ↓", "move between tasks in the graph"),
    ("/", "search the log"),
    ("Enter / Shift+Enter", "next or previous match in the log"),
    ("f", "follow the log's end"),
    ("g / G", "top or bottom of the log"),
];

#[component]
pub fn Shortcuts() -> impl IntoView {
    let (help, set_help) = signal(false);
    let (pending_g, set_pending_g) = signal(false);
    let navigate = use_navigate();

    let handle = window_event_listener(ev::keydown, move |event| {
        if typing_in_field(&event) {
            return;
        }
        let key = event.key();
        if pending_g.get_untracked() {
            set_pending_g.set(false);
            if key == "j" {
                event.prevent_default();
                navigate("/", Default::default());
                return;
            }
        }
        match key.as_str() {
            "?" => set_help.update(|shown| *shown = !*shown),
            "Escape" => set_help.set(false),
            "n" => navigate("/run", Default::default()),
            "t" => click("[data-testid=theme-toggle]"),
            // `g` alone belongs to the log viewer when one is open.
            "g" if !log_open() => set_pending_g.set(true),
            _ => return,
        }
        event.prevent_default();
    });
    on_cleanup(move || handle.remove());

    view! {
        <Show when=move || help.get()>
            <div class="overlay" on:click=move |_| set_help.set(false)>
                <section class="help" role="dialog" aria-label="Keyboard shortcuts">
                    <h2>"Keyboard shortcuts"</h2>
                    <dl>
                        {SHORTCUTS
                            .iter()
                            .map(|(keys, what)| view! { <dt><kbd>{*keys}</kbd></dt><dd>{*what}</dd> })
                            .collect_view()}
                    </dl>
                    <p class="muted">"Press Escape to close."</p>
                </section>
            </div>
        </Show>
    }
}

fn log_open() -> bool {
    web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| {
            document
                .query_selector("[data-testid=log-view]")
                .ok()
                .flatten()
        })
        .is_some()
}
