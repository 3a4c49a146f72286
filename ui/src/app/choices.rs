//! The project page's choices (pipeline, target, breakpoints), kept per
//! project in the window's session storage. The page shows the same
//! choices when the user comes back from a job or another project.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

const KEY_PREFIX: &str = "danube-project-choices:";

/// The project page's choices, as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Choices {
    pub pipeline: String,
    pub target: String,
    pub break_before: String,
    pub break_on_failure: bool,
}

/// The signals of the project page's form.
#[derive(Clone, Copy)]
pub struct ChoiceSignals {
    pub pipeline: RwSignal<String>,
    pub target: RwSignal<String>,
    pub break_before: RwSignal<String>,
    pub break_on_failure: RwSignal<bool>,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok().flatten()
}

/// Returns the choices stored for `project`, `None` before the user made
/// any.
pub fn load(project: &str) -> Option<Choices> {
    let text = storage()?
        .get_item(&format!("{KEY_PREFIX}{project}"))
        .ok()
        .flatten()?;
    serde_json::from_str(&text).ok()
}

fn save(project: &str, choices: &Choices) {
    let (Some(storage), Ok(text)) = (storage(), serde_json::to_string(choices)) else {
        return;
    };
    if let Err(err) = storage.set_item(&format!("{KEY_PREFIX}{project}"), &text) {
        leptos::logging::warn!("cannot keep the choices of {project}: {err:?}");
    }
}

/// Puts the stored choices of `project` into `form`, then stores every
/// change the user makes. Returns whether there were stored choices.
pub fn keep(project: String, form: ChoiceSignals) -> bool {
    let stored = load(&project);
    if let Some(choices) = &stored {
        form.pipeline.set(choices.pipeline.clone());
        if !choices.target.is_empty() {
            form.target.set(choices.target.clone());
        }
        form.break_before.set(choices.break_before.clone());
        form.break_on_failure.set(choices.break_on_failure);
    }
    Effect::new(move |_| {
        let choices = Choices {
            pipeline: form.pipeline.get(),
            target: form.target.get(),
            break_before: form.break_before.get(),
            break_on_failure: form.break_on_failure.get(),
        };
        save(&project, &choices);
    });
    stored.is_some()
}
