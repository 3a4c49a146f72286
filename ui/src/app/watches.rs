//! The watch sessions running on the server, shown in the header on every
//! page with a Stop button each: a watch keeps rerunning its project after
//! the user moved on to another page or project.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;

use super::client;
use super::project::project_href;
use super::{changes, desktop_info};
use crate::api::{ChangeEvent, Watch, WatchList};

/// How often the list is read again: a watch started by another client
/// sends no event.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The watch sessions as last listed, shared by the header and the project
/// page's Watch toggle.
#[derive(Clone, Copy)]
pub struct Watches {
    pub list: RwSignal<Vec<Watch>>,
    pub failure: RwSignal<Option<String>>,
}

impl Watches {
    /// Reads the list again.
    pub fn refresh(self) {
        spawn_local(async move {
            match client::get::<WatchList>("/api/v1/watches").await {
                Ok(list) => {
                    self.failure.set(None);
                    if self.list.with_untracked(|known| *known != list.watches) {
                        self.list.set(list.watches);
                    }
                }
                Err(err) => self.failure.set(Some(err.message)),
            }
        });
    }

    /// Returns the session watching `project`, if any.
    pub fn of(self, project: &str) -> Option<Watch> {
        self.list.with(|list| {
            list.iter()
                .find(|session| session.project == project)
                .cloned()
        })
    }

    /// Stops session `id` and reads the list again.
    pub async fn stop(self, id: &str) -> Result<(), client::ApiFailure> {
        let stopped = client::delete(&format!("/api/v1/watches/{id}")).await;
        self.refresh();
        stopped
    }
}

/// Makes the shared list, kept current from the change feed and a poll.
pub fn provide() {
    let watches = Watches {
        list: RwSignal::new(Vec::new()),
        failure: RwSignal::new(None),
    };
    provide_context(watches);
    watches.refresh();

    // A watch session shows itself through the jobs it starts.
    let feed = changes();
    Effect::new(move |_| {
        if let Some(ChangeEvent::Job { .. }) = feed.last.get() {
            watches.refresh();
        }
    });
    let poll = set_interval_with_handle(move || watches.refresh(), POLL_INTERVAL);
    on_cleanup(move || {
        if let Ok(handle) = poll {
            handle.clear();
        }
    });
}

/// Returns the shared list of watch sessions.
pub fn watches() -> Watches {
    expect_context::<Watches>()
}

/// Shows one chip per running watch session: its project and a Stop
/// button.
#[component]
pub fn ActiveWatches() -> impl IntoView {
    let watches = watches();
    view! {
        <Show when=move || !watches.list.with(Vec::is_empty)>
            <div class="active-watches" role="status" data-testid="active-watches">
                <span class="muted">"Watching: "</span>
                <For
                    each=move || watches.list.get()
                    key=|session| session.id.clone()
                    children=move |session| view! { <WatchChip session /> }
                />
                {move || watches.failure.get().map(|message| view! { <span class="reason">{message}</span> })}
            </div>
        </Show>
    }
}

#[component]
fn WatchChip(session: Watch) -> impl IntoView {
    let watches = watches();
    let desktop = desktop_info();
    let busy = RwSignal::new(false);
    let name = folder_name(&session.project).to_owned();
    let project = session.project.clone();
    let href = move || {
        if desktop.get().is_some() {
            project_href(&project)
        } else {
            format!("/?project={}", client::query_value(&project))
        }
    };
    let title = match &session.pipeline {
        Some(pipeline) => format!("{} ({pipeline}) reruns on every change", session.project),
        None => format!("{} reruns on every change", session.project),
    };
    let stop_label = format!("Stop watching {}", session.project);
    let id = session.id.clone();
    let stop = move |_| {
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        let id = id.clone();
        spawn_local(async move {
            if let Err(err) = watches.stop(&id).await {
                watches.failure.set(Some(err.message));
            }
            busy.set(false);
        });
    };
    view! {
        <span class="chip watch-chip" data-testid="active-watch" data-project=session.project.clone() title=title>
            <A href=href>{name}</A>
            <button
                type="button"
                class="link"
                aria-label=stop_label
                disabled=move || busy.get()
                on:click=stop
                data-testid="stop-watch"
            >"Stop"</button>
        </span>
    }
}

fn folder_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(path)
}
