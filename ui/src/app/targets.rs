//! The target choice of a run form: local processes and the contexts of
//! the user's kubeconfig, as the desktop app lists them. The project page's
//! form and the "Run a project" form both use it.
//!
//! The app reads the kubeconfig on every request of the list, and the
//! choice requests the list again when it gets the focus and when the
//! window does. A context added while the app runs so shows up without a
//! restart.

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::Failure;
use super::client::{self, ApiFailure};
use crate::api::{Target, TargetList};

/// The targets as last read, and the one chosen.
#[derive(Clone, Copy)]
pub struct Targets {
    pub list: RwSignal<Option<TargetList>>,
    pub chosen: RwSignal<String>,
    failure: RwSignal<Option<ApiFailure>>,
}

impl Targets {
    /// Starts with local processes chosen; [`TargetChoice`] reads the list
    /// once it is drawn.
    pub fn new() -> Targets {
        Targets {
            list: RwSignal::new(None),
            chosen: RwSignal::new("local".to_owned()),
            failure: RwSignal::new(None),
        }
    }

    /// Reads the list again; the options change only when it did.
    pub fn refresh(self) {
        spawn_local(async move {
            match client::get::<TargetList>("/api/v1/desktop/targets").await {
                Ok(list) => {
                    self.failure.set(None);
                    if self
                        .list
                        .with_untracked(|known| known.as_ref() != Some(&list))
                    {
                        self.list.set(Some(list));
                    }
                }
                Err(err) => self.failure.set(Some(err)),
            }
        });
    }

    /// Returns the chosen target as listed, `None` until the list names it.
    pub fn chosen_target(self) -> Option<Target> {
        let chosen = self.chosen.get();
        self.list.with(|list| {
            list.as_ref()
                .and_then(|list| list.targets.iter().find(|target| target.id == chosen))
                .cloned()
        })
    }

    /// Returns whether a job can start on the chosen target now.
    pub fn chosen_available(self) -> bool {
        self.chosen_target().is_some_and(|target| target.available)
    }
}

/// Shows the `<select>` of targets; unavailable ones are shown but cannot be
/// chosen.
#[component]
pub fn TargetChoice(targets: Targets) -> impl IntoView {
    targets.refresh();
    let on_change = move |event: ev::Event| targets.chosen.set(event_target_value(&event));
    let on_window_focus = window_event_listener(ev::focus, move |_| targets.refresh());
    on_cleanup(move || on_window_focus.remove());
    view! {
        <select
            data-testid="target-select"
            on:change=on_change
            on:focus=move |_| targets.refresh()
            prop:value=move || targets.chosen.get()
        >
            {move || {
                let chosen = targets.chosen.get_untracked();
                targets
                    .list
                    .get()
                    .map(|list| list.targets)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|option: Target| {
                        let label = target_label(&option);
                        let selected = option.id == chosen;
                        view! {
                            <option value=option.id.clone() disabled=!option.available selected=selected>{label}</option>
                        }
                    })
                    .collect_view()
            }}
        </select>
    }
}

/// Shows why the chosen target cannot run a job, why the kubeconfig cannot be
/// read, and a failure to read the list.
#[component]
pub fn TargetNotes(targets: Targets) -> impl IntoView {
    view! {
        {move || targets.chosen_target().and_then(|target| target.note).map(|note| view! {
            <p class="notice" role="status" data-testid="target-note">{note}</p>
        })}
        {move || targets.list.get().and_then(|list| list.error).map(|error| view! {
            <p class="reason" data-testid="kubeconfig-error">{error}</p>
        })}
        {move || targets.failure.get().map(|failure| view! { <Failure failure /> })}
    }
}

fn target_label(target: &Target) -> String {
    let mut label = target.name.clone();
    if target.current {
        label.push_str(" (current context)");
    }
    if !target.available {
        label.push_str(" (unavailable)");
    }
    label
}
