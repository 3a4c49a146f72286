//! The desktop app's project page: open a folder (native dialog, typed
//! path or a recent one), pick the pipeline and the target, and run it,
//! with breakpoints if set. The Watch toggle reruns it on every change, and
//! the project's run history is below.
//!
//! The open project lives in the address (`/project?path=`), so the app's
//! back button and links work as elsewhere.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::NavigateOptions;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde::Serialize;

use super::choices::{self, ChoiceSignals};
use super::client::{self, ApiFailure};
use super::jobs::ProjectJobs;
use super::run::step_names;
use super::targets::{TargetChoice, TargetNotes, Targets};
use super::{Failure, changes, desktop_info, last_project, set_title, watches};
use crate::api::{
    ChangeEvent, Job, Picked, PipelineSummary, Project, ProjectList, ProjectPipelines, Watch,
};

#[derive(Serialize)]
struct OpenProject<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<&'a str>,
}

#[derive(Serialize)]
struct CreateJob {
    project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    target: String,
    break_before: Vec<String>,
    break_on_failure: bool,
}

#[derive(Serialize)]
struct CreateWatch {
    project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    target: String,
    break_before: Vec<String>,
    break_on_failure: bool,
}

#[derive(Serialize)]
struct ForgetProject<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct Empty {}

/// The address of `path`'s project page.
pub fn project_href(path: &str) -> String {
    format!("/project?path={}", client::query_value(path))
}

#[component]
pub fn ProjectPage() -> impl IntoView {
    set_title("Project");
    let query = use_query_map();
    let desktop = desktop_info();
    // Without `?path=`, the project opened last, else the one given with
    // `--project`.
    let last = last_project();
    let path = Memo::new(move |_| {
        query
            .read()
            .get("path")
            .filter(|path| !path.is_empty())
            .or_else(|| last.get_untracked())
            .or_else(|| {
                desktop
                    .get()
                    .and_then(|info| info.project)
                    .map(|project| project.path)
            })
    });

    provide_context(Recent::new());

    view! {
        <section class="page project-page" data-testid="project-page">
            <ProjectPicker />
            {move || match path.get() {
                Some(path) => view! { <OpenedProject path /> }.into_any(),
                None => view! {
                    <section class="empty">
                        <h2>"Open a project"</h2>
                        <p>"Pick a folder that contains a "<code>"danubefile.py"</code>"."</p>
                    </section>
                }.into_any(),
            }}
        </section>
    }
}

/// The recent projects the picker lists, shared with the open project,
/// which updates them.
#[derive(Clone, Copy)]
struct Recent {
    projects: RwSignal<Vec<Project>>,
    failure: RwSignal<Option<ApiFailure>>,
}

impl Recent {
    fn new() -> Recent {
        let recent = Recent {
            projects: RwSignal::new(Vec::new()),
            failure: RwSignal::new(None),
        };
        recent.refresh();
        recent
    }

    /// Reads the list again, for its order and for folders that came back
    /// or went away.
    fn refresh(self) {
        spawn_local(async move {
            match client::get::<ProjectList>("/api/v1/desktop/projects").await {
                Ok(list) => self.projects.set(list.projects),
                Err(err) => self.failure.set(Some(err)),
            }
        });
    }

    /// Takes `path` off the list. When it is the open project, goes to the
    /// project chooser, since its page would only show that it is gone.
    fn forget(self, path: String, navigate: impl Fn(&str, NavigateOptions) + 'static) {
        self.failure.set(None);
        let last = last_project();
        spawn_local(async move {
            let body = ForgetProject { path: &path };
            match client::post::<_, ProjectList>("/api/v1/desktop/projects/forget", &body).await {
                Ok(list) => {
                    self.projects.set(list.projects);
                    if last.get_untracked().as_deref() == Some(path.as_str()) {
                        last.set(None);
                        navigate("/project?path=", Default::default());
                    }
                }
                Err(err) => self.failure.set(Some(err)),
            }
        });
    }
}

/// The "Open folder" button, a field for a typed path, and the recent
/// projects.
#[component]
fn ProjectPicker() -> impl IntoView {
    let Recent {
        projects: recent,
        failure,
    } = expect_context::<Recent>();
    let typed = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let navigate = use_navigate();

    let pick = {
        let navigate = navigate.clone();
        move |_| {
            if busy.get_untracked() {
                return;
            }
            busy.set(true);
            failure.set(None);
            let navigate = navigate.clone();
            spawn_local(async move {
                match client::post::<_, Picked>("/api/v1/desktop/projects/pick", &Empty {}).await {
                    Ok(Picked {
                        project: Some(project),
                    }) => navigate(&project_href(&project.path), Default::default()),
                    Ok(Picked { project: None }) => {}
                    Err(err) => failure.set(Some(err)),
                }
                busy.set(false);
            });
        }
    };

    let open_typed = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let wanted = typed.get_untracked().trim().to_owned();
        if wanted.is_empty() {
            return;
        }
        failure.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            let body = OpenProject {
                path: &wanted,
                pipeline: None,
            };
            match client::post::<_, Project>("/api/v1/desktop/projects", &body).await {
                Ok(project) => navigate(&project_href(&project.path), Default::default()),
                Err(err) => failure.set(Some(err)),
            }
        });
    };

    view! {
        <div class="page-head project-picker">
            <button class="button primary" on:click=pick disabled=move || busy.get() data-testid="open-folder">
                {move || if busy.get() { "Choosing…" } else { "Open folder…" }}
            </button>
            <form class="filters" on:submit=open_typed>
                <label>
                    "or a path "
                    <input
                        type="text"
                        placeholder="/home/me/src/app"
                        data-testid="project-path"
                        bind:value=typed
                    />
                </label>
                <button type="submit" class="button" data-testid="open-path">"Open"</button>
            </form>
            <Show when=move || !recent.with(Vec::is_empty)>
                <nav class="recent" aria-label="Recent projects">
                    <span class="muted">"Recent: "</span>
                    <For
                        each=move || recent.get()
                        key=|project| (project.path.clone(), project.available)
                        children=move |project| view! { <RecentProject project /> }
                    />
                </nav>
            </Show>
        </div>
        {move || failure.get().map(|failure| view! { <Failure failure /> })}
    }
}

/// Shows a recent project: a link that opens it, marked when its folder or
/// file is gone, and a button that takes it off the list.
#[component]
fn RecentProject(project: Project) -> impl IntoView {
    let recent = expect_context::<Recent>();
    let href = project_href(&project.path);
    let class = if project.available {
        "chip"
    } else {
        "chip unavailable"
    };
    let title = match &project.problem {
        Some(problem) => format!("{} — {problem}", project.path),
        None => project.path.clone(),
    };
    let missing = (!project.available).then_some(" (missing)");
    let forget_label = format!("Remove {} from the recent projects", project.name);
    let path = project.path.clone();
    let navigate = use_navigate();
    let forget = move |_| recent.forget(path.clone(), navigate.clone());
    view! {
        <span class="recent-entry" data-testid="recent-entry" data-available=project.available.to_string()>
            <A href=href attr:class=class attr:title=title attr:data-testid="recent-project">
                {project.name.clone()}{missing}
            </A>
            <button
                type="button"
                class="link recent-forget"
                title="Remove from the recent projects (the folder stays)"
                aria-label=forget_label
                on:click=forget
                data-testid="recent-forget"
            >"×"</button>
        </span>
    }
}

/// One open project: its pipelines, the target, Run, and its history.
#[component]
fn OpenedProject(path: String) -> impl IntoView {
    let project = RwSignal::new(None::<Project>);
    let pipelines = RwSignal::new(None::<Result<Vec<PipelineSummary>, ApiFailure>>);
    let targets = Targets::new();
    let target = targets.chosen;
    let pipeline = RwSignal::new(String::new());
    let break_before = RwSignal::new(String::new());
    let break_on_failure = RwSignal::new(false);
    let failure = RwSignal::new(None::<ApiFailure>);
    // Why the project cannot open, such as a folder deleted since.
    let unavailable = RwSignal::new(None::<ApiFailure>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let recent = expect_context::<Recent>();
    choices::keep(
        path.clone(),
        ChoiceSignals {
            pipeline,
            target,
            break_before,
            break_on_failure,
        },
    );

    // A kept target whose context left the kubeconfig falls back to local
    // processes, rather than a choice the list cannot show.
    Effect::new(move |_| {
        let gone = targets.list.with(|list| {
            list.as_ref().is_some_and(|list| {
                let chosen = target.get_untracked();
                !list.targets.iter().any(|listed| listed.id == chosen)
            })
        });
        if gone {
            target.set("local".to_owned());
        }
    });

    // Opening records the project among the recent ones and checks it.
    let opened = path.clone();
    last_project().set(Some(path.clone()));
    spawn_local(async move {
        let body = OpenProject {
            path: &opened,
            pipeline: None,
        };
        match client::post::<_, Project>("/api/v1/desktop/projects", &body).await {
            Ok(found) => {
                set_title(&found.name);
                if let Some(chosen) = &found.pipeline
                    && pipeline.get_untracked().is_empty()
                {
                    pipeline.set(chosen.clone());
                }
                project.set(Some(found));
                recent.refresh();
            }
            Err(err) => {
                unavailable.set(Some(err));
                return;
            }
        }
        load_pipelines(&opened, pipelines, pipeline).await;
    });

    // The file may have changed since it was read: a job of this project
    // that ends, from Run or from a watch, reads it again.
    let feed = changes();
    let reload_path = path.clone();
    Effect::new(move |_| {
        let Some(ChangeEvent::Job { job_id, state, .. }) = feed.last.get() else {
            return;
        };
        if !state.is_final() {
            return;
        }
        let reload_path = reload_path.clone();
        spawn_local(async move {
            let Ok(job) = client::get::<Job>(&format!("/api/v1/jobs/{job_id}")).await else {
                return;
            };
            let canonical = project.with_untracked(|found| found.as_ref().map(|p| p.path.clone()));
            if job.project == reload_path || Some(&job.project) == canonical.as_ref() {
                load_pipelines(&reload_path, pipelines, pipeline).await;
            }
        });
    });
    let reload_path = path.clone();
    let reload = move |_| {
        let reload_path = reload_path.clone();
        pipelines.set(None);
        targets.refresh();
        spawn_local(async move { load_pipelines(&reload_path, pipelines, pipeline).await });
    };

    let run_path = path.clone();
    let run = move |_| {
        if busy.get_untracked() {
            return;
        }
        let chosen = pipeline.get_untracked();
        let several = several_pipelines(pipelines);
        let body = CreateJob {
            project: run_path.clone(),
            pipeline: (several && !chosen.is_empty()).then_some(chosen.clone()),
            target: target.get_untracked(),
            break_before: step_names(&break_before.get_untracked()),
            break_on_failure: break_on_failure.get_untracked(),
        };
        busy.set(true);
        failure.set(None);
        let navigate = navigate.clone();
        let remember_path = run_path.clone();
        spawn_local(async move {
            if several {
                // Preselects this pipeline the next time the project opens.
                let remember = OpenProject {
                    path: &remember_path,
                    pipeline: Some(&chosen),
                };
                let _ = client::post::<_, Project>("/api/v1/desktop/projects", &remember).await;
            }
            match client::post::<_, Job>("/api/v1/jobs", &body).await {
                Ok(job) => navigate(&format!("/jobs/{}", job.id), Default::default()),
                Err(err) => failure.set(Some(err)),
            }
            busy.set(false);
        });
    };

    let can_run = move || {
        !busy.get()
            && matches!(pipelines.get(), Some(Ok(list)) if !list.is_empty())
            && targets.chosen_available()
    };
    let history_path = Signal::derive({
        let path = path.clone();
        move || path.clone()
    });
    let task_names = move || {
        pipelines.with(|list| match list {
            Some(Ok(list)) => list
                .iter()
                .find(|summary| summary.name == pipeline.get())
                .map(|summary| summary.tasks.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    };
    let watch_path = path.clone();
    let gone_path = path.clone();

    view! {
        {move || unavailable.get().map(|failure| {
            view! { <ProjectUnavailable path=gone_path.clone() failure /> }
        })}
        <div class="project-body" hidden=move || unavailable.with(Option::is_some) data-testid="project-body">
            <header class="project-head">
                <h1 data-testid="project-name">
                    {move || project.get().map(|p| p.name).unwrap_or_default()}
                </h1>
                <p class="muted mono" data-testid="project-location">{path.clone()}</p>
            </header>
            <form class="run-form project-run" on:submit=|event| event.prevent_default()>
                <label>
                    "Pipeline "
                    <PipelineChoice pipelines pipeline />
                </label>
                <label>
                    "Target "
                    <TargetChoice targets />
                </label>
                <button
                    type="button"
                    class="button"
                    on:click=reload
                    title="Read danubefile.py and the kubeconfig again"
                    data-testid="reload-pipelines"
                >
                    "Reload"
                </button>
                <button
                    type="button"
                    class="button primary"
                    on:click=run
                    disabled=move || !can_run()
                    data-testid="run-project"
                >
                    {move || if busy.get() { "Starting…" } else { "Run" }}
                </button>
            </form>
            <details class="break-options" data-testid="break-options">
                <summary>"Debugging"</summary>
                <div class="run-form">
                    <label for="project-break-before">
                        "Pause before steps " <span class="muted">"(task/step, step or task names, comma-separated)"</span>
                    </label>
                    <input
                        id="project-break-before"
                        type="text"
                        list="project-tasks"
                        placeholder="test/unit"
                        data-testid="project-break-before"
                        bind:value=break_before
                    />
                    <datalist id="project-tasks">
                        {move || task_names().into_iter().map(|name| view! { <option value=name /> }).collect_view()}
                    </datalist>
                    <label class="checkbox">
                        <input type="checkbox" data-testid="project-break-on-failure" bind:checked=break_on_failure />
                        " Pause after a failing step"
                    </label>
                </div>
            </details>
            <WatchToggle path=watch_path pipelines pipeline target break_before break_on_failure />
            <TargetNotes targets />
            {move || match pipelines.get() {
                Some(Err(failure)) => Some(view! { <Failure failure /> }.into_any()),
                _ => None,
            }}
            {move || failure.get().map(|failure| view! { <Failure failure /> })}
            <h2>"Run history"</h2>
            <div data-testid="history">
                <ProjectJobs project=history_path />
            </div>
        </div>
    }
}

/// Says why a project cannot open, once, with a way out: take it off the
/// recent projects, or open another with the picker above.
#[component]
fn ProjectUnavailable(path: String, failure: ApiFailure) -> impl IntoView {
    set_title("Project not found");
    let recent = expect_context::<Recent>();
    let listed = {
        let path = path.clone();
        move || {
            recent
                .projects
                .with(|list| list.iter().any(|project| project.path == path))
        }
    };
    let navigate = use_navigate();
    let forget_path = path.clone();
    let forget = move |_| recent.forget(forget_path.clone(), navigate.clone());
    view! {
        <section class="error" role="alert" data-testid="project-unavailable">
            <h2>"This project cannot be opened"</h2>
            <p data-testid="project-unavailable-text">{failure.message}</p>
            <p class="muted">
                "If the folder moved, open it again at its new place with "<strong>"Open folder…"</strong>
                " or a path above. "
                <Show when=listed>
                    "Or take it off the recent projects: "
                    <button type="button" class="button" on:click=forget.clone() data-testid="forget-unavailable">
                        "Remove from Recent"
                    </button>
                </Show>
            </p>
        </section>
    }
}

/// Reads the project's pipelines into `pipelines`, and chooses the first
/// one when `pipeline` names none of them.
async fn load_pipelines(
    path: &str,
    pipelines: RwSignal<Option<Result<Vec<PipelineSummary>, ApiFailure>>>,
    pipeline: RwSignal<String>,
) {
    let listed = client::get::<ProjectPipelines>(&format!(
        "/api/v1/projects/pipelines?project={}",
        client::query_value(path)
    ))
    .await
    .map(|answer| answer.pipelines);
    if let Ok(list) = &listed {
        let remembered = pipeline.get_untracked();
        if !list.iter().any(|summary| summary.name == remembered)
            && let Some(first) = list.first()
        {
            pipeline.set(first.name.clone());
        }
    }
    pipelines.set(Some(listed));
}

/// Whether the file defines more than one pipeline, so that a request
/// must name one.
fn several_pipelines(
    pipelines: RwSignal<Option<Result<Vec<PipelineSummary>, ApiFailure>>>,
) -> bool {
    pipelines.with_untracked(|list| matches!(list, Some(Ok(list)) if list.len() > 1))
}

/// Starts and stops the watch session of this project: while it is on,
/// every change to a file of the project cancels the run in flight and
/// starts a new one, which the history labels with the changed file. The
/// session's jobs pause at the breakpoints set when it started.
#[component]
fn WatchToggle(
    path: String,
    pipelines: RwSignal<Option<Result<Vec<PipelineSummary>, ApiFailure>>>,
    pipeline: RwSignal<String>,
    target: RwSignal<String>,
    break_before: RwSignal<String>,
    break_on_failure: RwSignal<bool>,
) -> impl IntoView {
    // The header lists the sessions and can stop this one too.
    let watches = watches::watches();
    let watched_path = path.clone();
    let watch = Signal::derive(move || watches.of(&watched_path));
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<ApiFailure>);

    let toggle = move |_| {
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        failure.set(None);
        let running = watch.get_untracked();
        let chosen = pipeline.get_untracked();
        let body = CreateWatch {
            project: path.clone(),
            pipeline: (several_pipelines(pipelines) && !chosen.is_empty()).then_some(chosen),
            target: target.get_untracked(),
            break_before: step_names(&break_before.get_untracked()),
            break_on_failure: break_on_failure.get_untracked(),
        };
        spawn_local(async move {
            let outcome = match running {
                Some(session) => watches.stop(&session.id).await,
                None => client::post::<_, Watch>("/api/v1/watches", &body)
                    .await
                    .map(|_| watches.refresh()),
            };
            if let Err(err) = outcome {
                // Notifying with the unchanged list puts the checkbox back.
                watches.list.update(|_| {});
                failure.set(Some(err));
            }
            busy.set(false);
        });
    };

    view! {
        <div class="watch-toggle">
            <label class="checkbox">
                <input
                    type="checkbox"
                    data-testid="watch-toggle"
                    prop:checked=move || watch.with(Option::is_some)
                    disabled=move || busy.get()
                    on:change=toggle
                />
                " Watch: rerun after every change to a file of the project"
            </label>
            <Show when=move || watch.with(Option::is_some)>
                <p class="notice" role="status" data-testid="watch-status">
                    "Watching. A change cancels the run in flight and starts a new one; "
                    "the history names the file that changed."
                </p>
            </Show>
            {move || failure.get().map(|failure| view! { <Failure failure /> })}
        </div>
    }
}

/// The pipelines of the file; a choice only when there are several.
#[component]
fn PipelineChoice(
    pipelines: RwSignal<Option<Result<Vec<PipelineSummary>, ApiFailure>>>,
    pipeline: RwSignal<String>,
) -> impl IntoView {
    let on_change = move |event: leptos::ev::Event| pipeline.set(event_target_value(&event));
    view! {
        <select
            data-testid="pipeline-select"
            on:change=on_change
            prop:value=move || pipeline.get()
            disabled=move || !matches!(pipelines.get(), Some(Ok(list)) if list.len() > 1)
        >
            {move || match pipelines.get() {
                None => view! { <option value="">"reading danubefile.py…"</option> }.into_any(),
                Some(Err(_)) => view! { <option value="">"the file does not load"</option> }.into_any(),
                Some(Ok(list)) => list
                    .into_iter()
                    .map(|summary| {
                        let label = pipeline_label(&summary);
                        view! { <option value=summary.name.clone()>{label}</option> }
                    })
                    .collect_view()
                    .into_any(),
            }}
        </select>
    }
}

fn pipeline_label(summary: &PipelineSummary) -> String {
    match &summary.error {
        Some(error) => format!("{} (invalid: {error})", summary.name),
        None => {
            let count = summary.tasks.len();
            let noun = if count == 1 { "task" } else { "tasks" };
            format!("{} ({count} {noun})", summary.name)
        }
    }
}
