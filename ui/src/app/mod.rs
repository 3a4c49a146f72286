//! The Leptos app: routes, the page frame, and what every page shares.

mod choices;
mod client;
pub mod dag_view;
mod debug;
mod job;
mod jobs;
mod keys;
mod live;
pub mod log_view;
mod project;
mod run;
mod secrets;
mod targets;
mod theme;
mod trigger;
mod watches;

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::{use_location, use_navigate};
use leptos_router::path;

use self::live::Changes;
use crate::api::DesktopInfo;

/// What the desktop app says about itself; `None` on a plain server, and
/// until the answer arrives.
#[derive(Clone, Copy)]
struct Desktop(RwSignal<Option<DesktopInfo>>);

/// The path of the project page opened last in this window, which the
/// Project tab returns to.
#[derive(Clone, Copy)]
struct LastProject(RwSignal<Option<String>>);

#[component]
pub fn App() -> impl IntoView {
    let changes = live::open();
    provide_context(changes);
    theme::apply_saved();
    let desktop = RwSignal::new(None::<DesktopInfo>);
    provide_context(Desktop(desktop));
    provide_context(LastProject(RwSignal::new(None)));
    watches::provide();
    // Only the desktop app mounts this route; a server answers 404.
    spawn_local(async move {
        if let Ok(info) = client::get::<DesktopInfo>("/api/v1/desktop").await {
            desktop.set(Some(info));
        }
    });

    view! {
        <Router>
            <Header changes />
            <DesktopHome />
            <main id="main">
                <Routes fallback=|| view! { <NotFound /> }>
                    <Route path=path!("/") view=jobs::JobsPage />
                    <Route path=path!("/run") view=run::RunPage />
                    <Route path=path!("/jobs/:id") view=job::JobPage />
                    <Route path=path!("/project") view=project::ProjectPage />
                    <Route path=path!("/secrets") view=secrets::SecretsPage />
                </Routes>
            </main>
            <keys::Shortcuts />
        </Router>
    }
}

/// Returns the desktop app's description, `None` outside the app.
pub fn desktop_info() -> RwSignal<Option<DesktopInfo>> {
    expect_context::<Desktop>().0
}

/// Returns the path of the project page opened last, `None` before one was.
pub fn last_project() -> RwSignal<Option<String>> {
    expect_context::<LastProject>().0
}

/// In the desktop app, the first page is the project page rather than
/// every job.
#[component]
fn DesktopHome() -> impl IntoView {
    // Renders nothing; it only redirects.
    let desktop = desktop_info();
    let location = use_location();
    let navigate = use_navigate();
    let redirected = StoredValue::new(false);
    Effect::new(move |_| {
        if desktop.get().is_none() || redirected.get_value() {
            return;
        }
        redirected.set_value(true);
        if location.pathname.get_untracked() == "/" && location.search.get_untracked().is_empty() {
            navigate("/project", Default::default());
        }
    });
}

#[component]
fn Header(changes: Changes) -> impl IntoView {
    let connected = changes.connected;
    let closed = changes.closed;
    let desktop = desktop_info();
    let last = last_project();
    let project_tab_href = move || {
        last.get().map_or_else(
            || "/project".to_owned(),
            |path| project::project_href(&path),
        )
    };
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                <span class="brand-mark" aria-hidden="true">"≋"</span>
                "Danube"
            </A>
            <nav aria-label="Main">
                <Show when=move || desktop.get().is_some()>
                    <A href=project_tab_href attr:data-testid="nav-project">"Project"</A>
                </Show>
                <A href="/" exact=true>"Jobs"</A>
                <Show when=move || desktop.get().is_none()>
                    <A href="/run">"Run a project"</A>
                </Show>
                <A href="/secrets" attr:data-testid="nav-secrets">"Secrets"</A>
            </nav>
            <span class="spacer"></span>
            <watches::ActiveWatches />
            <span
                class="feed"
                class:live=move || connected.get()
                data-testid="feed"
                title="Live updates from the server"
            >
                {move || {
                    if connected.get() {
                        "● live"
                    } else if closed.get() {
                        "○ not connected"
                    } else {
                        "○ connecting…"
                    }
                }}
            </span>
            <theme::ThemeToggle />
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <section class="empty">
            <h1>"Page not found"</h1>
            <p>"This address is not a page of Danube. " <A href="/">"See all jobs"</A> "."</p>
        </section>
    }
}

/// Returns the change feed every page listens to.
pub fn changes() -> Changes {
    expect_context::<Changes>()
}

/// Milliseconds since the epoch, by the browser's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// An error state that says what happened and what to do.
#[component]
pub fn Failure(failure: client::ApiFailure) -> impl IntoView {
    let unauthorized = failure.is_unauthorized();
    let in_app =
        use_context::<Desktop>().is_some_and(|desktop| desktop.0.get_untracked().is_some());
    let hint = crate::failure::hint(failure.status, in_app);
    // Load errors carry a Python traceback, whose line breaks matter.
    let multiline = failure.message.contains('\n');
    view! {
        <section class="error" role="alert" data-testid="error">
            <h2>{if failure.is_unauthorized() { "Not signed in" } else { "Something went wrong" }}</h2>
            // The hint for a missing token says all the server's message
            // does, in the page's terms.
            <Show when=move || !unauthorized>
                {
                    let message = failure.message.clone();
                    if multiline {
                        view! { <pre class="error-text" data-testid="error-text">{message}</pre> }.into_any()
                    } else {
                        view! { <p data-testid="error-text">{message}</p> }.into_any()
                    }
                }
            </Show>
            <Show when=move || !hint.is_empty()>
                <p class="muted">{hint}</p>
            </Show>
        </section>
    }
}

/// Formats the job's duration once it is known, else the time since `started_at`,
/// counted up every second.
pub fn running_time(duration_ms: Option<i64>, started_at: Option<i64>) -> Signal<String> {
    if let Some(duration) = duration_ms {
        return Signal::derive(move || crate::format::duration(duration));
    }
    let Some(started) = started_at else {
        return Signal::derive(String::new);
    };
    let (now, set_now) = signal(now_ms());
    let ticker = set_interval_with_handle(
        move || set_now.set(now_ms()),
        std::time::Duration::from_secs(1),
    );
    on_cleanup(move || {
        if let Ok(handle) = ticker {
            handle.clear();
        }
    });
    Signal::derive(move || crate::format::duration(now.get() - started))
}

/// Sets the browser tab's title to `page · Danube`.
pub fn set_title(page: &str) {
    if let Some(document) = web_sys::window().and_then(|window| window.document()) {
        document.set_title(&format!("{page} · Danube"));
    }
}
