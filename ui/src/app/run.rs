//! The "run a project" form: a local folder and, when its `danubefile.py`
//! declares several pipelines, which one; in the desktop app, the target,
//! with the project page's target choice; optionally where to pause for
//! debugging.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use serde::Serialize;

use super::client::{self, ApiFailure};
use super::targets::{TargetChoice, TargetNotes, Targets};
use super::{Failure, desktop_info};
use crate::api::Job;

#[derive(Serialize)]
struct CreateJob {
    project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    /// Only the desktop app lets a job choose; a server runs every job on
    /// its own target.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    break_before: Vec<String>,
    break_on_failure: bool,
}

/// Splits a "break before" field at commas into step names.
pub(super) fn step_names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(ToOwned::to_owned)
        .collect()
}

#[component]
pub fn RunPage() -> impl IntoView {
    super::set_title("Run a project");
    let project = RwSignal::new(String::new());
    let pipeline = RwSignal::new(String::new());
    let break_before = RwSignal::new(String::new());
    let break_on_failure = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<ApiFailure>);
    let navigate = use_navigate();
    let desktop = desktop_info();
    let in_app = Memo::new(move |_| desktop.get().is_some());
    let targets = Targets::new();
    let can_run = move || !busy.get() && (!in_app.get() || targets.chosen_available());

    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let folder = project.get_untracked().trim().to_owned();
        if folder.is_empty() {
            failure.set(Some(ApiFailure {
                status: 400,
                message: "Enter the project's folder, for example /home/me/src/app.".to_owned(),
            }));
            return;
        }
        let name = pipeline.get_untracked().trim().to_owned();
        let body = CreateJob {
            project: folder,
            pipeline: (!name.is_empty()).then_some(name),
            target: in_app
                .get_untracked()
                .then(|| targets.chosen.get_untracked()),
            break_before: step_names(&break_before.get_untracked()),
            break_on_failure: break_on_failure.get_untracked(),
        };
        busy.set(true);
        failure.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            match client::post::<_, Job>("/api/v1/jobs", &body).await {
                Ok(job) => navigate(&format!("/jobs/{}", job.id), Default::default()),
                Err(err) => failure.set(Some(err)),
            }
            busy.set(false);
        });
    };

    view! {
        <section class="page narrow">
            <h1>"Run a project"</h1>
            <p class="muted">
                "Runs the "<code>"danubefile.py"</code>" of a folder on this machine, as "
                <code>"danube run DIR"</code>" would."
            </p>
            <form class="run-form" on:submit=submit data-testid="run-form">
                <label for="project">"Project folder (absolute path)"</label>
                <input
                    id="project"
                    type="text"
                    required
                    autofocus
                    placeholder="/home/me/src/app"
                    data-testid="run-project"
                    bind:value=project
                />
                <label for="pipeline">"Pipeline " <span class="muted">"(only if the file declares several)"</span></label>
                <input id="pipeline" type="text" placeholder="default" data-testid="run-pipeline" bind:value=pipeline />
                <Show when=move || in_app.get()>
                    <label>"Target " <TargetChoice targets /></label>
                    <TargetNotes targets />
                </Show>
                <label for="break-before">"Pause before steps " <span class="muted">"(task/step, step or task names, comma-separated)"</span></label>
                <input id="break-before" type="text" placeholder="test/unit" data-testid="run-break-before" bind:value=break_before />
                <label class="checkbox">
                    <input type="checkbox" data-testid="run-break-on-failure" bind:checked=break_on_failure />
                    " Pause after a failing step"
                </label>
                <button type="submit" class="button primary" disabled=move || !can_run() data-testid="run-submit">
                    {move || if busy.get() { "Starting…" } else { "Run" }}
                </button>
            </form>
            {move || failure.get().map(|failure| view! { <Failure failure /> })}
        </section>
    }
}
